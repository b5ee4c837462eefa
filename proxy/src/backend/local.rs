//! [`LocalSqliteBackend`]: a [`Backend`] over plain SQLite files, one per group, on one node
//! with no replication. Tests run the wire server over it; the node's real backend follows
//! the same contracts over the cluster.
//!
//! Each group has one writer connection (behind an async mutex: a write unit or an
//! interactive transaction owns it for its whole life) and one `query_only` reader, so reads
//! never see the writer's open transaction (WAL mode).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult, Value,
};
use rusqlite::{ffi, Connection};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{Backend, Transaction};
use crate::sql::command_verb;

struct Group {
    writer: Arc<AsyncMutex<Connection>>,
    reader: Mutex<Connection>,
}

/// Single-node SQLite backend: `DIR/<group>.sqlite` for every configured group.
pub struct LocalSqliteBackend {
    groups: HashMap<String, Group>,
}

impl LocalSqliteBackend {
    /// Opens (creating if needed) one database file per group under `directory`.
    pub fn open(directory: &Path, groups: &[&str]) -> Result<Self, SqlError> {
        let mut opened = HashMap::new();
        for name in groups {
            let path = directory.join(format!("{name}.sqlite"));
            let writer = Connection::open(&path).map_err(|e| map_sqlite_error(&e))?;
            writer
                .execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                .map_err(|e| map_sqlite_error(&e))?;
            let reader = Connection::open(&path).map_err(|e| map_sqlite_error(&e))?;
            reader
                .execute_batch("PRAGMA query_only=ON;")
                .map_err(|e| map_sqlite_error(&e))?;
            let group = Group {
                writer: Arc::new(AsyncMutex::new(writer)),
                reader: Mutex::new(reader),
            };
            opened.insert((*name).to_owned(), group);
        }
        Ok(LocalSqliteBackend { groups: opened })
    }

    fn group(&self, name: &str) -> Result<&Group, SqlError> {
        self.groups.get(name).ok_or_else(|| {
            SqlError::new(
                SqlErrorKind::Other,
                format!("database \"{name}\" is not served here"),
            )
        })
    }
}

#[async_trait]
impl Backend for LocalSqliteBackend {
    fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        let connection = self.group(group)?.writer.lock().await;
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| map_sqlite_error(&e))?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in &statements {
            match run_statement(&connection, statement) {
                Ok(result) => results.push(result),
                Err(error) => {
                    if !connection.is_autocommit() {
                        connection
                            .execute_batch("ROLLBACK")
                            .expect("ROLLBACK of an open write unit cannot fail");
                    }
                    return Err(error);
                }
            }
        }
        if connection.is_autocommit() {
            // A statement such as INSERT OR ROLLBACK ended the unit: nothing is committed.
            return Err(SqlError::new(
                SqlErrorKind::Other,
                "a statement rolled the whole unit back; nothing was written",
            ));
        }
        connection
            .execute_batch("COMMIT")
            .map_err(|e| map_sqlite_error(&e))?;
        Ok(results)
    }

    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        _consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        let reader = self
            .group(group)?
            .reader
            .lock()
            .expect("reader mutex poisoned");
        run_statement(&reader, &statement)
    }

    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError> {
        let connection = self.group(group)?.writer.clone().lock_owned().await;
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| map_sqlite_error(&e))?;
        Ok(Box::new(LocalTransaction {
            connection,
            open: true,
        }))
    }

    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError> {
        let reader = self
            .group(group)?
            .reader
            .lock()
            .expect("reader mutex poisoned");
        let statement = reader.prepare(sql).map_err(|e| map_sqlite_error(&e))?;
        Ok(statement.readonly())
    }

    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError> {
        let reader = self
            .group(group)?
            .reader
            .lock()
            .expect("reader mutex poisoned");
        describe_on(&reader, sql)
    }
}

/// An interactive transaction holding the group's writer.
struct LocalTransaction {
    connection: OwnedMutexGuard<Connection>,
    /// False once SQLite itself ended the transaction (INSERT OR ROLLBACK, RAISE(ROLLBACK)).
    open: bool,
}

#[async_trait]
impl Transaction for LocalTransaction {
    async fn execute(&mut self, statement: StatementRequest) -> Result<StatementResult, SqlError> {
        if !self.open {
            return Err(SqlError::new(
                SqlErrorKind::Other,
                "the transaction was already rolled back",
            ));
        }
        let result = run_statement(&self.connection, &statement);
        if self.connection.is_autocommit() {
            self.open = false;
        }
        result
    }

    async fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError> {
        describe_on(&self.connection, sql)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), SqlError> {
        if !self.open {
            return Err(SqlError::new(
                SqlErrorKind::Other,
                "the transaction was rolled back",
            ));
        }
        self.open = false;
        let outcome = self
            .connection
            .execute_batch("COMMIT")
            .map_err(|e| map_sqlite_error(&e));
        if outcome.is_err() && !self.connection.is_autocommit() {
            self.connection
                .execute_batch("ROLLBACK")
                .expect("ROLLBACK after a failed COMMIT");
        }
        outcome
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), SqlError> {
        if self.open && !self.connection.is_autocommit() {
            self.connection
                .execute_batch("ROLLBACK")
                .map_err(|e| map_sqlite_error(&e))?;
        }
        self.open = false;
        Ok(())
    }
}

