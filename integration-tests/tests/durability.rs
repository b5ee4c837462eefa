//! SQLite runs with `synchronous=NORMAL` because the Paxos log is the durable record: a replica
//! whose SQLite file lost its most recent commits (what a power cut can do to an unsynced WAL
//! tail) gets every acknowledged row back from the log when it starts.
//!
//! The other way round: Chosen records are appended without an fsync of their own (one fsync
//! per instance per node), so a crash can leave a replica *ahead* of its log; the node then
//! stands on its replica (a `Meta` record) and rejoins.
//!
//! No writer checkpoints SQLite's WAL: every node's `wal-<group>` thread does (`/metrics`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paxsql_integration_tests::sql::{connect, connect_local, table_rows};
use paxsql_integration_tests::Cluster;

const SQLITE_FILES: [&str; 3] = ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"];

fn sqlite_path(data_dir: &Path, file: &str) -> PathBuf {
    data_dir.join("main").join(file)
}

/// Copies the replica's SQLite files (those that exist) to `to`.
fn save_sqlite(data_dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("snapshot dir");
    for file in SQLITE_FILES {
        let from = sqlite_path(data_dir, file);
        if from.exists() {
            std::fs::copy(&from, to.join(file)).expect("copy sqlite file");
        }
    }
}

/// Puts the saved SQLite files back in place of the current ones (the Paxos log is untouched).
fn restore_sqlite(data_dir: &Path, from: &Path) {
    for file in SQLITE_FILES {
        let _ = std::fs::remove_file(sqlite_path(data_dir, file));
        let saved = from.join(file);
        if saved.exists() {
            std::fs::copy(&saved, sqlite_path(data_dir, file)).expect("restore sqlite file");
        }
    }
}

async fn ids_on(addr: &str) -> BTreeSet<i64> {
    let client = connect_local(addr, "main").await.expect("connect");
    table_rows(&client, "kept")
        .await
        .expect("read kept")
        .into_iter()
        .map(|row| row[0].as_deref().expect("id").parse().expect("integer id"))
        .collect()
}

async fn insert_ids(addr: &str, ids: std::ops::RangeInclusive<i64>) {
    let client = connect(addr, "main").await.expect("connect");
    for id in ids {
        client
            .execute("INSERT INTO kept (id) VALUES ($1)", &[&id])
            .await
            .expect("acknowledged insert");
    }
}

