//! `paxsql restore FILE`: load a plain SQLite file into a (fresh) group through the wire.
//!
//! The file is read locally with rusqlite and replayed as ordinary SQL, so every node gets it
//! through Paxos like any other write:
//! 1. tables, parents before the tables whose foreign keys point at them;
//! 2. their rows, as multi-row INSERTs of `quote()`d values (exact for every type), keeping
//!    the rowids of tables that have no INTEGER PRIMARY KEY;
//! 3. `sqlite_sequence`, `user_version` and `application_id`;
//! 4. indexes, triggers and views last (triggers must not fire on restored rows).
//!
//! Each batch is its own replicated write, so an interrupted restore leaves a partial group:
//! restore into an empty group (it refuses a group that has tables unless `--force`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::Client;

use super::shell::{connect, describe_error};

/// A batch of rows is closed once its SQL text passes this many bytes.
pub const RESTORE_BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Most rows in one INSERT.
pub const RESTORE_BATCH_ROWS_MAX: usize = 20_000;

#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The SQLite file to load.
    pub file: PathBuf,
    /// Host of any node's SQL port.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Any node's SQL port.
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// Or a node's HTTP address: its SQL address is read from /status.
    #[arg(long)]
    pub http: Option<String>,
    /// The group (database) to load into.
    #[arg(long, default_value = "main")]
    pub db: String,
    #[arg(long, default_value = "paxsql")]
    pub user: String,
    /// Load even if the group already has tables (names must not clash).
    #[arg(long)]
    pub force: bool,
}

