//! Disk faults on real `paxsql node` processes: a corrupted record in the middle of a log, a
//! torn tail, a full disk and a failed fsync. A damaged node must stop loudly (never serve from
//! or silently drop damaged data) and, once the operator has done what the error says, relearn
//! from its peers until every replica is identical again.
//!
//! The full disk and the failed fsync use the binlog's test hooks
//! (`PAXSQL_FAULT_LOG_FULL_AFTER_BYTES`, `PAXSQL_FAULT_LOG_FAIL_SYNC_AFTER`, see
//! `binlog/src/fault.rs`), which go through the same error paths as the real failures.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use paxsql_integration_tests::sql::{connect, connect_local, table_hash};
use paxsql_integration_tests::{Cluster, ClusterOptions};

/// Inserts `count` rows (one statement each) through whichever running node accepts them.
async fn insert_rows(cluster: &Cluster, first_id: i64, count: i64) {
    let mut id = first_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while id < first_id + count {
        assert!(
            Instant::now() < deadline,
            "writes stalled at id {id}\n{}",
            cluster.logs_tail()
        );
        let Some(node) = cluster.nodes.iter().find(|node| node.is_running()) else {
            panic!("no node is running");
        };
        let Ok(client) = connect(&node.sql_addr(), "main").await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while id < first_id + count {
            let sql = format!(
                "INSERT OR REPLACE INTO t (id, payload) VALUES ({id}, hex(randomblob(64)))"
            );
            match client.execute(&sql, &[]).await {
                Ok(_) => id += 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

async fn start_with_table(options: ClusterOptions) -> Cluster {
    let cluster = Cluster::start_with(3, &["--lease-ms", "1000"], options)
        .await
        .expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
        .await
        .expect("create");
    cluster
}

async fn settle(cluster: &Cluster) {
    cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs_tail()));
}

/// Every node's copy of `t`, read locally, is the same; returns the row count.
async fn assert_identical(cluster: &Cluster) -> usize {
    let mut hashes = Vec::new();
    for node in cluster.nodes.iter().filter(|node| node.is_running()) {
        let client = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect");
        hashes.push((node.id, table_hash(&client, "t").await.expect("hash")));
    }
    assert!(
        hashes.iter().all(|(_, hash)| *hash == hashes[0].1),
        "replicas differ: {hashes:?}"
    );
    hashes[0].1 .1
}

/// The newest segment file of node `id`'s log of group main.
fn last_segment(cluster: &Cluster, id: u32) -> PathBuf {
    let dir = cluster.nodes[(id - 1) as usize]
        .data_dir
        .join("main")
        .join("log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("log dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "binlog"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Waits for node `id` to exit on its own.
async fn wait_exit(cluster: &mut Cluster, id: u32, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = cluster.node(id).exited() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} kept running\n{}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn follower(cluster: &Cluster) -> u32 {
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    (1..=3).find(|id| *id != master).expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_record_mid_log_stops_the_node_naming_file_and_offset_and_it_relearns_once_moved_aside(
) {
    // Phase 1: 150 rows everywhere, then one follower's log is damaged in the middle.
    let mut cluster = start_with_table(ClusterOptions::default()).await;
    insert_rows(&cluster, 0, 150).await;
    settle(&cluster).await;
    let victim = follower(&cluster).await;
    cluster.node(victim).stop();
    let segment = last_segment(&cluster, victim);
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // Segments are preallocated with zeros: aim at the middle of the records, not of the file.
    let records_end = paxsql_binlog::segment::records_end(&segment).expect("scan the segment");
    let middle = usize::try_from(records_end / 2).expect("segment offset fits usize");
    bytes[middle] ^= 0x5a;
    std::fs::write(&segment, &bytes).expect("write segment");

    // Phase 2: the node refuses to start, naming the file and the offset; the others serve on.
    cluster.node(victim).start().expect("spawn");
    let status = wait_exit(&mut cluster, victim, Duration::from_secs(20)).await;
    assert!(
        !status.success(),
        "a node with a corrupt log exited with {status}"
    );
    let log = cluster.nodes[(victim - 1) as usize].log();
    let file_name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        log.contains("corrupt log record") && log.contains(&file_name) && log.contains("at offset"),
        "the error must name the file and offset:\n{log}"
    );
    insert_rows(&cluster, 150, 50).await;

    // Phase 3: the documented procedure: move the damaged log (and the replica built from it)
    // aside; the node starts empty and relearns everything from its peers.
    let group_dir = cluster.nodes[(victim - 1) as usize].data_dir.join("main");
    let aside = cluster
        .dir
        .path()
        .join(format!("node{victim}-main-damaged"));
    std::fs::rename(&group_dir, &aside).expect("move the group aside");
    cluster.node(victim).start().expect("restart");
    insert_rows(&cluster, 200, 20).await;
    settle(&cluster).await;
    assert_eq!(assert_identical(&cluster).await, 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_tail_is_cut_and_relearned_from_peers() {
    // Phase 1: rows everywhere; a follower crashes and its last record is torn in half.
    let mut cluster = start_with_table(ClusterOptions::default()).await;
    insert_rows(&cluster, 0, 100).await;
    settle(&cluster).await;
    let victim = follower(&cluster).await;
    cluster.node(victim).kill9();
    let segment = last_segment(&cluster, victim);
    // Segments are preallocated: the last record's final 7 bytes go back to zeros.
    let end = paxsql_binlog::segment::records_end(&segment).expect("scan the segment");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 7], end - 7).expect("tear");
    drop(file);

    // Phase 2: it restarts, says it cut the torn write, relearns, and matches its peers.
    cluster.node(victim).start().expect("restart");
    insert_rows(&cluster, 100, 30).await;
    settle(&cluster).await;
    let log = cluster.nodes[(victim - 1) as usize].log();
    assert!(
        log.contains("cut a torn write"),
        "no torn-tail notice:\n{log}"
    );
    assert_eq!(assert_identical(&cluster).await, 130);
}

/// Starts a cluster with a binlog fault hook on node 3, writes until node 3 stops, and checks
/// that it stopped loudly with `expected` in its log, that the others kept serving, and that
/// it resumes with its data once the fault is gone.
async fn fault_hook_stops_the_node_and_it_resumes(variable: &str, value: &str, expected: &str) {
    let options = ClusterOptions {
        node_env: vec![(3, variable.to_string(), value.to_string())],
        ..ClusterOptions::default()
    };
    let mut cluster = start_with_table(options).await;
    let mut next = 0;
    let status = loop {
        insert_rows(&cluster, next, 20).await;
        next += 20;
        if let Some(status) = cluster.node(3).exited() {
            break status;
        }
        assert!(
            next < 3_000,
            "node 3 never hit the fault\n{}",
            cluster.logs_tail()
        );
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "node 3 must abort, got {status}"
    );
    let log = cluster.nodes[2].log();
    assert!(
        log.contains("FATAL") && log.contains(expected),
        "node 3 must say why it stopped ({expected}):\n{log}"
    );
    // The others serve on (after a failover if node 3 was master).
    insert_rows(&cluster, next, 50).await;
    next += 50;

    // The fault is gone ("space returns"): node 3 restarts on its own data and catches up.
    cluster.node(3).set_env(variable, None);
    cluster.node(3).start().expect("restart");
    insert_rows(&cluster, next, 20).await;
    next += 20;
    settle(&cluster).await;
    assert_eq!(assert_identical(&cluster).await, next as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_the_node_loudly_and_it_resumes_with_its_data_when_space_returns() {
    fault_hook_stops_the_node_and_it_resumes(
        "PAXSQL_FAULT_LOG_FULL_AFTER_BYTES",
        "60000",
        "No space left on device",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_stops_the_node_loudly_and_a_restart_recovers_it() {
    fault_hook_stops_the_node_and_it_resumes(
        "PAXSQL_FAULT_LOG_FAIL_SYNC_AFTER",
        "150",
        "fsync failed",
    )
    .await;
}
