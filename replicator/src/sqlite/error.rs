//! Errors of the SQLite state machine, and the classification of SQLite's errors into
//! [`SqlErrorKind`] for the client.

use std::path::PathBuf;

use rusqlite::ffi;

use super::types::{SqlError, SqlErrorKind};

/// What can go wrong in the state machine itself (as opposed to a client statement failing).
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("SQLite failed while {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("I/O failed on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "could not register the paxsql SQLite VFS (SQLite error code {0}); the node cannot pin \
         time for replay and must not start"
    )]
    VfsRegistration(i32),
    /// A replayed statement behaved differently from the master. The replica must stop applying:
    /// continuing would silently diverge. An operator restores this node from a checkpoint.
    #[error(
        "replica diverged at instance {instance_id}, statement {statement_index} ({sql:?}): {detail}; \
         this node stopped applying — rebuild it from a checkpoint of a healthy node"
    )]
    Divergence {
        instance_id: u64,
        statement_index: usize,
        sql: String,
        detail: String,
    },
    /// Instances are applied strictly in order; a gap means the caller skipped one.
    #[error("instance {instance_id} cannot be applied: the next instance to apply is {expected}")]
    OutOfOrder { instance_id: u64, expected: u64 },
    /// The chosen value was executed by its master on another base than this replica's state.
    #[error(
        "instance {instance_id} holds a batch executed on base {base_instance}, but it must be \
         executed on instance {expected_base}; an executed value was re-proposed — stop and investigate"
    )]
    BaseMismatch {
        instance_id: u64,
        base_instance: u64,
        expected_base: u64,
    },
    /// COMMIT failed after the value was chosen: this node can no longer match the log. Fatal:
    /// the runtime stops the node; on restart it replays the chosen value from the log.
    #[error(
        "COMMIT of chosen instance {instance_id} failed: {detail}; the node must stop and replay \
         the log after a restart"
    )]
    CommitAfterChosen { instance_id: u64, detail: String },
    /// Only one owner of the writer at a time (a batch or an interactive transaction).
    #[error("the writer is busy with another batch or transaction")]
    WriterBusy,
    /// Writes arrive only on the master; followers write only in their apply path.
    #[error("this node does not accept writes (it is not the master, or not caught up yet)")]
    NotAcceptingWrites,
    /// The caller passed a base instance that is not this database's applied instance.
    #[error("batch base instance {given} is not the applied instance {applied:?}")]
    StaleBase { given: u64, applied: Option<u64> },
    /// Installing a checkpoint needs every reader connection back in the pool.
    #[error("{in_use} reader connections are still in use; finish the reads before installing a checkpoint")]
    ReadersInUse { in_use: usize },
    /// A checkpoint must hold an applied instance.
    #[error("the database has applied no instance yet; there is nothing to checkpoint")]
    NothingApplied,
    #[error("the database file {path} is not a paxsql database: {detail}")]
    NotPaxsql { path: PathBuf, detail: String },
}

impl SqliteError {
    pub fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SqliteError {
        let context = context.into();
        move |source| SqliteError::Sqlite { context, source }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SqliteError {
        let path = path.into();
        move |source| SqliteError::Io { path, source }
    }

    /// True when the node must stop (the runtime turns these into a node stop).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SqliteError::CommitAfterChosen { .. }
                | SqliteError::Divergence { .. }
                | SqliteError::BaseMismatch { .. }
                | SqliteError::VfsRegistration(_)
        )
    }
}

/// True when `error` is one that may have ended the whole transaction (FULL, IOERR, BUSY,
/// NOMEM, CORRUPT…). The caller still checks the autocommit state: that is the truth.
pub fn may_end_transaction(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(code) => matches!(
            code,
            rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::OutOfMemory
                | rusqlite::ErrorCode::DatabaseCorrupt
        ),
        None => false,
    }
}

