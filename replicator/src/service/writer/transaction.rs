//! Interactive transactions on the writer thread: BEGIN … COMMIT owns the writer, COMMIT
//! proposes the statements as one value. This node's lease renewals chosen meanwhile are
//! recorded inside the transaction (`propose::finish_and_propose`); a transaction overtaken
//! by other values that leave user tables alone runs again and proposes only if nothing a
//! client saw changed.

use std::time::Instant;

use paxsql_schema::BinlogBatch;

use super::{
    begin_error, drain_deferred, finish_and_propose, handle_busy, leaves_user_tables_alone,
    lost_error, not_master, now_unix_ms, BatchEnd, Reply, WriterContext, WriterMessage,
    TRANSACTION_IDLE_MAX, UNIT_ATTEMPTS_MAX,
};
use crate::sqlite::{Batch, Database, SqlError, SqlErrorKind, SqliteError, StatementRequest};

/// Runs one interactive transaction from BEGIN to its end.
pub(super) fn run_transaction(
    database: &mut Database,
    context: &mut WriterContext,
    begin: Reply<u64>,
) {
    let Some(base) = database.applied_instance() else {
        let _ = begin.send(Err(not_master()));
        return;
    };
    let seed = context.next_random();
    let mut batch = match begin_transaction_batch(database, base, now_unix_ms(), seed) {
        Ok(batch) => batch,
        Err(error) => {
            let _ = begin.send(Err(begin_error(error)));
            return;
        }
    };
    let transaction = context.next_transaction;
    context.next_transaction += 1;
    if begin.send(Ok(transaction)).is_err() {
        return; // The client left before BEGIN completed; dropping the batch rolls back.
    }
    let mut idle_deadline = Instant::now() + TRANSACTION_IDLE_MAX;
    // What the client ran, to run again if a lease renewal takes the instance (see below).
    let mut statements: Vec<StatementRequest> = Vec::new();
    loop {
        let Some(message) = context.next_message() else {
            return;
        };
        match message {
            WriterMessage::TransactionStatement {
                transaction: id,
                statement,
                reply,
            } if id == transaction => {
                idle_deadline = Instant::now() + TRANSACTION_IDLE_MAX;
                let _ = reply.send(batch.execute(&statement));
                statements.push(statement);
            }
            WriterMessage::TransactionDescribe {
                transaction: id,
                sql,
                reply,
            } if id == transaction => {
                idle_deadline = Instant::now() + TRANSACTION_IDLE_MAX;
                let _ = reply.send(batch.describe(&sql));
            }
            WriterMessage::Rollback { transaction: id } if id == transaction => return,
            WriterMessage::Commit {
                transaction: id,
                reply,
            } if id == transaction => {
                if batch.statement_count() == 0 {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let effects = Effects::of(batch.record());
                let outcome = match finish_and_propose(context, batch) {
                    BatchEnd::Committed => Ok(()),
                    BatchEnd::Overtaken {
                        user_tables_changed: false,
                    } => rerun_and_commit(database, context, &statements, &effects),
                    BatchEnd::Overtaken {
                        user_tables_changed: true,
                    } => Err(lost_error()),
                    BatchEnd::Failed(error) => Err(error),
                };
                let _ = reply.send(outcome);
                return;
            }
            WriterMessage::Delivered(delivered) if leaves_user_tables_alone(&delivered) => {
                // A lease renewal or membership change: user tables are as this transaction
                // saw them. COMMIT moves the transaction onto this node's lease renewals;
                // after anything else it runs the statements again on top of it and proposes
                // them only if they do exactly what the client saw.
                context.deferred.push_back(delivered);
            }
            WriterMessage::Delivered(delivered) => {
                // Another master's SQL was chosen: this transaction's base is stale and it can
                // never commit. End it now so the writer applies the value.
                context.deferred.push_back(delivered);
                context.remember_ended(transaction, SqlError::new(
                    SqlErrorKind::Lost,
                    "another write was chosen while this transaction was open; it was rolled back, retry it",
                ));
                return;
            }
            WriterMessage::Tick if Instant::now() >= idle_deadline => {
                context.remember_ended(transaction, SqlError::new(
                    SqlErrorKind::LimitExceeded,
                    format!("the transaction was idle for {TRANSACTION_IDLE_MAX:?} and was rolled back; keep transactions short"),
                ));
                return;
            }
            other => handle_busy(context, other),
        }
    }
}

/// The batch of an interactive transaction, first run or run again: one client owns it, so its
/// own SAVEPOINT, RELEASE and ROLLBACK TO may run in it.
fn begin_transaction_batch(
    database: &mut Database,
    base: u64,
    time_unix_ms: i64,
    random_seed: u64,
) -> Result<Batch<'_>, SqliteError> {
    let mut batch = database.begin_batch(base, time_unix_ms, random_seed)?;
    batch.allow_client_savepoints();
    Ok(batch)
}

/// Runs a transaction's statements again on top of the values chosen since it began (none of
/// which touched user tables), with the same pinned time and random seed, and proposes the
/// result only if every statement did exactly what the client was told (rows changed, effect
/// digest, last rowid, failure). This is not a re-proposal of the old value: the statements
/// run against the newest state; the comparison proves the client's view still holds.
fn rerun_and_commit(
    database: &mut Database,
    context: &mut WriterContext,
    statements: &[StatementRequest],
    original: &Effects,
) -> Result<(), SqlError> {
    for _attempt in 0..UNIT_ATTEMPTS_MAX {
        drain_deferred(database, context);
        let Some(base) = database.applied_instance() else {
            return Err(not_master());
        };
        let mut batch =
            begin_transaction_batch(database, base, original.time_unix_ms, original.random_seed)
                .map_err(begin_error)?;
        for statement in statements {
            // Failures are part of what the client saw; the comparison below checks them.
            let _ = batch.execute(statement);
        }
        if Effects::of(batch.record()) != *original {
            return Err(lost_error());
        }
        match finish_and_propose(context, batch) {
            BatchEnd::Committed => return Ok(()),
            BatchEnd::Overtaken {
                user_tables_changed: false,
            } => {}
            BatchEnd::Overtaken {
                user_tables_changed: true,
            } => return Err(lost_error()),
            BatchEnd::Failed(error) => return Err(error),
        }
    }
    Err(lost_error())
}

/// Everything a client could have observed of one execution of a transaction's statements:
/// two executions of the same statements agree when these are equal. Kept instead of the
/// executed value itself, which goes to Paxos without a copy.
#[derive(Debug, PartialEq, Eq)]
struct Effects {
    time_unix_ms: i64,
    random_seed: u64,
    statements: Vec<StatementEffect>,
}

/// What one statement did, as a client saw it.
#[derive(Debug, PartialEq, Eq)]
struct StatementEffect {
    rows_changed: u64,
    effect_digest: u64,
    last_insert_rowid: i64,
    failed: bool,
}

impl Effects {
    fn of(batch: &BinlogBatch) -> Effects {
        Effects {
            time_unix_ms: batch.time_unix_ms,
            random_seed: batch.random_seed,
            statements: batch
                .statements
                .iter()
                .map(|statement| StatementEffect {
                    rows_changed: statement.rows_changed,
                    effect_digest: statement.effect_digest,
                    last_insert_rowid: statement.last_insert_rowid,
                    failed: statement.failed,
                })
                .collect(),
        }
    }
}
