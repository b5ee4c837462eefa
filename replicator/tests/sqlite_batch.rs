//! The master's batch: savepoints, transaction-ending statements, deferred FKs, isolation.

mod sqlite_common;

use paxsql_replicator::sqlite::{SqlErrorKind, SqliteError, Value};
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_000;

fn master_with_table() -> Node {
    let mut master = master();
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[
            sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT UNIQUE)"),
            sql("INSERT INTO t VALUES (1, 'one')"),
        ],
    );
    master
}

#[test]
fn a_failing_statement_fails_alone_inside_a_batch() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("first insert");
    let error = batch
        .execute(&sql("INSERT INTO t VALUES (3, 'one')"))
        .expect_err("duplicate");
    assert_eq!(error.kind, SqlErrorKind::UniqueViolation);
    batch
        .execute(&sql("INSERT INTO t VALUES (4, 'four')"))
        .expect("third insert");
    let (record, pending) = batch.finish().expect("finish");
    assert_eq!(
        record
            .statements
            .iter()
            .map(|statement| statement.failed)
            .collect::<Vec<_>>(),
        vec![false, true, false]
    );
    let value = binlog_value(500, record);
    pending.commit(2, &value).expect("commit");
    assert_eq!(
        rows(&master.database, "SELECT id FROM t ORDER BY id"),
        vec![
            vec![Value::Integer(1)],
            vec![Value::Integer(2)],
            vec![Value::Integer(4)]
        ]
    );
    // The follower skips the failed statement and ends identical.
    let mut follower = node();
    follower
        .database
        .apply(1, &commit_value_of_instance_one())
        .expect("instance 1");
    follower.database.apply(2, &value).expect("instance 2");
    assert_eq!(
        master.database.content_hash().expect("hash"),
        follower.database.content_hash().expect("hash")
    );
}

/// The instance-1 value of `master_with_table`, rebuilt on a scratch master.
fn commit_value_of_instance_one() -> paxsql_schema::PaxosValue {
    let mut scratch = master();
    commit_batch(
        &mut scratch.database,
        TIME_MS,
        1,
        &[
            sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT UNIQUE)"),
            sql("INSERT INTO t VALUES (1, 'one')"),
        ],
    )
}

#[test]
fn insert_or_rollback_kills_the_whole_batch() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("insert");
    let error = batch
        .execute(&sql("INSERT OR ROLLBACK INTO t VALUES (3, 'one')"))
        .expect_err("rollback conflict");
    assert_eq!(error.kind, SqlErrorKind::UniqueViolation);
    assert!(batch.is_dead());
    let later = batch
        .execute(&sql("INSERT INTO t VALUES (5, 'five')"))
        .expect_err("dead batch");
    assert!(
        later.message.contains("ended the whole transaction"),
        "{later}"
    );
    assert!(batch.finish().is_err(), "a dead batch is never proposed");
    assert_eq!(count(&master.database, "t"), 1);
    assert_eq!(master.database.applied_instance(), Some(1));
}

#[test]
fn raise_rollback_in_a_trigger_kills_the_whole_batch() {
    let mut master = master_with_table();
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TRIGGER no_nine BEFORE INSERT ON t WHEN new.id = 9 BEGIN SELECT RAISE(ROLLBACK, 'nine is refused'); END")],
    );
    let mut batch = master.database.begin_batch(2, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("insert");
    let error = batch
        .execute(&sql("INSERT INTO t VALUES (9, 'nine')"))
        .expect_err("raise");
    assert!(error.message.contains("nine is refused"), "{error}");
    assert!(batch.is_dead());
}

#[test]
fn rollback_of_a_pending_commit_leaves_nothing() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("insert");
    let (_record, pending) = batch.finish().expect("finish");
    // Another value won instance 2.
    pending.rollback();
    assert_eq!(count(&master.database, "t"), 1);
    assert_eq!(master.database.applied_instance(), Some(1));
    // The writer is free again.
    master
        .database
        .begin_batch(1, TIME_MS, 3)
        .expect("begin again")
        .rollback();
}

