//! tokio-postgres against a real three-node cluster, always connected to a FOLLOWER: the
//! simple and extended protocols, every result and parameter type, prepared statements,
//! interactive transactions, read consistency levels, non-deterministic functions, and every
//! SQLSTATE of the wire protocol issue, each followed by proof that the session survives.

use std::time::{Duration, Instant};

use paxsql_integration_tests::sql::{connect, connect_local, table_hash};
use paxsql_integration_tests::Cluster;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

/// A short lease so that the no-master wait (lease × 2 + 1 s) stays short.
const FLAGS: &[&str] = &["--lease-ms", "1000", "--max-connections", "12"];
const CONNECTIONS_MAX: usize = 12;

/// The cluster, its master's id and the ids of its two followers.
async fn cluster() -> (Cluster, u32, [u32; 2]) {
    let cluster = Cluster::start(3, FLAGS).await.expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let followers: Vec<u32> = (1..=3).filter(|id| *id != master).collect();
    (cluster, master, [followers[0], followers[1]])
}

fn addr(cluster: &Cluster, id: u32) -> String {
    cluster.nodes[(id - 1) as usize].sql_addr()
}

fn code(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|index| row.get(index).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn simple_tags(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
            _ => None,
        })
        .collect()
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

async fn assert_session_alive(client: &Client, after: &str) {
    let row = client
        .query_one("SELECT 41 + 1", &[])
        .await
        .unwrap_or_else(|e| panic!("the session died after {after}: {e}"));
    let value: String = row.get(0);
    assert_eq!(value, "42", "after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_serves_both_protocols_every_type_transactions_and_consistency_levels() {
    let (cluster, _master, [follower, other]) = cluster().await;
    let client = connect(&addr(&cluster, follower), "main")
        .await
        .expect("connect to a follower");

    // Phase 1: the simple protocol: DDL, a multi-row insert with its tag, text results.
    let messages = client
        .simple_query(
            "CREATE TABLE kinds (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, flag BOOLEAN); \
             INSERT INTO kinds VALUES (1, -7, 2.5, 'héllo', x'00ff10', 1), (2, NULL, NULL, NULL, NULL, NULL); \
             SELECT i, r, t, b, flag FROM kinds ORDER BY id",
        )
        .await
        .expect("simple protocol through the follower");
    assert_eq!(simple_tags(&messages), vec![0, 2, 2]);
    assert_eq!(
        simple_rows(&messages),
        vec![
            vec![
                Some("-7".into()),
                Some("2.5".into()),
                Some("héllo".into()),
                Some("\\x00ff10".into()),
                Some("t".into())
            ],
            vec![None, None, None, None, None],
        ]
    );

    // Phase 2: the extended protocol: every parameter type in, every result type out.
    let inserted = client
        .execute(
            "INSERT INTO kinds (id, i, r, t, b, flag) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &3i64,
                &i64::MAX,
                &-1.25e300f64,
                &"ünïcode 'quoted'",
                &vec![0u8, 1, 2, 255],
                &false,
            ],
        )
        .await
        .expect("typed insert");
    assert_eq!(inserted, 1);
    client
        .execute(
            "INSERT INTO kinds (id, i, r, t, b, flag) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &4i64,
                &None::<i64>,
                &None::<f64>,
                &None::<String>,
                &None::<Vec<u8>>,
                &None::<bool>,
            ],
        )
        .await
        .expect("NULL insert");
    let rows = client
        .query(
            "SELECT i, r, t, b, flag FROM kinds WHERE id >= $1 ORDER BY id",
            &[&3i64],
        )
        .await
        .expect("typed select");
    let types: Vec<Type> = rows[0]
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            Type::INT8,
            Type::FLOAT8,
            Type::TEXT,
            Type::BYTEA,
            Type::BOOL
        ]
    );
    assert_eq!(rows[0].get::<_, i64>(0), i64::MAX);
    assert_eq!(rows[0].get::<_, f64>(1), -1.25e300);
    assert_eq!(rows[0].get::<_, &str>(2), "ünïcode 'quoted'");
    assert_eq!(rows[0].get::<_, Vec<u8>>(3), vec![0u8, 1, 2, 255]);
    assert!(!rows[0].get::<_, bool>(4));
    assert_eq!(rows[1].get::<_, Option<i64>>(0), None);
    assert_eq!(rows[1].get::<_, Option<f64>>(1), None);
    assert_eq!(rows[1].get::<_, Option<String>>(2), None);
    assert_eq!(rows[1].get::<_, Option<Vec<u8>>>(3), None);
    assert_eq!(rows[1].get::<_, Option<bool>>(4), None);

    // Phase 3: `$n` binds by number, not by first appearance.
    let row = client
        .query_one("SELECT $2, $1", &[&"first", &"second"])
        .await
        .expect("SELECT $2, $1");
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, &str>(1)),
        ("second", "first")
    );
    let typed = client
        .prepare_typed("SELECT $2, $1", &[Type::INT8, Type::FLOAT8])
        .await
        .expect("prepare typed");
    let row = client
        .query_one(&typed, &[&7i64, &0.5f64])
        .await
        .expect("typed swap");
    assert_eq!((row.get::<_, f64>(0), row.get::<_, i64>(1)), (0.5, 7));

    // Phase 4: one prepared statement reused many times.
    let insert = client
        .prepare("INSERT INTO kinds (id, i, t) VALUES ($1, $2, $3)")
        .await
        .expect("prepare insert");
    for id in 10..30i64 {
        client
            .execute(&insert, &[&id, &(id * 2), &format!("row {id}")])
            .await
            .expect("reuse the prepared insert");
    }
    let sum = client
        .prepare("SELECT sum(i)::int8 FROM kinds WHERE id BETWEEN $1 AND $2")
        .await
        .expect("prepare sum");
    for _ in 0..3 {
        let row = client
            .query_one(&sum, &[&10i64, &29i64])
            .await
            .expect("sum");
        assert_eq!(row.get::<_, i64>(0), (10..30).map(|id| id * 2).sum::<i64>());
    }

    // Phase 5: interactive transactions: commit, rollback, read-your-writes inside.
    transactions(&cluster, &client, follower, other).await;

    // Phase 6: read consistency levels through the follower.
    consistency_levels(&cluster, &client).await;

    // Phase 7: non-deterministic functions replay identically on every node.
    non_deterministic_functions(&cluster, &client, follower).await;
}