/// Classifies a SQLite error for the client, with a message that says what to do.
pub fn classify(error: &rusqlite::Error) -> SqlError {
    let message = error_message(error);
    let lower = message.to_ascii_lowercase();
    let extended = match error {
        rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
        _ => 0,
    };
    let kind = match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE
        | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        | ffi::SQLITE_CONSTRAINT_ROWID => SqlErrorKind::UniqueViolation,
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => SqlErrorKind::ForeignKeyViolation,
        ffi::SQLITE_CONSTRAINT_NOTNULL => SqlErrorKind::NotNullViolation,
        ffi::SQLITE_CONSTRAINT_CHECK => SqlErrorKind::CheckViolation,
        ffi::SQLITE_READONLY | ffi::SQLITE_READONLY_DBMOVED => SqlErrorKind::ReadOnly,
        ffi::SQLITE_TOOBIG => SqlErrorKind::LimitExceeded,
        _ => classify_by_message(&lower),
    };
    let hint = match kind {
        SqlErrorKind::UniqueViolation => {
            " (a row with this key already exists; use INSERT … ON CONFLICT to update it)"
        }
        SqlErrorKind::ForeignKeyViolation => {
            " (the referenced row must exist; insert the parent row first)"
        }
        SqlErrorKind::UndefinedTable => " (check the table name; create the table first)",
        SqlErrorKind::UndefinedColumn => " (check the column name)",
        SqlErrorKind::Syntax => " (paxsql speaks SQLite's SQL dialect)",
        SqlErrorKind::ReadOnly => " (writes go to the master; this connection is read-only)",
        _ => "",
    };
    SqlError::new(kind, format!("{message}{hint}"))
}

fn classify_by_message(lower: &str) -> SqlErrorKind {
    if lower.contains("syntax error")
        || lower.contains("incomplete input")
        || lower.contains("unrecognized token")
    {
        SqlErrorKind::Syntax
    } else if lower.contains("no such table") || lower.contains("no such view") {
        SqlErrorKind::UndefinedTable
    } else if lower.contains("no such column") {
        SqlErrorKind::UndefinedColumn
    } else if lower.contains("readonly")
        || lower.contains("read-only")
        || lower.contains("query_only")
    {
        SqlErrorKind::ReadOnly
    } else if lower.contains("foreign key constraint failed") {
        SqlErrorKind::ForeignKeyViolation
    } else if lower.contains("unique constraint failed") {
        SqlErrorKind::UniqueViolation
    } else {
        SqlErrorKind::Other
    }
}

fn error_message(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            if message.is_empty() {
                failure.to_string()
            } else {
                message.clone()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn error_of(sql: &str) -> SqlError {
        let connection = Connection::open_in_memory().expect("in-memory database");
        connection
            .execute_batch(
                "CREATE TABLE parent(id INTEGER PRIMARY KEY);
                 CREATE TABLE t(id INTEGER PRIMARY KEY, a NOT NULL, b CHECK (b > 0), p REFERENCES parent(id));
                 INSERT INTO t VALUES (1, 1, 1, NULL); PRAGMA foreign_keys = ON;",
            )
            .expect("schema");
        let error = connection
            .execute_batch(sql)
            .expect_err("the statement must fail");
        classify(&error)
    }

    #[test]
    fn sqlite_errors_map_to_their_sql_error_kinds() {
        assert_eq!(
            error_of("INSERT INTO t VALUES (1, 1, 1, NULL)").kind,
            SqlErrorKind::UniqueViolation
        );
        assert_eq!(
            error_of("INSERT INTO t VALUES (2, NULL, 1, NULL)").kind,
            SqlErrorKind::NotNullViolation
        );
        assert_eq!(
            error_of("INSERT INTO t VALUES (2, 1, -1, NULL)").kind,
            SqlErrorKind::CheckViolation
        );
        assert_eq!(
            error_of("INSERT INTO t VALUES (2, 1, 1, 99)").kind,
            SqlErrorKind::ForeignKeyViolation
        );
        assert_eq!(error_of("SELEC 1").kind, SqlErrorKind::Syntax);
        assert_eq!(
            error_of("SELECT * FROM missing").kind,
            SqlErrorKind::UndefinedTable
        );
        assert_eq!(
            error_of("SELECT missing FROM t").kind,
            SqlErrorKind::UndefinedColumn
        );
    }
}
