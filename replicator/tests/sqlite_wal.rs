//! WAL checkpoints run on the group's checkpoint thread, not on the writer (a checkpoint on
//! the writer stalls every write for 5–10 ms), the WAL starts again from its beginning once
//! copied, and it stays bounded when the thread cannot help: the writer then checkpoints itself.

mod sqlite_common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use paxsql_replicator::sqlite::readers::MAINTENANCE_READERS_MAX;
use paxsql_replicator::sqlite::wal::{WAL_PAGES_CHECKPOINT, WAL_PAGES_WRITER_CHECKPOINT};
use paxsql_replicator::sqlite::{Database, DatabaseOptions, Value};
use sqlite_common::{commit_batch, node_with, rows, sql, Node};

/// Pages one [`commit_pages`] adds to the WAL (about: one 3,000-byte row per 4 KiB page).
const PAGES_PER_COMMIT: i64 = 200;

fn master_with(options: DatabaseOptions) -> Node {
    let mut master = node_with(options);
    master.database.set_accepts_writes(true);
    commit_batch(
        &mut master.database,
        1_000,
        1,
        &[sql(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
        )],
    );
    master
}

fn commit_pages(database: &mut Database, seed: u64) {
    commit_rows(database, seed, PAGES_PER_COMMIT);
}

/// Commits `rows` rows of 3,000 bytes: about as many WAL pages.
fn commit_rows(database: &mut Database, seed: u64, rows: i64) {
    commit_batch(
        database,
        1_000 + seed as i64,
        seed,
        &[sql(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO big (b) SELECT randomblob(3000) FROM n"
        ))],
    );
}

fn file_pages(database: &Database, suffix: &str) -> i64 {
    let mut path = database.path().as_os_str().to_owned();
    path.push(suffix);
    let bytes = std::fs::metadata(Path::new(&path)).map_or(0, |metadata| metadata.len());
    // A WAL frame is a 24-byte header and a page.
    let frame = if suffix == "-wal" { 4096 + 24 } else { 4096 };
    bytes as i64 / frame
}

fn wait_for_the_pass(database: &Database) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while database
        .wal_checkpoint_stats()
        .pass_requested
        .load(Ordering::Acquire)
    {
        assert!(Instant::now() < deadline, "the checkpoint pass never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn page_size(database: &Database) -> i64 {
    match rows(database, "PRAGMA page_size")[0][0] {
        Value::Integer(size) => size,
        ref other => panic!("page_size returned {other:?}"),
    }
}

#[test]
fn the_checkpoint_thread_copies_the_wal_and_the_writer_never_checkpoints() {
    let mut master = master_with(DatabaseOptions::default());
    assert_eq!(page_size(&master.database), 4096);
    let database = &mut master.database;

    // Past the request mark: the thread copies the WAL into the database file.
    let commits = i64::from(WAL_PAGES_CHECKPOINT) / PAGES_PER_COMMIT + 2;
    for seed in 0..commits {
        commit_pages(database, 10 + seed as u64);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while file_pages(database, "") < i64::from(WAL_PAGES_CHECKPOINT) {
        assert!(
            Instant::now() < deadline,
            "the database file never received the WAL's pages ({} pages in it, {} in the WAL)",
            file_pages(database, ""),
            file_pages(database, "-wal")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = database.wal_checkpoint_stats();
    assert!(stats.background_passes.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.writer_checkpoints.load(Ordering::Relaxed), 0);

    // With the thread keeping up (each commit waits for the pass it asked for), the WAL starts
    // again from its beginning instead of growing: 4,000 more pages leave it at most what the
    // first passes left plus one more request's worth (a request mark and a commit each);
    // without restarts it would hold all 4,000.
    for seed in 0..20 {
        commit_pages(database, 100 + seed);
        wait_for_the_pass(database);
    }
    let wal_pages = file_pages(database, "-wal");
    assert!(
        wal_pages <= 2 * (i64::from(WAL_PAGES_CHECKPOINT) + PAGES_PER_COMMIT) + PAGES_PER_COMMIT,
        "the WAL grew to {wal_pages} pages"
    );
    assert_eq!(
        database
            .wal_checkpoint_stats()
            .writer_checkpoints
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        rows(database, "SELECT count(*) FROM big")[0][0],
        Value::Integer((commits + 20) * PAGES_PER_COMMIT)
    );
}

#[test]
fn without_a_free_reader_the_writer_checkpoints_itself_and_the_wal_stays_bounded() {
    let mut master = master_with(DatabaseOptions::default());
    // The thread checkpoints on an upkeep reader: with both taken, it cannot.
    let readers = master.database.readers();
    let held: Vec<_> = (0..MAINTENANCE_READERS_MAX)
        .map(|_| readers.get_for_maintenance().expect("an upkeep reader"))
        .collect();
    let database = &mut master.database;

    let bound = i64::from(WAL_PAGES_WRITER_CHECKPOINT);
    for seed in 0..(bound + bound / 2) / PAGES_PER_COMMIT {
        commit_pages(database, 10 + seed as u64);
    }
    let stats = database.wal_checkpoint_stats();
    assert!(stats.writer_checkpoints.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.background_passes.load(Ordering::Relaxed), 0);
    let wal_pages = file_pages(database, "-wal");
    assert!(
        wal_pages <= bound + 2 * PAGES_PER_COMMIT,
        "the WAL grew to {wal_pages} pages, past its bound of {bound}"
    );
    drop(held);
}

#[test]
fn a_read_pinning_old_frames_gets_a_pass_every_request_mark_not_every_commit() {
    let mut master = master_with(DatabaseOptions::default());
    let readers = master.database.readers();
    // A read transaction on the state before the writes below: no checkpoint may copy the
    // frames after its snapshot.
    let pinning = readers.get().expect("a reader");
    pinning
        .connection
        .execute_batch("BEGIN; SELECT count(*) FROM big;")
        .expect("a read transaction");
    let database = &mut master.database;

    let (commits, rows) = (80, 50);
    for seed in 0..commits {
        commit_rows(database, 10 + seed as u64, rows);
        wait_for_the_pass(database);
    }
    // One request per request mark, each at most two passes (the second finds no progress);
    // asked on every commit it would be `commits` requests.
    let requests_max = commits * rows / i64::from(WAL_PAGES_CHECKPOINT) + 1;
    let passes = database
        .wal_checkpoint_stats()
        .background_passes
        .load(Ordering::Relaxed) as i64;
    assert!(
        passes <= 2 * requests_max,
        "{passes} passes for {} new pages",
        commits * rows
    );
    pinning
        .connection
        .execute_batch("COMMIT")
        .expect("ends the read");
}

#[test]
fn upkeep_readers_never_take_a_clients_slot() {
    let master = master_with(DatabaseOptions {
        readers_max: 1,
        ..DatabaseOptions::default()
    });
    let readers = master.database.readers();
    let upkeep: Vec<_> = (0..MAINTENANCE_READERS_MAX)
        .map(|_| readers.get_for_maintenance().expect("an upkeep reader"))
        .collect();
    let client = readers
        .get()
        .expect("the client's reader, upkeep readers aside");
    assert!(readers.get().is_err(), "the clients' bound holds");
    assert!(
        readers.get_for_maintenance().is_err(),
        "the upkeep bound holds"
    );
    // Idle upkeep connections do not raise the clients' bound either.
    drop(upkeep);
    assert!(readers.get().is_err(), "the clients' bound holds");
    drop(client);
    assert!(readers.get().is_ok());
}