#[test]
fn a_dropped_batch_rolls_back() {
    let mut master = master_with_table();
    {
        let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
        batch.execute(&sql("DELETE FROM t")).expect("delete");
    }
    assert_eq!(count(&master.database, "t"), 1);
}

#[test]
fn deferred_foreign_key_violations_fail_the_batch_before_it_is_proposed() {
    let mut master = master();
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[
            sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)"),
            sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"),
        ],
    );
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO child VALUES (1, 99)"))
        .expect("deferred: accepted for now");
    let error = batch.finish().err().expect("finish must refuse");
    assert_eq!(error.kind, SqlErrorKind::ForeignKeyViolation);
    assert_eq!(count(&master.database, "child"), 0);
    // Fixing it inside the same transaction makes it commit.
    let mut batch = master.database.begin_batch(1, TIME_MS, 3).expect("begin");
    batch
        .execute(&sql("INSERT INTO child VALUES (1, 99)"))
        .expect("child");
    batch
        .execute(&sql("INSERT INTO parent VALUES (99)"))
        .expect("parent");
    let (record, pending) = batch.finish().expect("finish");
    pending.commit(2, &binlog_value(7, record)).expect("commit");
    assert_eq!(count(&master.database, "child"), 1);
}

#[test]
fn a_reader_never_sees_an_open_batch() {
    let mut master = master_with_table();
    let readers = master.database.readers();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("insert");
    let (record, pending) = batch.finish().expect("finish");
    let seen = readers
        .read(&sql("SELECT count(*) FROM t"))
        .expect("read")
        .rows;
    assert_eq!(
        seen,
        vec![vec![Value::Integer(1)]],
        "the pending batch is invisible"
    );
    pending.commit(2, &binlog_value(7, record)).expect("commit");
    let seen = readers
        .read(&sql("SELECT count(*) FROM t"))
        .expect("read")
        .rows;
    assert_eq!(
        seen,
        vec![vec![Value::Integer(2)]],
        "visible once committed"
    );
}

#[test]
fn followers_refuse_batches_and_readers_refuse_writes() {
    let mut follower = node();
    assert!(matches!(
        follower.database.begin_batch(0, TIME_MS, 1),
        Err(SqliteError::NotAcceptingWrites)
    ));
    let error = follower
        .database
        .read(&sql("CREATE TABLE t (a)"))
        .expect_err("reader write");
    assert_eq!(error.kind, SqlErrorKind::ReadOnly, "{error}");
}

#[test]
fn a_batch_must_build_on_the_applied_instance() {
    let mut master = master_with_table();
    assert!(matches!(
        master.database.begin_batch(0, TIME_MS, 1),
        Err(SqliteError::StaleBase { given: 0, .. })
    ));
}

#[test]
fn statement_limit_refuses_the_extra_statement_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = paxsql_replicator::sqlite::DatabaseOptions {
        batch_statements_max: 2,
        ..Default::default()
    };
    let mut database =
        paxsql_replicator::sqlite::Database::open(dir.path().join("db.sqlite"), options)
            .expect("open");
    database.apply(0, &init_value()).expect("init");
    database.set_accepts_writes(true);
    let mut batch = database.begin_batch(0, TIME_MS, 1).expect("begin");
    batch.execute(&sql("SELECT 1")).expect("one");
    batch.execute(&sql("SELECT 2")).expect("two");
    let error = batch.execute(&sql("SELECT 3")).expect_err("three");
    assert_eq!(error.kind, SqlErrorKind::LimitExceeded);
    assert_eq!(batch.finish().expect("finish").0.statements.len(), 2);
}

