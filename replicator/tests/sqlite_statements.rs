//! Statement-level rules: refused statements, parameter binding, read/write decision, columns,
//! checkpoints.

mod sqlite_common;

use paxsql_replicator::sqlite::{
    checkpoint_instance, Database, DatabaseOptions, SqlErrorKind, Value,
};
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_000;

fn master_with_table() -> Node {
    let mut master = master();
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")],
    );
    master
}

/// Runs `statement` in a master batch and returns how it was refused.
fn refusal_in_batch(master: &mut Node, statement: &str) -> paxsql_replicator::sqlite::SqlError {
    let base = master.database.applied_instance().expect("applied");
    let mut batch = master
        .database
        .begin_batch(base, TIME_MS, 1)
        .expect("begin");
    let error = batch.execute(&sql(statement)).expect_err(statement);
    assert!(
        !batch.is_dead(),
        "a refused statement fails alone: {statement}"
    );
    error
}

#[test]
fn each_non_replicable_statement_class_is_refused_with_a_reason() {
    let mut master = master_with_table();
    let refused = [
        ("ATTACH DATABASE 'other.db' AS other", "ATTACH"),
        ("DETACH DATABASE other", "DETACH"),
        ("SELECT load_extension('libevil')", "load_extension"),
        ("CREATE TEMP TABLE scratch (a)", "TEMP"),
        ("CREATE TEMPORARY VIEW v AS SELECT 1", "TEMP"),
        (
            "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "TEMP",
        ),
        ("VACUUM", "VACUUM"),
        ("VACUUM INTO 'copy.db'", "VACUUM"),
        ("PRAGMA foreign_keys = OFF", "foreign_keys"),
        ("PRAGMA recursive_triggers = ON", "recursive_triggers"),
        ("PRAGMA journal_mode = DELETE", "journal_mode"),
        ("PRAGMA synchronous = OFF", "synchronous"),
        ("PRAGMA wal_checkpoint", "wal_checkpoint"),
        ("SELECT datetime('now', 'localtime')", "localtime"),
        (
            "INSERT INTO t (a) VALUES (datetime('now', 'utc'))",
            "localtime",
        ),
        (
            "INSERT INTO t (a) VALUES (total_changes())",
            "total_changes",
        ),
        ("BEGIN", "transaction control"),
        ("SAVEPOINT mine", "only inside BEGIN"),
        (
            "INSERT INTO t (a) SELECT count(*) FROM dbstat",
            "describes this node's database file",
        ),
        (
            "INSERT INTO t (a) SELECT page_count FROM pragma_page_count()",
            "describes this node's database file",
        ),
        (
            "INSERT INTO t (a) SELECT file FROM pragma_database_list",
            "describes this node's database file",
        ),
        (
            "SELECT * FROM pragma_freelist_count",
            "describes this node's database file",
        ),
        ("PRAGMA data_version", "describes this node's database file"),
    ];
    for (statement, reason) in refused {
        let error = refusal_in_batch(&mut master, statement);
        assert_eq!(
            error.kind,
            SqlErrorKind::NotReplicable,
            "{statement}: {error}"
        );
        assert!(error.message.contains(reason), "{statement}: {error}");
    }
}

#[test]
fn localtime_in_a_parameter_is_refused() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 1).expect("begin");
    let error = batch
        .execute(&sql_with(
            "INSERT INTO t (a) VALUES (datetime('now', $1))",
            vec![Value::Text("localtime".into())],
        ))
        .expect_err("localtime parameter");
    assert_eq!(error.kind, SqlErrorKind::NotReplicable);
}

#[test]
fn pragmas_stored_in_the_file_replicate() {
    let mut master = master_with_table();
    let value = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[
            sql("PRAGMA user_version = 7"),
            sql("PRAGMA application_id = 99"),
        ],
    );
    let mut follower = node();
    let schema = {
        let mut scratch = master_with_table_value();
        scratch.remove(0)
    };
    follower.database.apply(1, &schema).expect("schema");
    follower.database.apply(2, &value).expect("pragmas");
    assert_eq!(
        rows(&follower.database, "PRAGMA user_version"),
        vec![vec![Value::Integer(7)]]
    );
    assert_eq!(
        rows(&follower.database, "PRAGMA application_id"),
        vec![vec![Value::Integer(99)]]
    );
}

