//! Membership changes on real processes: a fourth node joins from empty and serves local reads
//! equal to the master's; then the master is removed and a remaining member takes over, while a
//! background writer measures the longest pause between acknowledged writes. That cluster has a
//! cluster secret and an admin token: the admin calls send the token and node 4's checkpoint
//! fetch proves the secret (the other tests run without either, as before).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxsql_integration_tests::cluster::http_get_json;
use paxsql_integration_tests::sql::{connect, connect_local, table_hash};
use paxsql_integration_tests::{paxsql_bin, Cluster};

const LEASE_MS: u64 = 3_000;
/// Enough instances for a few checkpoints and a truncated log before node 4 joins.
const SEED_BATCHES: usize = 600;

/// `paxsql admin ARGS…`; panics with the output when it fails.
fn admin(args: &[&str]) -> String {
    let output = std::process::Command::new(paxsql_bin())
        .arg("admin")
        .args(args)
        .output()
        .expect("run paxsql admin");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "paxsql admin {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Writes one row after another through `addr` until `stop`; answers the longest time between
/// two acknowledged writes and how many were acknowledged. Errors (a master change) are retried
/// on a fresh connection.
async fn write_until(addr: String, stop: Arc<AtomicBool>) -> (Duration, u64) {
    let mut client = None;
    let mut last_ack = Instant::now();
    let mut longest = Duration::ZERO;
    let mut acknowledged = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&addr, "main").await.ok();
        }
        let Some(open) = &client else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sql = format!("INSERT INTO ticks (n) VALUES ({acknowledged})");
        let insert = open.batch_execute(&sql);
        match tokio::time::timeout(Duration::from_secs(5), insert).await {
            Ok(Ok(())) => {
                longest = longest.max(last_ack.elapsed());
                last_ack = Instant::now();
                acknowledged += 1;
            }
            _ => {
                client = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (longest.max(last_ack.elapsed()), acknowledged)
}

/// `changed` of group main in an admin answer.
fn changed(answer: &str) -> Option<bool> {
    let value: serde_json::Value = serde_json::from_str(answer).ok()?;
    value["main"]["changed"].as_bool()
}

async fn group_status(cluster: &Cluster, id: u32) -> serde_json::Value {
    let status = http_get_json(&cluster.nodes[(id - 1) as usize].http_addr(), "/status")
        .await
        .expect("status");
    status["groups"]["main"].clone()
}

/// Node `id`'s status of `main` once every node applied what is chosen now.
async fn caught_up_status(cluster: &Cluster, id: u32) -> serde_json::Value {
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs_tail()));
    group_status(cluster, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fourth_node_joins_then_master_is_removed_without_a_long_write_pause() {
    // Small log segments and frequent checkpoints, so the log is truncated before node 4 joins
    // and node 4 must be bootstrapped by checkpoint.
    std::env::set_var("PAXSQL_LOG_SEGMENT_BYTES", "65536");
    let lease = LEASE_MS.to_string();
    // A cluster secret and an admin token (node 4 gets the same flags): the admin calls send
    // the token, and node 4's checkpoint fetch proves the secret instead.
    let credentials = tempfile::tempdir().expect("tempdir");
    let secret_file = credentials.path().join("cluster-secret");
    std::fs::write(&secret_file, "membership test secret").expect("secret");
    let token_file = credentials.path().join("admin-token");
    std::fs::write(&token_file, "membership-test-token\n").expect("token");
    let (secret_file, token_file) = (
        secret_file.display().to_string(),
        token_file.display().to_string(),
    );
    let flags = [
        "--lease-ms",
        &lease,
        "--checkpoint-interval-instances",
        "100",
        "--log-hold-instances",
        "20",
        "--cluster-secret-file",
        &secret_file,
        "--admin-token-file",
        &token_file,
    ];
    let mut cluster = Cluster::start(3, &flags).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let master_node = &cluster.nodes[(master - 1) as usize];
    let (master_sql, master_http) = (master_node.sql_addr(), master_node.http_addr());
    let survivor = if master == 1 { 2 } else { 1 };
    let client = connect(&master_sql, "main").await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE seed (id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE ticks (id INTEGER PRIMARY KEY, n INTEGER)",
        )
        .await
        .expect("create tables");
    for batch in 0..SEED_BATCHES {
        client
            .batch_execute(&format!(
                "INSERT INTO seed (body) VALUES ('a-{batch}'), ('b-{batch}')"
            ))
            .await
            .expect("seed");
    }

    // The writer goes through a node that stays (a follower forwards to whoever is master).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        cluster.nodes[(survivor - 1) as usize].sql_addr(),
        stop.clone(),
    ));

    // Add node 4 through the CLI, then start it empty with --join.
    let joiner = cluster.add_node(&["--join"]);
    let joiner_peer = format!("127.0.0.1:{}", joiner.peer_port);
    let answer = admin(&[
        "add-member",
        "--admin-token-file",
        &token_file,
        "--http",
        &master_http,
        "--id",
        "4",
        "--peer",
        &joiner_peer,
    ]);
    assert_eq!(changed(&answer), Some(true), "add-member: {answer}");
    cluster.node(4).start().expect("start node 4");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs_tail()));
    let joined = group_status(&cluster, 4).await;
    assert_eq!(
        joined["members"],
        serde_json::json!([1, 2, 3, 4]),
        "{joined}"
    );
    assert_eq!(joined["may_vote"], true, "{joined}");
    let master_local = connect_local(&master_sql, "main").await.expect("connect");
    let joiner_local = connect_local(&cluster.nodes[3].sql_addr(), "main")
        .await
        .expect("node 4 serves SQL");
    let expected = table_hash(&master_local, "seed").await.expect("hash");
    assert_eq!(
        expected.1,
        2 * SEED_BATCHES,
        "every seed row is on the master"
    );
    assert!(
        cluster.nodes[3]
            .log()
            .contains("bootstrapped by checkpoint"),
        "node 4 joined from a truncated log, by checkpoint:\n{}",
        cluster.logs_tail()
    );
    assert_eq!(
        table_hash(&joiner_local, "seed").await.expect("hash"),
        expected,
        "node 4 serves local reads equal to the master's"
    );

    // Remove the master: it stops serving and a remaining member takes over at once.
    let removed_at = Instant::now();
    let answer = admin(&[
        "remove-member",
        "--admin-token-file",
        &token_file,
        "--http",
        &master_http,
        "--node",
        &master.to_string(),
    ]);
    assert_eq!(changed(&answer), Some(true), "remove-member: {answer}");
    cluster.node(master).stop();
    let new_master = cluster
        .wait_for_master(Duration::from_secs(20))
        .await
        .expect("a new master");
    assert_ne!(new_master, master);
    eprintln!(
        "node {new_master} is master {:?} after node {master} was removed",
        removed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (longest, acknowledged) = writer.await.expect("writer");
    eprintln!("{acknowledged} writes acknowledged; longest pause {longest:?}");
    let one_election = Duration::from_millis(LEASE_MS + 2_000);
    assert!(
        acknowledged > 10,
        "the writer made progress: {acknowledged}"
    );
    assert!(
        longest <= one_election,
        "writes stopped for {longest:?}, longer than one election ({one_election:?})\n{}",
        cluster.logs_tail()
    );

    // The remaining members agree, with node 4 voting among them.
    let status = group_status(&cluster, new_master).await;
    let mut remaining: Vec<u64> = vec![1, 2, 3, 4];
    remaining.retain(|id| *id != u64::from(master));
    assert_eq!(status["members"], serde_json::json!(remaining), "{status}");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .expect("every remaining node applies");
    let new_master_local =
        connect_local(&cluster.nodes[(new_master - 1) as usize].sql_addr(), "main")
            .await
            .expect("connect");
    let joiner_local = connect_local(&cluster.nodes[3].sql_addr(), "main")
        .await
        .expect("connect");
    assert_eq!(
        table_hash(&joiner_local, "ticks").await.expect("hash"),
        table_hash(&new_master_local, "ticks").await.expect("hash"),
        "node 4 equals the new master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_that_lost_its_log_only_learns_until_replaced() {
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let master_node = &cluster.nodes[(master - 1) as usize];
    let (master_sql, master_http) = (master_node.sql_addr(), master_node.http_addr());
    let client = connect(&master_sql, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        .await
        .expect("create table");

    // A follower's Paxos log alone is moved aside (its replica stays): the replica must not let
    // it vote with a blank acceptor.
    let forgetful = if master == 1 { 2 } else { 1 };
    client
        .batch_execute("INSERT INTO t (body) VALUES ('before the loss')")
        .await
        .expect("insert");
    cluster.settle().await;
    cluster.node(forgetful).stop();
    let log_dir = cluster.nodes[(forgetful - 1) as usize]
        .data_dir
        .join("main")
        .join("log");
    std::fs::rename(&log_dir, log_dir.with_extension("aside")).expect("move the log aside");
    cluster.node(forgetful).start().expect("restart");
    let status = caught_up_status(&cluster, forgetful).await;
    assert_eq!(
        status["may_vote"], false,
        "its log is gone though its replica has data: {status}"
    );
    // Its log holds records again now, yet the loss is remembered across a restart.
    cluster.node(forgetful).stop();
    cluster.node(forgetful).start().expect("restart");
    let status = caught_up_status(&cluster, forgetful).await;
    assert_eq!(status["may_vote"], false, "still not voting: {status}");

    // A follower loses its log and replica (a disk swapped), but keeps node.toml.
    cluster.node(forgetful).stop();
    let group_dir = cluster.nodes[(forgetful - 1) as usize]
        .data_dir
        .join("main");
    std::fs::remove_dir_all(&group_dir).expect("wipe the group dir");
    cluster.node(forgetful).start().expect("restart");
    client
        .batch_execute("INSERT INTO t (body) VALUES ('after the loss')")
        .await
        .expect("the cluster still writes");
    let status = caught_up_status(&cluster, forgetful).await;
    assert_eq!(
        status["may_vote"], false,
        "it forgot its promises: {status}"
    );
    assert!(
        cluster.nodes[(forgetful - 1) as usize]
            .log()
            .contains("forgot its promises"),
        "its log tells the operator what to do"
    );

    // The way back: replace it by a new incarnation started empty with --join.
    cluster.node(forgetful).stop();
    let replacement = cluster.add_node(&["--join"]);
    let replacement_id = replacement.id.to_string();
    let replacement_peer = format!("127.0.0.1:{}", replacement.peer_port);
    let answer = admin(&[
        "replace-member",
        "--http",
        &master_http,
        "--old",
        &forgetful.to_string(),
        "--node",
        &replacement_id,
        "--peer",
        &replacement_peer,
    ]);
    assert_eq!(changed(&answer), Some(true), "replace-member: {answer}");
    cluster.node(4).start().expect("start the replacement");
    client
        .batch_execute("INSERT INTO t (body) VALUES ('after the replacement')")
        .await
        .expect("write");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs_tail()));
    let status = group_status(&cluster, 4).await;
    let mut members: Vec<u64> = vec![1, 2, 3, 4];
    members.retain(|id| *id != u64::from(forgetful));
    assert_eq!(status["members"], serde_json::json!(members), "{status}");
    assert_eq!(status["may_vote"], true, "{status}");
    let replacement_local = connect_local(&cluster.nodes[3].sql_addr(), "main")
        .await
        .expect("connect");
    let master_local = connect_local(&master_sql, "main").await.expect("connect");
    assert_eq!(
        table_hash(&replacement_local, "t").await.expect("hash"),
        table_hash(&master_local, "t").await.expect("hash"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_added_to_running_nodes_forms_and_every_node_votes() {
    // OPERATIONS: "add the group to --groups". The nodes ran before (node.toml exists), but the
    // new group's log is new, not lost: every node must vote in it.
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    for id in 1..=3 {
        cluster.node(id).stop();
        cluster.nodes[(id - 1) as usize].set_flag("--groups", "main,orders");
    }
    for id in 1..=3 {
        cluster.node(id).start().expect("restart with a new group");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let node1 = cluster.nodes[0].sql_addr();
    loop {
        let attempt = async {
            let client = connect(&node1, "orders").await?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS o (id INTEGER PRIMARY KEY); INSERT INTO o DEFAULT VALUES",
                )
                .await?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("orders not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => panic!(
                "the new group never took a write: {error}\n{}",
                cluster.logs_tail()
            ),
        }
    }
    for id in 1..=3 {
        let status = http_get_json(&cluster.nodes[(id - 1) as usize].http_addr(), "/status")
            .await
            .expect("status");
        assert_eq!(
            status["groups"]["orders"]["may_vote"], true,
            "node {id} votes in the new group: {status}"
        );
        assert_eq!(
            status["groups"]["main"]["may_vote"], true,
            "node {id} still votes in main"
        );
    }
}
