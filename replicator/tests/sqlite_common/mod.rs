//! Helpers shared by the `sqlite_*` tests: a master and a follower replica in a temp dir.
#![allow(dead_code)]

use paxsql_replicator::sqlite::{Batch, Database, DatabaseOptions, StatementRequest, Value};
use paxsql_schema::{paxos_value::Payload, BinlogBatch, ClusterInit, PaxosValue};
use tempfile::TempDir;

pub struct Node {
    pub dir: TempDir,
    pub database: Database,
}

/// A replica that has applied instance 0 (the cluster init).
pub fn node() -> Node {
    node_with(DatabaseOptions::default())
}

/// [`node`] opened with `options`.
pub fn node_with(options: DatabaseOptions) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut database = Database::open(dir.path().join("main/db.sqlite"), options).expect("open");
    database.apply(0, &init_value()).expect("apply instance 0");
    Node { dir, database }
}

/// A master: a replica that accepts writes.
pub fn master() -> Node {
    let mut master = node();
    master.database.set_accepts_writes(true);
    master
}

pub fn init_value() -> PaxosValue {
    PaxosValue {
        value_id: 1,
        checksum_before: 0,
        payload: Some(Payload::ClusterInit(ClusterInit {
            cluster_gid: 42,
            cluster_name: "test".into(),
            members: vec![1, 2, 3],
        })),
    }
}

pub fn binlog_value(value_id: u64, batch: BinlogBatch) -> PaxosValue {
    PaxosValue {
        value_id,
        checksum_before: 0,
        payload: Some(Payload::Binlog(batch)),
    }
}

pub fn sql(text: &str) -> StatementRequest {
    StatementRequest::new(text)
}

pub fn sql_with(text: &str, params: Vec<Value>) -> StatementRequest {
    StatementRequest::with_params(text, params)
}

/// Runs `statements` as one master batch on top of the applied instance and commits it at the
/// next instance; returns the chosen value (to replay elsewhere).
pub fn commit_batch(
    master: &mut Database,
    time_unix_ms: i64,
    seed: u64,
    statements: &[StatementRequest],
) -> PaxosValue {
    let base = master.applied_instance().expect("instance 0 applied");
    let mut batch = master
        .begin_batch(base, time_unix_ms, seed)
        .expect("begin batch");
    for statement in statements {
        batch
            .execute(statement)
            .unwrap_or_else(|error| panic!("{}: {error}", statement.sql));
    }
    let (record, pending) = batch.finish().expect("finish");
    let value = binlog_value(base + 100, record);
    pending.commit(base + 1, &value).expect("commit");
    value
}

/// A master batch on top of `base` that has inserted one row into `t (a)`.
pub fn batch_with_one_insert(master: &mut Node, base: u64, time_unix_ms: i64) -> Batch<'_> {
    let mut batch = master
        .database
        .begin_batch(base, time_unix_ms, 2)
        .expect("begin");
    batch
        .execute(&sql("INSERT INTO t (a) VALUES (1)"))
        .expect("insert");
    batch
}

/// All rows of a query on a reader, as values.
pub fn rows(database: &Database, query: &str) -> Vec<Vec<Value>> {
    database
        .read(&sql(query))
        .unwrap_or_else(|error| panic!("{query}: {error}"))
        .rows
}

pub fn count(database: &Database, table: &str) -> i64 {
    match rows(database, &format!("SELECT count(*) FROM {table}"))[0][0] {
        Value::Integer(count) => count,
        ref other => panic!("count(*) returned {other:?}"),
    }
}
