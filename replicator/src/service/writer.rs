//! The writer thread of one group: the only code that writes its SQLite file.
//!
//! It applies chosen values in instance order. On the master it also executes writes:
//! autocommit units are grouped into one batch (one SQLite transaction, a savepoint per
//! statement), proposed as one value bound to the next instance, and COMMITted only when that
//! instance chose this very batch. If another value won the instance, the batch is rolled back,
//! the winner applied, and the units run again on the new state (never re-proposed as they
//! were: they ran against a state that no longer holds). Nothing reaches a client before its
//! value is chosen.
//!
//! Interactive transactions (`writer/transaction.rs`) own the writer from BEGIN to COMMIT;
//! COMMIT proposes their statements as one value. Another master's SQL chosen while one is
//! open ends it (40001): its base is no longer the newest state. A lease renewal or
//! membership change leaves user tables alone: COMMIT then runs the statements again on the
//! new state, with the same time and seed, and proposes them only if every effect matches
//! what the client saw.

mod propose;
mod transaction;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::paxos::{InstanceId, ProposalOutcome};
use crate::runtime::error::RuntimeError;
use crate::runtime::group::{Delivered, GroupHandle};
use crate::runtime::log_writer::FatalHandler;
use crate::sqlite::{
    Column, Database, SqlError, SqlErrorKind, SqliteError, StatementRequest, StatementResult,
};

use super::checkpoints::ChecksumRing;
use propose::{finish_and_propose, leaves_user_tables_alone, BatchEnd};
use transaction::run_transaction;

/// Messages queued toward the writer thread.
pub const WRITER_QUEUE_MAX: usize = 4096;
/// Autocommit units waiting for the writer; past it, writes get "busy" (53000).
pub const WRITE_UNITS_WAITING_MAX: usize = 2048;
/// Transactions waiting for the writer to become free.
pub const BEGINS_WAITING_MAX: usize = 256;
/// Statements in one batch (autocommit units grouped together).
pub const BATCH_UNITS_MAX: usize = 256;
/// How often a unit runs again after another value won its instance, before 40001.
pub const UNIT_ATTEMPTS_MAX: u32 = 3;
/// An interactive transaction idle this long is rolled back (it blocks every other write).
pub const TRANSACTION_IDLE_MAX: Duration = Duration::from_secs(30);
/// Ended transactions remembered so their late statements get the reason.
const ENDED_TRANSACTIONS_REMEMBERED_MAX: usize = 1024;

pub type Reply<T> = oneshot::Sender<Result<T, SqlError>>;

/// What the writer thread is asked to do.
pub enum WriterMessage {
    /// One atomic unit of autocommit statements.
    Write {
        statements: Vec<StatementRequest>,
        reply: Reply<Vec<StatementResult>>,
    },
    Begin {
        reply: Reply<u64>,
    },
    TransactionStatement {
        transaction: u64,
        statement: StatementRequest,
        reply: Reply<StatementResult>,
    },
    /// The columns of `sql` as the open transaction sees its schema (a Parse inside BEGIN).
    TransactionDescribe {
        transaction: u64,
        sql: String,
        reply: Reply<Vec<Column>>,
    },
    Commit {
        transaction: u64,
        reply: Reply<()>,
    },
    Rollback {
        transaction: u64,
    },
    /// A chosen value, in instance order.
    Delivered(Delivered),
    /// The outcome of the proposal with this token.
    Proposed {
        token: u64,
        outcome: Result<ProposalOutcome, RuntimeError>,
    },
    /// Time passes (idle-transaction timeouts).
    Tick,
    /// Replace the replica with this verified checkpoint file (a bootstrap); answers the
    /// instance it holds. Refused (busy) while the writer has an owner.
    InstallCheckpoint {
        file: std::path::PathBuf,
        reply: Reply<InstanceId>,
    },
}

/// One autocommit unit and its reply.
struct Unit {
    statements: Vec<StatementRequest>,
    reply: Reply<Vec<StatementResult>>,
    attempts: u32,
}

