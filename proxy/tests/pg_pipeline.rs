//! Extended-protocol pipelines over the raw wire against `serve` over a LocalSqliteBackend
//! that counts how writes reach it: a lone Execute per Sync (with or without a Close before
//! the Sync, as sqlx sends it) commits as an autocommit unit, never as a transaction; writes
//! behind a comment join the pipeline's transaction; a pipeline longer than one transaction
//! may hold commits in chunks, by statements and by bytes.

mod pg_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use paxsql_proxy::backend::local::LocalSqliteBackend;
use paxsql_proxy::backend::{Backend, Transaction};
use paxsql_proxy::pg::ServerOptions;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, StatementRequest, StatementResult,
};
use pg_common::wire::{
    bind, bind_portal, close_portal, execute, execute_portal, parse, query, ready_status, sync,
    tags, Reply, Wire,
};
use pg_common::{connect, start_with, TestServer};

/// The local backend, counting autocommit units and transactions.
struct CountingBackend {
    inner: LocalSqliteBackend,
    units: AtomicUsize,
    transactions: AtomicUsize,
}

#[async_trait]
impl Backend for CountingBackend {
    fn has_group(&self, group: &str) -> bool {
        self.inner.has_group(group)
    }
    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        self.units.fetch_add(1, Ordering::SeqCst);
        self.inner.execute_write(group, statements).await
    }
    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        self.inner.read(group, statement, consistency).await
    }
    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        self.inner.begin(group).await
    }
    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError> {
        self.inner.is_read_only(group, sql).await
    }
    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError> {
        self.inner.describe(group, sql).await
    }
}