async fn transactions(cluster: &Cluster, client: &Client, follower: u32, other: u32) {
    let other_client = connect(&addr(cluster, other), "main")
        .await
        .expect("connect to the other follower");
    client
        .batch_execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
        .await
        .expect("create ledger");

    let mut client_mut = connect(&addr(cluster, follower), "main")
        .await
        .expect("connect");
    let tx = client_mut.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO ledger VALUES ($1, $2)", &[&1i64, &100i64])
        .await
        .expect("insert inside");
    tx.execute(
        "UPDATE ledger SET amount = amount + $1 WHERE id = $2",
        &[&5i64, &1i64],
    )
    .await
    .expect("update inside");
    let inside: i64 = tx
        .query_one("SELECT amount FROM ledger WHERE id = $1", &[&1i64])
        .await
        .expect("read your writes")
        .get(0);
    assert_eq!(inside, 105, "a transaction reads its own writes");
    assert_eq!(
        count(&other_client, "ledger").await,
        0,
        "uncommitted rows are invisible"
    );
    tx.commit().await.expect("COMMIT");
    assert_eq!(
        count(&other_client, "ledger").await,
        1,
        "committed rows are visible from another node"
    );

    let tx = client_mut.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO ledger VALUES ($1, $2)", &[&2i64, &1i64])
        .await
        .expect("insert");
    assert_eq!(
        tx.query_one("SELECT count(*) FROM ledger", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        2
    );
    tx.rollback().await.expect("ROLLBACK");
    assert_eq!(
        count(client, "ledger").await,
        1,
        "a rolled-back row is gone"
    );

    // Simple-protocol transaction, with an error inside: aborted until ROLLBACK.
    client
        .batch_execute("BEGIN; INSERT INTO ledger VALUES (3, 3)")
        .await
        .expect("begin and insert");
    let failed = client
        .batch_execute("INSERT INTO ledger VALUES (3, 3)")
        .await
        .expect_err("duplicate inside the transaction");
    assert_eq!(code(&failed), "23505");
    let refused = client
        .batch_execute("SELECT 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(code(&refused), "25P02");
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    assert_eq!(count(client, "ledger").await, 1);

    // A client that disconnects mid-transaction leaves nothing behind, and frees the writer.
    let leaver = connect(&addr(cluster, follower), "main")
        .await
        .expect("connect");
    leaver
        .batch_execute("BEGIN; INSERT INTO ledger VALUES (4, 4); INSERT INTO ledger VALUES (5, 5)")
        .await
        .expect("open a transaction");
    drop(leaver);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The writer is free again once an autocommit write goes through.
        match other_client
            .execute("INSERT INTO ledger VALUES ($1, $2)", &[&6i64, &6i64])
            .await
        {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = error;
            }
            Err(error) => panic!("the writer stayed taken after a disconnect: {error}"),
        }
    }
    let ids: Vec<i64> = other_client
        .query("SELECT id FROM ledger ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, vec![1, 6], "the disconnected transaction left nothing");

    savepoints(cluster, client, &mut client_mut).await;
}

/// tokio-postgres's nested transactions (`SAVEPOINT sp_1`, then `RELEASE` or `ROLLBACK TO`),
/// and `ROLLBACK TO SAVEPOINT` reviving a transaction an error aborted, as in PostgreSQL. The
/// replicas replay the savepoints in place, so every node holds what the master holds.
async fn savepoints(cluster: &Cluster, client: &Client, client_mut: &mut Client) {
    let mut tx = client_mut.transaction().await.expect("BEGIN");
    tx.execute("INSERT INTO ledger VALUES ($1, $2)", &[&7i64, &7i64])
        .await
        .expect("insert");
    let nested = tx.transaction().await.expect("SAVEPOINT");
    nested
        .execute("INSERT INTO ledger VALUES ($1, $2)", &[&8i64, &8i64])
        .await
        .expect("insert in the savepoint");
    nested.rollback().await.expect("ROLLBACK TO SAVEPOINT");
    let nested = tx.transaction().await.expect("SAVEPOINT again");
    nested
        .execute("INSERT INTO ledger VALUES ($1, $2)", &[&9i64, &9i64])
        .await
        .expect("insert in the savepoint");
    nested.commit().await.expect("RELEASE SAVEPOINT");
    tx.commit().await.expect("COMMIT");

    client
        .batch_execute(
            "BEGIN; INSERT INTO ledger VALUES (10, 10); SAVEPOINT before_eleven; \
             INSERT INTO ledger VALUES (12, 12)",
        )
        .await
        .expect("begin, insert, savepoint, insert");
    let failed = client
        .batch_execute("INSERT INTO ledger VALUES (10, 10)")
        .await
        .expect_err("duplicate");
    assert_eq!(code(&failed), "23505");
    let refused = client.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(code(&refused), "25P02");
    let unknown = client
        .batch_execute("ROLLBACK TO SAVEPOINT nowhere")
        .await
        .expect_err("no such savepoint");
    assert_eq!(code(&unknown), "3B001", "{unknown:?}");
    let refused = client
        .batch_execute("SELECT 1")
        .await
        .expect_err("still aborted");
    assert_eq!(code(&refused), "25P02");
    client
        .batch_execute("/* app */ ROLLBACK TO SAVEPOINT before_eleven")
        .await
        .expect("ROLLBACK TO revives the transaction (and undoes row 12)");
    // The extended protocol too (JDBC's setSavepoint and rollback(Savepoint)).
    for statement in [
        "SAVEPOINT extended",
        "INSERT INTO ledger VALUES (13, 13)",
        "ROLLBACK TO SAVEPOINT extended",
        "RELEASE SAVEPOINT extended",
    ] {
        client.execute(statement, &[]).await.expect(statement);
    }
    client
        .batch_execute("INSERT INTO ledger VALUES (11, 11); COMMIT")
        .await
        .expect("insert and commit");
    // Outside BEGIN a savepoint fails its whole message, as PostgreSQL's implicit transaction.
    let outside = client
        .batch_execute("INSERT INTO ledger VALUES (14, 14); SAVEPOINT too_early")
        .await
        .expect_err("no transaction block");
    assert_eq!(code(&outside), "25P01");

    cluster.settle().await;
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect for local reads");
        let ids: Vec<i64> = local
            .query("SELECT id FROM ledger ORDER BY id", &[])
            .await
            .expect("ids")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            ids,
            [1, 6, 7, 9, 10, 11],
            "savepoints, on the replica of {}",
            node.sql_addr()
        );
    }
}

