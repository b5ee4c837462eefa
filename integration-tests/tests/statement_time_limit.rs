//! `--statement-time-max-ms` over the wire: the master's writer stops a runaway write (54000),
//! the writes that shared its batch (before and after it) still commit, the followers (which
//! replay without a limit) end up with the same rows, and a write stopped inside `BEGIN`
//! aborts its transaction.

use std::time::Duration;

use paxsql_integration_tests::sql::{connect, connect_local};
use paxsql_integration_tests::Cluster;

/// The limit of this test's cluster.
const LIMIT_MS: &str = "5000";
/// Legal but slow (about a second here): keeps the writer busy while the next two queue up.
const SLOW_BUT_LEGAL: &str = "INSERT INTO t (a) SELECT count(*) FROM (WITH RECURSIVE c(x) AS \
     (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) SELECT x FROM c)";
/// Inserts without end: only the limit stops it.
const RUNAWAY_WRITE: &str = "INSERT INTO t (a) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
     SELECT x + 1 FROM c) SELECT x FROM c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_write_is_stopped_and_the_writes_sharing_its_batch_commit() {
    let (mut cluster, master) = Cluster::start_elected(3, &["--statement-time-max-ms", LIMIT_MS])
        .await
        .expect("start a cluster");
    let addr = cluster.node(master).sql_addr();
    let setup = connect(&addr, "main").await.expect("connect");
    setup
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")
        .await
        .expect("create the table");

    let send = |sql: &'static str| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let client = connect(&addr, "main").await.expect("connect");
            client.simple_query(sql).await.map(|_| ())
        })
    };
    // The slow write owns the writer; the other three queue up behind it and ride in one
    // batch, in this order: the runaway one ends that batch's transaction, which rolls back
    // the insert before it too.
    let slow = send(SLOW_BUT_LEGAL);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = send("INSERT INTO t (a) VALUES (-1)");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let runaway = send(RUNAWAY_WRITE);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = send("INSERT INTO t (a) VALUES (-2)");

    slow.await
        .expect("task")
        .expect("the slow write is within the limit");
    let error = runaway
        .await
        .expect("task")
        .expect_err("the runaway write must be stopped");
    let db_error = error.as_db_error().expect("a database error");
    assert_eq!(db_error.code().code(), "54000", "{error}");
    assert!(
        db_error.message().contains("holds up every write"),
        "{}",
        db_error.message()
    );
    before
        .await
        .expect("task")
        .expect("a write that ran before the runaway one in its batch runs again and commits");
    after
        .await
        .expect("task")
        .expect("a write queued behind the runaway one commits");

    let rows = setup
        .query("SELECT a FROM t ORDER BY id", &[])
        .await
        .expect("read back");
    let values: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(values, vec![3_000_000, -1, -2]);
    // The followers replayed the slow write (without a limit) and hold the same rows.
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(20))
        .await
        .expect("followers catch up");
    for follower in (1..=3).filter(|id| *id != master) {
        let addr = cluster.node(follower).sql_addr();
        let local = connect_local(&addr, "main").await.expect("connect");
        let rows = local
            .query("SELECT a FROM t ORDER BY id", &[])
            .await
            .expect("read the follower's replica");
        let values: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(values, vec![3_000_000, -1, -2], "node {follower}");
    }

    // Inside BEGIN: the stopped write ends the transaction; the session says so until
    // ROLLBACK, and nothing of the transaction is applied.
    setup.batch_execute("BEGIN").await.expect("begin");
    setup
        .batch_execute("INSERT INTO t (a) VALUES (-3)")
        .await
        .expect("insert inside the transaction");
    let error = setup
        .batch_execute(RUNAWAY_WRITE)
        .await
        .expect_err("the runaway write inside BEGIN is stopped");
    assert_eq!(
        error.code().map(|code| code.code()),
        Some("54000"),
        "{error}"
    );
    let error = setup
        .batch_execute("SELECT 1")
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(
        error.code().map(|code| code.code()),
        Some("25P02"),
        "{error}"
    );
    setup.batch_execute("ROLLBACK").await.expect("rollback");
    let rows = setup
        .query("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(rows[0].get::<_, i64>(0), 3);
}