fn master_with_table_value() -> Vec<paxsql_schema::PaxosValue> {
    let mut scratch = master();
    vec![commit_batch(
        &mut scratch.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")],
    )]
}

#[test]
fn readers_refuse_attach_and_connection_pragmas_but_allow_introspection() {
    let master = master_with_table();
    let error = master
        .database
        .read(&sql("ATTACH DATABASE ':memory:' AS other"))
        .expect_err("attach");
    assert_eq!(error.kind, SqlErrorKind::NotReplicable);
    let error = master
        .database
        .read(&sql("PRAGMA query_only = OFF"))
        .expect_err("query_only");
    assert_eq!(error.kind, SqlErrorKind::NotReplicable);
    let columns = rows(&master.database, "PRAGMA table_info(t)");
    assert_eq!(columns.len(), 2);
}

#[test]
fn dollar_parameters_bind_by_number_not_by_appearance() {
    let master = master_with_table();
    let result = master
        .database
        .read(&sql_with(
            "SELECT $2, $1, ?3, $2",
            vec![
                Value::Integer(1),
                Value::Text("two".into()),
                Value::Real(3.5),
            ],
        ))
        .expect("select");
    assert_eq!(
        result.rows,
        vec![vec![
            Value::Text("two".into()),
            Value::Integer(1),
            Value::Real(3.5),
            Value::Text("two".into())
        ]]
    );
    let anonymous = master
        .database
        .read(&sql_with(
            "SELECT ?, ?",
            vec![Value::Integer(1), Value::Null],
        ))
        .expect("select");
    assert_eq!(anonymous.rows, vec![vec![Value::Integer(1), Value::Null]]);
    let missing = master
        .database
        .read(&sql_with("SELECT $2", vec![Value::Integer(1)]))
        .expect_err("missing");
    assert!(missing.message.contains("$2"), "{missing}");
}

#[test]
fn parameters_replay_on_followers() {
    let mut master = master_with_table();
    let schema = master_with_table_value().remove(0);
    let value = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql_with(
            "INSERT INTO t (a, id) VALUES ($2, $1)",
            vec![Value::Integer(10), Value::Blob(vec![1, 2])],
        )],
    );
    let mut follower = node();
    follower.database.apply(1, &schema).expect("schema");
    follower.database.apply(2, &value).expect("replay");
    assert_eq!(
        rows(&follower.database, "SELECT id, a FROM t"),
        vec![vec![Value::Integer(10), Value::Blob(vec![1, 2])]]
    );
}

#[test]
fn read_only_decision_follows_sqlite() {
    let master = master_with_table();
    assert!(master
        .database
        .is_read_only("SELECT * FROM t")
        .expect("select"));
    assert!(!master
        .database
        .is_read_only("INSERT INTO t (a) VALUES (1)")
        .expect("insert"));
    assert!(!master
        .database
        .is_read_only("CREATE TABLE u (a)")
        .expect("create"));
    assert!(!master
        .database
        .is_read_only("WITH x AS (SELECT 1) DELETE FROM t")
        .expect("delete"));
    let error = master.database.is_read_only("SELEC").expect_err("syntax");
    assert_eq!(error.kind, SqlErrorKind::Syntax);
}

#[test]
fn reads_report_declared_column_types_and_verbs() {
    let master = master_with_table();
    let result = master
        .database
        .read(&sql("SELECT id, a, 1 AS one FROM t"))
        .expect("select");
    let declared: Vec<_> = result
        .columns
        .iter()
        .map(|column| (column.name.as_str(), column.decl_type.as_deref()))
        .collect();
    assert_eq!(
        declared,
        vec![("id", Some("INTEGER")), ("a", Some("TEXT")), ("one", None)]
    );
    assert_eq!(result.verb, "SELECT");
}