/// Everything the writer thread owns except the database (kept apart so a batch can borrow the
/// database while the loop still reads messages).
pub struct WriterContext {
    pub node_id: u32,
    pub group: GroupHandle,
    pub runtime: tokio::runtime::Handle,
    sender: mpsc::Sender<WriterMessage>,
    receiver: mpsc::Receiver<WriterMessage>,
    /// Chosen values straight from the group driver (no task in between: one wake-up less
    /// per instance on every node).
    deliveries: mpsc::Receiver<Delivered>,
    /// The running checksum after each delivered instance, for checkpoints.
    checksums: Arc<ChecksumRing>,
    pub applied: watch::Sender<Option<InstanceId>>,
    pub fatal: FatalHandler,
    units: VecDeque<Unit>,
    begins: VecDeque<Reply<u64>>,
    /// Chosen values that arrived while the writer was busy, applied as soon as it is free.
    deferred: VecDeque<Delivered>,
    ended: HashMap<u64, SqlError>,
    ended_order: VecDeque<u64>,
    next_token: u64,
    next_transaction: u64,
    random_state: u64,
}

/// The queues the writer thread reads.
pub struct WriterQueues {
    pub sender: mpsc::Sender<WriterMessage>,
    pub receiver: mpsc::Receiver<WriterMessage>,
    pub deliveries: mpsc::Receiver<Delivered>,
    pub checksums: Arc<ChecksumRing>,
}

impl WriterContext {
    pub fn new(
        node_id: u32,
        group: GroupHandle,
        runtime: tokio::runtime::Handle,
        queues: WriterQueues,
        applied: watch::Sender<Option<InstanceId>>,
        fatal: FatalHandler,
    ) -> Self {
        let WriterQueues {
            sender,
            receiver,
            deliveries,
            checksums,
        } = queues;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(node_id) << 56);
        WriterContext {
            node_id,
            group,
            runtime,
            sender,
            receiver,
            deliveries,
            checksums,
            applied,
            fatal,
            units: VecDeque::new(),
            begins: VecDeque::new(),
            deferred: VecDeque::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            next_token: 1,
            next_transaction: 1,
            random_state: seed | 1,
        }
    }

    /// Waits for the next message. Chosen values come first: they move the replica on, and a
    /// batch run on a stale base would only lose its instance. `None` once every sender of
    /// the writer's own queue is gone (the context keeps one, so in practice the writer runs
    /// until the process ends).
    fn next_message(&mut self) -> Option<WriterMessage> {
        if let Ok(delivered) = self.deliveries.try_recv() {
            return Some(self.received(delivered));
        }
        if let Ok(message) = self.receiver.try_recv() {
            return Some(message);
        }
        let runtime = self.runtime.clone();
        let (deliveries, receiver) = (&mut self.deliveries, &mut self.receiver);
        // A closed delivery queue (the driver stopped) only disables its branch.
        let next = runtime.block_on(async {
            tokio::select! {
                biased;
                Some(delivered) = deliveries.recv() => Some(Ok(delivered)),
                message = receiver.recv() => message.map(Err),
            }
        })?;
        Some(match next {
            Ok(delivered) => self.received(delivered),
            Err(message) => message,
        })
    }

    /// A chosen value that is already waiting, without blocking.
    fn ready_delivery(&mut self) -> Option<Delivered> {
        let delivered = self.deliveries.try_recv().ok()?;
        self.note_checksum(&delivered);
        Some(delivered)
    }

    fn received(&self, delivered: Delivered) -> WriterMessage {
        self.note_checksum(&delivered);
        WriterMessage::Delivered(delivered)
    }

    fn note_checksum(&self, delivered: &Delivered) {
        self.checksums
            .record(delivered.instance_id, delivered.checksum_after);
    }

    /// True when this node is the master that may execute writes now.
    fn serving(&self) -> bool {
        let status = self.group.status();
        status.serving_as_master
            && status.master_id == Some(self.node_id)
            && status.halted.is_none()
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: seeds for random() in batches; no cryptographic use.
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn remember_ended(&mut self, transaction: u64, error: SqlError) {
        if self.ended_order.len() >= ENDED_TRANSACTIONS_REMEMBERED_MAX {
            if let Some(oldest) = self.ended_order.pop_front() {
                self.ended.remove(&oldest);
            }
        }
        self.ended_order.push_back(transaction);
        self.ended.insert(transaction, error);
    }

    /// [`Self::ended_error`] without forgetting it.
    fn ended_error_kept(&self, transaction: u64) -> SqlError {
        self.ended
            .get(&transaction)
            .cloned()
            .unwrap_or_else(no_longer_open)
    }

    fn ended_error(&mut self, transaction: u64) -> SqlError {
        self.ended
            .remove(&transaction)
            .unwrap_or_else(no_longer_open)
    }

    fn fail_fatally(&self, what: &str, error: &SqliteError) -> ! {
        (self.fatal)(&format!("group {}: {what}: {error}", self.group.name()));
        // The fatal handler aborts the process; if a test handler returns, stop this thread.
        panic!("group {}: {what}: {error}", self.group.name());
    }
}

