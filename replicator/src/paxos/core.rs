//! [`Core`]: one group's multi-Paxos engine. One dispatch `match` over [`Input`]; the arms live
//! in the role modules (`acceptor`, `proposer`, `learner`, `lease`, `membership`), each an
//! `impl Core` block over the shared state defined here.
//!
//! # Ordering obligations kept here
//! - Promise/accept replies leave only through [`Action::Persist`]'s `then_send` (or, when
//!   addressed to this node's own proposer, are held until [`Input::Persisted`]).
//! - A chosen value is delivered at once, in instance order, exactly once, right after the
//!   [`Action::Append`] of its Chosen record; outcomes of local proposals follow their
//!   instance's delivery. The Chosen record is *not* synced on its own: a value is chosen only
//!   once a quorum's accept records are durable, so the chosen fact survives any crash; this
//!   node's Chosen record becomes durable with its next sync (usually the next instance's
//!   accept). A crash may leave the state machine ahead of the log's Chosen records; startup
//!   reconciles that (`recovery::state_machine_ahead`). One fsync per instance per node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{envelope::Body, Ballot, Envelope, Message, PaxosValue};

use super::acceptor::AcceptorState;
use super::api::{Action, Config, Input, InstanceId, NodeId, Role, Status};
use super::lease::LeaseState;
use super::proposer::Proposer;
use super::recovery;
use super::rng::Rng;

/// Read-index rounds in flight at once; past it a read is refused at once.
pub const READ_INDEX_PENDING_MAX: usize = 1024;

/// A queued local proposal.
#[derive(Clone, Debug)]
pub(super) struct QueuedProposal {
    pub proposal_id: u64,
    pub payload: paxsql_schema::paxos_value::Payload,
    pub expected_instance: Option<InstanceId>,
}

/// A read-index round.
#[derive(Debug)]
pub(super) struct ReadRound {
    pub ballot: Ballot,
    pub granted: BTreeSet<NodeId>,
    pub started_ms: u64,
}

/// The multi-Paxos engine of one group. See the module docs of [`super`].
#[derive(Debug)]
pub struct Core {
    pub(super) config: Config,
    pub(super) rng: Rng,
    /// The latest tick time; `None` before the first tick.
    pub(super) now_ms: Option<u64>,
    /// The instance being decided now: every instance below it is chosen.
    pub(super) instance_id: InstanceId,
    /// Running checksum of the chosen log before `instance_id`.
    pub(super) checksum: u64,
    pub(super) cluster_gid: u64,
    /// Members in force for `instance_id`, and the instance that set them (0: the init).
    pub(super) members: Vec<NodeId>,
    pub(super) members_version: InstanceId,
    /// Peer addresses from chosen `Membership` values, kept for current members only.
    pub(super) member_addrs: BTreeMap<NodeId, String>,
    pub(super) acceptor: AcceptorState,
    pub(super) proposer: Proposer,
    pub(super) lease: LeaseState,
    pub(super) queue: VecDeque<QueuedProposal>,
    /// Replies of the local acceptor to the local proposer, released when their record is durable.
    pub(super) held_self_replies: BTreeMap<u64, Vec<Envelope>>,
    pub(super) reads: BTreeMap<u64, ReadRound>,
    pub(super) applied_instance: Option<InstanceId>,
    /// Highest instance a peer reported chosen, and when we last asked to learn.
    pub(super) peer_chosen_hint: Option<(InstanceId, NodeId)>,
    pub(super) learn_requested_ms: Option<u64>,
    pub(super) next_heartbeat_ms: u64,
    pub(super) next_token: u64,
    pub(super) next_value_counter: u64,
    pub(super) foreign_gid_dropped: u64,
    pub(super) non_member_dropped: u64,
    pub(super) halted: Option<String>,
}