#[test]
fn rows_changed_counts_only_rows_written_by_the_statement() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 1).expect("begin");
    let inserted = batch
        .execute(&sql("INSERT INTO t (a) VALUES ('x'), ('y')"))
        .expect("insert");
    assert_eq!(
        (inserted.rows_changed, inserted.verb.as_str()),
        (2, "INSERT")
    );
    let created = batch.execute(&sql("CREATE TABLE u (a)")).expect("create");
    assert_eq!(
        (created.rows_changed, created.verb.as_str()),
        (0, "CREATE TABLE")
    );
    let selected = batch.execute(&sql("SELECT * FROM t")).expect("select");
    assert_eq!((selected.rows_changed, selected.rows.len()), (0, 2));
    let returning = batch
        .execute(&sql("UPDATE t SET a = 'z' RETURNING id"))
        .expect("update");
    assert_eq!((returning.rows_changed, returning.rows.len()), (2, 2));
}

#[test]
fn checkpoint_and_install_round_trip() {
    // Phase 1: a master with content writes a checkpoint.
    let mut master = master_with_table();
    commit_batch(
        &mut master.database,
        TIME_MS,
        3,
        &[sql(
            "INSERT INTO t (a) SELECT hex(randomblob(8)) FROM (SELECT 1 UNION ALL SELECT 2)",
        )],
    );
    let checkpoint = master.dir.path().join("checkpoint.sqlite");
    assert_eq!(
        master
            .database
            .checkpoint_to(&checkpoint)
            .expect("checkpoint"),
        2
    );
    assert_eq!(
        checkpoint_instance(&checkpoint).expect("instance inside"),
        2
    );
    // Phase 2: a fresh node installs it and continues from instance 3.
    let mut follower = node();
    let copied = follower.dir.path().join("incoming.sqlite");
    std::fs::copy(&checkpoint, &copied).expect("transfer");
    follower
        .database
        .install_checkpoint(&copied)
        .expect("install");
    let installed = follower.database;
    assert_eq!(installed.applied_instance(), Some(2));
    assert_eq!(
        installed.content_hash().expect("hash"),
        master.database.content_hash().expect("hash")
    );
    assert_eq!(installed.meta().expect("meta").cluster_gid, Some(42));
    let mut installed = installed;
    let next = commit_batch(
        &mut master.database,
        TIME_MS,
        4,
        &[sql("DELETE FROM t WHERE id = 1")],
    );
    installed.apply(3, &next).expect("apply after install");
    assert_eq!(
        installed.content_hash().expect("hash"),
        master.database.content_hash().expect("hash")
    );
    // Phase 3: the installed replica survives a reopen.
    let path = installed.path().to_path_buf();
    drop(installed);
    let reopened = Database::open(&path, DatabaseOptions::default()).expect("reopen");
    assert_eq!(reopened.applied_instance(), Some(3));
    let _keep = follower.dir;
}

#[test]
fn a_checkpoint_install_waits_for_readers() {
    let master = master_with_table();
    let checkpoint = master.dir.path().join("checkpoint.sqlite");
    master
        .database
        .checkpoint_to(&checkpoint)
        .expect("checkpoint");
    let mut follower = node();
    let reader = follower.database.readers().get().expect("reader");
    let error = follower
        .database
        .install_checkpoint(&checkpoint)
        .expect_err("readers in use");
    assert!(error.to_string().contains("reader"), "{error}");
    // Nothing changed: the replica still works, and the install succeeds once the read ends.
    assert_eq!(follower.database.applied_instance(), Some(0));
    drop(reader);
    follower
        .database
        .install_checkpoint(&checkpoint)
        .expect("install");
    assert_eq!(follower.database.applied_instance(), Some(1));
}

#[test]
fn readers_are_bounded_and_shareable_across_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Database>();
    assert_send_sync::<paxsql_replicator::sqlite::ReaderPool>();
    let dir = tempfile::tempdir().expect("temp dir");
    let options = DatabaseOptions {
        readers_max: 2,
        ..Default::default()
    };
    let database = Database::open(dir.path().join("db.sqlite"), options).expect("open");
    let readers = database.readers();
    let first = readers.get().expect("first");
    let second = readers.get().expect("second");
    let error = readers.get().err().expect("third is over the bound");
    assert_eq!(error.kind, SqlErrorKind::Busy);
    drop(first);
    let from_thread =
        std::thread::spawn(move || readers.read(&sql("SELECT 1")).map(|result| result.rows));
    assert_eq!(
        from_thread.join().expect("thread").expect("read"),
        vec![vec![Value::Integer(1)]]
    );
    drop(second);
}

