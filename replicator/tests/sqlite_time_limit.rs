//! The writer's time limit on client statements: a runaway statement on the master is stopped
//! (it would hold up every write of its group), a replay never is.

mod sqlite_common;

use std::time::{Duration, Instant};

use paxsql_replicator::sqlite::{Database, DatabaseOptions, SqlErrorKind, Value};
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_000;
/// Counts without end: only the time limit stops it.
const RUNAWAY_READ: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
const RUNAWAY_WRITE: &str = "INSERT INTO t (a) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
     SELECT x + 1 FROM c) SELECT x FROM c";

fn with_limit(limit: Duration) -> DatabaseOptions {
    DatabaseOptions {
        statement_time_max: limit,
        ..DatabaseOptions::default()
    }
}

fn master_with_limit(limit: Duration) -> Node {
    let mut master = node_with(with_limit(limit));
    master.database.set_accepts_writes(true);
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")],
    );
    master
}

#[test]
fn a_runaway_read_on_the_writer_is_stopped_and_its_batch_goes_on() {
    let mut master = master_with_limit(Duration::from_millis(200));
    let base = master.database.applied_instance().expect("applied");
    let mut batch = batch_with_one_insert(&mut master, base, TIME_MS);
    let started = Instant::now();
    let error = batch
        .execute(&sql(RUNAWAY_READ))
        .expect_err("an endless read must be stopped");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.kind, SqlErrorKind::LimitExceeded, "{error}");
    assert!(error.message.contains("holds up every write"), "{error}");
    // A stopped read undoes nothing: the batch lives on and commits the insert.
    assert!(!batch.is_dead());
    batch
        .execute(&sql("INSERT INTO t (a) VALUES (2)"))
        .expect("the next statement runs");
    let (record, pending) = batch.finish().expect("finish");
    pending
        .commit(base + 1, &binlog_value(base + 100, record))
        .expect("commit");
    assert_eq!(count(&master.database, "t"), 2);
}

#[test]
fn a_runaway_write_on_the_writer_is_stopped_and_ends_its_transaction() {
    let mut master = master_with_limit(Duration::from_millis(200));
    let base = master.database.applied_instance().expect("applied");
    let mut batch = batch_with_one_insert(&mut master, base, TIME_MS);
    let error = batch
        .execute(&sql(RUNAWAY_WRITE))
        .expect_err("an endless insert must be stopped");
    assert_eq!(error.kind, SqlErrorKind::LimitExceeded, "{error}");
    // SQLite rolls back the whole transaction when it stops a write: the batch is dead, and
    // nothing of it reaches the table.
    assert!(batch.is_dead());
    drop(batch);
    assert_eq!(count(&master.database, "t"), 0);
}

#[test]
fn a_replay_is_never_stopped_by_the_time_limit() {
    // The master may take its time; the replica's limit is far shorter than the statement.
    let mut master = node_with(with_limit(Duration::from_secs(600)));
    master.database.set_accepts_writes(true);
    let create = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")],
    );
    let slow = "INSERT INTO t (a) SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 \
                UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT x FROM c)";
    let insert = commit_batch(&mut master.database, TIME_MS, 2, &[sql(slow)]);

    let mut replica = node_with(with_limit(Duration::from_millis(1)));
    replica.database.apply(1, &create).expect("apply the table");
    let started = Instant::now();
    replica
        .database
        .apply(2, &insert)
        .expect("a replay runs to its end whatever the limit");
    assert!(
        started.elapsed() > Duration::from_millis(1),
        "the replay must outlast the limit for this test to mean anything"
    );
    let expected = vec![vec![Value::Integer(300_000)]];
    assert_eq!(rows(&master.database, "SELECT a FROM t"), expected);
    assert_eq!(rows(&replica.database, "SELECT a FROM t"), expected);
}

/// Maintenance statements that grow with the data and cannot be split (`CREATE INDEX`…) are
/// not stopped: a large index must be able to finish. A data statement as long is.
#[test]
fn an_index_build_is_not_stopped_by_the_time_limit() {
    let mut seeded = master_with_limit(Duration::from_secs(600));
    commit_batch(
        &mut seeded.database,
        TIME_MS,
        2,
        &[sql(
            "INSERT INTO t (a) SELECT x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
             SELECT x + 1 FROM c LIMIT 200000) SELECT x FROM c)",
        )],
    );
    let Node { dir, database } = seeded;
    drop(database);
    let mut database = Database::open(
        dir.path().join("main/db.sqlite"),
        with_limit(Duration::from_millis(1)),
    )
    .expect("reopen with a 1 ms limit");
    database.set_accepts_writes(true);
    let base = database.applied_instance().expect("applied");
    let mut batch = database.begin_batch(base, TIME_MS, 3).expect("begin");
    let error = batch
        .execute(&sql(
            "SELECT count(*) FROM t AS x, t AS y WHERE x.a = y.a + 1",
        ))
        .expect_err("a long read is stopped");
    assert_eq!(error.kind, SqlErrorKind::LimitExceeded, "{error}");
    batch
        .execute(&sql("CREATE INDEX t_a ON t (a)"))
        .expect("an index build runs to its end");
}