impl Core {
    /// Rebuilds a core from the records its log held at startup. Values chosen in `recovered`
    /// count as delivered: the driver brings its state machine up to the log's chosen instance
    /// itself (it reads the log) and then feeds [`Input::Applied`].
    ///
    /// `config.seed` must differ on every process start (value ids derive from it).
    pub fn new(config: Config, recovered: &[Record]) -> Core {
        let mut rng = Rng::new(config.seed);
        let next_value_counter = rng.next_u64() & VALUE_COUNTER_MASK;
        let mut core = Core {
            rng,
            now_ms: None,
            instance_id: 0,
            checksum: 0,
            cluster_gid: config.cluster_gid,
            members: config.initial_members.clone(),
            members_version: 0,
            member_addrs: BTreeMap::new(),
            acceptor: AcceptorState::default(),
            proposer: Proposer::default(),
            lease: LeaseState::default(),
            queue: VecDeque::new(),
            held_self_replies: BTreeMap::new(),
            reads: BTreeMap::new(),
            applied_instance: None,
            peer_chosen_hint: None,
            learn_requested_ms: None,
            next_heartbeat_ms: 0,
            next_token: 1,
            next_value_counter,
            foreign_gid_dropped: 0,
            non_member_dropped: 0,
            halted: None,
            config,
        };
        recovery::rebuild(&mut core, recovered);
        core
    }

