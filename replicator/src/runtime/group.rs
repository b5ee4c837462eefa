//! The group driver: one tokio task per group owns the [`Engine`] and carries out its actions.
//!
//! # Ordering
//! - Actions are carried out in the order the engine emits them.
//! - `Persist` hands the records to the log writer thread; its `then_send` envelopes are sent,
//!   and `Input::Persisted` is fed, only when the writer reports the sync that covers them.
//!   A `Persist` does not hold back the actions after it (a `Send` is by contract independent
//!   of unsynced records); an action that must wait for durability is one the engine emits
//!   after `Input::Persisted`.
//! - `Append` (a Chosen record) goes to the log writer in the same queue, after every earlier
//!   job, with no completion: a later sync makes it durable. The `Deliver` after it does not
//!   wait for that (see `paxos::api`, rule 3).
//! - `Deliver` goes to a bounded channel toward the state machine. When the state machine
//!   falls behind, the driver waits there: the backpressure reaches Paxos on purpose.
//!   The state machine reports progress with [`GroupHandle::applied`], which never waits, so
//!   the two sides cannot deadlock.
//! - At most [`LOG_WRITER_PERSISTS_IN_FLIGHT_MAX`] persist jobs are in flight; past that the
//!   driver only waits for completions. This bounds the completion channel, so the writer
//!   thread never waits on the driver.
//!
//! Ticks come every [`GROUP_TICK_INTERVAL_MS`] and carry the boot-time clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paxsql_binlog::LogStore;
use paxsql_schema::{envelope, paxos_value, Envelope, PaxosValue};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::limits::{
    CHECKPOINT_NEEDED_QUEUE_MAX, DELIVER_QUEUE_MAX, GROUP_COMMAND_QUEUE_MAX,
    GROUP_PROPOSALS_IN_FLIGHT_MAX, GROUP_READ_INDEX_IN_FLIGHT_MAX, GROUP_TICK_INTERVAL_MS,
    LEARN_BATCH_VALUES_MAX, LEARN_SERVES_IN_FLIGHT_MAX, LOG_WRITER_PERSISTS_IN_FLIGHT_MAX,
};
use crate::paxos::{Action, CheckpointMeta, Input, InstanceId, NodeId, ProposalOutcome, Status};
use crate::runtime::clock::TickClock;
use crate::runtime::engine::Engine;
use crate::runtime::error::RuntimeError;
use crate::runtime::learn::learned_values;
use crate::runtime::log_writer::{FatalHandler, LogReader, LogWriter, PersistDone};
use crate::runtime::metrics::RuntimeMetrics;

/// Where the driver sends envelopes (the transport, or a fake in tests). Never blocks.
pub trait Outbox: Send + Sync + 'static {
    fn send(&self, envelope: Envelope);
}

/// A chosen value for the state machine, in instance order, each exactly once.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    pub instance_id: InstanceId,
    pub value: PaxosValue,
    /// The running log checksum after this value (see [`crate::paxos::chain_checksum`]).
    pub checksum_after: u64,
    /// The value is the one this node's proposer had in flight for this instance: the master
    /// tells its own batch from another master's by this (see [`Action::Deliver`]).
    pub proposed_here: bool,
}

/// The group needs instances no peer's log holds: fetch `peer`'s checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointNeeded {
    pub peer: NodeId,
    pub first_instance: InstanceId,
}

/// What the rest of the node gets for one group.
pub struct GroupChannels {
    pub handle: GroupHandle,
    /// Chosen values to apply; report progress with [`GroupHandle::applied`].
    pub deliveries: mpsc::Receiver<Delivered>,
    /// Checkpoint fetches the group asks for.
    pub checkpoints_needed: mpsc::Receiver<CheckpointNeeded>,
}

/// Everything a group driver is made of.
pub struct GroupSetup {
    pub name: String,
    pub engine: Box<dyn Engine>,
    pub log: Box<dyn LogStore>,
    pub outbox: Arc<dyn Outbox>,
    /// Envelopes for this group (from the transport).
    pub inbox: mpsc::Receiver<Envelope>,
    pub metrics: Arc<RuntimeMetrics>,
    pub fatal: FatalHandler,
    pub cancel: CancellationToken,
}

enum Command {
    Propose {
        payload: paxos_value::Payload,
        expected_instance: Option<InstanceId>,
        reply: oneshot::Sender<ProposalOutcome>,
    },
    ReadIndex {
        reply: oneshot::Sender<bool>,
    },
    Campaign,
    /// A checkpoint input for the engine (durable here, or installed from a peer).
    Checkpoint(Input),
}