/// One table of the source file.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    sql: String,
    /// Parent tables named by its foreign keys.
    parents: Vec<String>,
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (host, port) = match &args.http {
        Some(http) => sql_address_of(http).await?,
        None => (args.host.clone(), args.port),
    };
    let source = open_source(&args.file)?;
    let client = connect(&host, port, &args.db, &args.user).await?;
    if !args.force {
        refuse_non_empty(&client, &args.db).await?;
    }
    let rows = restore(&source, &client).await?;
    let instance = committed_instance(&args, &host, port).await;
    println!(
        "restored {} into database {} via {host}:{port}: {rows} rows in {:.1} s{}",
        args.file.display(),
        args.db,
        started.elapsed().as_secs_f64(),
        instance
            .map(|instance| format!(", committed instance {instance}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn open_source(file: &Path) -> anyhow::Result<Connection> {
    let source = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let check: String = source
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .with_context(|| format!("{} is not a SQLite database", file.display()))?;
    if check != "ok" {
        bail!(
            "{} fails PRAGMA quick_check ({check}): repair it before restoring",
            file.display()
        );
    }
    Ok(source)
}

/// Replays `source` into the group behind `client`; returns the rows loaded.
pub async fn restore(source: &Connection, client: &Client) -> anyhow::Result<u64> {
    let tables = ordered_tables(source)?;
    for table in &tables {
        execute(client, &table.sql).await?;
    }
    let mut rows = 0;
    for table in &tables {
        rows += copy_rows(source, client, &table.name).await?;
    }
    for sql in sequence_and_pragmas(source)? {
        execute(client, &sql).await?;
    }
    let mut statement = source.prepare(
        "SELECT sql FROM sqlite_schema WHERE sql NOT NULL AND type IN ('index','trigger','view') \
         AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' AND tbl_name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
         ORDER BY rowid",
    )?;
    let others: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for sql in others {
        execute(client, &sql).await?;
    }
    Ok(rows)
}

async fn execute(client: &Client, sql: &str) -> anyhow::Result<()> {
    client.simple_query(sql).await.map_err(|error| {
        let shown: String = sql.chars().take(200).collect();
        anyhow::anyhow!("{} while running: {shown}", describe_error(&error))
    })?;
    Ok(())
}

/// User tables (no `sqlite_*`, no `_paxsql_*`), parents before children, else in creation
/// order. A foreign-key cycle keeps creation order (its rows may then need `--force` runs).
fn ordered_tables(source: &Connection) -> anyhow::Result<Vec<Table>> {
    let mut statement = source.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE type='table' AND sql NOT NULL \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
         ORDER BY rowid",
    )?;
    let mut pending: Vec<Table> = statement
        .query_map([], |row| {
            Ok(Table {
                name: row.get(0)?,
                sql: row.get(1)?,
                parents: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    for table in &mut pending {
        let mut parents =
            source.prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")?;
        table.parents = parents
            .query_map([&table.name], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|parent| !parent.eq_ignore_ascii_case(&table.name))
            .collect();
    }
    let mut ordered: Vec<Table> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|table| {
            table.parents.iter().all(|parent| {
                ordered
                    .iter()
                    .any(|done| done.name.eq_ignore_ascii_case(parent))
                    || !pending
                        .iter()
                        .any(|other| other.name.eq_ignore_ascii_case(parent))
            })
        });
        // A cycle: take the oldest table and go on.
        ordered.push(pending.remove(ready.unwrap_or(0)));
    }
    Ok(ordered)
}

/// Copies every row of `table` in multi-row INSERT batches; returns the row count.
async fn copy_rows(source: &Connection, client: &Client, table: &str) -> anyhow::Result<u64> {
    let quoted_table = quote_name(table);
    let mut columns_statement =
        source.prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let columns: Vec<(String, String, i64)> = columns_statement
        .query_map([table], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let primary_keys: Vec<_> = columns.iter().filter(|(_, _, pk)| *pk > 0).collect();
    let has_rowid_alias =
        primary_keys.len() == 1 && primary_keys[0].1.eq_ignore_ascii_case("INTEGER");
    let has_rowid = source
        .prepare(&format!("SELECT rowid FROM {quoted_table} LIMIT 0"))
        .is_ok();
    let keep_rowid = has_rowid && !has_rowid_alias;
    let mut names: Vec<String> = columns
        .iter()
        .map(|(name, _, _)| quote_name(name))
        .collect();
    let mut selected: Vec<String> = names.iter().map(|name| format!("quote({name})")).collect();
    if keep_rowid {
        names.insert(0, "rowid".into());
        selected.insert(0, "rowid".into());
    }
    let insert = format!("INSERT INTO {quoted_table}({}) VALUES", names.join(","));
    let mut statement = source.prepare(&format!(
        "SELECT {} FROM {quoted_table}",
        selected.join(",")
    ))?;
    let mut cursor = statement.query([])?;
    let (mut sql, mut batch_rows, mut total) = (String::new(), 0usize, 0u64);
    while let Some(row) = cursor.next()? {
        sql.push_str(if batch_rows == 0 { &insert } else { "," });
        sql.push('(');
        for index in 0..selected.len() {
            if index > 0 {
                sql.push(',');
            }
            match row.get_ref(index)? {
                rusqlite::types::ValueRef::Integer(value) => sql.push_str(&value.to_string()),
                other => sql.push_str(other.as_str().context("quote() returns text")?),
            }
        }
        sql.push(')');
        batch_rows += 1;
        total += 1;
        if batch_rows >= RESTORE_BATCH_ROWS_MAX || sql.len() >= RESTORE_BATCH_BYTES_MAX {
            execute(client, &sql).await?;
            sql.clear();
            batch_rows = 0;
        }
    }
    if batch_rows > 0 {
        execute(client, &sql).await?;
    }
    Ok(total)
}

/// `sqlite_sequence` as the file has it, and the header pragmas stored in the file.
fn sequence_and_pragmas(source: &Connection) -> anyhow::Result<Vec<String>> {
    let mut statements = Vec::new();
    let has_sequence: bool = source.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
        [],
        |row| row.get(0),
    )?;
    if has_sequence {
        let mut statement = source.prepare("SELECT quote(name), seq FROM sqlite_sequence")?;
        let rows: Vec<(String, i64)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if !rows.is_empty() {
            statements.push("DELETE FROM sqlite_sequence".to_string());
            let values: Vec<String> = rows
                .iter()
                .map(|(name, seq)| format!("({name},{seq})"))
                .collect();
            statements.push(format!(
                "INSERT INTO sqlite_sequence VALUES{}",
                values.join(",")
            ));
        }
    }
    for pragma in ["user_version", "application_id"] {
        let value: i64 = source.query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))?;
        if value != 0 {
            statements.push(format!("PRAGMA {pragma} = {value}"));
        }
    }
    Ok(statements)
}

async fn refuse_non_empty(client: &Client, db: &str) -> anyhow::Result<()> {
    let rows = client
        .simple_query(
            "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' LIMIT 5",
        )
        .await
        .map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
    let names: Vec<String> = rows
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    if !names.is_empty() {
        bail!(
            "database {db} is not empty (it has {}): restore into a fresh group, or pass --force",
            names.join(", ")
        );
    }
    Ok(())
}

/// The SQL address a node reports in `/status`.
async fn sql_address_of(http: &str) -> anyhow::Result<(String, u16)> {
    let (code, body) = crate::http::get(http, "/status").await?;
    if code != 200 {
        bail!("{http} answered HTTP {code}: {body}");
    }
    let status: serde_json::Value = serde_json::from_str(&body)?;
    let addr = status["sql_addr"]
        .as_str()
        .context("the node's /status has no sql_addr")?;
    let (host, port) = addr.rsplit_once(':').context("malformed sql_addr")?;
    Ok((
        host.to_string(),
        port.parse().context("malformed sql_addr port")?,
    ))
}

/// The group's committed instance, if the node's HTTP address is known (`--http`).
async fn committed_instance(args: &RestoreArgs, _host: &str, _port: u16) -> Option<u64> {
    let http = args.http.as_ref()?;
    let (_, body) = crate::http::get(http, "/status").await.ok()?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["groups"][&args.db]["committed_instance"].as_u64()
}

fn quote_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
