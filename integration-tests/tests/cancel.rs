//! PostgreSQL cancel requests against a real three-node cluster: a runaway read is canceled
//! (57014) on the master, through a follower (forwarded to the master) and on a follower's own
//! replica, and the session goes on; wrong keys do nothing; a cancel racing an autocommit
//! INSERT never turns a write into "canceled"; psql's Ctrl-C (SIGINT) works.

use std::time::{Duration, Instant};

use paxsql_integration_tests::sql::{connect, connect_local};
use paxsql_integration_tests::Cluster;
use tokio::io::AsyncWriteExt;
use tokio_postgres::{Client, NoTls};

/// Counts forever: only a cancel (or a closed session) ends it.
const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
/// How long a runaway read runs before it is canceled.
const RUNNING_BEFORE_CANCEL: Duration = Duration::from_millis(400);
/// The brief's promise: canceled within this after the cancel is sent.
const CANCEL_TAKES_AT_MOST: Duration = Duration::from_secs(2);

fn code(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}

async fn assert_session_answers_select_1(client: &Client, after: &str) {
    let rows = client
        .simple_query("SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("the session died after {after}: {e}"));
    assert!(
        rows.iter().any(|message| matches!(
            message,
            tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("1")
        )),
        "SELECT 1 after {after}"
    );
}

/// How the runaway read is sent.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Simple,
    Extended,
}

/// Runs the runaway read, cancels it after a while, and checks 57014 came back in time.
async fn runaway_is_canceled(client: &Client, protocol: Protocol, label: &str) {
    let token = client.cancel_token();
    let cancel_sent = async {
        tokio::time::sleep(RUNNING_BEFORE_CANCEL).await;
        token.cancel_query(NoTls).await.expect("send the cancel");
        Instant::now()
    };
    let answered = async {
        let outcome = match protocol {
            Protocol::Simple => client.simple_query(RUNAWAY).await.map(|_| ()),
            Protocol::Extended => client.query(RUNAWAY, &[]).await.map(|_| ()),
        };
        (outcome, Instant::now())
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(answered, cancel_sent)
    });
    let ((outcome, answered_at), sent_at) = answer
        .await
        .unwrap_or_else(|_| panic!("{label}: the runaway read was not canceled within 20 s"));
    let error = outcome.expect_err("a runaway read never finishes on its own");
    assert_eq!(code(&error), "57014", "{label}: {error}");
    let message = error.as_db_error().map(|db| db.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("canceling statement due to user request"),
        "{label}"
    );
    let took = answered_at.saturating_duration_since(sent_at);
    assert!(
        took < CANCEL_TAKES_AT_MOST,
        "{label}: canceled {took:?} after the cancel"
    );
    assert_session_answers_select_1(client, label).await;
}

/// A CancelRequest with a made-up key for every process id a session here can have (pgwire
/// numbers sessions from 100000 per node): none of them may cancel anything.
async fn send_wrong_key_cancels(addr: &str) {
    for pid in 100_000i32..100_040 {
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect for a cancel");
        let mut request = Vec::with_capacity(16);
        request.extend_from_slice(&16u32.to_be_bytes());
        request.extend_from_slice(&80_877_102u32.to_be_bytes());
        request.extend_from_slice(&pid.to_be_bytes());
        request.extend_from_slice(&0x5eed_u32.to_be_bytes());
        socket.write_all(&request).await.expect("send a cancel");
        let _ = socket.shutdown().await;
    }
}

/// Wrong keys sent while the runaway read runs leave it running; the right key then stops it.
async fn wrong_keys_do_nothing(client: &Client, addr: &str) {
    let token = client.cancel_token();
    let answered = async {
        let outcome = client.simple_query(RUNAWAY).await;
        (outcome, Instant::now())
    };
    let cancels = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_wrong_key_cancels(addr).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let right_key_at = Instant::now();
        token.cancel_query(NoTls).await.expect("send the cancel");
        right_key_at
    };
    let both = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(answered, cancels)
    });
    let ((outcome, answered_at), right_key_at) =
        both.await.expect("the right key cancels the read");
    assert!(
        answered_at >= right_key_at,
        "the runaway read ended before the right key was sent: {outcome:?}"
    );
    let error = outcome.expect_err("canceled by the right key");
    assert_eq!(code(&error), "57014", "{error}");
    assert_session_answers_select_1(client, "wrong keys, then the right one").await;
}

