//! Simple and extended protocol, types, transactions and session commands through
//! tokio-postgres against `serve` over a LocalSqliteBackend.

mod pg_common;

use paxsql_proxy::pg::ServerOptions;
use pg_common::{code, connect, start};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::SimpleQueryMessage;

fn simple_values(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn tags(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_protocol_runs_ddl_writes_and_reads_with_tags() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    let messages = client
        .simple_query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'); UPDATE t SET name = 'c' WHERE id = 2; SELECT id, name FROM t ORDER BY id")
        .await
        .expect("simple query");
    assert_eq!(tags(&messages), vec![0, 2, 1, 2]);
    assert_eq!(
        simple_values(&messages),
        vec![
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("c".into())]
        ]
    );
}

#[tokio::test]
async fn multi_statement_message_is_atomic() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    let error = client
        .batch_execute(
            "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); INSERT INTO t VALUES (1)",
        )
        .await
        .expect_err("duplicate key");
    assert_eq!(code(&error), "23505");
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        count, 0,
        "no statement of the failed message may be visible"
    );
}

#[tokio::test]
async fn extended_protocol_round_trips_every_type() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, f BOOLEAN, n INTEGER)")
        .await
        .expect("create");
    let inserted = client
        .execute(
            "INSERT INTO v (i, r, t, b, f, n) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &42i64 as &(dyn ToSql + Sync),
                &2.5f64,
                &"héllo",
                &vec![0u8, 255, 7],
                &true,
                &None::<i64>,
            ],
        )
        .await
        .expect("insert");
    assert_eq!(inserted, 1);
    let row = client
        .query_one("SELECT i, r, t, b, f, n FROM v WHERE i = $1", &[&42i64])
        .await
        .expect("select");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, f64>(1), 2.5);
    assert_eq!(row.get::<_, String>(2), "héllo");
    assert_eq!(row.get::<_, Vec<u8>>(3), vec![0u8, 255, 7]);
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, Option<i64>>(5), None);
    assert_eq!(row.columns()[0].type_(), &Type::INT8);
    assert_eq!(
        row.columns()[5].type_(),
        &Type::INT8,
        "declared INTEGER stays int8 even when NULL"
    );
}

#[tokio::test]
async fn parameters_bind_by_number_and_prepared_statements_are_reused() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    let swapped = client
        .prepare_typed("SELECT $2, $1", &[Type::INT8, Type::TEXT])
        .await
        .expect("prepare");
    let row = client
        .query_one(&swapped, &[&7i64 as &(dyn ToSql + Sync), &"seven"])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "seven");
    assert_eq!(row.get::<_, i64>(1), 7);
    client
        .batch_execute("CREATE TABLE p (id INTEGER PRIMARY KEY, score REAL)")
        .await
        .expect("create");
    let insert = client
        .prepare("INSERT INTO p (id, score) VALUES ($1, $2)")
        .await
        .expect("prepare insert");
    assert_eq!(insert.params(), &[Type::INT8, Type::FLOAT8]);
    for id in 0..5i64 {
        client
            .execute(&insert, &[&id as &(dyn ToSql + Sync), &(id as f64 / 2.0)])
            .await
            .expect("insert");
    }
    let total: f64 = client
        .query_one("SELECT total(score) FROM p WHERE id >= $1", &[&2i64])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(total, 4.5);
}

#[tokio::test]
async fn transactions_commit_roll_back_and_abort_on_error() {
    let server = start(ServerOptions::default()).await;
    let mut client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");

    // Commit: read-your-writes inside, visible after.
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO t VALUES ($1)", &[&1i64])
        .await
        .expect("insert");
    let inside: i64 = tx
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(inside, 1);
    tx.commit().await.expect("commit");

    // Rollback: nothing stays.
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO t VALUES (2)", &[])
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");

    // An error aborts the transaction until ROLLBACK (25P02).
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (3)")
        .await
        .expect("begin");
    let duplicate = client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("duplicate");
    assert_eq!(code(&duplicate), "23505");
    let refused = client.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(code(&refused), "25P02");
    client.batch_execute("ROLLBACK").await.expect("rollback");

    let ids: Vec<i64> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1]);
}