impl Drop for LocalTransaction {
    fn drop(&mut self) {
        if self.open && !self.connection.is_autocommit() {
            // The safety net of the Transaction contract: a forgotten transaction rolls back.
            if let Err(error) = self.connection.execute_batch("ROLLBACK") {
                tracing::error!(%error, "rolling back a dropped transaction failed");
            }
        }
    }
}

fn describe_on(connection: &Connection, sql: &str) -> Result<Vec<Column>, SqlError> {
    // Running a statement reloads a schema another connection changed; compiling does not.
    connection
        .prepare_cached("SELECT 1 FROM sqlite_schema LIMIT 1")
        .and_then(|mut statement| statement.exists([]))
        .map_err(|e| map_sqlite_error(&e))?;
    let statement = connection.prepare(sql).map_err(|e| map_sqlite_error(&e))?;
    Ok(statement
        .columns()
        .map(|column| Column {
            name: column.name().to_owned(),
            decl_type: column.decl_type().map(str::to_owned),
        })
        .collect())
}

/// Runs one statement, binding `$n` parameters by name (`params[n-1]`).
fn run_statement(
    connection: &Connection,
    request: &StatementRequest,
) -> Result<StatementResult, SqlError> {
    let mut statement = connection
        .prepare(&request.sql)
        .map_err(|e| map_sqlite_error(&e))?;
    bind_parameters(&mut statement, &request.params)?;
    let columns: Vec<Column> = statement
        .columns()
        .map(|column| Column {
            name: column.name().to_owned(),
            decl_type: column.decl_type().map(str::to_owned),
        })
        .collect();
    let read_only = statement.readonly();
    let mut rows = Vec::new();
    if columns.is_empty() {
        statement.raw_execute().map_err(|e| map_sqlite_error(&e))?;
    } else {
        let mut cursor = statement.raw_query();
        while let Some(row) = cursor.next().map_err(|e| map_sqlite_error(&e))? {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                let value = row.get_ref(index).map_err(|e| map_sqlite_error(&e))?;
                values.push(value_from_ref(value));
            }
            rows.push(values);
        }
    }
    let rows_changed = if read_only { 0 } else { connection.changes() };
    Ok(StatementResult {
        columns,
        rows,
        rows_changed,
        verb: command_verb(&request.sql),
    })
}

fn bind_parameters(
    statement: &mut rusqlite::Statement<'_>,
    params: &[Value],
) -> Result<(), SqlError> {
    for index in 1..=statement.parameter_count() {
        let number = match statement.parameter_name(index) {
            None => index,
            Some(name) => name[1..].parse::<usize>().map_err(|_| {
                SqlError::new(
                    SqlErrorKind::Syntax,
                    format!("parameter {name} is not supported; use $1, $2, … (bound by number)"),
                )
            })?,
        };
        let value = params.get(number.wrapping_sub(1)).ok_or_else(|| {
            SqlError::new(
                SqlErrorKind::Other,
                format!(
                    "the statement uses ${number} but {} parameters were bound",
                    params.len()
                ),
            )
        })?;
        let bound = match value {
            Value::Null => rusqlite::types::Value::Null,
            Value::Integer(v) => rusqlite::types::Value::Integer(*v),
            Value::Real(v) => rusqlite::types::Value::Real(*v),
            Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
            Value::Blob(v) => rusqlite::types::Value::Blob(v.clone()),
        };
        statement
            .raw_bind_parameter(index, bound)
            .map_err(|e| map_sqlite_error(&e))?;
    }
    Ok(())
}

/// Classifies a rusqlite error for SQLSTATE mapping.
pub fn map_sqlite_error(error: &rusqlite::Error) -> SqlError {
    let message = error.to_string();
    let kind = match error.sqlite_error() {
        Some(failure) => match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                SqlErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => SqlErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => SqlErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => SqlErrorKind::CheckViolation,
            _ => match failure.code {
                rusqlite::ErrorCode::ReadOnly => SqlErrorKind::ReadOnly,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    SqlErrorKind::Busy
                }
                rusqlite::ErrorCode::TooBig => SqlErrorKind::LimitExceeded,
                _ => kind_from_message(&message),
            },
        },
        None => kind_from_message(&message),
    };
    SqlError::new(kind, message)
}

fn kind_from_message(message: &str) -> SqlErrorKind {
    if message.contains("no such table") {
        SqlErrorKind::UndefinedTable
    } else if message.contains("no such column") {
        SqlErrorKind::UndefinedColumn
    } else if message.contains("syntax error") || message.contains("incomplete input") {
        SqlErrorKind::Syntax
    } else if message.contains("readonly database") {
        SqlErrorKind::ReadOnly
    } else {
        SqlErrorKind::Other
    }
}

fn value_from_ref(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Integer(v),
        ValueRef::Real(v) => Value::Real(v),
        ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Value::Blob(v.to_vec()),
    }
}