/// A 3-node cluster with an empty table `kept`: the cluster, its master and the master's SQL address.
async fn start_with_kept_table() -> (Cluster, u32, String) {
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let master_addr = cluster.nodes[(master - 1) as usize].sql_addr();
    connect(&master_addr, "main")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE kept (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    (cluster, master, master_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_sqlite_lost_recent_commits_recovers_them_from_the_paxos_log() {
    // Phase 1: a cluster with 50 acknowledged rows; every node is killed and its master's
    // SQLite files at that moment are kept aside (an "old but consistent" file).
    let (mut cluster, master, master_addr) = start_with_kept_table().await;
    insert_ids(&master_addr, 1..=50).await;
    for id in 1..=3 {
        cluster.node(id).kill9();
    }
    let old_master_dir = cluster.nodes[(master - 1) as usize].data_dir.clone();
    let saved = cluster.dir.path().join("saved-sqlite");
    save_sqlite(&old_master_dir, &saved);

    // Phase 2: the cluster restarts and acknowledges 150 more rows.
    let master = restart_all(&mut cluster).await;
    let master_addr = cluster.nodes[(master - 1) as usize].sql_addr();
    insert_ids(&master_addr, 51..=200).await;

    // Phase 3: every node is killed; the old master's SQLite loses the 150 newer commits (its
    // file goes back to phase 1), but its Paxos log keeps them.
    for id in 1..=3 {
        cluster.node(id).kill9();
    }
    restore_sqlite(&old_master_dir, &saved);
    restart_all(&mut cluster).await;
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(30))
        .await
        .expect("replicas catch up");

    // Every node, the rolled-back one included, holds every acknowledged row, read locally.
    let expected: BTreeSet<i64> = (1..=200).collect();
    for node in &cluster.nodes {
        let ids = ids_on(&node.sql_addr()).await;
        assert_eq!(
            ids.len(),
            expected.len(),
            "node {} holds {} rows, expected 200; missing: {:?}",
            node.id,
            ids.len(),
            expected.difference(&ids).collect::<Vec<_>>()
        );
        assert_eq!(ids, expected, "node {}", node.id);
    }
}

/// Rewrites a stopped node's Paxos log without its last `count` Chosen records (every other
/// record, the durable promises included, is kept): what a power cut does to Chosen records
/// appended after the log's last sync, while the SQLite replica kept those instances.
fn drop_last_chosen_records(data_dir: &Path, count: usize) -> Vec<u64> {
    use paxsql_binlog::{FileLog, FileLogOptions, LogStore, RecordKind};
    let log_dir = data_dir.join("main").join("log");
    let records = {
        let (log, _) = FileLog::open(&log_dir, FileLogOptions::default()).expect("open the log");
        let (first, last) = (log.first_instance(), log.last_instance());
        log.read_range(
            first.expect("log has records"),
            last.expect("log has records") + 1,
        )
        .expect("read the log")
    };
    let chosen_positions: Vec<usize> = (0..records.len())
        .filter(|&position| records[position].kind == RecordKind::Chosen)
        .collect();
    let dropped: Vec<usize> = chosen_positions[chosen_positions.len() - count..].to_vec();
    std::fs::remove_dir_all(&log_dir).expect("remove the old log");
    let (mut log, _) =
        FileLog::open(&log_dir, FileLogOptions::default()).expect("create the new log");
    for (position, record) in records.iter().enumerate() {
        if !dropped.contains(&position) {
            log.append(record).expect("append");
        }
    }
    log.sync().expect("sync the new log");
    dropped
        .iter()
        .map(|&position| records[position].instance_id)
        .collect()
}

async fn metric(http_addr: &str, name: &str) -> f64 {
    let (status, text) = paxsql_integration_tests::cluster::http_get(http_addr, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "/metrics: {text}");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {name}: {text}"))
}

/// The master and node `node`, each read locally, hold exactly the acknowledged rows 1..=80.
async fn assert_master_and_node_hold_rows_1_to_80(cluster: &Cluster, master_addr: &str, node: u32) {
    let expected: BTreeSet<i64> = (1..=80).collect();
    assert_eq!(ids_on(master_addr).await, expected, "the master");
    let node_ids = ids_on(&cluster.nodes[(node - 1) as usize].sql_addr()).await;
    assert_eq!(
        node_ids, expected,
        "node {node} reads every acknowledged row locally"
    );
}

/// Starts every (stopped) node again and waits for a master; answers its id.
async fn restart_all(cluster: &mut Cluster) -> u32 {
    for id in 1..=3 {
        cluster.node(id).start().expect("restart");
    }
    cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master")
}

/// [`start_with_kept_table`] with rows 1..=40 applied everywhere: the cluster, the master's SQL
/// address, a follower and its data dir.
async fn start_with_40_rows() -> (Cluster, String, u32, PathBuf) {
    let (cluster, master, master_addr) = start_with_kept_table().await;
    insert_ids(&master_addr, 1..=40).await;
    cluster.settle().await;
    let follower = (1..=3).find(|id| *id != master).expect("a follower");
    let follower_dir = cluster.nodes[(follower - 1) as usize].data_dir.clone();
    (cluster, master_addr, follower, follower_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ahead_of_its_paxos_log_stands_on_the_replica_and_rejoins() {
    let (mut cluster, master_addr, follower, follower_dir) = start_with_40_rows().await;

    // A follower stops; its log loses its last 3 Chosen records, its SQLite keeps them.
    cluster.node(follower).stop();
    let dropped = drop_last_chosen_records(&follower_dir, 3);
    cluster
        .node(follower)
        .start()
        .expect("restart the follower");

    insert_ids(&master_addr, 41..=80).await;
    cluster.settle().await;
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(30))
        .await
        .expect("every replica catches up");
    assert_master_and_node_hold_rows_1_to_80(&cluster, &master_addr, follower).await;
    let log = cluster.nodes[(follower - 1) as usize].log();
    assert!(
        log.contains("stood on the replica"),
        "the follower stood on its replica (instances {dropped:?} were cut from its log): {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_syncs_its_log_about_once_per_chosen_instance() {
    let (cluster, _, master_addr) = start_with_kept_table().await;
    cluster.settle().await;
    let mut before = Vec::new();
    for node in &cluster.nodes {
        let http = node.http_addr();
        before.push((
            metric(&http, "paxsql_log_fsyncs_total").await,
            metric(&http, "paxsql_values_delivered_total").await,
        ));
    }
    insert_ids(&master_addr, 1..=250).await;
    cluster.settle().await;
    for (node, (fsyncs_before, delivered_before)) in cluster.nodes.iter().zip(before) {
        let http = node.http_addr();
        let fsyncs = metric(&http, "paxsql_log_fsyncs_total").await - fsyncs_before;
        let delivered = metric(&http, "paxsql_values_delivered_total").await - delivered_before;
        assert!(
            delivered >= 200.0,
            "node {}: {delivered} instances",
            node.id
        );
        let per_instance = fsyncs / delivered;
        println!(
            "node {}: {fsyncs} fsyncs for {delivered} chosen instances = {per_instance:.3}",
            node.id
        );
        assert!(
            per_instance <= 1.2,
            "node {}: {per_instance:.3} fsyncs per chosen instance (want about 1)",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_checkpoints_its_wal_on_its_wal_thread_not_on_its_writer() {
    let (cluster, _, master_addr) = start_with_kept_table().await;
    // About 600 WAL pages on every node: the master's batch, then each replica's replay.
    connect(&master_addr, "main")
        .await
        .expect("connect")
        .batch_execute(
            "CREATE TABLE blobs (b BLOB NOT NULL); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600) \
             INSERT INTO blobs (b) SELECT randomblob(3000) FROM n",
        )
        .await
        .expect("a write of ~1.8 MB");
    cluster.settle().await;
    let passes = "paxsql_wal_checkpoint_passes_total{group=\"main\"}";
    let by_writer = "paxsql_wal_writer_checkpoints_total{group=\"main\"}";
    for node in &cluster.nodes {
        let http = node.http_addr();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while metric(&http, passes).await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {}: no WAL checkpoint pass",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metric(&http, by_writer).await, 0.0, "node {}", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_catches_up_when_every_log_lost_its_last_chosen_records() {
    // What a power cut of the whole cluster can leave: every node's log lost its last Chosen
    // records (appended without a sync of their own), two replicas kept those instances and
    // stand on them, and one replica is older. Its peers have no Chosen records to teach it
    // those instances, so they must offer it a checkpoint that covers them.
    let (mut cluster, master_addr, lagging, lagging_dir) = start_with_40_rows().await;
    let saved = cluster.dir.path().join("saved-sqlite");
    cluster.node(lagging).stop();
    save_sqlite(&lagging_dir, &saved);
    cluster.node(lagging).start().expect("restart");
    insert_ids(&master_addr, 41..=80).await;
    cluster.settle().await;

    for id in 1..=3 {
        cluster.node(id).stop();
    }
    for node in &cluster.nodes {
        drop_last_chosen_records(&node.data_dir, 3);
    }
    restore_sqlite(&lagging_dir, &saved);
    let master = restart_all(&mut cluster).await;
    let committed = cluster.committed_instance().await;
    if let Err(error) = cluster
        .wait_applied(committed, Duration::from_secs(30))
        .await
    {
        let logs: Vec<String> = cluster.nodes.iter().map(|node| node.log()).collect();
        panic!(
            "the lagging replica (node {lagging}) never caught up: {error:#}\n{}",
            logs.join("\n----\n")
        );
    }
    let master_addr = cluster.nodes[(master - 1) as usize].sql_addr();
    assert_master_and_node_hold_rows_1_to_80(&cluster, &master_addr, lagging).await;
    let lagging_log = cluster.nodes[(lagging - 1) as usize].log();
    assert!(
        lagging_log.contains("bootstrapped by checkpoint"),
        "node {lagging} caught up through a checkpoint: {lagging_log}"
    );
    let took = cluster
        .nodes
        .iter()
        .filter(|node| node.log().contains("took a checkpoint past the instances"))
        .count();
    assert_eq!(
        took, 2,
        "both nodes that stood on their replica took a checkpoint"
    );
}