async fn show(client: &Client) -> Option<String> {
    simple_rows(
        &client
            .simple_query("SHOW paxsql.consistency")
            .await
            .expect("SHOW"),
    )[0][0]
        .clone()
}

async fn consistency_levels(cluster: &Cluster, client: &Client) {
    assert_eq!(show(client).await.as_deref(), Some("lease"), "the default");
    for (id, level) in [(101i64, "local"), (102, "lease"), (103, "linearizable")] {
        client
            .batch_execute(&format!("SET paxsql.consistency = '{level}'"))
            .await
            .expect("SET");
        assert_eq!(show(client).await.as_deref(), Some(level));
        client
            .execute("INSERT INTO ledger VALUES ($1, 1)", &[&id])
            .await
            .expect("write");
        if level == "local" {
            cluster.settle().await;
        }
        // lease and linearizable reads on the follower see a write acknowledged just before.
        let row = client
            .query_one("SELECT count(*) FROM ledger WHERE id = $1", &[&id])
            .await
            .expect("read at this level");
        assert_eq!(row.get::<_, i64>(0), 1, "{level} read");
    }
    let bad = client
        .batch_execute("SET paxsql.consistency = 'sometimes'")
        .await
        .expect_err("bad level");
    assert_eq!(code(&bad), "22023");
    client
        .batch_execute("RESET paxsql.consistency")
        .await
        .expect("RESET");
    assert_eq!(show(client).await.as_deref(), Some("lease"));
}

