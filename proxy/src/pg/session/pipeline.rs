//! Extended-protocol pipelines: the Executes a client sends before its Sync are one
//! transaction, as in PostgreSQL (a JDBC `executeBatch`, a psycopg pipeline), while a lone
//! write followed by its Sync still rides the master's group commit.
//!
//! A write Execute outside a transaction is **held** until the next message. If that message
//! is the Sync, the write runs alone as an autocommit unit: the common case, one statement per
//! Sync, as tokio-postgres, pgbench and most drivers send them. If anything else comes first
//! (a Bind, Parse, Describe, Close, Flush or Execute), the session opens an **implicit
//! transaction**, runs the held write in it and answers it, and the rest of the pipeline runs
//! in that transaction; the Sync commits it, or rolls it back when an error ended the pipeline
//! (the client has that error already). Answers stay in the order of the messages: the held
//! write is answered before anything that follows it.
//!
//! An explicit `BEGIN` inside the pipeline makes the transaction explicit (the Sync then leaves
//! it open); `COMMIT` or `ROLLBACK` ends it. A simple Query ends the pipeline as a Sync would.

use paxsql_replicator::sqlite::types::Value;

use super::{end_transaction, Output, Session, TxState};
use crate::pg::errors::PgError;
use crate::sql::StatementKind;

/// A write held until the message after its Execute.
pub(super) struct HeldWrite {
    sql: String,
    kind: StatementKind,
    params: Vec<Value>,
}

impl Session {
    /// Whether an Execute of `sql` may be held: a write (DDL included) outside any
    /// transaction, with nothing held already. The caller holds only statements that return
    /// no rows.
    pub async fn may_hold(&self, sql: &str, kind: &StatementKind) -> Result<bool, PgError> {
        {
            let state = self.state.lock().await;
            if !matches!(state.tx, TxState::Idle) || state.held.is_some() || state.implicit {
                return Ok(false);
            }
        }
        Ok(
            matches!(kind, StatementKind::Write | StatementKind::Undecided)
                && self.resolve(sql, kind).await? == StatementKind::Write,
        )
    }

    /// Holds a write until the next message (see the module docs).
    pub async fn hold(&self, sql: &str, kind: &StatementKind, params: Vec<Value>) {
        let mut state = self.state.lock().await;
        assert!(state.held.is_none(), "one write is held at a time");
        state.held = Some(HeldWrite {
            sql: sql.to_owned(),
            kind: kind.clone(),
            params,
        });
    }

    /// A message other than Sync follows a held write: opens the implicit transaction and
    /// runs the held write in it. Returns the write's output, to be answered before the new
    /// message; `None` when nothing was held.
    pub async fn open_pipeline_transaction(&self) -> Result<Option<Output>, PgError> {
        let mut state = self.state.lock().await;
        let Some(held) = state.held.take() else {
            return Ok(None);
        };
        self.begin(&mut state).await?;
        state.implicit = true;
        self.run_data(&mut state, &held.sql, &held.kind, held.params)
            .await
            .map(Some)
    }

    /// The pipeline ends (Sync, or a simple Query). A held write runs alone as an autocommit
    /// unit and its output is returned; an implicit transaction commits, or rolls back when
    /// `failed` (an error ended the pipeline) or when one of its statements failed.
    pub async fn finish_pipeline(&self, failed: bool) -> Result<Option<Output>, PgError> {
        let mut state = self.state.lock().await;
        let held = state.held.take();
        if std::mem::take(&mut state.implicit) {
            let commit = !failed && matches!(state.tx, TxState::Open(_));
            end_transaction(&mut state, commit).await?;
            return Ok(None);
        }
        match held {
            Some(held) if !failed => self
                .run_data(&mut state, &held.sql, &held.kind, held.params)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }
}