/// The highest applied instance reported by the state machine (stored as instance + 1; 0 =
/// none), and a wake-up for the driver.
#[derive(Default)]
struct AppliedSignal {
    applied_plus_one: AtomicU64,
    notify: Notify,
}

/// A cloneable handle to one group driver.
#[derive(Clone)]
pub struct GroupHandle {
    name: Arc<str>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    applied: Arc<AppliedSignal>,
}

impl GroupHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Proposes a value. `Ok(Busy)` when the command queue or the in-flight bound is full.
    /// `Err(NotRunning)`: not handed over, safe to retry. `Err(OutcomeUnknown)`: the driver
    /// stopped after it took the proposal (SQLSTATE 40003).
    pub async fn propose(
        &self,
        payload: paxos_value::Payload,
        expected_instance: Option<InstanceId>,
    ) -> Result<ProposalOutcome, RuntimeError> {
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(Command::Propose {
            payload,
            expected_instance,
            reply,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Ok(ProposalOutcome::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(RuntimeError::NotRunning {
                    group: self.name.to_string(),
                })
            }
        }
        answer.await.map_err(|_| RuntimeError::OutcomeUnknown {
            group: self.name.to_string(),
        })
    }

    /// Runs a read-index round: true when this node was master with the highest ballot.
    /// False too when the driver is busy or stopped.
    pub async fn read_index(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .try_send(Command::ReadIndex { reply })
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// The latest status the driver published.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every status change.
    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The state machine has applied every instance up to `instance_id`. Never waits.
    pub fn applied(&self, instance_id: InstanceId) {
        self.applied
            .applied_plus_one
            .fetch_max(instance_id + 1, Ordering::Release);
        self.applied.notify.notify_one();
    }

    /// This node wrote an fsync'd checkpoint: the engine records its meta in the log, then the
    /// log is truncated below `truncate_below` (capped at the checkpoint).
    pub async fn checkpoint_durable(
        &self,
        meta: CheckpointMeta,
        truncate_below: InstanceId,
    ) -> Result<(), RuntimeError> {
        self.send_command(Command::Checkpoint(Input::CheckpointDurable {
            meta,
            truncate_below,
        }))
        .await
    }

    /// The state machine was replaced by a checkpoint: the engine skips to it and learns
    /// onward. Call before reporting any instance above it with [`GroupHandle::applied`].
    pub async fn checkpoint_installed(&self, meta: CheckpointMeta) -> Result<(), RuntimeError> {
        self.send_command(Command::Checkpoint(Input::CheckpointInstalled(meta)))
            .await
    }

    async fn send_command(&self, command: Command) -> Result<(), RuntimeError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| RuntimeError::NotRunning {
                group: self.name.to_string(),
            })
    }

    /// Asks the group to try to become master now.
    pub fn campaign(&self) -> Result<(), RuntimeError> {
        self.commands
            .try_send(Command::Campaign)
            .map_err(|_| RuntimeError::NotRunning {
                group: self.name.to_string(),
            })
    }
}

/// Starts the driver task and its log writer thread.
pub fn spawn_group(
    setup: GroupSetup,
) -> Result<(GroupChannels, tokio::task::JoinHandle<()>), RuntimeError> {
    let (completions_sender, completions) = mpsc::channel(LOG_WRITER_PERSISTS_IN_FLIGHT_MAX);
    let log = LogWriter::spawn(
        &setup.name,
        setup.log,
        completions_sender,
        Some(setup.outbox.clone()),
        setup.metrics.clone(),
        setup.fatal,
    )?;
    let (command_sender, commands) = mpsc::channel(GROUP_COMMAND_QUEUE_MAX);
    let (delivery_sender, deliveries) = mpsc::channel(DELIVER_QUEUE_MAX);
    let (checkpoint_sender, checkpoints_needed) = mpsc::channel(CHECKPOINT_NEEDED_QUEUE_MAX);
    let (status_sender, status) = watch::channel(setup.engine.status());
    let applied = Arc::new(AppliedSignal::default());
    let name: Arc<str> = Arc::from(setup.name.as_str());
    let handle = GroupHandle {
        name: name.clone(),
        commands: command_sender,
        status,
        applied: applied.clone(),
    };
    let driver = Driver {
        name,
        engine: setup.engine,
        log: Some(log),
        completions,
        outbox: setup.outbox,
        inbox: Some(setup.inbox),
        commands: Some(commands),
        applied,
        applied_reported_plus_one: 0,
        status: status_sender,
        deliveries: delivery_sender,
        checkpoints: checkpoint_sender,
        pending: VecDeque::new(),
        persists_in_flight: 0,
        proposals: HashMap::new(),
        next_proposal_id: 1,
        read_indexes: HashMap::new(),
        next_read_id: 1,
        learn_slots: Arc::new(Semaphore::new(LEARN_SERVES_IN_FLIGHT_MAX)),
        clock: TickClock::new(),
        metrics: setup.metrics,
        cancel: setup.cancel,
    };
    let task = tokio::spawn(driver.run());
    Ok((
        GroupChannels {
            handle,
            deliveries,
            checkpoints_needed,
        },
        task,
    ))
}