/// Runs the writer loop until its queue closes (see [`WriterContext::next_message`]).
pub fn run(mut database: Database, mut context: WriterContext) {
    let _ = context.applied.send(database.applied_instance());
    loop {
        drain_deferred(&mut database, &mut context);
        // Values chosen while the writer was busy (a lease renewal during a long statement)
        // go first: a batch run on a stale base would only lose its instance to them.
        while let Some(delivered) = context.ready_delivery() {
            apply(&mut database, &mut context, delivered);
        }
        let serving = context.serving();
        database.set_accepts_writes(serving);
        if !serving {
            refuse_waiting(&mut context);
        } else if let Some(reply) = context.begins.pop_front() {
            run_transaction(&mut database, &mut context, reply);
            continue;
        } else if !context.units.is_empty() {
            run_batch(&mut database, &mut context);
            continue;
        }
        let Some(message) = context.next_message() else {
            return;
        };
        handle_idle(&mut database, &mut context, message);
    }
}

fn no_longer_open() -> SqlError {
    SqlError::new(
        SqlErrorKind::Other,
        "the transaction is no longer open; start a new one",
    )
}

fn not_master() -> SqlError {
    SqlError::new(
        SqlErrorKind::NotMaster,
        "this node is not the master (or not caught up yet); the statement was not executed",
    )
}

fn refuse_waiting(context: &mut WriterContext) {
    for unit in context.units.drain(..) {
        let _ = unit.reply.send(Err(not_master()));
    }
    for reply in context.begins.drain(..) {
        let _ = reply.send(Err(not_master()));
    }
}

/// A message while the writer is free.
fn handle_idle(database: &mut Database, context: &mut WriterContext, message: WriterMessage) {
    match message {
        WriterMessage::Delivered(delivered) => apply(database, context, delivered),
        WriterMessage::InstallCheckpoint { file, reply } => {
            let _ = reply.send(install_checkpoint(database, context, &file));
        }
        other => handle_busy(context, other),
    }
}

/// A message that the current owner of the writer does not handle: queue or refuse it.
fn handle_busy(context: &mut WriterContext, message: WriterMessage) {
    match message {
        WriterMessage::Write { statements, reply } => {
            if context.units.len() >= WRITE_UNITS_WAITING_MAX {
                let _ = reply.send(Err(SqlError::new(
                    SqlErrorKind::Busy,
                    format!("{WRITE_UNITS_WAITING_MAX} writes are already waiting for this master; retry shortly"),
                )));
            } else {
                context.units.push_back(Unit {
                    statements,
                    reply,
                    attempts: 0,
                });
            }
        }
        WriterMessage::Begin { reply } => {
            if context.begins.len() >= BEGINS_WAITING_MAX {
                let _ = reply.send(Err(SqlError::new(
                    SqlErrorKind::Busy,
                    format!("{BEGINS_WAITING_MAX} transactions are already waiting for the writer; retry shortly"),
                )));
            } else {
                context.begins.push_back(reply);
            }
        }
        WriterMessage::TransactionStatement {
            transaction, reply, ..
        } => {
            let _ = reply.send(Err(context.ended_error(transaction)));
        }
        WriterMessage::TransactionDescribe {
            transaction, reply, ..
        } => {
            // Kept for the statement or COMMIT that follows (40001 must reach the client).
            let _ = reply.send(Err(context.ended_error_kept(transaction)));
        }
        WriterMessage::Commit { transaction, reply } => {
            let _ = reply.send(Err(context.ended_error(transaction)));
        }
        WriterMessage::Rollback { transaction } => {
            context.ended.remove(&transaction);
        }
        WriterMessage::Delivered(delivered) => context.deferred.push_back(delivered),
        WriterMessage::Proposed { .. } | WriterMessage::Tick => {}
        WriterMessage::InstallCheckpoint { reply, .. } => {
            let _ = reply.send(Err(SqlError::new(
                SqlErrorKind::Busy,
                "the writer is busy; the checkpoint install is retried",
            )));
        }
    }
}

