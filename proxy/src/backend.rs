//! What the PostgreSQL front end needs from the database: the [`Backend`] trait.
//!
//! The wire server (`crate::pg`) knows nothing about Paxos, masters or forwarding. It calls a
//! `Backend`, which the node implements over the replicated cluster (writes routed to the
//! master, reads at the session's consistency) and which [`local::LocalSqliteBackend`]
//! implements over one plain SQLite file for tests and as a reference.
//!
//! Every method returns a [`SqlError`] whose [`SqlErrorKind`](paxsql_replicator::sqlite::types::SqlErrorKind)
//! the server maps to a SQLSTATE, so the same error reaches the client whether it was raised
//! here or relayed from another node.

pub mod local;

use async_trait::async_trait;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, StatementRequest, StatementResult,
};
use paxsql_replicator::sqlite::ReadCancel;

/// The database as the wire server sees it. One instance serves every connection.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whether this node serves the group (database) named `group`. The server answers
    /// 3D000 at startup when it does not.
    fn has_group(&self, group: &str) -> bool;

    /// Runs `statements` as ONE atomic unit of autocommit work (a whole simple-Query message is
    /// one unit, as in PostgreSQL): either every statement succeeds and the unit commits, or the
    /// unit fails as a whole and nothing of it is visible. On success it returns one result per
    /// statement, in order. Results are returned only once the unit is durable (chosen).
    /// The statements may include reads; they see the unit's earlier writes.
    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError>;

    /// Runs one read-only statement at `consistency`. It must never change the database: a
    /// statement that tries to write fails (`ReadOnly`) rather than diverging a replica.
    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, SqlError>;

    /// [`Self::read`] that `cancel` may interrupt (PostgreSQL's CancelRequest); a canceled read
    /// fails with [`ReadCancel::error`]. The default ignores `cancel` (a cancel may be a no-op).
    async fn read_cancelable(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
        cancel: ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        let _ignored = cancel;
        self.read(group, statement, consistency).await
    }

    /// Opens an interactive transaction (`BEGIN`). It owns the group's writer until it commits,
    /// rolls back or is dropped.
    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError>;

    /// Whether `sql` (one statement) only reads, decided by SQLite itself
    /// (`sqlite3_stmt_readonly`). Used when sqlparser cannot classify a statement. A statement
    /// SQLite cannot prepare returns its error (e.g. `Syntax`, `UndefinedTable`).
    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError>;

    /// The result columns of `sql` (one statement) without running it, for Describe. Statements
    /// that return no rows give an empty list. Preparing errors are returned as for a run.
    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError>;
}

/// An open interactive transaction. Statements see the transaction's own earlier writes.
///
/// Dropping a `Transaction` without `commit` or `rollback` (a vanished client, a dropped
/// session task) must roll it back and release the writer: the server calls `rollback`
/// explicitly whenever it can, and relies on `Drop` only as the safety net.
#[async_trait]
pub trait Transaction: Send {
    /// Runs one statement inside the transaction. An error leaves the transaction open (the
    /// failed statement had no effect) unless the statement itself ended it (e.g.
    /// `INSERT OR ROLLBACK`); the server then refuses further statements until ROLLBACK.
    async fn execute(&mut self, statement: StatementRequest) -> Result<StatementResult, SqlError>;

    /// The result columns of `sql` as seen inside the transaction (it may name tables the
    /// transaction created), without running it.
    async fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError>;

    /// Makes the transaction's writes durable and visible. On error nothing was applied
    /// (or, for `Unknown`, the outcome is unknown); either way the transaction is over.
    async fn commit(self: Box<Self>) -> Result<(), SqlError>;

    /// Discards the transaction's writes.
    async fn rollback(self: Box<Self>) -> Result<(), SqlError>;
}
