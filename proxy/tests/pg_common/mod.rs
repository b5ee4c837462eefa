//! Shared setup for the wire tests: a server on 127.0.0.1:0 over a LocalSqliteBackend.
#![allow(dead_code)]

pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use paxsql_proxy::backend::local::LocalSqliteBackend;
use paxsql_proxy::backend::Backend;
use paxsql_proxy::pg::{serve, ServerOptions};
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls};

pub struct TestServer {
    pub address: SocketAddr,
    _directory: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn start(options: ServerOptions) -> TestServer {
    let directory = tempfile::tempdir().expect("temp dir");
    let backend =
        LocalSqliteBackend::open(directory.path(), &["main", "orders"]).expect("open backend");
    start_with(Arc::new(backend), options, directory).await
}

pub async fn start_with(
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    directory: tempfile::TempDir,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, backend, options, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    TestServer {
        address,
        _directory: directory,
        _stop: stop,
    }
}

pub async fn connect(server: &TestServer, database: &str) -> Result<Client, tokio_postgres::Error> {
    let text = format!(
        "host=127.0.0.1 port={} user=tester dbname={database}",
        server.address.port()
    );
    let (client, connection) = tokio_postgres::connect(&text, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub fn code(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}