/// Installs a checkpoint in place of the replica (DESIGN "Installing a checkpoint"). Readers
/// still in use make it a retryable "busy"; a failure after the old file was closed is fatal.
fn install_checkpoint(
    database: &mut Database,
    context: &mut WriterContext,
    file: &std::path::Path,
) -> Result<InstanceId, SqlError> {
    if let Some(applied) = database.applied_instance() {
        let offered = crate::sqlite::checkpoint_instance(file).map_err(|error| {
            SqlError::new(
                SqlErrorKind::Other,
                format!("not a usable checkpoint: {error}"),
            )
        })?;
        if offered <= applied {
            return Err(SqlError::new(
                SqlErrorKind::Other,
                format!("the checkpoint holds instance {offered}, this replica already applied {applied}"),
            ));
        }
    }
    match database.install_checkpoint(file) {
        Ok(()) => {}
        Err(error @ (SqliteError::ReadersInUse { .. } | SqliteError::NotPaxsql { .. })) => {
            return Err(SqlError::new(SqlErrorKind::Busy, error.to_string()));
        }
        Err(error) => context.fail_fatally("installing a checkpoint", &error),
    }
    let instance_id = database
        .applied_instance()
        .expect("an installed checkpoint holds an applied instance (checked before install)");
    context.applied.send_replace(Some(instance_id));
    Ok(instance_id)
}

fn drain_deferred(database: &mut Database, context: &mut WriterContext) {
    while let Some(delivered) = context.deferred.pop_front() {
        apply(database, context, delivered);
    }
}

/// Replays a chosen value (a follower's only write, and the master's after losing an instance).
fn apply(database: &mut Database, context: &mut WriterContext, delivered: Delivered) {
    match database.apply_with_checksum(
        delivered.instance_id,
        &delivered.value,
        delivered.checksum_after,
    ) {
        Ok(_) => applied(context, delivered.instance_id),
        Err(error) => context.fail_fatally(
            &format!(
                "applying chosen instance {} failed; this replica stops rather than diverge",
                delivered.instance_id
            ),
            &error,
        ),
    }
}

