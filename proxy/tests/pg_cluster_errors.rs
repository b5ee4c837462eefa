//! Cluster-only errors (no master, lost instance, unknown outcome…) reach the client with
//! their SQLSTATEs, through a backend that fails on demand; psql's `\dt` and `\d` work.

mod pg_common;

use std::sync::Arc;

use async_trait::async_trait;
use paxsql_proxy::backend::{Backend, Transaction};
use paxsql_proxy::pg::ServerOptions;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult,
};
use pg_common::{code, connect, start, start_with};

/// Fails every statement `fail:KIND` with that kind; answers anything else with no rows.
struct FaultBackend;

fn fault(sql: &str) -> Result<(), SqlError> {
    let Some(kind) = sql
        .trim()
        .strip_prefix("SELECT 'fail:")
        .and_then(|s| s.strip_suffix('\''))
    else {
        return Ok(());
    };
    let kind = match kind {
        "NotMaster" => SqlErrorKind::NotMaster,
        "NoMaster" => SqlErrorKind::NoMaster,
        "Lost" => SqlErrorKind::Lost,
        "Unknown" => SqlErrorKind::Unknown,
        "Busy" => SqlErrorKind::Busy,
        "LimitExceeded" => SqlErrorKind::LimitExceeded,
        "ReadOnly" => SqlErrorKind::ReadOnly,
        "NotReplicable" => SqlErrorKind::NotReplicable,
        _ => SqlErrorKind::Other,
    };
    let message = format!("injected {kind:?}");
    Err(SqlError::new(kind, message))
}

fn empty() -> StatementResult {
    StatementResult {
        columns: Vec::new(),
        rows: Vec::new(),
        rows_changed: 0,
        verb: "SELECT".into(),
    }
}

#[async_trait]
impl Backend for FaultBackend {
    fn has_group(&self, group: &str) -> bool {
        group == "main"
    }
    async fn execute_write(
        &self,
        _: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        statements.iter().try_for_each(|s| fault(&s.sql))?;
        Ok(statements.iter().map(|_| empty()).collect())
    }
    async fn read(
        &self,
        _: &str,
        statement: StatementRequest,
        _: Consistency,
    ) -> Result<StatementResult, SqlError> {
        fault(&statement.sql).map(|()| empty())
    }
    async fn begin(&self, _: &str) -> Result<Box<dyn Transaction>, SqlError> {
        Err(SqlError::new(SqlErrorKind::NoMaster, "no master"))
    }
    async fn is_read_only(&self, _: &str, _: &str) -> Result<bool, SqlError> {
        Ok(true)
    }
    async fn describe(&self, _: &str, _: &str) -> Result<Vec<Column>, SqlError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn every_cluster_error_kind_has_its_sqlstate_and_the_session_survives() {
    let directory = tempfile::tempdir().expect("temp dir");
    let server = start_with(Arc::new(FaultBackend), ServerOptions::default(), directory).await;
    let client = connect(&server, "main").await.expect("connect");
    let cases = [
        ("NotMaster", "25006"),
        ("NoMaster", "57P03"),
        ("Lost", "40001"),
        ("Unknown", "40003"),
        ("Busy", "53000"),
        ("LimitExceeded", "54000"),
        ("ReadOnly", "25006"),
        ("NotReplicable", "0A000"),
        ("Other", "XX000"),
    ];
    for (kind, expected) in cases {
        let sql = format!("SELECT 'fail:{kind}'");
        let simple = client.batch_execute(&sql).await.expect_err(kind);
        assert_eq!(code(&simple), expected, "simple {kind}");
        let extended = client.query(&sql, &[]).await.expect_err(kind);
        assert_eq!(code(&extended), expected, "extended {kind}");
    }
    let begin = client
        .batch_execute("BEGIN")
        .await
        .expect_err("begin without master");
    assert_eq!(code(&begin), "57P03");
    client
        .batch_execute("SELECT 'fine'")
        .await
        .expect("the session survives every error");
}

#[tokio::test]
async fn psql_lists_and_describes_tables() {
    let server = start(ServerOptions::default()).await;
    let client = connect(&server, "main").await.expect("connect");
    client
        .batch_execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL); CREATE TABLE _paxsql_meta (k)")
        .await
        .expect("schema");
    let psql = |command: &'static str| {
        let port = server.address.port().to_string();
        async move {
            let output = tokio::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "tester",
                    "-d",
                    "main",
                    "-X",
                    "-c",
                    command,
                ])
                .env("PGCONNECT_TIMEOUT", "10")
                .output()
                .await
                .expect("psql must be installed (apt-get install postgresql-client)");
            assert!(
                output.status.success(),
                "psql {command}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("utf-8")
        }
    };
    let listing = psql("\\dt").await;
    assert!(listing.contains("items"), "{listing}");
    assert!(
        !listing.contains("_paxsql"),
        "paxsql's tables are hidden: {listing}"
    );
    let described = psql("\\d items").await;
    assert!(described.contains("Table \"public.items\""), "{described}");
    assert!(
        described.contains("label") && described.contains("not null"),
        "{described}"
    );
    catalog_lists_indexes_and_views(&client, psql).await;
}

/// `\\d TABLE` shows the table's indexes (its rowid primary key, constraint indexes, created
/// ones with their own text); `\\di`, `\\dv` and `\\dt PATTERN` list what they name and
/// nothing else.
async fn catalog_lists_indexes_and_views<F, Fut>(client: &tokio_postgres::Client, psql: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    client
        .batch_execute(
            "CREATE UNIQUE INDEX items_label ON items (label); \
             CREATE INDEX items_long ON items (length(label) DESC) WHERE id > 10; \
             CREATE VIEW cheap AS SELECT id FROM items; \
             CREATE TABLE pair (a TEXT, \"B\" TEXT, PRIMARY KEY (a, \"B\"))",
        )
        .await
        .expect("indexes, a view, a composite key");
    let described = psql("\\d items").await;
    for footer in [
        "Indexes:",
        "\"items_pkey\" PRIMARY KEY, btree (id)",
        "\"items_label\" UNIQUE, btree (label)",
        "\"items_long\" btree (length(label) DESC) WHERE id > 10",
    ] {
        assert!(
            described.contains(footer),
            "missing {footer:?} in:\n{described}"
        );
    }
    let described = psql("\\d pair").await;
    assert!(
        described.contains("\"sqlite_autoindex_pair_1\" PRIMARY KEY, btree (a, \"B\")"),
        "{described}"
    );
    let indexes = psql("\\di").await;
    assert!(indexes.contains(" items_label "), "{indexes}");
    assert!(indexes.contains(" sqlite_autoindex_pair_1 "), "{indexes}");
    assert!(indexes.contains("| index |"), "{indexes}");
    assert!(
        !indexes.contains("| table |"),
        "\\di lists indexes only: {indexes}"
    );
    assert!(!indexes.contains("_paxsql"), "{indexes}");
    let views = psql("\\dv").await;
    assert!(views.contains(" cheap | view "), "{views}");
    assert!(
        !views.contains("| table |"),
        "\\dv lists views only: {views}"
    );
    let matching = psql("\\dt i*").await;
    assert!(matching.contains(" items | table "), "{matching}");
    assert!(!matching.contains("pair"), "{matching}");
}
