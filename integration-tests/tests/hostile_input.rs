//! Hostile input against real `paxsql node` processes: garbage, oversized frames, foreign
//! clusters, non-members and spoofed envelopes on the peer port, garbage on the SQL port, and on
//! the HTTP port a forwarding connection without the cluster secret, admin and backup calls
//! without the admin token, and a checkpoint stream request without a peer's proof. Each is
//! refused (and counted in `/metrics` where a counter exists); no node crashes; other sessions
//! carry on.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use paxsql_integration_tests::cluster::http_get;
use paxsql_integration_tests::sql::connect;
use paxsql_integration_tests::{paxsql_bin, Cluster};
use paxsql_replicator::runtime::frame::{encode_body, FrameCodec};
use paxsql_replicator::runtime::handshake::{self, LocalIdentity};
use paxsql_replicator::runtime::node::LOG_FORMAT_VERSION;
use paxsql_schema::{envelope, Envelope, Heartbeat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The value of a `/metrics` sample (`name` includes any labels).
async fn metric(cluster: &Cluster, id: u32, name: &str) -> u64 {
    let (_, body) = http_get(&cluster.nodes[(id - 1) as usize].http_addr(), "/metrics")
        .await
        .expect("metrics");
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

/// Waits until `name` on node `id` passes `above`.
async fn wait_metric_above(cluster: &Cluster, id: u32, name: &str, above: u64) -> u64 {
    for _ in 0..100 {
        let value = metric(cluster, id, name).await;
        if value > above {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} on node {id} stayed at {above}");
}

fn identity(node_id: u32) -> LocalIdentity {
    LocalIdentity {
        cluster_name: "paxsql".into(),
        node_id,
        incarnation: 1,
        log_format_version: LOG_FORMAT_VERSION,
        sqlite_version: rusqlite_version(),
        sql_addr: "127.0.0.1:9".into(),
        http_addr: "127.0.0.1:9".into(),
        secret: None,
    }
}

fn rusqlite_version() -> String {
    // The same SQLite the nodes run (the workspace builds one bundled SQLite).
    paxsql_replicator::runtime::node::NodeConfig::new(1, Default::default()).sqlite_version
}

/// Sends `bytes` to `addr` and waits until the node closes the connection.
async fn send_and_wait_close(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept a hostile connection open");
}

fn all_alive(cluster: &mut Cluster) {
    for id in 1..=3 {
        assert!(
            cluster.node(id).exited().is_none(),
            "node {id} died:\n{}",
            cluster.logs_tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_peer_traffic_is_refused_and_counted_and_no_node_crashes() {
    let (mut cluster, master) = Cluster::start_elected(3, &[])
        .await
        .expect("cluster starts");
    let client = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");
    client
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    let target = 1u32;
    let peer_addr = format!("127.0.0.1:{}", cluster.nodes[0].peer_port);
    let refused = "paxsql_peer_handshakes_refused_total";

    // Garbage, then an oversized frame header, instead of a handshake.
    let before = metric(&cluster, target, refused).await;
    send_and_wait_close(
        &peer_addr,
        b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage garbage garbage",
    )
    .await;
    let after_garbage = wait_metric_above(&cluster, target, refused, before).await;
    send_and_wait_close(&peer_addr, &u32::MAX.to_be_bytes()).await;
    wait_metric_above(&cluster, target, refused, after_garbage).await;

    // A non-member (node 9) and a node of another cluster (another gid) are refused.
    let before = metric(&cluster, target, refused).await;
    let stream = TcpStream::connect(&peer_addr).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new());
    let result = handshake::connect(&mut framed, &identity(9), 0, target).await;
    assert!(result.is_err(), "a non-member's handshake must fail");
    wait_metric_above(&cluster, target, refused, before).await;
    let foreign = "paxsql_peer_handshakes_refused_foreign_gid_total";
    let before = metric(&cluster, target, foreign).await;
    // (Hand-made: our own handshake code would refuse the node's gid first.)
    let stream = TcpStream::connect(&peer_addr).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new());
    let _their_hello = framed
        .next()
        .await
        .expect("the acceptor speaks first")
        .expect("frame");
    let mut hello = paxsql_schema::Handshake {
        cluster_name: "paxsql".into(),
        cluster_gid: 0x0bad_0bad_0bad_0bad,
        node_id: 2,
        incarnation: 1,
        wire_version: paxsql_schema::WIRE_VERSION,
        log_format_version: LOG_FORMAT_VERSION,
        sqlite_version: rusqlite_version(),
        ..paxsql_schema::Handshake::default()
    };
    hello.nonce = vec![7u8; 16].into();
    framed
        .send(encode_body(&hello).expect("small"))
        .await
        .expect("send");
    wait_metric_above(&cluster, target, foreign, before).await;
    assert!(
        matches!(framed.next().await, None | Some(Err(_))),
        "another cluster's handshake must be refused"
    );

    // Past a handshake (no secret is configured, so node 2 can be impersonated): envelopes that
    // lie about their sender, their addressee, their group or their cluster are dropped and
    // counted; a malformed one closes the connection.
    let status =
        paxsql_integration_tests::cluster::http_get_json(&cluster.nodes[0].http_addr(), "/status")
            .await
            .expect("status");
    let gid =
        u64::from_str_radix(status["cluster_gid"].as_str().expect("gid"), 16).expect("hex gid");
    let stream = TcpStream::connect(&peer_addr).await.expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new());
    handshake::connect(&mut framed, &identity(2), gid, target)
        .await
        .expect("an impersonated member passes the handshake without a secret");
    let heartbeat = |gid: u64, group: &str, from: u32, to: u32| Envelope {
        cluster_gid: gid,
        group: group.to_string(),
        from,
        to,
        body: Some(envelope::Body::Heartbeat(Heartbeat {
            chosen_instance: 0,
            now_ms: 0,
        })),
    };
    let dropped = |reason: &str| format!("paxsql_peer_frames_dropped_total{{reason=\"{reason}\"}}");
    let cases = [
        (heartbeat(gid, "main", 3, target), dropped("from_mismatch")),
        (heartbeat(gid, "main", 2, 7), dropped("misaddressed")),
        (heartbeat(gid, "nope", 2, target), dropped("unknown_group")),
        (
            heartbeat(gid ^ 1, "main", 2, target),
            "paxsql_foreign_gid_dropped_total{group=\"main\"}".to_string(),
        ),
    ];
    for (envelope, counter) in cases {
        let before = metric(&cluster, target, &counter).await;
        framed
            .send(encode_body(&envelope).expect("small"))
            .await
            .expect("send");
        wait_metric_above(&cluster, target, &counter, before).await;
    }
    let before = metric(&cluster, target, &dropped("malformed")).await;
    framed
        .send(bytes::Bytes::from_static(b"\xff\xff\xff\xff not protobuf"))
        .await
        .expect("send");
    wait_metric_above(&cluster, target, &dropped("malformed"), before).await;
    let mut stream = framed.into_inner();
    let mut sink = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a malformed frame must close the connection"
    );

    // Every node is alive and the cluster still takes writes.
    all_alive(&mut cluster);
    client
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("write after hostile traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_sql_port_closes_that_connection_only() {
    let (mut cluster, master) = Cluster::start_elected(3, &[])
        .await
        .expect("cluster starts");
    let addr = cluster.nodes[(master - 1) as usize].sql_addr();
    let bystander = connect(&addr, "main").await.expect("connect");
    bystander
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");

    // Garbage before the startup packet, a startup packet claiming a huge length, and garbage
    // after a valid startup: each connection ends, with an error or a close.
    let mut startup = Vec::new();
    let params = b"user\0paxsql\0database\0main\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(params);
    let mut after_startup = startup.clone();
    after_startup.extend_from_slice(b"Z\x00\x00\x00\x02\xff\xfe garbage \x00\x01");
    let mut huge_message = startup.clone();
    huge_message.extend_from_slice(b"Q\x7f\xff\xff\xff");
    let hostile: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not postgres at all".to_vec(),
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        (0..2048u32)
            .map(|index| (index * 7919 % 251) as u8)
            .collect(),
        after_startup,
        huge_message,
    ];
    for (index, bytes) in hostile.iter().enumerate() {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let _ = stream.write_all(bytes).await;
        let mut sink = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut sink)).await;
        assert!(
            ended.is_ok(),
            "hostile input {index} left its connection open"
        );
        // The bystander session is unaffected.
        bystander
            .execute(&format!("INSERT INTO t VALUES ({index})"), &[])
            .await
            .unwrap_or_else(|error| {
                panic!("the other session broke after hostile input {index}: {error}")
            });
    }
    all_alive(&mut cluster);
    let rows = bystander
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), hostile.len() as i64);
}