async fn non_deterministic_functions(cluster: &Cluster, client: &Client, follower: u32) {
    client
        .batch_execute(
            "CREATE TABLE facts (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, dt TEXT, ts TEXT, d TEXT, \
             t TEXT, ue INTEGER, jd REAL, created TEXT DEFAULT CURRENT_TIMESTAMP)",
        )
        .await
        .expect("create facts");
    let insert = "INSERT INTO facts (r, b, dt, ts, d, t, ue, jd) VALUES (random(), randomblob(16), \
                  datetime('now'), CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, unixepoch(), julianday('now'))";
    client.batch_execute(insert).await.expect("simple insert");
    client.execute(insert, &[]).await.expect("extended insert");
    let mut tx_client = connect(&addr(cluster, follower), "main")
        .await
        .expect("connect");
    let tx = tx_client.transaction().await.expect("BEGIN");
    tx.execute(insert, &[])
        .await
        .expect("insert in a transaction");
    tx.commit().await.expect("COMMIT");
    cluster.settle().await;
    let mut hashes = Vec::new();
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect");
        let nulls: i64 = local
            .query_one(
                "SELECT count(*) FROM facts WHERE r IS NULL OR b IS NULL OR dt IS NULL OR ts IS NULL \
                 OR d IS NULL OR t IS NULL OR ue IS NULL OR jd IS NULL OR created IS NULL",
                &[],
            )
            .await
            .expect("nulls")
            .get(0);
        assert_eq!(nulls, 0, "node {} has NULL facts", node.id);
        hashes.push((node.id, table_hash(&local, "facts").await.expect("hash")));
    }
    assert_eq!(hashes[0].1 .1, 3, "three rows");
    assert!(
        hashes.iter().all(|(_, hash)| *hash == hashes[0].1),
        "every node reads the same non-deterministic values: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sqlstate_reaches_a_client_of_a_follower_and_the_session_survives() {
    let (mut cluster, master, [follower, other]) = cluster().await;
    let client = connect(&addr(&cluster, follower), "main")
        .await
        .expect("connect to a follower");
    client
        .batch_execute(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id), \
                                 qty INTEGER CHECK (qty > 0)); \
             INSERT INTO parent VALUES (1, 'one')",
        )
        .await
        .expect("schema");

    // Phase 1: constraint, syntax and name errors, in both protocols.
    let cases = [
        ("INSERT INTO parent VALUES (2, 'one')", "23505"),
        ("INSERT INTO child VALUES (1, 99, 1)", "23503"),
        ("INSERT INTO parent (id) VALUES (3)", "23502"),
        ("INSERT INTO child VALUES (1, 1, 0)", "23514"),
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing_table", "42P01"),
        ("SELECT missing_column FROM parent", "42703"),
        ("INSERT INTO missing_table VALUES (1)", "42P01"),
        ("UPDATE parent SET missing_column = 1", "42703"),
    ];
    for (sql, expected) in cases {
        let simple = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(code(&simple), expected, "simple: {sql}: {simple:?}");
        assert_session_alive(&client, sql).await;
        let extended = client.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(code(&extended), expected, "extended: {sql}: {extended:?}");
        assert_session_alive(&client, sql).await;
    }
    assert_eq!(count(&client, "child").await, 0);

    // Phase 3: 53300 past the connection limit, on the follower; a freed slot is reusable.
    let mut held = Vec::new();
    let refused = loop {
        match connect(&addr(&cluster, follower), "main").await {
            Ok(extra) => held.push(extra),
            Err(error) => break error,
        }
        assert!(
            held.len() <= CONNECTIONS_MAX,
            "the connection limit was not enforced"
        );
    };
    let refused = refused
        .chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .map(code)
        .unwrap_or_else(|| format!("{refused:#}"));
    assert_eq!(refused, "53300");
    assert_eq!(
        held.len(),
        CONNECTIONS_MAX - 1,
        "the first client holds one slot"
    );
    assert_session_alive(&held[0], "the connection limit").await;
    drop(held);
    assert_session_alive(&client, "the connection limit").await;

    // Phase 4: 57P03 when a majority is gone: stop the master and the other follower.
    cluster.node(master).stop();
    cluster.node(other).stop();
    let started = Instant::now();
    let no_master = client
        .execute("INSERT INTO parent VALUES (5, 'five')", &[])
        .await
        .expect_err("no master");
    assert_eq!(code(&no_master), "57P03", "{no_master:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the no-master wait is bounded: {:?}",
        started.elapsed()
    );
    client
        .batch_execute("SET paxsql.consistency = 'local'")
        .await
        .expect("the session survives 57P03");
    assert_eq!(count(&client, "parent").await, 1, "local reads still work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_that_outlives_its_masters_lease_gets_40001_and_leaves_nothing() {
    let (cluster, master, [follower, other]) = cluster().await;
    let client = connect(&addr(&cluster, follower), "main")
        .await
        .expect("connect");
    client
        .batch_execute("CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .expect("schema");

    // Phase 1: a transaction opened through a follower runs on the master; lease renewals
    // chosen while it is open (every 250 ms with a 1 s lease) do not end it, and it commits.
    client
        .batch_execute(
            "BEGIN; INSERT INTO parent VALUES (5, 'five'); SAVEPOINT s; \
             INSERT INTO parent VALUES (6, 'six'); ROLLBACK TO SAVEPOINT s; SELECT random()",
        )
        .await
        .expect("open a transaction");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client
        .batch_execute("COMMIT")
        .await
        .expect("a transaction spanning lease renewals commits");
    cluster.settle().await;
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main")
            .await
            .expect("connect");
        assert_eq!(
            count(&local, "parent").await,
            1,
            "node {} has the committed row",
            node.id
        );
    }
    client
        .batch_execute("BEGIN; INSERT INTO parent VALUES (10, 'ten')")
        .await
        .expect("open a transaction");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client
        .batch_execute("INSERT INTO parent VALUES (11, 'eleven')")
        .await
        .expect("a transaction outlives lease renewals");

    // Phase 2: the master pauses past its lease; another master takes a write meanwhile.
    cluster.nodes[(master - 1) as usize].signal(libc::SIGSTOP);
    // A write forwarded to the paused master would wait for it; each attempt gets a fresh
    // connection and gives up after 2 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let writer = connect(&addr(&cluster, other), "main")
            .await
            .expect("connect");
        let attempt = writer.batch_execute("INSERT OR IGNORE INTO parent VALUES (20, 'twenty')");
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new master took the write in 20 s"
        );
    }

    // Phase 3: the old master resumes and learns the new master's write while the transaction
    // is open: the transaction can never commit, and the client hears 40001.
    cluster.nodes[(master - 1) as usize].signal(libc::SIGCONT);
    cluster.settle().await;
    let lost = client
        .batch_execute("COMMIT")
        .await
        .expect_err("the transaction's base is stale");
    assert_eq!(code(&lost), "40001", "{lost:?}");
    assert_session_alive(&client, "40001").await;
    client
        .batch_execute("SET paxsql.consistency = 'linearizable'")
        .await
        .expect("set");
    assert_eq!(
        count(&client, "parent").await,
        2,
        "only the committed and the other master's rows exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_describes_the_columns_of_the_current_schema() {
    // A node describes a statement on a reader connection that compiled it earlier; after the
    // writer's ALTER TABLE it must not describe the table as it was (the client would be told
    // two columns and sent three).
    let (cluster, master, [follower, _]) = cluster().await;
    let writer = connect(&addr(&cluster, master), "main")
        .await
        .expect("connect");
    writer
        .batch_execute("CREATE TABLE evolving (id INTEGER PRIMARY KEY, a TEXT)")
        .await
        .expect("create");
    let local = connect_local(&addr(&cluster, follower), "main")
        .await
        .expect("connect to a follower");
    cluster.settle().await;
    for client in [&writer, &local] {
        let statement = client
            .prepare("SELECT * FROM evolving WHERE id = $1")
            .await
            .expect("prepare");
        assert_eq!(statement.columns().len(), 2);
    }
    writer
        .batch_execute("ALTER TABLE evolving ADD COLUMN b REAL")
        .await
        .expect("alter");
    cluster.settle().await;
    for (name, client) in [("master", &writer), ("follower", &local)] {
        let statement = client
            .prepare("SELECT * FROM evolving WHERE id = $1")
            .await
            .expect("prepare again");
        let columns: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        assert_eq!(columns, ["id", "a", "b"], "described on the {name}");
        let rows = client.query(&statement, &[&1_i64]).await.expect("run it");
        assert!(rows.is_empty());
    }

    // Inside BEGIN a Parse sees the transaction's own schema: a table it created, a column it
    // added (described on the master's writer, also for a transaction opened on a follower).
    let through_follower = connect(&addr(&cluster, follower), "main")
        .await
        .expect("connect to a follower");
    for (name, client, table) in [
        ("master", &writer, "made_in_tx_m"),
        ("follower", &through_follower, "made_in_tx_f"),
    ] {
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, a TEXT)"
            ))
            .await
            .expect("create inside the transaction");
        // The parameter's type comes from the new table's column: it must be described.
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} (id, a) VALUES ($1, 'inside')"
            ))
            .await
            .unwrap_or_else(|error| panic!("prepare on the {name}: {error}"));
        assert_eq!(insert.params(), &[Type::INT8], "on the {name}");
        client.execute(&insert, &[&7_i64]).await.expect("insert");
        client
            .batch_execute(&format!("ALTER TABLE {table} ADD COLUMN b INTEGER"))
            .await
            .expect("alter inside the transaction");
        let select = client
            .prepare(&format!("SELECT * FROM {table} WHERE id = $1"))
            .await
            .expect("prepare a select");
        assert_eq!(select.columns().len(), 3, "on the {name}");
        client.batch_execute("COMMIT").await.expect("commit");
        assert_eq!(count(client, table).await, 1, "on the {name}");
    }
}