fn applied(context: &WriterContext, instance_id: InstanceId) {
    context.group.applied(instance_id);
    context.applied.send_replace(Some(instance_id));
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// The units of the next batch: consecutive single-statement units, or one multi-statement unit
/// alone (it must fail as a whole, which only a batch of its own can do).
fn next_units(context: &mut WriterContext) -> Vec<Unit> {
    let mut units = Vec::new();
    while let Some(unit) = context.units.front() {
        let multi = unit.statements.len() != 1;
        if multi && !units.is_empty() {
            break;
        }
        units.push(context.units.pop_front().expect("front exists"));
        if multi || units.len() >= BATCH_UNITS_MAX {
            break;
        }
    }
    units
}

/// Executes the waiting autocommit units as one batch and sees it through to its outcome.
fn run_batch(database: &mut Database, context: &mut WriterContext) {
    let mut units = next_units(context);
    let Some(base) = database.applied_instance() else {
        for unit in units {
            let _ = unit.reply.send(Err(not_master()));
        }
        return;
    };
    let seed = context.next_random();
    let mut batch = match database.begin_batch(base, now_unix_ms(), seed) {
        Ok(batch) => batch,
        Err(error) => {
            let error = begin_error(error);
            for unit in units {
                let _ = unit.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut outcomes: Vec<Result<Vec<StatementResult>, SqlError>> = Vec::with_capacity(units.len());
    // The unit whose statement ended the whole transaction, if one did.
    let mut ended_by = None;
    for unit in &units {
        if batch.is_dead() {
            break; // the units left run again in the next batch (below)
        }
        if !outcomes.is_empty() && batch.is_past_time_budget() {
            break; // the units left go back to the queue (below)
        }
        let mut results = Vec::with_capacity(unit.statements.len());
        let mut failure = None;
        for statement in &unit.statements {
            match batch.execute(statement) {
                Ok(result) => results.push(result),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if batch.is_dead() {
            ended_by = Some(outcomes.len());
        }
        outcomes.push(match failure {
            Some(error) => Err(error),
            None => Ok(results),
        });
    }
    if let Some(ended_by) = ended_by {
        drop(batch);
        requeue_after_dead_batch(context, units, outcomes, ended_by);
        return;
    }
    // Past the time budget: the units that did not run go back, in order, ahead of later
    // writes, without counting an attempt.
    for unit in units.split_off(outcomes.len()).into_iter().rev() {
        context.units.push_front(unit);
    }
    let multi_failed = units.len() == 1 && units[0].statements.len() > 1 && outcomes[0].is_err();
    let nothing_succeeded = outcomes.iter().all(Result::is_err);
    if multi_failed || nothing_succeeded {
        // Nothing to propose: the failures ran against the applied state and change nothing.
        drop(batch);
        for (unit, outcome) in units.into_iter().zip(outcomes) {
            let _ = unit.reply.send(outcome);
        }
        return;
    }
    match finish_and_propose(context, batch) {
        BatchEnd::Committed => {
            for (unit, outcome) in units.into_iter().zip(outcomes) {
                let _ = unit.reply.send(outcome);
            }
        }
        BatchEnd::Overtaken { .. } => run_again(context, units),
        BatchEnd::Failed(error) => {
            for unit in units {
                let _ = unit.reply.send(Err(error.clone()));
            }
        }
    }
}

/// The batch's base was overtaken: its units run again on the new state, in the same order,
/// ahead of later writes, each counting an attempt.
fn run_again(context: &mut WriterContext, units: Vec<Unit>) {
    for mut unit in units.into_iter().rev() {
        unit.attempts += 1;
        if unit.attempts >= UNIT_ATTEMPTS_MAX {
            let _ = unit.reply.send(Err(lost_error()));
        } else {
            context.units.push_front(unit);
        }
    }
}

/// A statement of unit `ended_by` ended the whole transaction (`INSERT OR ROLLBACK`, a write
/// stopped by the time limit…): that unit fails; the others had no say in it and run again,
/// in the same order, ahead of later writes. Those that ran before it count an attempt.
fn requeue_after_dead_batch(
    context: &mut WriterContext,
    units: Vec<Unit>,
    mut outcomes: Vec<Result<Vec<StatementResult>, SqlError>>,
    ended_by: usize,
) {
    // Units after `ended_by` never ran: no outcome.
    outcomes.truncate(ended_by + 1);
    let mut outcomes: Vec<Option<Result<Vec<StatementResult>, SqlError>>> =
        outcomes.into_iter().map(Some).collect();
    outcomes.resize_with(units.len(), || None);
    for (index, (mut unit, outcome)) in units.into_iter().zip(outcomes).enumerate().rev() {
        if index == ended_by {
            let _ = unit
                .reply
                .send(outcome.expect("the unit that ended the transaction ran"));
            continue;
        }
        if index < ended_by {
            unit.attempts += 1;
        }
        if unit.attempts >= UNIT_ATTEMPTS_MAX {
            // Out of attempts: its own failure if it had one, else why it could not commit.
            let reply = match outcome {
                Some(Err(error)) => Err(error),
                _ => Err(SqlError::new(
                    SqlErrorKind::Lost,
                    "another client's statement ended the replicated transaction this write \
                     shared, again and again; nothing of it was applied, retry",
                )),
            };
            let _ = unit.reply.send(reply);
        } else {
            context.units.push_front(unit);
        }
    }
}

fn lost_error() -> SqlError {
    SqlError::new(
        SqlErrorKind::Lost,
        "another value was chosen for this write's instance; nothing was applied, retry",
    )
}

fn begin_error(error: SqliteError) -> SqlError {
    match error {
        SqliteError::NotAcceptingWrites | SqliteError::StaleBase { .. } => not_master(),
        SqliteError::WriterBusy => {
            SqlError::new(SqlErrorKind::Busy, "the writer is busy; retry shortly")
        }
        other => SqlError::new(SqlErrorKind::Other, other.to_string()),
    }
}