/// Why the driver stops.
#[derive(Debug)]
enum Stop {
    Cancelled,
    LogWriterGone,
    StateMachineGone,
}

struct Driver {
    name: Arc<str>,
    engine: Box<dyn Engine>,
    /// `None` only while closing.
    log: Option<LogWriter>,
    completions: mpsc::Receiver<Vec<PersistDone>>,
    outbox: Arc<dyn Outbox>,
    /// `None` once the sender side is gone.
    inbox: Option<mpsc::Receiver<Envelope>>,
    commands: Option<mpsc::Receiver<Command>>,
    applied: Arc<AppliedSignal>,
    applied_reported_plus_one: u64,
    status: watch::Sender<Status>,
    deliveries: mpsc::Sender<Delivered>,
    checkpoints: mpsc::Sender<CheckpointNeeded>,
    /// Actions emitted by the engine and not yet carried out, in order.
    pending: VecDeque<Action>,
    persists_in_flight: usize,
    proposals: HashMap<u64, oneshot::Sender<ProposalOutcome>>,
    next_proposal_id: u64,
    read_indexes: HashMap<u64, oneshot::Sender<bool>>,
    next_read_id: u64,
    learn_slots: Arc<Semaphore>,
    clock: TickClock,
    metrics: Arc<RuntimeMetrics>,
    cancel: CancellationToken,
}

