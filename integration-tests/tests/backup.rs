//! `paxsql backup` under write load and `paxsql restore` into a fresh cluster, checked with
//! the real `sqlite3` command (Debian package `sqlite3`; the test fails without it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paxsql_integration_tests::sql::connect;
use paxsql_integration_tests::{paxsql_bin, Cluster};

const WRITERS: u64 = 4;
/// Each writer's ids are `writer * WRITER_ID_SPAN + sequence`.
const WRITER_ID_SPAN: u64 = 1_000_000;

/// What the writers did: ids attempted, and ids acknowledged with the time of the answer.
#[derive(Default)]
struct Ledger {
    attempted: BTreeSet<u64>,
    acknowledged: Vec<(u64, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_holds_acknowledged_rows_and_restores_on_every_node() {
    require_sqlite3();
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("backup.sqlite");

    // Phase 1: a cluster, a table, and four writers inserting through the master.
    let source = Cluster::start(3, &[]).await.expect("cluster starts");
    let master = source
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let master_addr = source.nodes[(master - 1) as usize].sql_addr();
    let follower = source
        .nodes
        .iter()
        .find(|node| node.id != master)
        .expect("a follower");
    let setup = connect(&master_addr, "main").await.expect("connect");
    setup
        .batch_execute(
            "CREATE TABLE events(id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, payload TEXT);
             CREATE INDEX events_writer ON events(writer);",
        )
        .await
        .expect("create table");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (ledger, stop, addr) = (ledger.clone(), stop.clone(), master_addr.clone());
        writers.push(tokio::spawn(async move {
            let client = connect(&addr, "main").await.expect("writer connects");
            let mut sequence = 0;
            // A closed connection ends the writer (else it would spin and keep the runtime
            // from shutting down after a failed assertion).
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && !client.is_closed() {
                let id = writer * WRITER_ID_SPAN + sequence;
                sequence += 1;
                ledger.lock().expect("ledger").attempted.insert(id);
                let sql = format!("INSERT INTO events VALUES({id}, {writer}, 'row {id} it''s')");
                if client.batch_execute(&sql).await.is_ok() {
                    ledger
                        .lock()
                        .expect("ledger")
                        .acknowledged
                        .push((id, Instant::now()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Phase 2: a backup through a follower while the writers keep going.
    let backup_started = Instant::now();
    let output = paxsql(&[
        "backup",
        "--http",
        &follower.http_addr(),
        &file.display().to_string(),
    ]);
    assert_success(&output, "paxsql backup");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let instance: u64 = printed
        .split("at instance ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no instance id in the backup's output: {printed}"));
    assert!(instance > 0, "{printed}");

    // Phase 3: the file is a plain SQLite database, intact, without paxsql's tables.
    assert_eq!(sqlite3(&file, "PRAGMA integrity_check"), "ok\n");
    assert_eq!(sqlite3(&file, ".tables"), "events\n");
    assert_eq!(sqlite3(&file, "PRAGMA journal_mode"), "delete\n");

    // Phase 4: it holds every row acknowledged before it started, nothing never attempted,
    // and for each writer (whose inserts are ordered) an unbroken prefix: one instant's state.
    let backed_up: BTreeSet<u64> = sqlite3(&file, "SELECT id FROM events ORDER BY id")
        .lines()
        .map(|line| line.parse().expect("an id"))
        .collect();
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let acknowledged_before: BTreeSet<u64> = ledger
        .acknowledged
        .iter()
        .filter(|(_, at)| *at < backup_started)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        acknowledged_before.len() > 10,
        "too little load: {} rows",
        acknowledged_before.len()
    );
    let missing: Vec<_> = acknowledged_before.difference(&backed_up).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup but missing: {missing:?}"
    );
    let invented: Vec<_> = backed_up.difference(&ledger.attempted).collect();
    assert!(invented.is_empty(), "rows nobody wrote: {invented:?}");
    let acknowledged_after = ledger.acknowledged.len() - acknowledged_before.len();
    assert!(
        backed_up.len() < ledger.acknowledged.len(),
        "writes went on after the backup ({acknowledged_after} acknowledged), so it cannot hold them all"
    );
    // A consistent cut: if a writer's row k is in the backup, so is each of its earlier
    // acknowledged rows (one writer's inserts are ordered in the log).
    let acknowledged: BTreeSet<u64> = ledger.acknowledged.iter().map(|(id, _)| *id).collect();
    for writer in 0..WRITERS {
        let in_range = |id: &&u64| **id / WRITER_ID_SPAN == writer;
        let Some(last) = backed_up.iter().filter(in_range).max() else {
            continue;
        };
        let gaps: Vec<_> = acknowledged
            .iter()
            .filter(in_range)
            .filter(|id| *id < last && !backed_up.contains(id))
            .collect();
        assert!(
            gaps.is_empty(),
            "writer {writer}: the backup holds {last} but not the earlier {gaps:?}"
        );
    }
    drop(source);

    // Phase 5: restore into a fresh three-node cluster; every node serves the same content
    // as the file, read locally on each.
    let target = Cluster::start(3, &[]).await.expect("fresh cluster starts");
    let output = paxsql(&[
        "restore",
        &file.display().to_string(),
        "--http",
        &target.nodes[0].http_addr(),
    ]);
    assert_success(&output, "paxsql restore");
    let committed = target.committed_instance().await;
    target
        .wait_applied(committed, Duration::from_secs(30))
        .await
        .expect("every node applies the restore");
    let expected = sqlite3(&file, ".dump");
    for node in &target.nodes {
        let dump = paxsql(&[
            "shell",
            "--port",
            &node.sql_port.to_string(),
            "-c",
            ".consistency local\n.dump",
        ]);
        assert_success(&dump, "paxsql shell .dump");
        assert_eq!(
            String::from_utf8_lossy(&dump.stdout),
            expected,
            "node {} does not serve the restored content",
            node.id
        );
    }
}

fn require_sqlite3() {
    let found = Command::new("sqlite3").arg("--version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "the sqlite3 command is required: install the Debian package `sqlite3` (CI does)"
    );
}

/// Runs one command in `sqlite3` on `file`; returns its stdout.
fn sqlite3(file: &Path, command: &str) -> String {
    let output = Command::new("sqlite3")
        .arg(file)
        .arg(command)
        .output()
        .expect("run sqlite3");
    assert_success(&output, &format!("sqlite3 {command}"));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn paxsql(args: &[&str]) -> Output {
    Command::new(paxsql_bin())
        .args(args)
        .output()
        .expect("run paxsql")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
