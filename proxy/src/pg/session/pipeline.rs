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
//!
//! A pipeline may be longer than one transaction may be (a replicated value holds at most
//! [`BATCH_STATEMENTS_MAX`] statements and [`VALUE_BYTES_MAX`] bytes; PostgreSQL has no such
//! bound): when the implicit transaction holds half of either, it commits and the pipeline
//! goes on in a new one. So a bulk load of any size still loads (psycopg's `executemany`
//! sends every row before one Sync), and each chunk is atomic: an error rolls back the chunk
//! it happens in, and the chunks before it stay committed.

use paxsql_replicator::limits::{BATCH_STATEMENTS_MAX, VALUE_BYTES_MAX};
use paxsql_replicator::sqlite::types::Value;

use super::{end_transaction, Session, State, TxState};
use crate::pg::errors::PgError;
use crate::sql::StatementKind;

/// An implicit transaction commits and a new one starts once it holds this many statements…
const IMPLICIT_STATEMENTS_MAX: usize = BATCH_STATEMENTS_MAX / 2;
/// …or this many bytes of statement text and parameters: half the bounds of one value, which
/// leaves room for the encoding's overhead.
const IMPLICIT_BYTES_MAX: usize = VALUE_BYTES_MAX / 2;

/// What the implicit transaction holds so far.
#[derive(Default)]
pub(super) struct ImplicitSize {
    statements: usize,
    bytes: usize,
}

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
        state.implicit_size = ImplicitSize::default();
        Ok(())
    }

    /// Before a data statement runs in the implicit transaction: a full transaction commits and
    /// a new one opens for this statement (see the module docs).
    pub(super) async fn make_room(
        &self,
        state: &mut State,
        sql: &str,
        params: &[Value],
    ) -> Result<(), PgError> {
        let bytes = sql.len() + params.iter().map(value_bytes).sum::<usize>();
        let size = &state.implicit_size;
        let full = size.statements >= IMPLICIT_STATEMENTS_MAX
            || (size.statements > 0 && size.bytes + bytes > IMPLICIT_BYTES_MAX);
        if full && matches!(state.tx, TxState::Open(_)) {
            end_transaction(state, true).await?;
            self.begin(state).await?;
            state.implicit_size = ImplicitSize::default();
        }
        state.implicit_size.statements += 1;
        state.implicit_size.bytes += bytes;
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

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null => 1,
        Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(text) => text.len(),
        Value::Blob(bytes) => bytes.len(),
    }
}