impl Driver {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(Duration::from_millis(GROUP_TICK_INTERVAL_MS));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = loop {
            if let Err(stop) = self.carry_out_pending().await {
                break stop;
            }
            if let Err(stop) = self.wait_for_input(&mut ticker).await {
                break stop;
            }
        };
        match stop {
            Stop::Cancelled => tracing::debug!(group = %self.name, "group driver stopping"),
            Stop::LogWriterGone => {
                tracing::error!(group = %self.name, "the log writer stopped; the group driver stops")
            }
            Stop::StateMachineGone => {
                tracing::warn!(group = %self.name, "the state machine stopped taking values; the group driver stops")
            }
        }
        self.close().await;
    }

    /// Carries out queued actions in order, until a `Persist` must wait for an in-flight slot.
    async fn carry_out_pending(&mut self) -> Result<(), Stop> {
        while let Some(action) = self.pending.pop_front() {
            if matches!(action, Action::Persist { .. })
                && self.persists_in_flight >= LOG_WRITER_PERSISTS_IN_FLIGHT_MAX
            {
                self.pending.push_front(action);
                return Ok(());
            }
            self.carry_out(action).await?;
        }
        Ok(())
    }

    /// Waits for one input and feeds it. While persists are at their bound, waits only for
    /// completions (the new inputs would only queue more work).
    async fn wait_for_input(&mut self, ticker: &mut tokio::time::Interval) -> Result<(), Stop> {
        // Blocked: a Persist waits for a slot (it heads `pending` after carry_out_pending).
        let open =
            self.persists_in_flight < LOG_WRITER_PERSISTS_IN_FLIGHT_MAX || self.pending.is_empty();
        let inbox_open = open && self.inbox.is_some();
        let commands_open = open && self.commands.is_some();
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
            done = self.completions.recv() => match done {
                Some(done) => self.handle_durable(done),
                None => return Err(Stop::LogWriterGone),
            },
            _ = self.applied.notify.notified(), if open => self.handle_applied(),
            command = recv_or_pending(&mut self.commands), if commands_open => match command {
                Some(command) => self.handle_command(command),
                None => self.commands = None,
            },
            envelope = recv_or_pending(&mut self.inbox), if inbox_open => match envelope {
                Some(envelope) => self.step(Input::Message(envelope)),
                None => self.inbox = None,
            },
            _ = ticker.tick(), if open => {
                let now_ms = self.clock.now_ms();
                self.step(Input::Tick { now_ms });
            }
        }
        Ok(())
    }

    /// Feeds one input to the engine, queues its actions and publishes the new status.
    fn step(&mut self, input: Input) {
        let actions = self.engine.step(input);
        self.pending.extend(actions);
        let status = self.engine.status();
        self.status.send_if_modified(|published| {
            let changed = *published != status;
            if changed {
                *published = status;
            }
            changed
        });
    }

    async fn carry_out(&mut self, action: Action) -> Result<(), Stop> {
        match action {
            Action::Persist {
                token,
                records,
                then_send,
            } => self.handle_persist(token, records, then_send).await,
            Action::Append { records } => {
                // No completion and no slot: nothing waits for these records (a later sync
                // covers them), so `LOG_WRITER_PERSISTS_IN_FLIGHT_MAX` is not involved.
                let log = self
                    .log
                    .as_ref()
                    .expect("the log writer lives until the driver closes");
                log.append(records).await.map_err(|_| Stop::LogWriterGone)
            }
            Action::Send(envelope) => {
                self.outbox.send(envelope);
                Ok(())
            }
            Action::Deliver {
                instance_id,
                value,
                checksum_after,
                proposed_here,
            } => {
                self.handle_deliver(Delivered {
                    instance_id,
                    value,
                    checksum_after,
                    proposed_here,
                })
                .await
            }
            Action::ProposalDone {
                proposal_id,
                outcome,
            } => {
                self.handle_proposal_done(proposal_id, outcome);
                Ok(())
            }
            Action::ServeLearn {
                to,
                from_instance,
                max_values,
            } => {
                self.handle_serve_learn(to, from_instance, max_values);
                Ok(())
            }
            Action::NeedCheckpoint {
                peer,
                first_instance,
            } => {
                self.handle_need_checkpoint(peer, first_instance);
                Ok(())
            }
            Action::TruncateLog { below } => {
                // Queued behind every earlier persist; the writer cuts only after their sync.
                let log = self
                    .log
                    .as_ref()
                    .expect("the log writer lives until the driver closes");
                log.truncate_prefix(below)
                    .await
                    .map_err(|_| Stop::LogWriterGone)
            }
            Action::ReadIndexDone { read_id, ok } => {
                if let Some(reply) = self.read_indexes.remove(&read_id) {
                    let _ = reply.send(ok);
                }
                Ok(())
            }
            Action::Halt { reason } => {
                // The core ignores every later input; the data stays for an operator and
                // `/status` shows the reason.
                tracing::error!(
                    %reason,
                    "group halted: this replica stopped applying; compare its log with a peer's and replace it (replace-member) if it diverged"
                );
                Ok(())
            }
        }
    }

    async fn handle_persist(
        &mut self,
        token: u64,
        records: Vec<paxsql_binlog::Record>,
        then_send: Vec<Envelope>,
    ) -> Result<(), Stop> {
        let log = self
            .log
            .as_ref()
            .expect("the log writer lives until the driver closes");
        log.persist(token, records, then_send)
            .await
            .map_err(|_| Stop::LogWriterGone)?;
        self.persists_in_flight += 1;
        Ok(())
    }

    /// Records are durable: send what waited for them, then tell the engine.
    fn handle_durable(&mut self, done: Vec<PersistDone>) {
        for PersistDone { token, then_send } in done {
            assert!(
                self.persists_in_flight > 0,
                "a completion arrived for a persist that was not in flight"
            );
            self.persists_in_flight -= 1;
            for envelope in then_send {
                self.outbox.send(envelope);
            }
            self.step(Input::Persisted { token });
        }
    }

    async fn handle_deliver(&mut self, delivered: Delivered) -> Result<(), Stop> {
        self.metrics
            .values_delivered
            .fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
            sent = self.deliveries.send(delivered) => sent.map_err(|_| Stop::StateMachineGone),
        }
    }

    fn handle_applied(&mut self) {
        let applied_plus_one = self.applied.applied_plus_one.load(Ordering::Acquire);
        if applied_plus_one > self.applied_reported_plus_one {
            self.applied_reported_plus_one = applied_plus_one;
            self.step(Input::Applied {
                instance_id: applied_plus_one - 1,
            });
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Propose {
                payload,
                expected_instance,
                reply,
            } => {
                if self.proposals.len() >= GROUP_PROPOSALS_IN_FLIGHT_MAX {
                    self.metrics.proposals_busy.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(ProposalOutcome::Busy);
                    return;
                }
                let proposal_id = self.next_proposal_id;
                self.next_proposal_id += 1;
                self.proposals.insert(proposal_id, reply);
                self.metrics
                    .proposals_submitted
                    .fetch_add(1, Ordering::Relaxed);
                self.step(Input::Propose {
                    proposal_id,
                    payload,
                    expected_instance,
                });
            }
            Command::ReadIndex { reply } => {
                if self.read_indexes.len() >= GROUP_READ_INDEX_IN_FLIGHT_MAX {
                    let _ = reply.send(false);
                    return;
                }
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                self.read_indexes.insert(read_id, reply);
                self.metrics
                    .read_index_rounds
                    .fetch_add(1, Ordering::Relaxed);
                self.step(Input::ReadIndex { read_id });
            }
            Command::Campaign => self.step(Input::Campaign),
            Command::Checkpoint(input) => self.step(input),
        }
    }

    fn handle_proposal_done(&mut self, proposal_id: u64, outcome: ProposalOutcome) {
        let counter = match outcome {
            ProposalOutcome::Chosen { .. } => &self.metrics.proposals_chosen,
            ProposalOutcome::Lost { .. } => &self.metrics.proposals_lost,
            ProposalOutcome::Busy => &self.metrics.proposals_busy,
            ProposalOutcome::Refused(_) => &self.metrics.proposals_lost,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match self.proposals.remove(&proposal_id) {
            // The proposer may have given up waiting; that is fine.
            Some(reply) => drop(reply.send(outcome)),
            None => {
                tracing::warn!(group = %self.name, proposal_id, "the engine finished a proposal nobody submitted")
            }
        }
    }

    /// Reads the log on the writer thread and sends the reply from a separate task, so the
    /// driver never waits on a learner. Extra requests are dropped (learners ask again).
    fn handle_serve_learn(&mut self, to: NodeId, from_instance: InstanceId, max_values: u32) {
        let Ok(slot) = self.learn_slots.clone().try_acquire_owned() else {
            self.metrics
                .learn_requests_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let reader = self
            .log
            .as_ref()
            .expect("the log writer lives until the driver closes")
            .reader();
        let task = ServeLearn {
            reader,
            outbox: self.outbox.clone(),
            metrics: self.metrics.clone(),
            group: self.name.to_string(),
            status: self.engine.status(),
            to,
            from_instance,
            max_values: (max_values as usize).clamp(1, LEARN_BATCH_VALUES_MAX),
        };
        tokio::spawn(async move {
            task.run().await;
            drop(slot);
        });
    }

    fn handle_need_checkpoint(&mut self, peer: NodeId, first_instance: InstanceId) {
        self.metrics
            .checkpoints_needed
            .fetch_add(1, Ordering::Relaxed);
        if self
            .checkpoints
            .try_send(CheckpointNeeded {
                peer,
                first_instance,
            })
            .is_err()
        {
            // The checkpoint side is busy or absent; the engine asks again while it lags.
            tracing::debug!(group = %self.name, peer, first_instance, "checkpoint notice dropped");
        }
    }

    /// Fails what waits on the driver and lets the log writer finish its queue.
    async fn close(mut self) {
        // Dropping the reply senders tells waiting proposers the outcome is unknown.
        self.proposals.clear();
        self.read_indexes.clear();
        if let Some(log) = self.log.take() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// Waits on a receiver that may be gone (then never resolves; the caller's guard disables it).
async fn recv_or_pending<T>(receiver: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// One learn reply being built off the driver task.
struct ServeLearn {
    reader: LogReader,
    outbox: Arc<dyn Outbox>,
    metrics: Arc<RuntimeMetrics>,
    group: String,
    status: Status,
    to: NodeId,
    from_instance: InstanceId,
    max_values: usize,
}

impl ServeLearn {
    async fn run(self) {
        let to_instance = self.from_instance.saturating_add(self.max_values as u64);
        let read = match self.reader.read(self.from_instance, to_instance).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(group = %self.group, to = self.to, %error, "cannot serve a learner");
                return;
            }
        };
        let reply = learned_values(
            &read.records,
            read.first_instance,
            self.from_instance,
            self.max_values,
            self.status.chosen_instance,
        );
        self.metrics
            .learn_requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.outbox.send(Envelope {
            cluster_gid: self.status.cluster_gid,
            group: self.group,
            from: self.status.node_id,
            to: self.to,
            body: Some(envelope::Body::LearnedValues(reply)),
        });
    }
}