    /// Feeds one input; returns the actions to carry out, in order.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        if self.halted.is_some() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match input {
            Input::Propose {
                proposal_id,
                payload,
                expected_instance,
            } => self.handle_propose(proposal_id, payload, expected_instance, &mut actions),
            Input::Message(envelope) => self.handle_message(envelope, &mut actions),
            Input::Tick { now_ms } => self.handle_tick(now_ms, &mut actions),
            Input::Persisted { token } => self.handle_persisted(token, &mut actions),
            Input::Applied { instance_id } => self.handle_applied(instance_id),
            Input::ReadIndex { read_id } => self.handle_read_index(read_id, &mut actions),
            Input::Campaign => self.handle_campaign(&mut actions),
            Input::CheckpointDurable {
                meta,
                truncate_below,
            } => self.handle_checkpoint_durable(meta, truncate_below, &mut actions),
            Input::CheckpointInstalled(meta) => {
                self.handle_checkpoint_installed(meta, &mut actions)
            }
        }
        actions
    }

    /// A snapshot for `/status`.
    pub fn status(&self) -> Status {
        let now_ms = self.now_ms.unwrap_or(0);
        let serving = self.is_serving_as_master(now_ms);
        let role = if self.lease.believes_self_master(self.config.node_id) {
            Role::Master
        } else if self.proposer.campaigning() {
            Role::Candidate
        } else {
            Role::Follower
        };
        Status {
            node_id: self.config.node_id,
            role,
            master_id: self.live_master(now_ms),
            chosen_instance: self.chosen_instance(),
            applied_instance: self.applied_instance,
            members: self.members.clone(),
            member_addrs: self.member_addrs.clone(),
            members_version: self.members_version,
            cluster_gid: self.cluster_gid,
            may_vote: self.config.may_vote,
            serving_as_master: serving,
            foreign_gid_dropped: self.foreign_gid_dropped,
            non_member_dropped: self.non_member_dropped,
            halted: self.halted.clone(),
        }
    }

    /// The highest chosen instance (None: nothing chosen yet).
    pub fn chosen_instance(&self) -> Option<InstanceId> {
        self.instance_id.checked_sub(1)
    }

    /// The cluster id (0 until instance 0 is chosen or learned).
    pub fn cluster_gid(&self) -> u64 {
        self.cluster_gid
    }

    /// The members in force for the instance being decided now.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Builds an envelope from this node (the driver uses it for `LearnedValues` replies).
    pub fn envelope(&self, to: NodeId, body: Body) -> Envelope {
        Envelope {
            cluster_gid: self.cluster_gid,
            group: self.config.group.clone(),
            from: self.config.node_id,
            to,
            body: Some(body),
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.now_ms.unwrap_or(0)
    }

    pub(super) fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub(super) fn is_member(&self, node_id: NodeId) -> bool {
        self.members.contains(&node_id)
    }

    pub(super) fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// A fresh value id: `(node_id << 40) | counter`.
    pub(super) fn take_value_id(&mut self) -> u64 {
        let counter = self.next_value_counter & VALUE_COUNTER_MASK;
        self.next_value_counter = self.next_value_counter.wrapping_add(1);
        (u64::from(self.config.node_id) << 40) | counter
    }

    /// Sends `body` to every member but this node.
    pub(super) fn broadcast(&self, body: Body, actions: &mut Vec<Action>) {
        for &member in &self.members {
            if member != self.config.node_id {
                actions.push(Action::Send(self.envelope(member, body.clone())));
            }
        }
    }

    /// Persists `record`, then sends `reply` (held back if it goes to this node's proposer).
    pub(super) fn persist_then_reply(
        &mut self,
        record: Record,
        reply: Envelope,
        actions: &mut Vec<Action>,
    ) {
        let token = self.take_token();
        if reply.to == self.config.node_id {
            self.held_self_replies.entry(token).or_default().push(reply);
            actions.push(Action::Persist {
                token,
                records: vec![record],
                then_send: Vec::new(),
            });
        } else {
            actions.push(Action::Persist {
                token,
                records: vec![record],
                then_send: vec![reply],
            });
        }
    }

    /// Stops the core for good.
    pub(super) fn halt(&mut self, reason: String, actions: &mut Vec<Action>) {
        if self.halted.is_none() {
            self.halted = Some(reason.clone());
            actions.push(Action::Halt { reason });
        }
    }

    fn handle_message(&mut self, envelope: Envelope, actions: &mut Vec<Action>) {
        if envelope.to != self.config.node_id || envelope.group != self.config.group {
            return;
        }
        if envelope.cluster_gid != 0
            && self.cluster_gid != 0
            && envelope.cluster_gid != self.cluster_gid
        {
            self.foreign_gid_dropped += 1;
            return;
        }
        let from = envelope.from;
        let gid_known = envelope.cluster_gid != 0;
        let Some(body) = envelope.body else { return };
        match body {
            Body::Prepare(prepare) => self.handle_prepare(from, prepare, actions),
            Body::Accept(accept) => self.handle_accept(from, accept, actions),
            Body::Promise(promise) => self.handle_promise(from, gid_known, promise, actions),
            Body::Accepted(accepted) => self.handle_accepted(from, gid_known, accepted, actions),
            Body::Chosen(chosen) => self.handle_chosen(from, chosen, actions),
            Body::LearnRequest(request) => self.handle_learn_request(from, request, actions),
            Body::LearnedValues(values) => self.handle_learned_values(from, values, actions),
            Body::Heartbeat(heartbeat) => {
                if gid_known {
                    self.note_peer_chosen(from, heartbeat.chosen_instance, actions);
                }
            }
            Body::ReadIndexRequest(request) => {
                self.handle_read_index_request(from, request, actions)
            }
            Body::ReadIndexReply(reply) => self.handle_read_index_reply(from, reply, actions),
            // Checkpoint streaming is the runtime's business.
            Body::CheckpointRequest(_) | Body::CheckpointChunk(_) => {}
        }
    }

    fn handle_tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let first_tick = self.now_ms.is_none();
        let now_ms = now_ms.max(self.now());
        self.now_ms = Some(now_ms);
        if first_tick {
            // A lease recovered from the log counts from now: this node may have learned it
            // long ago, but it must not assume the master died before a full lease passed.
            self.lease.start_clock(now_ms);
        }
        self.check_proposer_timeout(actions);
        self.check_read_timeouts(actions);
        self.maybe_send_heartbeat(actions);
        self.maybe_learn(actions);
        self.maintain_lease();
        self.try_propose(actions);
    }

    fn handle_persisted(&mut self, token: u64, actions: &mut Vec<Action>) {
        if let Some(replies) = self.held_self_replies.remove(&token) {
            for reply in replies {
                self.handle_message(reply, actions);
            }
        }
        self.try_propose(actions);
    }

    fn handle_applied(&mut self, instance_id: InstanceId) {
        assert!(
            instance_id < self.instance_id,
            "the state machine applied instance {instance_id}, which is not chosen"
        );
        self.applied_instance = Some(
            self.applied_instance
                .map_or(instance_id, |a| a.max(instance_id)),
        );
    }

    /// Records that `instance_id` chose `value` at `ballot`, from any path (own quorum, a
    /// Chosen notice, a learned value). Verifies the checksum chain, appends the Chosen
    /// record (no sync: see the module docs), applies the core's own state machines, moves to
    /// the next instance and delivers the value, then the outcomes that follow it.
    pub(super) fn commit_chosen(
        &mut self,
        instance_id: InstanceId,
        ballot: Ballot,
        value: PaxosValue,
        actions: &mut Vec<Action>,
    ) {
        assert_eq!(
            instance_id, self.instance_id,
            "instances are chosen strictly in order"
        );
        if value.checksum_before != self.checksum {
            let reason = format!(
                "instance {instance_id}: the chosen value's log checksum {:#x} differs from this \
                 node's {:#x}; this replica diverged and stops applying (restore it from a \
                 healthy node's checkpoint)",
                value.checksum_before, self.checksum
            );
            self.halt(reason, actions);
            return;
        }
        // The value moves into the record to be encoded and back out: no copy of it.
        let mut chosen = paxsql_schema::ChosenValue {
            instance_id,
            ballot: Some(ballot),
            value: Some(value),
        };
        let record = Record::new(instance_id, RecordKind::Chosen, chosen.encode_to_vec());
        let value = chosen.value.take().expect("set just above");
        actions.push(Action::Append {
            records: vec![record],
        });
        let proposed_here = self.proposer.inflight.as_ref().is_some_and(|inflight| {
            inflight.instance_id == instance_id && inflight.value.value_id == value.value_id
        });
        let mut after = Vec::new();
        self.apply_chosen(instance_id, &value, &mut after, actions);
        if self.halted.is_some() {
            return;
        }
        actions.push(Action::Deliver {
            instance_id,
            value,
            checksum_after: self.checksum,
            proposed_here,
        });
        actions.extend(after);
    }

    /// The state changes of a chosen value, shared with recovery (which passes no outcomes).
    pub(super) fn apply_chosen(
        &mut self,
        instance_id: InstanceId,
        value: &PaxosValue,
        outcomes: &mut Vec<Action>,
        actions: &mut Vec<Action>,
    ) {
        self.checksum = chain_checksum(self.checksum, value);
        self.apply_system_value(instance_id, value, actions);
        self.instance_id = instance_id + 1;
        self.acceptor.move_to_next_instance(self.config.planted_bug);
        self.proposer_on_chosen(instance_id, value, outcomes);
        if self.cluster_gid != 0 && !self.is_member(self.config.node_id) {
            // Removed: nothing queued here can be chosen any more; its clients must go elsewhere.
            for proposal in self.queue.drain(..) {
                outcomes.push(Action::ProposalDone {
                    proposal_id: proposal.proposal_id,
                    outcome: super::api::ProposalOutcome::Refused(
                        "this node was removed from the group".into(),
                    ),
                });
            }
        }
    }

    fn maybe_send_heartbeat(&mut self, actions: &mut Vec<Action>) {
        let now_ms = self.now();
        if now_ms < self.next_heartbeat_ms || self.instance_id == 0 {
            return;
        }
        self.next_heartbeat_ms = now_ms + self.config.heartbeat_interval_ms;
        let heartbeat = paxsql_schema::Heartbeat {
            chosen_instance: self.instance_id - 1,
            now_ms,
        };
        self.broadcast(Body::Heartbeat(heartbeat), actions);
    }
}

const VALUE_COUNTER_MASK: u64 = (1 << 40) - 1;

/// The running log checksum after `value`: xxh3-64 of the encoded value, seeded by the
/// checksum before it (every value counts: init, lease, membership, SQL).
pub fn chain_checksum(before: u64, value: &PaxosValue) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&value.encode_to_vec(), before)
}
