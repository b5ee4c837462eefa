//! A client's SAVEPOINT, RELEASE and ROLLBACK TO inside an interactive transaction: they run on
//! the master outside paxsql's per-statement savepoint, are recorded in the value, and replay in
//! the same place, so every replica undoes exactly what the master undid. In a batch of
//! autocommit statements from many clients they are refused: one client's ROLLBACK TO would
//! undo statements other clients were told succeeded.

mod sqlite_common;

use paxsql_replicator::sqlite::{SqlErrorKind, StatementRequest, Value};
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_000;

/// A master and a replica that both hold `t (id INTEGER PRIMARY KEY)`.
fn master_and_replica() -> (Node, Node) {
    let mut master = master();
    let create = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")],
    );
    let mut replica = node();
    replica
        .database
        .apply(1, &create)
        .expect("replica creates t");
    (master, replica)
}

/// Runs `statements` in one interactive-transaction batch on the master (each outcome
/// checked against `expect_ok`), commits it at instance 2 and replays it on the replica.
fn transaction(master: &mut Node, replica: &mut Node, statements: &[(&str, bool)]) {
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch.allow_client_savepoints();
    for (text, expect_ok) in statements {
        let outcome = batch.execute(&StatementRequest::new(*text));
        assert_eq!(outcome.is_ok(), *expect_ok, "{text}: {outcome:?}");
    }
    let (record, pending) = batch.finish().expect("finish");
    let value = binlog_value(100, record);
    pending.commit(2, &value).expect("commit on the master");
    replica
        .database
        .apply(2, &value)
        .expect("the replica replays it");
}

fn ids(node: &Node) -> Vec<i64> {
    rows(&node.database, "SELECT id FROM t ORDER BY id")
        .into_iter()
        .map(|row| match row[0] {
            Value::Integer(id) => id,
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

#[test]
fn a_rollback_to_savepoint_undoes_the_same_statements_on_every_replica() {
    let (mut master, mut replica) = master_and_replica();
    transaction(
        &mut master,
        &mut replica,
        &[
            ("INSERT INTO t VALUES (1)", true),
            ("SAVEPOINT a", true),
            ("INSERT INTO t VALUES (2)", true),
            ("savepoint b", true),
            ("INSERT INTO t VALUES (3)", true),
            ("ROLLBACK TO SAVEPOINT b", true),
            ("INSERT INTO t VALUES (4)", true),
            ("RELEASE a", true),
            ("INSERT INTO t VALUES (5)", true),
            ("ROLLBACK TO a", false),
            ("ROLLBACK", false),
        ],
    );
    assert_eq!(ids(&master), [1, 2, 4, 5]);
    assert_eq!(ids(&replica), ids(&master));
}

#[test]
fn a_failed_statement_leaves_the_clients_savepoints_in_place() {
    let (mut master, mut replica) = master_and_replica();
    transaction(
        &mut master,
        &mut replica,
        &[
            ("SAVEPOINT a", true),
            ("INSERT INTO t VALUES (1)", true),
            // Undone through paxsql's own savepoint, which must not take `a` with it.
            ("INSERT INTO t VALUES (1)", false),
            ("INSERT INTO t VALUES (2)", true),
            ("ROLLBACK TO a", true),
            ("INSERT INTO t VALUES (3)", true),
            // The client's savepoint may share the name of paxsql's own.
            ("SAVEPOINT paxsql_statement", true),
            ("INSERT INTO t VALUES (4)", true),
            ("INSERT INTO t VALUES (4)", false),
            ("ROLLBACK TO paxsql_statement", true),
            ("INSERT INTO t VALUES (5)", true),
        ],
    );
    assert_eq!(ids(&master), [3, 5]);
    assert_eq!(ids(&replica), ids(&master));
}

#[test]
fn savepoints_are_refused_in_a_batch_of_autocommit_statements() {
    let (mut master, _replica) = master_and_replica();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql("INSERT INTO t VALUES (1)"))
        .expect("another client's insert");
    for text in ["SAVEPOINT a", "RELEASE a", "ROLLBACK TO a"] {
        let error = batch.execute(&sql(text)).expect_err(text);
        assert_eq!(error.kind, SqlErrorKind::NotReplicable, "{text}: {error}");
        assert!(error.message.contains("inside BEGIN"), "{text}: {error}");
    }
    batch
        .execute(&sql("INSERT INTO t VALUES (2)"))
        .expect("the batch goes on");
    let (record, pending) = batch.finish().expect("finish");
    pending
        .commit(2, &binlog_value(100, record))
        .expect("commit");
    assert_eq!(ids(&master), [1, 2]);
}
