//! Extended-protocol pipelines, the session's side: the Executes a client sends before its
//! Sync are one transaction, as in PostgreSQL (a JDBC `executeBatch`, a psycopg pipeline),
//! while a lone write followed by its Sync still rides the master's group commit.
//!
//! The wire side (`pg::extended`) holds a write Execute outside a transaction until the next
//! message. If that message is the Sync, the write runs alone as an autocommit unit: the
//! common case, one statement per Sync, as tokio-postgres, pgbench and most drivers send them.
//! If anything else comes first, the session opens an **implicit transaction** here, the held
//! write runs in it, and so does the rest of the pipeline; the Sync commits it, or rolls it
//! back when an error ended the pipeline (the client has that error already).
//!
//! An explicit `BEGIN` inside the pipeline makes the transaction explicit (the Sync then leaves
//! it open); `COMMIT` or `ROLLBACK` ends it; `SAVEPOINT` is refused in it, as in PostgreSQL.

use super::{end_transaction, Session, TxState};
use crate::pg::errors::PgError;
use crate::sql::StatementKind;

impl Session {
    /// Whether an Execute of `sql` may be held until the next message: a write outside any
    /// transaction. The wire side decides which statements are worth holding.
    pub async fn may_hold(&self, sql: &str, kind: &StatementKind) -> Result<bool, PgError> {
        {
            let state = self.state.lock().await;
            if !matches!(state.tx, TxState::Idle) || state.implicit {
                return Ok(false);
            }
        }
        Ok(
            matches!(kind, StatementKind::Write | StatementKind::Undecided)
                && self.resolve(sql, kind).await? == StatementKind::Write,
        )
    }

    /// A message other than Sync follows a held write: opens the pipeline's implicit
    /// transaction, which the held write and the rest of the pipeline then run in.
    pub async fn open_implicit_transaction(&self) -> Result<(), PgError> {
        let mut state = self.state.lock().await;
        self.begin(&mut state).await?;
        state.implicit = true;
        Ok(())
    }

    /// The pipeline ended (Sync, or a simple Query): its implicit transaction, if any, commits,
    /// or rolls back when `failed` (an error ended the pipeline) or one of its statements
    /// failed.
    pub async fn end_implicit_transaction(&self, failed: bool) -> Result<(), PgError> {
        let mut state = self.state.lock().await;
        if std::mem::take(&mut state.implicit) {
            let commit = !failed && matches!(state.tx, TxState::Open(_));
            end_transaction(&mut state, commit).await?;
        }
        Ok(())
    }
}
