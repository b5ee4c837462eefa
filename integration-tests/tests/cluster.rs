//! A running three-node cluster of real `paxsql node` processes: replication, failover,
//! restarts and deterministic replay, checked through real PostgreSQL clients.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paxsql_integration_tests::sql::{connect, connect_local, table_hash, table_rows};
use paxsql_integration_tests::Cluster;

const LEASE_MS: u64 = 3_000;

/// Every running node's copy of `table` (read locally) must be identical; returns the row count.
async fn assert_replicas_identical(cluster: &Cluster, table: &str) -> usize {
    let mut hashes = Vec::new();
    for node in cluster.nodes.iter().filter(|node| node.is_running()) {
        let client = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect");
        hashes.push((node.id, table_hash(&client, table).await.expect("hash")));
    }
    let first = hashes[0].1;
    for (id, hash) in &hashes {
        assert_eq!(
            *hash, first,
            "node {id}'s copy of {table} differs from node {}'s: {hashes:?}",
            hashes[0].0
        );
    }
    first.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_1000_rows_identically() {
    // Phase 1: a cluster elects a master.
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let client = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");

    // Phase 2: 1,000 rows written on the master, from 10 concurrent clients.
    client
        .batch_execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, payload BLOB)")
        .await
        .expect("create table");
    let mut writers = Vec::new();
    for writer in 0..10 {
        let addr = cluster.nodes[(master - 1) as usize].sql_addr();
        writers.push(tokio::spawn(async move {
            let client = connect(&addr, "main").await.expect("connect");
            for row in 0..100 {
                let id = writer * 100 + row;
                client
                    .execute(
                        "INSERT INTO items (id, name, price, payload) VALUES ($1, $2, $3, $4)",
                        &[
                            &(id as i64),
                            &format!("item-{id}"),
                            &(id as f64 * 1.5),
                            &vec![id as u8; 8],
                        ],
                    )
                    .await
                    .expect("insert acknowledged");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer finishes");
    }

    // Phase 3: every replica holds exactly the same 1,000 rows.
    cluster.settle().await;
    assert_eq!(assert_replicas_identical(&cluster, "items").await, 1000);
}

/// Inserts rows with increasing ids through `addr` until `stop`, recording acknowledged ids.
async fn write_until(
    addr: String,
    first_id: i64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
) {
    let mut id = first_id;
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&addr, "main").await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let connection = client.as_ref().expect("connected");
        match connection
            .execute("INSERT INTO log (id) VALUES ($1)", &[&id])
            .await
        {
            Ok(_) => acked.lock().expect("lock").push((id, Instant::now())),
            Err(error) if error.is_closed() => client = None,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        // Every id is tried once: an unknown outcome (40003) must not be retried under the
        // same id, or a duplicate would be reported as "acknowledged twice".
        id += 1;
    }
}

async fn ids_on(addr: &str) -> BTreeSet<i64> {
    let client = connect_local(addr, "main").await.expect("connect");
    table_rows(&client, "log")
        .await
        .expect("read log")
        .into_iter()
        .map(|row| row[0].as_deref().expect("id").parse().expect("integer id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_master_under_write_load_fails_over_and_loses_no_acknowledged_row() {
    // Phase 1: a cluster under write load from clients on every node.
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    connect(&cluster.nodes[0].sql_addr(), "main")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE log (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        for lane in 0..2 {
            let first_id = ((index * 2 + lane) as i64) * 1_000_000;
            writers.push(tokio::spawn(write_until(
                node.sql_addr(),
                first_id,
                stop.clone(),
                acked.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 2: kill -9 the master; a new master must accept writes within lease + 2 s.
    let killed_at = Instant::now();
    cluster.node(master).kill9();
    let deadline = killed_at + Duration::from_millis(LEASE_MS + 2_000);
    let first_ack_after = loop {
        let after = acked
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at > killed_at);
        if let Some(at) = after {
            break at;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "no write acknowledged after the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let unavailable = first_ack_after - killed_at;
    println!(
        "failover: first acknowledged write {} ms after kill -9 of the master",
        unavailable.as_millis()
    );
    assert!(
        unavailable <= Duration::from_millis(LEASE_MS + 2_000),
        "failover took {unavailable:?}, over lease + 2 s\n{}",
        cluster.logs_tail()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer stops");
    }

    // Phase 3: no acknowledged row is missing on any running node, nor on the old master once
    // it restarts and catches up.
    cluster.settle().await;
    let acked: BTreeSet<i64> = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert!(
        acked.len() > 50,
        "the load acknowledged only {} writes",
        acked.len()
    );
    for node in cluster.nodes.iter().filter(|node| node.is_running()) {
        let present = ids_on(&node.sql_addr()).await;
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "node {} lacks acknowledged ids {missing:?}",
            node.id
        );
    }
    cluster
        .node(master)
        .start()
        .expect("restart the old master");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.settle().await;
    let present = ids_on(&cluster.nodes[(master - 1) as usize].sql_addr()).await;
    assert!(
        acked.is_subset(&present),
        "the restarted old master lacks acknowledged rows"
    );
    assert_replicas_identical(&cluster, "log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_under_load_catches_up_and_a_full_restart_keeps_the_data() {
    // Phase 1: load through the master while one follower is down for a while.
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let follower = (1..=3).find(|id| *id != master).expect("a follower");
    let master_addr = cluster.nodes[(master - 1) as usize].sql_addr();
    connect(&master_addr, "main")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE log (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_until(
        master_addr.clone(),
        1,
        stop.clone(),
        acked.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.node(follower).kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 2: the follower restarts while writes continue, and catches up.
    cluster.node(follower).start().expect("restart follower");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer stops");
    cluster.settle().await;
    let rows = assert_replicas_identical(&cluster, "log").await;
    let acked_count = acked.lock().expect("lock").len();
    assert!(
        rows >= acked_count && acked_count > 20,
        "rows {rows}, acknowledged {acked_count}"
    );

    // Phase 3: the whole cluster stops and starts again; nothing is lost.
    for id in 1..=3 {
        cluster.node(id).stop();
    }
    for id in 1..=3 {
        cluster.node(id).start().expect("restart");
    }
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("a master after restart");
    cluster.settle().await;
    assert_eq!(assert_replicas_identical(&cluster, "log").await, rows);
    // And it still takes writes.
    connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect")
        .execute("INSERT INTO log (id) VALUES (-1)", &[])
        .await
        .expect("write after full restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_deterministic_functions_replay_byte_identically_on_every_replica() {
    // Phase 1: rows written through a follower with every function whose value the master pins.
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let follower = (1..=3).find(|id| *id != master).expect("a follower");
    let client = connect(&cluster.nodes[(follower - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");
    client
        .batch_execute(
            "CREATE TABLE facts (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, dt TEXT, ts TEXT, d TEXT, t TEXT, \
               ue INTEGER, jd REAL, created TEXT DEFAULT CURRENT_TIMESTAMP, noise INTEGER DEFAULT (random()));
             CREATE TABLE audit (fact_id INTEGER, at TEXT, salt BLOB);
             CREATE TRIGGER facts_audit AFTER INSERT ON facts BEGIN
               INSERT INTO audit VALUES (new.id, datetime('now'), randomblob(8));
             END;",
        )
        .await
        .expect("schema");
    for _ in 0..20 {
        client
            .batch_execute(
                "INSERT INTO facts (r, b, dt, ts, d, t, ue, jd) VALUES (random(), randomblob(16), datetime('now'), \
                 CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, unixepoch(), julianday('now'))",
            )
            .await
            .expect("insert");
    }

    // Phase 2: every replica holds the same bytes, read back with `local` consistency.
    cluster.settle().await;
    let mut copies = Vec::new();
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect");
        let rows = local
            .simple_query(
                "SELECT group_concat(hex(r)||hex(b)||dt||ts||d||t||ue||hex(jd)||created||noise, '|') FROM facts \
                 UNION ALL SELECT group_concat(fact_id||at||hex(salt), '|') FROM audit",
            )
            .await
            .expect("read");
        copies.push(format!("{rows:?}"));
    }
    assert!(
        copies.iter().all(|copy| copy == &copies[0]),
        "replicas differ:\n{copies:#?}"
    );
    assert!(
        copies[0].len() > 2000,
        "expected real content, got {}",
        copies[0]
    );
}
