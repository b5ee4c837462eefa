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
//! bound): when the next statement would not fit, the implicit transaction commits and the
//! pipeline goes on in a new one. So a bulk load of any size still loads (psycopg's
//! `executemany` sends every row before one Sync), every pipeline that fits in one value is
//! atomic, and a longer one is atomic per chunk: an error rolls back the chunk it happens in,
//! and the chunks before it stay committed.

use paxsql_replicator::limits::{BATCH_STATEMENTS_MAX, VALUE_BYTES_MAX};
use paxsql_replicator::sqlite::types::Value;

use super::{end_transaction, Session, State, TxState};
use crate::pg::errors::PgError;
use crate::sql::StatementKind;

/// Room left in a value for what is not statements (its header, the running checksum…).
const VALUE_HEADROOM_BYTES: usize = 64 * 1024;
/// What one statement costs in a value beyond its text and parameter bytes, counted high: the
/// writer's own per-statement allowance (48 bytes) and protobuf framing.
const STATEMENT_FRAMING_BYTES: usize = 64;
const PARAMETER_FRAMING_BYTES: usize = 16;

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

    /// Before a data statement runs in the implicit transaction: when it would not fit in the
    /// transaction's value, the transaction commits and a new one opens for it (see the module
    /// docs). A failure here is the statement's error; the chunks before it stay committed.
    pub(super) async fn make_room(
        &self,
        state: &mut State,
        sql: &str,
        params: &[Value],
    ) -> Result<(), PgError> {
        let bytes = STATEMENT_FRAMING_BYTES
            + sql.len()
            + params
                .iter()
                .map(|value| PARAMETER_FRAMING_BYTES + value_bytes(value))
                .sum::<usize>();
        let size = &state.implicit_size;
        let full = size.statements >= BATCH_STATEMENTS_MAX
            || (size.statements > 0 && size.bytes + bytes > VALUE_BYTES_MAX - VALUE_HEADROOM_BYTES);
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