/// One HTTP/1.1 request with extra header lines: (status code, body).
async fn http_request(addr: &str, method: &str, target: &str, headers: &[String]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers.iter().map(|line| format!("{line}\r\n")).collect();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response))
        .await
        .expect("the node answers")
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// `paxsql ARGS…` with extra environment variables.
fn paxsql(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(paxsql_bin())
        .args(args)
        .env_remove("PAXSQL_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run paxsql")
}

/// The instance of the newest checkpoint of group main on node `id`, if any.
async fn newest_checkpoint(cluster: &Cluster, id: u32) -> Option<u64> {
    let status = cluster.status(id).await.expect("status");
    status["groups"]["main"]["checkpoints"]["newest_checkpoint"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_port_refuses_forwarding_without_the_secret_and_admin_calls_without_the_token() {
    use paxsql_proxy::forward::auth::ForwardAuth;
    use paxsql_proxy::forward::frame::{read_frame, write_frame};
    use paxsql_proxy::forward::{MAGIC, PROTOCOL_VERSION};
    use paxsql_schema::{forward_request::Kind, ForwardRequest, ForwardStatement, ForwardWrite};

    // Every node has the same secret.
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret_path = secret_dir.path().join("cluster-secret");
    std::fs::write(&secret_path, b"a shared secret of the forwarding test").expect("secret");
    let secret_flag = secret_path.display().to_string();
    // And the same admin token.
    let token = "7f3c9a0e5b1d4c2a8e6f";
    let token_path = secret_dir.path().join("admin-token");
    std::fs::write(&token_path, format!("{token}\n")).expect("token");
    let token_flag = token_path.display().to_string();
    // A token alone would leave forwarded SQL and checkpoint streams on the same port open:
    // such a node refuses to start, before it touches its data dir.
    let lone_dir = secret_dir.path().join("token-only-node");
    let lone_data = lone_dir.display().to_string();
    let refused = paxsql(
        &[
            "node",
            "--id",
            "1",
            "--data-dir",
            &lone_data,
            "--sql",
            "127.0.0.1:0",
            "--peer",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1",
            "--admin-token-file",
            &token_flag,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("--admin-token-file needs --cluster-secret-file"),
        "a token without a secret must stop the node: {stderr}"
    );
    assert!(!lone_dir.exists(), "nothing written before the refusal");
    let (mut cluster, master) = Cluster::start_elected(
        3,
        &[
            "--cluster-secret-file",
            &secret_flag,
            "--admin-token-file",
            &token_flag,
        ],
    )
    .await
    .expect("cluster starts");
    let follower = if master == 1 { 2 } else { 1 };

    // Writes through a follower are forwarded over an authenticated connection and succeed.
    let through_follower = connect(&cluster.nodes[(follower - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect to a follower");
    through_follower
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create through the follower");
    through_follower
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .expect("write through the follower");

    // A raw forwarding connection to the master's HTTP port that skips the proof: the master
    // sends its challenge, then a refusal naming the fix, and closes.
    let http_addr = cluster.nodes[(master - 1) as usize].http_addr();
    let mut stream = TcpStream::connect(&http_addr).await.expect("connect");
    let mut greeting = MAGIC.to_vec();
    greeting.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    stream.write_all(&greeting).await.expect("greet");
    let request = ForwardRequest {
        request_id: 1,
        group: "main".into(),
        kind: Some(Kind::Write(ForwardWrite {
            statements: vec![ForwardStatement {
                sql: "INSERT INTO t VALUES (666)".into(),
                params: Vec::new(),
            }],
        })),
    };
    write_frame(&mut stream, &request).await.expect("send");
    let exchange = tokio::time::timeout(Duration::from_secs(15), async {
        let challenge: Option<ForwardAuth> = read_frame(&mut stream).await.expect("challenge");
        let refusal: Option<ForwardAuth> = read_frame(&mut stream).await.expect("refusal");
        let after: Option<ForwardAuth> = read_frame(&mut stream).await.unwrap_or(None);
        (challenge, refusal, after)
    })
    .await
    .expect("the master answers and closes");
    let (challenge, refusal, after) = exchange;
    assert!(challenge.expect("a challenge").refusal.is_none());
    let reason = refusal
        .and_then(|frame| frame.refusal)
        .expect("a refusal")
        .message;
    assert!(
        reason.contains("the follower sent no proof") && reason.contains("--cluster-secret-file"),
        "{reason}"
    );
    assert!(after.is_none(), "the master closes after refusing");

    // The refused write never ran; the forwarded one did.
    let on_master = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect to the master");
    let ids: Vec<i64> = on_master
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, vec![1]);

    // An admin call without the token is refused before it runs: no checkpoint is taken.
    // (Checkpoints are named by instance: a write first makes any new one visible.)
    on_master
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .expect("write");
    let before = newest_checkpoint(&cluster, master).await;
    let (status, body) = http_request(&http_addr, "POST", "/admin/checkpoint", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--admin-token-file"), "{body}");
    let wrong = [format!("Authorization: Bearer not-{token}")];
    let (status, _) = http_request(&http_addr, "POST", "/admin/checkpoint", &wrong).await;
    assert_eq!(status, 403);
    assert_eq!(newest_checkpoint(&cluster, master).await, before);
    // With the token (raw, then through `paxsql admin` with the environment variable): taken.
    let right = [format!("Authorization: Bearer {token}")];
    let (status, body) = http_request(&http_addr, "POST", "/admin/checkpoint", &right).await;
    assert_eq!(status, 200, "{body}");
    let taken_raw = newest_checkpoint(&cluster, master).await;
    assert!(taken_raw > before, "{taken_raw:?} after {before:?}");
    on_master
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .expect("write");
    let admin = ["admin", "checkpoint", "--http", &http_addr];
    let refused = paxsql(&admin, &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("PAXSQL_ADMIN_TOKEN"),
        "{stderr}"
    );
    assert_eq!(newest_checkpoint(&cluster, master).await, taken_raw);
    let taken = paxsql(&admin, &[("PAXSQL_ADMIN_TOKEN", token)]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(newest_checkpoint(&cluster, master).await > taken_raw);

    // The checkpoint stream: refused without a proof of the cluster secret; a peer's proof
    // (the header the bootstrap fetcher sends) is accepted without the token.
    use paxsql_replicator::service::checkpoint_stream::{
        peer_proof_header, unix_ms_now, PeerIdentity, PEER_PROOF_HEADER,
    };
    let stream_target = "/checkpoint/stream?group=main&instance=0&offset=0&version=2";
    let (status, body) = http_request(&http_addr, "GET", stream_target, &[]).await;
    assert_eq!(status, 401, "{body}");
    let peer = PeerIdentity {
        node_id: follower,
        secret: std::sync::Arc::from(&b"a shared secret of the forwarding test"[..]),
    };
    let proof = [format!(
        "{PEER_PROOF_HEADER}: {}",
        peer_proof_header(&peer, stream_target, unix_ms_now())
    )];
    assert_eq!(
        http_request(&http_addr, "GET", stream_target, &proof)
            .await
            .0,
        200
    );

    // `paxsql backup` through a follower: refused with the fix without the token, works with it.
    let follower_http = cluster.nodes[(follower - 1) as usize].http_addr();
    let file = secret_dir.path().join("backup.sqlite");
    let file_arg = file.display().to_string();
    let refused = paxsql(&["backup", "--http", &follower_http, &file_arg], &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("--admin-token-file"),
        "{stderr}"
    );
    assert!(!file.exists());
    let backed_up = paxsql(
        &[
            "backup",
            "--http",
            &follower_http,
            "--admin-token-file",
            &token_flag,
            &file_arg,
        ],
        &[],
    );
    assert!(
        backed_up.status.success(),
        "{}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    assert!(file.exists());
    all_alive(&mut cluster);
}