#[test]
fn value_size_limit_refuses_an_oversized_statement() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = paxsql_replicator::sqlite::DatabaseOptions {
        value_bytes_max: 1024,
        ..Default::default()
    };
    let mut database =
        paxsql_replicator::sqlite::Database::open(dir.path().join("db.sqlite"), options)
            .expect("open");
    database.apply(0, &init_value()).expect("init");
    database.set_accepts_writes(true);
    let mut batch = database.begin_batch(0, TIME_MS, 1).expect("begin");
    let error = batch
        .execute(&sql_with("SELECT ?1", vec![Value::Blob(vec![0; 2048])]))
        .expect_err("too big");
    assert_eq!(error.kind, SqlErrorKind::LimitExceeded);
    batch
        .execute(&sql("SELECT 1"))
        .expect("a small one still fits");
}

#[test]
fn last_insert_rowid_is_replayed_to_the_masters_value() {
    let mut master = master();
    let schema = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, ref INTEGER)")],
    );
    let base = master.database.applied_instance().expect("applied");
    let mut batch = master
        .database
        .begin_batch(base, TIME_MS, 2)
        .expect("begin");
    // The first statement reads last_insert_rowid() at the start of a batch: 0 on every node.
    batch
        .execute(&sql("INSERT INTO t (ref) VALUES (last_insert_rowid())"))
        .expect("first");
    batch
        .execute(&sql(
            "INSERT INTO t (id, ref) VALUES (100, last_insert_rowid())",
        ))
        .expect("second");
    // This one inserts row 200, then fails on row 100: it leaves last_insert_rowid() at 200 on
    // the master, and replicas skip it, so they must be told.
    batch
        .execute(&sql("INSERT INTO t (id, ref) VALUES (200, 0), (100, 0)"))
        .expect_err("duplicate 100");
    batch
        .execute(&sql(
            "INSERT INTO t (id, ref) VALUES (300, last_insert_rowid())",
        ))
        .expect("fourth");
    let (record, pending) = batch.finish().expect("finish");
    let value = binlog_value(9, record);
    pending.commit(base + 1, &value).expect("commit");
    let mut follower = node();
    follower.database.apply(1, &schema).expect("schema");
    follower.database.apply(2, &value).expect("replay");
    let expected = vec![
        vec![Value::Integer(1), Value::Integer(0)],
        vec![Value::Integer(100), Value::Integer(1)],
        vec![Value::Integer(300), Value::Integer(200)],
    ];
    assert_eq!(
        rows(&master.database, "SELECT id, ref FROM t ORDER BY id"),
        expected
    );
    assert_eq!(
        rows(&follower.database, "SELECT id, ref FROM t ORDER BY id"),
        expected
    );
}

/// A pending commit keeps only its batch's identity (the value goes to Paxos without a copy):
/// another batch at the same instance, with the same statements but its own seed, or another
/// statement count, is not this batch; `commit` refuses it.
#[test]
fn a_pending_commit_knows_its_own_batch_from_another_at_the_same_instance() {
    let mut master = master_with_table();
    let other_seed = {
        let mut scratch = master_with_table();
        let mut batch = scratch.database.begin_batch(1, TIME_MS, 3).expect("begin");
        batch
            .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
            .expect("insert");
        let (record, _rolled_back) = batch.finish().expect("finish");
        record
    };
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (2, 'two')"))
        .expect("insert");
    let (record, pending) = batch.finish().expect("finish");
    let mut longer = record.clone();
    longer.statements.push(record.statements[0].clone());
    assert!(pending.is_this_batch(&record));
    assert!(!pending.is_this_batch(&other_seed));
    assert!(!pending.is_this_batch(&longer));
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = pending.commit(2, &binlog_value(9, other_seed));
    }));
    assert!(refused.is_err(), "commit took another batch for its own");
    // The refused commit rolled back: the writer is free for the next batch at the same base.
    let mut next = master
        .database
        .begin_batch(1, TIME_MS, 4)
        .expect("begin again");
    next.execute(&sql("INSERT INTO t VALUES (5, 'five')"))
        .expect("insert");
    let (record, pending) = next.finish().expect("finish");
    pending
        .commit(2, &binlog_value(10, record))
        .expect("commit");
    assert_eq!(
        rows(&master.database, "SELECT id FROM t ORDER BY id"),
        vec![vec![Value::Integer(1)], vec![Value::Integer(5)]]
    );
}