#[test]
fn budgeted_reads_finish_short_statements_and_give_up_long_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database =
        Database::open(dir.path().join("db.sqlite"), DatabaseOptions::default()).expect("open");
    let readers = database.readers();
    // No idle reader yet: the budgeted path never opens one (that is file I/O).
    assert!(readers.read_within_budget(&sql("SELECT 1"), 4).is_none());
    drop(readers.get().expect("open one reader"));
    let short = readers
        .read_within_budget(&sql("SELECT 1"), 4)
        .expect("a one-row read fits the budget");
    assert_eq!(short.rows, vec![vec![Value::Integer(1)]]);
    let long = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
                SELECT count(*) FROM n";
    assert!(
        readers.read_within_budget(&sql(long), 4).is_none(),
        "a million-row scan is interrupted"
    );
    // The same reader, disarmed again, runs it to the end.
    let full = readers.read(&sql(long)).expect("unbudgeted read");
    assert_eq!(full.rows, vec![vec![Value::Integer(1_000_000)]]);
    // Errors are not answered in place: the blocking path gives the authoritative one.
    assert!(readers
        .read_within_budget(&sql("SELECT * FROM missing"), 4)
        .is_none());
}

/// A bare writer connection in a temp dir (kept alive by the returned dir).
fn open_writer() -> (
    tempfile::TempDir,
    paxsql_replicator::sqlite::connection::PaxConnection,
) {
    use paxsql_replicator::sqlite::connection::PaxConnection;
    use paxsql_replicator::sqlite::ConnectionOptions;
    let dir = tempfile::tempdir().expect("temp dir");
    let writer =
        PaxConnection::open_writer(&dir.path().join("w.sqlite"), &ConnectionOptions::default())
            .expect("open the writer");
    (dir, writer)
}

/// The writer runs a client's writes only between the start and the end of a batch or an
/// apply; outside them a client statement may read, never write. A trigger's write counts.
#[test]
fn the_writer_takes_client_writes_only_inside_a_transaction() {
    let (_dir, writer) = open_writer();
    writer.set_writes_open(true);
    writer
        .execute("CREATE TABLE t (a)", &[])
        .expect("create while open");
    writer
        .execute("CREATE TABLE audit (a)", &[])
        .expect("create while open");
    writer
        .execute(
            "CREATE TRIGGER copy AFTER UPDATE ON t BEGIN INSERT INTO audit VALUES (new.a); END",
            &[],
        )
        .expect("trigger while open");
    // Run once while open, so the writer's statement cache holds them compiled.
    for statement in ["INSERT INTO t VALUES (1)", "UPDATE t SET a = 2"] {
        writer.execute(statement, &[]).expect("write while open");
    }
    writer.set_writes_open(false);
    for statement in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 2",
        "DROP TABLE t",
    ] {
        let Err(error) = writer.execute(statement, &[]) else {
            panic!("{statement} ran on a writer closed for writes");
        };
        assert!(
            error.message.contains("inside a replicated transaction"),
            "{statement}: {error}"
        );
    }
    writer
        .execute("SELECT count(*) FROM t", &[])
        .expect("reads stay open");
    writer.set_writes_open(true);
    writer
        .execute("INSERT INTO t VALUES (1)", &[])
        .expect("insert while open");
}

