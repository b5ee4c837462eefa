//! Statement and result types shared by the SQLite state machine and the proxy.
//!
//! They are plain data: no rusqlite types leak to the proxy, so the proxy can relay results
//! it got from another node exactly like results it computed itself.

/// One SQLite value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A statement to run, with its parameters. PostgreSQL `$n` parameters are bound **by name**
/// (`params[n-1]` binds `$n`), because SQLite numbers `$n` by first appearance.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementRequest {
    pub sql: String,
    pub params: Vec<Value>,
}

impl StatementRequest {
    pub fn new(sql: impl Into<String>) -> Self {
        StatementRequest {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Self {
        StatementRequest {
            sql: sql.into(),
            params,
        }
    }
}

/// A result column: its name and, where SQLite has one, its declared type (`INTEGER`, `TEXT`…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decl_type: Option<String>,
}

/// What one statement produced.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementResult {
    /// Result columns; empty for statements that return no rows.
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (`sqlite3_changes`), for the command tag.
    pub rows_changed: u64,
    /// The command tag verb (`INSERT`, `UPDATE`, `CREATE TABLE`, `SELECT`…).
    pub verb: String,
}

/// Why a statement failed, classified for SQLSTATE mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlErrorKind {
    UniqueViolation,
    ForeignKeyViolation,
    NotNullViolation,
    CheckViolation,
    Syntax,
    UndefinedTable,
    UndefinedColumn,
    /// The statement cannot be replicated deterministically (ATTACH, TEMP, 'localtime'…).
    NotReplicable,
    /// Refused because this node is not master and did not execute it: safe to retry elsewhere.
    NotMaster,
    /// No master within the wait.
    NoMaster,
    /// The instance went to another value: nothing was applied, retry.
    Lost,
    /// The outcome is unknown (the master died after proposing, a link broke).
    Unknown,
    /// The propose queue is full.
    Busy,
    /// A limit (value size, statements per batch, transaction size…) was exceeded.
    LimitExceeded,
    /// The database is read-only here (a misrouted write on a follower).
    ReadOnly,
    /// Anything else SQLite reported.
    Other,
}

/// A statement error with a message for the user (which names what to do next).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    pub kind: SqlErrorKind,
    pub message: String,
}

impl SqlError {
    pub fn new(kind: SqlErrorKind, message: impl Into<String>) -> Self {
        SqlError {
            kind,
            message: message.into(),
        }
    }
}

/// Read consistency of a session (`SET paxsql.consistency = …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// This node's replica, possibly stale.
    Local,
    /// Served by the master while its lease holds.
    #[default]
    Lease,
    /// The master confirms with a majority that it is still master before answering.
    Linearizable,
}

impl Consistency {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "local" => Some(Consistency::Local),
            "lease" => Some(Consistency::Lease),
            "linearizable" => Some(Consistency::Linearizable),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Lease => "lease",
            Consistency::Linearizable => "linearizable",
        }
    }
}
