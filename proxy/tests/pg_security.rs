//! Security of the wire server: SCRAM-SHA-256 users, TLS (with psql, which must be installed,
//! and a self-signed certificate made by the `openssl` command), and idle timeouts that say
//! why they close a session.

mod pg_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use paxsql_proxy::pg::{ServerOptions, TlsFiles, User};
use pg_common::{code, start};
use tokio_postgres::NoTls;

fn users() -> Vec<User> {
    vec![User {
        name: "alice".into(),
        password: "s3cret pass".into(),
    }]
}

async fn connect_as(
    port: u16,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname("main");
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn scram_users_log_in_with_their_password_and_nobody_else_does() {
    let server = start(ServerOptions {
        users: users(),
        ..ServerOptions::default()
    })
    .await;
    let port = server.address.port();
    let client = connect_as(port, "alice", Some("s3cret pass"))
        .await
        .expect("the right password logs in");
    let row = client.query_one("SELECT 'in'", &[]).await.expect("query");
    assert_eq!(row.get::<_, &str>(0), "in");
    let wrong = connect_as(port, "alice", Some("guess"))
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(code(&wrong), "28P01", "{wrong:?}");
    let unknown = connect_as(port, "mallory", Some("s3cret pass"))
        .await
        .expect_err("an unknown user is refused");
    assert_eq!(code(&unknown), "28P01", "{unknown:?}");
    connect_as(port, "alice", None)
        .await
        .expect_err("no password is refused");
}

/// A self-signed certificate for 127.0.0.1 made with the `openssl` command.
fn self_signed(directory: &Path) -> TlsFiles {
    let certificate_path = directory.join("server.crt");
    let private_key_path = directory.join("server.key");
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&private_key_path)
        .arg("-out")
        .arg(&certificate_path)
        .output()
        .expect("this test needs the openssl command");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    TlsFiles {
        certificate_path,
        private_key_path,
    }
}

fn psql(port: u16, connection: &str, password: Option<&str>, sql: &str) -> std::process::Output {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=main {connection}"
        ))
        .args(["-c", sql])
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command
        .output()
        .expect("this test needs psql (apt-get install postgresql-client)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_channel_binding_works_with_psql() {
    let directory = tempfile::tempdir().expect("temp dir");
    let tls = self_signed(directory.path());
    let certificate = tls.certificate_path.display().to_string();
    let server = start(ServerOptions {
        users: users(),
        tls: Some(tls),
        ..ServerOptions::default()
    })
    .await;
    let port = server.address.port();
    // verify-full checks the certificate; channel_binding=require forces SCRAM-SHA-256-PLUS,
    // which only works over TLS with the server's own certificate.
    let secured = psql(
        port,
        &format!(
            "user=alice sslmode=verify-full sslrootcert={certificate} channel_binding=require"
        ),
        Some("s3cret pass"),
        "SELECT 'secure'",
    );
    assert!(
        secured.status.success(),
        "psql over TLS: {}",
        String::from_utf8_lossy(&secured.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&secured.stdout).trim(), "secure");
    let wrong = psql(
        port,
        &format!("user=alice sslmode=verify-full sslrootcert={certificate}"),
        Some("nope"),
        "SELECT 1",
    );
    assert!(
        !wrong.status.success(),
        "a wrong password over TLS was accepted"
    );
    // Plain connections are still served when TLS is on (PostgreSQL's default, `prefer`).
    let plain = psql(
        port,
        "user=alice sslmode=disable",
        Some("s3cret pass"),
        "SELECT 'plain'",
    );
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

#[tokio::test]
async fn idle_sessions_are_closed_with_a_fatal_message_saying_why() {
    let server = start(ServerOptions {
        idle_session_timeout: Some(Duration::from_millis(300)),
        idle_in_transaction_timeout: Some(Duration::from_millis(300)),
        ..ServerOptions::default()
    })
    .await;
    let port = server.address.port();
    for (setup, expected) in [("SELECT 1", "57P05"), ("BEGIN", "25P03")] {
        let config = format!("host=127.0.0.1 port={port} user=tester dbname=main");
        let (client, connection) = tokio_postgres::connect(&config, NoTls)
            .await
            .expect("connect");
        let ended = tokio::spawn(connection);
        client.batch_execute(setup).await.expect(setup);
        let outcome = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the idle session is closed within 5 s")
            .expect("the connection task");
        let error = outcome.expect_err("the server ended the session with an error");
        assert_eq!(code(&error), expected, "{setup}: {error:?}");
        assert!(client.is_closed());
    }
}
