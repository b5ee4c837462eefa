//! SQLite runs with `synchronous=NORMAL` because the Paxos log is the durable record: a replica
//! whose SQLite file lost its most recent commits (what a power cut can do to an unsynced WAL
//! tail) gets every acknowledged row back from the log when it starts.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_sqlite_lost_recent_commits_recovers_them_from_the_paxos_log() {
    // Phase 1: a cluster with 50 acknowledged rows; every node is killed and its master's
    // SQLite files at that moment are kept aside (an "old but consistent" file).
    let mut cluster = Cluster::start(3, &[]).await.expect("cluster starts");
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
    insert_ids(&master_addr, 1..=50).await;
    for id in 1..=3 {
        cluster.node(id).kill9();
    }
    let old_master_dir = cluster.nodes[(master - 1) as usize].data_dir.clone();
    let saved = cluster.dir.path().join("saved-sqlite");
    save_sqlite(&old_master_dir, &saved);

    // Phase 2: the cluster restarts and acknowledges 150 more rows.
    for id in 1..=3 {
        cluster.node(id).start().expect("restart");
    }
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let master_addr = cluster.nodes[(master - 1) as usize].sql_addr();
    insert_ids(&master_addr, 51..=200).await;

    // Phase 3: every node is killed; the old master's SQLite loses the 150 newer commits (its
    // file goes back to phase 1), but its Paxos log keeps them.
    for id in 1..=3 {
        cluster.node(id).kill9();
    }
    restore_sqlite(&old_master_dir, &saved);
    for id in 1..=3 {
        cluster.node(id).start().expect("restart");
    }
    cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
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