/// A statement from the statement cache was judged by the authorizer when it was compiled; when
/// the schema changes under it, SQLite compiles it again and the authorizer judges it again.
#[test]
fn a_cached_statement_is_judged_again_when_the_schema_changes() {
    let (_dir, writer) = open_writer();
    writer.set_writes_open(true);
    writer
        .execute("CREATE VIEW v AS SELECT 1 AS x", &[])
        .expect("create a harmless view");
    for _ in 0..3 {
        writer
            .execute("SELECT x FROM v", &[])
            .expect("read the harmless view");
    }
    // Replaced behind the client's back (policing off, as paxsql's own statements run) by a
    // view whose value is connection-local: the writer refuses changes() in what it runs.
    writer.execute_cached("DROP VIEW v").expect("drop");
    writer
        .execute_cached("CREATE VIEW v AS SELECT changes() AS x")
        .expect("create the view paxsql refuses to read on the writer");
    let Err(error) = writer.execute("SELECT x FROM v", &[]) else {
        panic!("the cached statement ran without being judged again");
    };
    assert_eq!(error.kind, SqlErrorKind::NotReplicable, "{error}");
    assert!(error.message.contains("changes()"), "{error}");
}

/// paxsql's bookkeeping (`_paxsql_meta`: applied instance, members, checksums) lives beside the
/// user's tables: a client may read it, never change it, and never name an object with the
/// reserved prefix (backups and the catalog leave such objects out).
#[test]
fn paxsql_tables_may_be_read_but_never_changed_by_a_client() {
    let mut master = master_with_table();
    let meta_rows = count(&master.database, "_paxsql_meta");
    assert!(meta_rows > 0);
    commit_batch(
        &mut master.database,
        TIME_MS,
        2,
        &[sql("CREATE TABLE audit (a)")],
    );
    for statement in [
        "DELETE FROM _paxsql_meta",
        "UPDATE _paxsql_meta SET value = 0",
        "INSERT INTO _paxsql_meta (key, value) VALUES ('x', 1)",
        "DROP TABLE _paxsql_meta",
        "ALTER TABLE _paxsql_meta ADD COLUMN c",
        "CREATE INDEX sneaky ON _paxsql_meta (value)",
        "CREATE TABLE _PAXSQL_mine (a)",
        "CREATE VIEW _paxsql_view AS SELECT 1",
        "CREATE TRIGGER sneaky AFTER INSERT ON _paxsql_meta BEGIN DELETE FROM audit; END",
        "ALTER TABLE audit RENAME TO _paxsql_hidden",
        "ALTER TABLE audit RENAME TO \"_PAXSQL_hidden\"",
        "ALTER TABLE _paxsql_meta RENAME TO mine",
        "CREATE TABLE evil (v REFERENCES _paxsql_meta (value))",
        "ALTER TABLE audit ADD COLUMN v REFERENCES [_Paxsql_Meta] (value)",
        "UPDATE main._paxsql_meta SET value = 0",
        "DELETE FROM \"_paxsql_meta\"",
        // A trigger on a user table may not touch them either.
        "CREATE TRIGGER sneaky AFTER INSERT ON t BEGIN DELETE FROM _paxsql_meta; END",
    ] {
        let error = refusal_in_batch(&mut master, statement);
        assert_eq!(
            error.kind,
            SqlErrorKind::NotReplicable,
            "{statement}: {error}"
        );
        assert!(error.message.contains("reserved"), "{statement}: {error}");
    }
    // Reading is fine, and the bookkeeping is whole.
    let base = master.database.applied_instance().expect("applied");
    let mut batch = master
        .database
        .begin_batch(base, TIME_MS, 4)
        .expect("begin");
    batch
        .execute(&sql("SELECT count(*) FROM _paxsql_meta"))
        .expect("a client may read paxsql's tables");
    drop(batch);
    assert_eq!(count(&master.database, "_paxsql_meta"), meta_rows);
}