#[tokio::test]
async fn disconnect_mid_transaction_rolls_back() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .expect("create");
    let leaving = connect(&server, "main").await.expect("connect");
    leaving
        .batch_execute("BEGIN; INSERT INTO t VALUES (9)")
        .await
        .expect("write in tx");
    drop(leaving);
    // The writer is released and the row is gone: a new write succeeds and sees nothing.
    let inserted = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.execute("INSERT INTO t VALUES (1)", &[]),
    )
    .await
    .expect("writer released")
    .expect("insert");
    assert_eq!(inserted, 1);
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn session_commands_answer_like_postgres() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    let version = client
        .simple_query("SHOW server_version")
        .await
        .expect("show");
    assert_eq!(
        simple_values(&version),
        vec![vec![Some(
            paxsql_proxy::pg::session::SERVER_VERSION.to_owned()
        )]]
    );
    let row = client
        .query_one("SELECT version()", &[])
        .await
        .expect("version()");
    assert!(row
        .get::<_, String>(0)
        .starts_with("PostgreSQL 15.0 (paxsql"));
    client
        .batch_execute("SET paxsql.consistency = 'local'")
        .await
        .expect("set");
    let shown = client
        .simple_query("SHOW paxsql.consistency")
        .await
        .expect("show");
    assert_eq!(simple_values(&shown), vec![vec![Some("local".into())]]);
    let bad = client
        .batch_execute("SET paxsql.consistency = 'eventual'")
        .await
        .expect_err("bad value");
    assert_eq!(code(&bad), "22023");
    let message = bad
        .as_db_error()
        .expect("a database error")
        .message()
        .to_owned();
    assert!(message.contains("linearizable"), "{message}");
    client.batch_execute("SET client_encoding = 'UTF8'; SET DateStyle = ISO; SET extra_float_digits = 3; SET application_name = 'x'; SET search_path = public; SET TimeZone = 'UTC'").await.expect("client sets");
    let setting = client
        .simple_query("SELECT current_setting('TimeZone')")
        .await
        .expect("current_setting");
    assert_eq!(simple_values(&setting), vec![vec![Some("UTC".into())]]);
}

#[tokio::test]
async fn local_backend_errors_carry_their_sqlstates() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id), n INTEGER NOT NULL DEFAULT 0, CHECK (n >= 0))")
        .await
        .expect("schema");
    let cases = [
        ("INSERT INTO child (id, parent) VALUES (1, 99)", "23503"),
        ("INSERT INTO child (id, n) VALUES (1, NULL)", "23502"),
        ("INSERT INTO child (id, n) VALUES (1, -1)", "23514"),
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing", "42P01"),
        ("SELECT nope FROM parent", "42703"),
    ];
    for (sql, expected) in cases {
        let error = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(code(&error), expected, "{sql}: {error}");
        let prepared = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(code(&prepared), expected, "extended {sql}");
    }
    client
        .batch_execute("INSERT INTO parent VALUES (1)")
        .await
        .expect("insert");
    let duplicate = client
        .execute("INSERT INTO parent VALUES ($1)", &[&1i64])
        .await
        .expect_err("dup");
    assert_eq!(code(&duplicate), "23505");
    let alive: i64 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("session survives")
        .get(0);
    assert_eq!(alive, 1);
}

#[tokio::test]
async fn unknown_database_is_refused_with_3d000_and_groups_are_separate() {
    let server = start(ServerOptions::default()).await;
    let error = connect(&server, "nope")
        .await
        .expect_err("unknown database");
    assert_eq!(code(&error), "3D000");
    let main = connect(&server, "main").await.expect("main");
    let orders = connect(&server, "orders").await.expect("orders");
    main.batch_execute("CREATE TABLE only_in_main (a INTEGER)")
        .await
        .expect("create");
    let missing = orders
        .batch_execute("SELECT * FROM only_in_main")
        .await
        .expect_err("other group");
    assert_eq!(code(&missing), "42P01");
}

#[tokio::test]
async fn connection_limit_answers_53300() {
    let server = start(ServerOptions {
        connections_max: 2,
        ..ServerOptions::default()
    })
    .await;
    let first = connect(&server, "main").await.expect("first");
    let _second = connect(&server, "main").await.expect("second");
    let refused = connect(&server, "main")
        .await
        .expect_err("third is over the limit");
    assert_eq!(code(&refused), "53300");
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    connect(&server, "main").await.expect("a slot freed up");
}

#[tokio::test]
async fn garbage_bytes_get_an_error_and_a_closed_connection_while_others_work() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    let mut raw = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("raw connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write garbage");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        raw.read_to_end(&mut answer),
    )
    .await
    .expect("server closes the connection")
    .expect("read");
    assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse first");
    assert!(String::from_utf8_lossy(&answer).contains("08P01"));
    let alive: i64 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("other session works")
        .get(0);
    assert_eq!(alive, 1);
}
