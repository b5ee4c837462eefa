//! `--statement-time-max-ms` over the wire: the master's writer stops a runaway write (54000),
//! the writes that shared its batch (before and after it) still commit, the followers (which
//! replay without a limit) end up with the same rows, and a write stopped inside `BEGIN`
//! aborts its transaction.

use std::time::Duration;

use paxsql_integration_tests::sql::{connect, connect_local};
use paxsql_integration_tests::Cluster;

/// These tests time statements against the writer's limit: run one at a time, or one test's
/// CPU-bound writes slow another's and its measured durations no longer hold.
static ONE_AT_A_TIME: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await
}

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
    let _alone = one_at_a_time().await;
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
    followers_hold(&mut cluster, master, &values).await;

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

/// The limit of the batch-budget test's cluster.
const BUDGET_LIMIT: Duration = Duration::from_millis(2_000);
/// At most this many slow writes are queued behind the blocker in the batch-budget test.
const QUEUED_WRITES_MAX: u32 = 40;

/// A legal write that counts `rows` rows, tagged with its batch's pinned time (every statement
/// of one batch sees the same `'now'`; two batches begin at different times).
fn slow_tagged_write(unit: u32, rows: u64) -> String {
    format!(
        "INSERT INTO t (unit, batch_time, a) SELECT {unit}, strftime('%Y-%m-%d %H:%M:%f', 'now'), \
         count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
         LIMIT {rows}) SELECT x FROM c)"
    )
}

/// A three-node cluster with `extra` flags, its master, the master's SQL address, and a client
/// connected to it that created the table the slow tagged writes go to.
async fn cluster_with_tagged_table(
    extra: &[&str],
) -> (Cluster, u32, String, tokio_postgres::Client) {
    let (mut cluster, master) = Cluster::start_elected(3, extra)
        .await
        .expect("start a cluster");
    let addr = cluster.node(master).sql_addr();
    let client = connect(&addr, "main").await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, unit INTEGER, batch_time TEXT, a INTEGER)",
        )
        .await
        .expect("create the table");
    (cluster, master, addr, client)
}

/// Sizes a slow write to take about `target` here and now (scaling the rows by the time the
/// last one took, a few times); returns the rows and how long the last write took. Every write
/// commits (unit 0).
async fn calibrate(client: &tokio_postgres::Client, target: Duration) -> (u64, Duration) {
    let mut rows: u64 = 250_000;
    let mut attempts = 0;
    loop {
        let started = std::time::Instant::now();
        client
            .batch_execute(&slow_tagged_write(0, rows))
            .await
            .expect("a slow write alone");
        let took = started.elapsed().max(Duration::from_millis(1));
        attempts += 1;
        let ratio = target.as_secs_f64() / took.as_secs_f64();
        if (0.8..=1.25).contains(&ratio) || attempts == 5 {
            return (rows, took);
        }
        rows = ((rows as f64 * ratio.clamp(0.25, 8.0)) as u64).clamp(50_000, 64_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_slow_writes_stops_taking_more_once_past_the_limit() {
    let _alone = one_at_a_time().await;
    let limit_ms = BUDGET_LIMIT.as_millis().to_string();
    let (_cluster, _, addr, setup) =
        cluster_with_tagged_table(&["--statement-time-max-ms", limit_ms.as_str()]).await;
    let (rows, one) = calibrate(&setup, Duration::from_millis(300)).await;
    assert!(
        one < BUDGET_LIMIT / 3,
        "one slow write took {one:?}: the machine is too slow for this test's limit"
    );
    // More than twice as many as one batch may hold (limit / one write + 1), sized by how
    // fast the writes run here and now.
    let queued_writes = (2 * BUDGET_LIMIT.as_millis() / one.as_millis().max(1) + 4) as u32;
    assert!(
        queued_writes <= QUEUED_WRITES_MAX,
        "one slow write took only {one:?}: too fast to fill batches within {QUEUED_WRITES_MAX} writes"
    );
    // Connected first, so the queued writes reach the writer together.
    let mut clients = Vec::new();
    for _ in 0..=queued_writes {
        clients.push(connect(&addr, "main").await.expect("connect"));
    }
    let mut clients = clients.into_iter();
    let send = |client: tokio_postgres::Client, unit: u32| {
        tokio::spawn(async move {
            client
                .simple_query(&slow_tagged_write(unit, rows))
                .await
                .map(|_| ())
        })
    };
    // The blocker owns the writer while the others queue up; without a budget they would all
    // ride in the next batch, one after another.
    let blocker = send(clients.next().expect("a client"), 1);
    tokio::time::sleep(one / 3).await;
    let queued: Vec<_> = (2..=queued_writes + 1)
        .map(|unit| send(clients.next().expect("a client"), unit))
        .collect();
    blocker.await.expect("task").expect("the blocker commits");
    for write in queued {
        write
            .await
            .expect("task")
            .expect("every queued write commits: the budget only moves it to a later batch");
    }

    // Rows of one batch share its pinned time.
    let per_batch: Vec<i64> = setup
        .query(
            "SELECT count(*) FROM t WHERE unit >= 2 GROUP BY batch_time ORDER BY batch_time",
            &[],
        )
        .await
        .expect("count the batches")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let total: i64 = per_batch.iter().sum();
    assert_eq!(
        total,
        i64::from(queued_writes),
        "every queued write is applied once"
    );
    // A batch stops taking units once it ran past the limit: at most limit / (one write) + 1
    // of them; twice that leaves room for a machine that sped up meanwhile.
    let most = (2 * BUDGET_LIMIT.as_millis() / one.as_millis().max(1) + 2) as i64;
    let largest = per_batch.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= most,
        "{queued_writes} writes of {one:?} each, queued together, rode in batches of {per_batch:?}: \
         a batch must stop taking units once it ran for longer than the limit ({BUDGET_LIMIT:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_running_through_several_lease_renewals_commits() {
    let _alone = one_at_a_time().await;
    // The default lease (3 s) is renewed every 750 ms: each renewal takes an instance. A batch
    // used to lose its instance to one, run again, lose again, and fail with 40001 after three
    // attempts; now it records its own master's renewals and moves onto them. Every write of
    // the calibration that runs longer than 750 ms already tests that; the last one runs
    // through at least two renewals.
    let (mut cluster, master, _, client) = cluster_with_tagged_table(&[]).await;
    let (_, took) = calibrate(&client, Duration::from_millis(2_500)).await;
    assert!(
        took >= Duration::from_millis(1_600),
        "the longest write took only {took:?}: it must outlast two renewals to test anything"
    );
    let expected: Vec<i64> = client
        .query("SELECT a FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut distinct = expected.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        expected.len(),
        "each write applied exactly once: {expected:?}"
    );
    followers_hold(&mut cluster, master, &expected).await;
}

/// Waits until the followers applied everything committed, then checks that each holds
/// `expected` in column `a` of table `t`, in id order.
async fn followers_hold(cluster: &mut Cluster, master: u32, expected: &[i64]) {
    cluster.settle().await;
    for follower in (1..=3).filter(|id| *id != master) {
        let addr = cluster.node(follower).sql_addr();
        let local = connect_local(&addr, "main").await.expect("connect");
        let rows = local
            .query("SELECT a FROM t ORDER BY id", &[])
            .await
            .expect("read the follower's replica");
        let values: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(values, expected, "node {follower}");
    }
}