/// paxsql's own statements sit in the same statement cache, compiled without the client
/// policy; a client that sends one of their texts must still be judged.
#[test]
fn a_client_sending_the_text_of_a_paxsql_statement_is_still_judged() {
    /// The text of `meta::set_five`, which every applied instance runs from the cache.
    const SET_FIVE: &str = "UPDATE _paxsql_meta SET value = CASE key \
         WHEN ?1 THEN ?2 WHEN ?3 THEN ?4 WHEN ?5 THEN ?6 WHEN ?7 THEN ?8 WHEN ?9 THEN ?10 END \
         WHERE key IN (?1, ?3, ?5, ?7, ?9)";
    let mut master = master_with_table();
    // A commit after the last schema change: paxsql's statement is compiled for the current
    // schema and sits in the cache, unjudged.
    commit_batch(
        &mut master.database,
        TIME_MS,
        2,
        &[sql("INSERT INTO t (a) VALUES ('x')")],
    );
    let base = master.database.applied_instance().expect("applied");
    let mut batch = master
        .database
        .begin_batch(base, TIME_MS, 3)
        .expect("begin");
    let params = (0..5)
        .flat_map(|_| [Value::Text("applied_instance".into()), Value::Integer(0)])
        .collect();
    let error = batch
        .execute(&sql_with(SET_FIVE, params))
        .expect_err("a client statement on paxsql's tables is refused");
    assert_eq!(error.kind, SqlErrorKind::NotReplicable, "{error}");
}

#[test]
fn a_reader_describes_in_place_and_sees_each_schema_change() {
    let mut master = master_with_table();
    let readers = master.database.readers();
    let names = |described: Option<Result<Vec<paxsql_replicator::sqlite::Column>, _>>| {
        described
            .expect("an idle reader describes without waiting")
            .expect("the statement compiles")
            .into_iter()
            .map(|column| (column.name, column.decl_type))
            .collect::<Vec<_>>()
    };
    // Opened and returned once, so an idle reader exists.
    drop(readers.get().expect("a reader"));
    assert_eq!(
        names(readers.describe_in_place("SELECT * FROM t")),
        vec![
            ("id".to_string(), Some("INTEGER".to_string())),
            ("a".to_string(), Some("TEXT".to_string()))
        ]
    );
    let missing = readers
        .describe_in_place("SELECT * FROM nowhere")
        .expect("answered in place")
        .expect_err("no such table");
    assert!(missing.message.contains("nowhere"), "{missing}");
    // Judged like a statement that runs: a flag pragma takes effect when it is compiled.
    let refused = readers
        .describe_in_place("PRAGMA reverse_unordered_selects = ON")
        .expect("answered in place")
        .expect_err("a connection setting is refused");
    assert_eq!(refused.kind, SqlErrorKind::NotReplicable, "{refused}");
    // The reader goes back to the pool waiting for locks as before.
    let reader = readers.get().expect("the reader that described");
    let busy_timeout_ms: i64 = reader
        .connection
        .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
        .expect("read the busy timeout");
    assert_eq!(busy_timeout_ms, 5_000);
    drop(reader);
    commit_batch(
        &mut master.database,
        TIME_MS,
        2,
        &[sql("ALTER TABLE t ADD COLUMN b REAL")],
    );
    assert_eq!(
        names(readers.describe_in_place("SELECT * FROM t")).len(),
        3,
        "the committed column is described"
    );
}

#[test]
fn a_transaction_describes_its_own_schema_and_is_judged() {
    let mut master = master_with_table();
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    batch
        .execute(&sql(
            "CREATE TABLE made_here (id INTEGER PRIMARY KEY, n INTEGER)",
        ))
        .expect("create inside the transaction");
    let columns = batch
        .describe("SELECT * FROM made_here")
        .expect("the transaction sees its own table");
    assert_eq!(columns.len(), 2);
    let refused = batch
        .describe("PRAGMA recursive_triggers = ON")
        .expect_err("a connection setting is refused on the writer too");
    assert_eq!(refused.kind, SqlErrorKind::NotReplicable, "{refused}");
    // A statement that ends the whole transaction: a describe then fails with its error.
    batch
        .execute(&sql("INSERT INTO made_here VALUES (1, 1)"))
        .expect("insert");
    batch
        .execute(&sql("INSERT OR ROLLBACK INTO made_here VALUES (1, 2)"))
        .expect_err("the conflict rolls the whole transaction back");
    let dead = batch
        .describe("SELECT * FROM t")
        .expect_err("nothing is described for a dead transaction");
    assert!(
        dead.message.contains("ended the whole transaction"),
        "{dead}"
    );
}
