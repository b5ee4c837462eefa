//! Checkpoints and log truncation on real processes: a follower that was away while the
//! cluster chose thousands of instances (and truncated its logs) comes back by checkpoint.

use std::time::{Duration, Instant};

use paxsql_integration_tests::cluster::http_get_json;
use paxsql_integration_tests::sql::{connect, connect_local, table_hash};
use paxsql_integration_tests::Cluster;

const INSTANCES_WHILE_AWAY: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_follower_is_bootstrapped_by_checkpoint_after_3000_instances() {
    // Small log segments, so the log really is cut after a few thousand small instances (the
    // log is truncated in whole segments).
    std::env::set_var("PAXSQL_LOG_SEGMENT_BYTES", "65536");
    let (mut cluster, master) = Cluster::start_elected(
        3,
        &[
            "--checkpoint-interval-instances",
            "500",
            "--log-hold-instances",
            "100",
        ],
    )
    .await
    .expect("cluster starts");
    let follower = if master == 1 { 2 } else { 1 };
    let master_sql = cluster.nodes[(master - 1) as usize].sql_addr();
    let master_http = cluster.nodes[(master - 1) as usize].http_addr();
    let client = connect(&master_sql, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE events (id INTEGER PRIMARY KEY, batch INTEGER, body TEXT)")
        .await
        .expect("create table");

    // Phase 1: the follower stops; the cluster chooses at least 3,000 more instances.
    cluster.node(follower).stop();
    let start = cluster.committed_instance().await;
    let started = Instant::now();
    let mut batch = 0u64;
    while cluster.committed_instance().await < start + INSTANCES_WHILE_AWAY {
        // One autocommit unit per statement list round trip: each becomes an instance.
        let mut sql = String::new();
        for _ in 0..25 {
            batch += 1;
            sql.push_str(&format!(
                "INSERT INTO events (batch, body) VALUES ({batch}, 'row-{batch}-a'), ({batch}, 'row-{batch}-b');"
            ));
            client.batch_execute(&sql).await.expect("insert");
            sql.clear();
        }
    }
    eprintln!(
        "chose {} instances in {:?}",
        cluster.committed_instance().await - start,
        started.elapsed()
    );

    // Phase 2: the running nodes took checkpoints and truncated their logs below them.
    let status = http_get_json(&master_http, "/status")
        .await
        .expect("status");
    let newest = status["groups"]["main"]["checkpoints"]["newest_checkpoint"]
        .as_u64()
        .expect("the master has a checkpoint");
    assert!(
        newest >= start + 1_000,
        "a checkpoint every 500 instances: newest {newest}, start {start}"
    );
    let master_log = cluster.nodes[(master - 1) as usize].log();
    assert!(
        master_log.contains("truncated the log below a checkpoint"),
        "the master truncated its log"
    );

    // Phase 3: the follower restarts, is bootstrapped by checkpoint and catches up.
    cluster.node(follower).start().expect("restart");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(40))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs_tail()));
    let follower_log = cluster.nodes[(follower - 1) as usize].log();
    assert!(
        follower_log.contains("bootstrapped by checkpoint"),
        "the follower's log says it was bootstrapped by checkpoint:\n{}",
        cluster.logs_tail()
    );
    let follower_status = http_get_json(
        &cluster.nodes[(follower - 1) as usize].http_addr(),
        "/status",
    )
    .await
    .expect("status");
    assert_eq!(
        follower_status["groups"]["main"]["bootstrap"]["state"], "installed",
        "/status shows the bootstrap: {follower_status}"
    );

    // Phase 4: its content equals the master's.
    let master_client = connect_local(&master_sql, "main").await.expect("connect");
    let follower_client = connect_local(&cluster.nodes[(follower - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");
    let expected = table_hash(&master_client, "events").await.expect("hash");
    let got = table_hash(&follower_client, "events").await.expect("hash");
    assert_eq!(expected.1 as u64, batch * 2, "every row is there");
    assert_eq!(got, expected, "the bootstrapped follower equals the master");

    // Phase 5: it keeps learning onward.
    client
        .batch_execute("INSERT INTO events (batch, body) VALUES (0, 'after')")
        .await
        .expect("insert after");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .expect("learns onward");
    let got = table_hash(&follower_client, "events").await.expect("hash");
    let expected = table_hash(&master_client, "events").await.expect("hash");
    assert_eq!(got, expected);
}