/// Autocommit INSERTs, each raced by a cancel: a write is never reported canceled, and its
/// row exists exactly when it answered OK.
async fn cancels_never_cancel_writes(client: &Client, checker: &Client, label: &str, base: i64) {
    for attempt in 0..20i64 {
        let id = base + attempt;
        let token = client.cancel_token();
        let delay = Duration::from_micros((attempt as u64 % 5) * 700);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let (outcome, ()) = tokio::join!(
            client.execute("INSERT INTO raced VALUES ($1)", &params),
            async {
                tokio::time::sleep(delay).await;
                token.cancel_query(NoTls).await.expect("send the cancel");
            }
        );
        if let Err(error) = &outcome {
            assert_ne!(
                code(error),
                "57014",
                "{label}: a write was reported canceled"
            );
            assert_ne!(code(error), "40003", "{label}: {error}");
        }
        let present: i64 = checker
            .query_one("SELECT count(*) FROM raced WHERE id = $1", &[&id])
            .await
            .expect("check the row")
            .get(0);
        assert_eq!(
            present == 1,
            outcome.is_ok(),
            "{label}: insert {id} answered {outcome:?} but the row count is {present}"
        );
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / ticks_per_second
}

/// A canceled read must really stop, not only stop being waited for: a runaway read still
/// running anywhere would burn about a core on that node.
async fn assert_nodes_idle(cluster: &Cluster, label: &str) {
    let pids: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|node| node.pid().expect("node runs"))
        .collect();
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (pid, before) in pids.iter().zip(before) {
        let used = cpu_seconds(*pid) - before;
        assert!(
            used < 0.3,
            "{label}: node process {pid} used {used:.2} CPU s in 1 s: a canceled read still runs"
        );
    }
}

/// psql's Ctrl-C sends a cancel request for the running query. `node_pids`: the cluster's
/// nodes (the read may run on another node than the one psql talks to).
fn psql_runaway_interrupted_by_sigint(port: u16, node_pids: &[u32]) {
    let nodes_cpu = || node_pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
    let nodes_cpu_before = nodes_cpu();
    let child = std::process::Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "paxsql",
            "-d",
            "main",
            "-c",
            RUNAWAY,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql is installed");
    // SIGINT only once the runaway read runs (so psql is past its startup and has
    // its Ctrl-C handler): a fixed pause lost that race on a busy machine, and psql died of
    // the signal itself.
    let waiting_since = Instant::now();
    while nodes_cpu() - nodes_cpu_before < 0.2 {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(10),
            "the runaway read never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: signals the psql child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "signal psql");
    let started = Instant::now();
    let output = child.wait_with_output().expect("psql ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql after SIGINT: status {}, stderr: {stderr}",
        output.status
    );
    assert!(
        started.elapsed() < CANCEL_TAKES_AT_MOST,
        "psql took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_requests_stop_runaway_reads_and_never_writes() {
    let (cluster, master) = Cluster::start_elected(3, &["--lease-ms", "1000"])
        .await
        .expect("cluster starts");
    let follower = (1..=3).find(|id| *id != master).expect("a follower");
    let node_addr = |id: u32| cluster.nodes[(id - 1) as usize].sql_addr();

    let on_master = connect(&node_addr(master), "main").await.expect("master");
    runaway_is_canceled(&on_master, Protocol::Simple, "on the master").await;
    runaway_is_canceled(&on_master, Protocol::Extended, "on the master, extended").await;
    let via_follower = connect(&node_addr(follower), "main")
        .await
        .expect("follower");
    runaway_is_canceled(&via_follower, Protocol::Simple, "forwarded by a follower").await;
    let follower_local = connect_local(&node_addr(follower), "main")
        .await
        .expect("follower, local reads");
    runaway_is_canceled(&follower_local, Protocol::Simple, "on a follower's replica").await;
    // Canceled twice in a row: nothing stale is left behind by the first.
    runaway_is_canceled(
        &via_follower,
        Protocol::Extended,
        "forwarded by a follower, again, extended",
    )
    .await;
    assert_nodes_idle(&cluster, "after the canceled runaway reads").await;

    wrong_keys_do_nothing(&on_master, &node_addr(master)).await;

    on_master
        .batch_execute("CREATE TABLE raced (id INTEGER PRIMARY KEY)")
        .await
        .expect("create table");
    cancels_never_cancel_writes(&on_master, &via_follower, "on the master", 0).await;
    cancels_never_cancel_writes(&via_follower, &on_master, "forwarded by a follower", 1000).await;

    let port = node_addr(follower)
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("a port");
    let node_pids: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|node| node.pid().expect("node runs"))
        .collect();
    tokio::task::spawn_blocking(move || psql_runaway_interrupted_by_sigint(port, &node_pids))
        .await
        .expect("psql check");
}