/// The server over a counting backend with table `p`, and a raw protocol connection to it.
async fn server() -> (TestServer, Arc<CountingBackend>, Wire) {
    let directory = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(CountingBackend {
        inner: LocalSqliteBackend::open(directory.path(), &["main"]).expect("open backend"),
        units: AtomicUsize::new(0),
        transactions: AtomicUsize::new(0),
    });
    let server = start_with(backend.clone(), ServerOptions::default(), directory).await;
    let client = connect(&server, "main").await.expect("connects");
    client
        .batch_execute("CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .expect("creates the table");
    let wire = Wire::connect(&server.address.to_string(), "tester", "main").await;
    (server, backend, wire)
}

async fn count(server: &TestServer) -> i64 {
    let client = connect(server, "main").await.expect("connects");
    let row = client
        .query_one("SELECT count(*) FROM p", &[])
        .await
        .expect("counts");
    row.get(0)
}

fn counts(backend: &CountingBackend) -> (usize, usize) {
    (
        backend.units.load(Ordering::SeqCst),
        backend.transactions.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_lone_execute_per_sync_is_an_autocommit_unit_even_with_a_close_before_the_sync() {
    let (server, backend, mut wire) = server().await;
    let before = counts(&backend);

    // tokio-postgres and pgbench: Parse/Bind/Execute/Sync.
    wire.send(&[
        parse("INSERT INTO p VALUES ($1, $2)"),
        bind(&["1", "a"]),
        execute(),
        sync(),
    ])
    .await;
    assert_eq!(tags(&wire.until_ready().await), "12CZ");
    // sqlx: Bind/Execute/Close(portal)/Sync; the CloseComplete follows the write's answer.
    wire.send(&[bind(&["2", "b"]), execute(), close_portal(), sync()])
        .await;
    assert_eq!(tags(&wire.until_ready().await), "2C3Z");
    // A failing one: its error, no CloseComplete (skipped, as after any error), then ready.
    wire.send(&[bind(&["2", "again"]), execute(), close_portal(), sync()])
        .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "2EZ", "{replies:?}");
    assert_eq!(replies[1].sqlstate(), "23505");
    assert_eq!(ready_status(&replies), 'I');

    let after = counts(&backend);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (3, 0),
        "three autocommit units, no transaction"
    );
    assert_eq!(count(&server).await, 2);
}

#[tokio::test]
async fn writes_behind_a_comment_join_the_pipeline_and_a_pragma_runs_alone() {
    let (server, backend, mut wire) = server().await;

    // sqlcommenter / Hibernate comments before the verb.
    wire.send(&[
        parse("/* app=shop */ INSERT INTO p VALUES ($1, $2)"),
        bind(&["1", "a"]),
        execute(),
        bind(&["1", "duplicate"]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12C2EZ", "{replies:?}");
    assert_eq!(
        count(&server).await,
        0,
        "the first insert rolled back with the second"
    );

    // A pragma write is never held (inside a transaction some pragmas do nothing): it runs
    // alone, at once, as an autocommit unit, and the message after it opens no transaction.
    let before = counts(&backend);
    wire.send(&[
        parse("PRAGMA user_version = 5"),
        bind(&[]),
        execute(),
        parse("SELECT 1"),
        bind(&[]),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12C12DCZ", "{replies:?}");
    let after = counts(&backend);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0));
}

#[tokio::test]
async fn a_pipeline_longer_than_one_transaction_commits_in_chunks() {
    let (server, backend, mut wire) = server().await;
    let rows = 1_100;
    let values: Vec<(String, String)> = (0..rows)
        .map(|id| (id.to_string(), format!("row {id}")))
        .collect();
    let mut messages = vec![parse("INSERT INTO p VALUES ($1, $2)")];
    for (id, value) in &values {
        messages.push(bind(&[id, value]));
        messages.push(execute());
    }
    messages.push(sync());
    let before = counts(&backend);
    wire.send(&messages).await;
    let replies = wire.until_ready().await;
    assert_eq!(replies.len(), 1 + 2 * rows + 1, "every Execute answered");
    assert_eq!(ready_status(&replies), 'I');
    assert!(
        replies.iter().all(|reply| reply.tag != b'E'),
        "no limit error"
    );
    assert_eq!(count(&server).await, rows as i64);
    let after = counts(&backend);
    assert_eq!(
        after.1 - before.1,
        2,
        "a transaction holds at most 1,024 statements: 1,024 + 76"
    );

    // Chunks by bytes too: ten 1 MiB values do not fit in one 8 MiB value.
    let big = "x".repeat(1024 * 1024);
    let mut messages = vec![parse("INSERT INTO p VALUES ($1, $2)")];
    let ids: Vec<String> = (10_000..10_010).map(|id: i32| id.to_string()).collect();
    for id in &ids {
        messages.push(bind(&[id, &big]));
        messages.push(execute());
    }
    messages.push(sync());
    let before = counts(&backend);
    wire.send(&messages).await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), format!("1{}Z", "2C".repeat(10)));
    let after = counts(&backend);
    assert_eq!(after.1 - before.1, 2, "seven values, then three");
    assert_eq!(count(&server).await, rows as i64 + 10);

    // A simple Query ends a pipeline as a Sync would.
    wire.send(&[
        parse("INSERT INTO p VALUES ($1, $2)"),
        bind(&["5000", "x"]),
        execute(),
        bind(&["5001", "y"]),
        execute(),
        query("SELECT count(*) FROM p"),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12C2CTDCZ", "{replies:?}");
    assert_eq!(ready_status(&replies), 'I');
    assert_eq!(count(&server).await, rows as i64 + 12);
}

#[tokio::test]
async fn a_portal_runs_once_and_a_write_executed_again_is_refused() {
    let (server, _backend, mut wire) = server().await;

    // PostgreSQL runs a portal once: executing a write's portal again must not write again.
    wire.send(&[
        parse("INSERT INTO p (v) VALUES ('a')"),
        bind(&[]),
        execute(),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12CEZ", "{replies:?}");
    assert_eq!(replies[3].sqlstate(), "55000");
    assert_eq!(
        count(&server).await,
        0,
        "the pipeline rolled back as a whole"
    );

    // Portals end with their transaction, as in PostgreSQL: a failed write's named portal
    // cannot run again after the Sync, even where it would now succeed.
    wire.send(&[query("INSERT INTO p VALUES (7, 'first')")])
        .await;
    assert_eq!(tags(&wire.until_ready().await), "CZ");
    let error = fail_in_named_portal(&mut wire, "INSERT INTO p VALUES (7, 'second')", "f").await;
    assert_eq!(error.sqlstate(), "23505");
    wire.send(&[query("DELETE FROM p WHERE id = 7")]).await;
    assert_eq!(tags(&wire.until_ready().await), "CZ");
    assert_portal_gone(&mut wire, "f").await;
    assert_eq!(count(&server).await, 0);

    // Bound again, it runs again; a read executed again has no rows left.
    wire.send(&[bind(&[]), execute(), sync()]).await;
    assert_eq!(tags(&wire.until_ready().await), "2CZ");
    wire.send(&[
        parse("SELECT v FROM p"),
        bind(&[]),
        execute(),
        execute(),
        sync(),
    ])
    .await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12DCCZ", "{replies:?}");
    assert_eq!(count(&server).await, 1);

    // A failed read's named portal is gone after the Sync: no "no rows" answer.
    fail_in_named_portal(&mut wire, "SELECT abs(-9223372036854775807 - 1)", "g").await;
    assert_portal_gone(&mut wire, "g").await;
}

/// Parses `sql`, binds it to the named portal `portal` and executes it, which must fail;
/// answers the error.
async fn fail_in_named_portal(wire: &mut Wire, sql: &str, portal: &str) -> Reply {
    wire.send(&[
        parse(sql),
        bind_portal(portal, &[]),
        execute_portal(portal),
        sync(),
    ])
    .await;
    let mut replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "12EZ", "{sql}: {replies:?}");
    replies.remove(2)
}

/// An Execute of `portal` after its transaction ended fails: the portal is gone.
async fn assert_portal_gone(wire: &mut Wire, portal: &str) {
    wire.send(&[execute_portal(portal), sync()]).await;
    let replies = wire.until_ready().await;
    assert_eq!(tags(&replies), "EZ", "{replies:?}");
}
