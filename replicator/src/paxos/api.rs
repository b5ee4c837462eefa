//! The contract between the Paxos core and its driver (runtime or simulator).
//!
//! # Ordering obligations of the driver
//! 1. Carry out actions in the order the core emits them.
//! 2. [`Action::Persist`]: append `records`, make them durable (one fsync may serve several
//!    `Persist` actions), and only **then** send `then_send`; finally feed
//!    [`Input::Persisted`] with the same token. A promise or accept that leaves before its
//!    record is durable breaks Paxos.
//! 3. [`Action::Append`]: append `records` after every record queued before them, without
//!    waiting for a sync. They become durable with the next sync of the same log (a later
//!    `Persist`, or the sync a `TruncateLog` does first). An fdatasync covers every earlier
//!    append of the file, so the log on disk is always a prefix of what was appended: a crash
//!    loses at most the `Append`ed records after the last sync, never one in the middle.
//! 4. [`Action::Deliver`]: apply the chosen value to the state machine in instance order, then
//!    feed [`Input::Applied`]. A `Deliver` does **not** wait for the `Chosen` record before it
//!    to be durable (one fsync per instance, the PhxPaxos learner): the value is chosen because
//!    a quorum *durably* accepted it, so delivering it early cannot deliver a value that a later
//!    recovery could see unchosen. What a crash can leave is a state machine *ahead* of the
//!    log's last `Chosen` record; the driver reconciles that at startup with
//!    [`crate::paxos::recovery::state_machine_ahead`] (the state machine's meta becomes a `Meta` record,
//!    appended and synced before the core starts).
//! 5. Ticks carry a monotonic clock that keeps counting while the machine is suspended
//!    (`CLOCK_BOOTTIME`); `now_ms` never goes backwards.

use paxsql_binlog::Record;
use paxsql_schema::{paxos_value, Envelope, PaxosValue};

pub type NodeId = u32;
pub type InstanceId = u64;

/// How one core is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    /// The group (database) name; goes into every envelope.
    pub group: String,
    /// The cluster id if known (from the data dir); 0 until instance 0 is chosen or learned.
    pub cluster_gid: u64,
    pub cluster_name: String,
    /// Members used to choose instance 0 when the log is empty.
    pub initial_members: Vec<NodeId>,
    /// How long a master lease lasts (`--lease-ms`, default 3,000).
    pub lease_ms: u64,
    /// Largest clock drift rate assumed between nodes, in parts per million.
    pub max_drift_ppm: u64,
    /// The master stops acting as master this long before its lease ends.
    pub lease_margin_ms: u64,
    /// Seed of the core's PRNG (backoff jitter, value ids).
    pub seed: u64,
    /// Whether this node may vote. False for a node whose log is empty while its peers report an
    /// existing cluster id: it forgot its promises and may only learn (DESIGN "Rules").
    pub may_vote: bool,
    /// Bounds on the proposal queue and on one batched value.
    pub proposal_queue_max: usize,
    pub batch_count_max: usize,
    pub batch_bytes_max: usize,
    /// A prepare or accept round without a quorum after this long is abandoned and retried
    /// with a higher ballot (tick time).
    pub phase_timeout_ms: u64,
    /// How often a node tells its peers its chosen instance (lets laggards notice and learn).
    pub heartbeat_interval_ms: u64,
    /// Upper bound of the random pause after a conflict before proposing again.
    pub backoff_max_ms: u64,
    /// How long an unanswered learn request waits before it is sent again.
    pub learn_retry_ms: u64,
    /// Deliberate protocol bugs, only for the simulator's self-test. Always `None` otherwise.
    #[doc(hidden)]
    pub planted_bug: PlantedBug,
}

/// A deliberate bug the simulator must catch (proof that its invariants can fail).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlantedBug {
    #[default]
    None,
    /// The acceptor accepts a ballot lower than the one it promised.
    AcceptLowerBallot,
    /// A proposer keeps skipping prepare after a rejection (it just raises its ballot).
    SkipPrepareAfterRejection,
    /// The acceptor answers a prepare before its promise is durable.
    PromiseBeforePersist,
    /// The acceptor forgets its promise when it moves to the next instance.
    ForgetPromiseOnNextInstance,
}

impl Config {
    pub fn new(node_id: NodeId, group: &str, initial_members: Vec<NodeId>, seed: u64) -> Self {
        Config {
            node_id,
            group: group.to_string(),
            cluster_gid: 0,
            cluster_name: "paxsql".to_string(),
            initial_members,
            lease_ms: 3_000,
            max_drift_ppm: 1_000,
            lease_margin_ms: 300,
            seed,
            may_vote: true,
            proposal_queue_max: crate::limits::PROPOSAL_QUEUE_MAX,
            batch_count_max: crate::limits::BATCH_STATEMENTS_MAX,
            batch_bytes_max: crate::limits::VALUE_BYTES_MAX,
            phase_timeout_ms: 1_000,
            heartbeat_interval_ms: 500,
            backoff_max_ms: 300,
            learn_retry_ms: 500,
            planted_bug: PlantedBug::None,
        }
    }
}

/// What the driver feeds the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// A local proposal. `expected_instance`, when set, binds the proposal to that instance:
    /// a SQL batch executed on top of instance i−1 may only be chosen at instance i. If the
    /// core's next instance is another one, or another value is chosen there, the outcome is
    /// [`ProposalOutcome::Lost`]; such a proposal is never carried over to a later instance.
    Propose {
        proposal_id: u64,
        payload: paxos_value::Payload,
        expected_instance: Option<InstanceId>,
    },
    /// A message from a peer.
    Message(Envelope),
    /// The passage of time (monotonic milliseconds).
    Tick { now_ms: u64 },
    /// The records of the `Persist` action with this token are durable.
    Persisted { token: u64 },
    /// The state machine has applied every instance up to and including this one.
    Applied { instance_id: InstanceId },
    /// A linearizable read asks the core to confirm, through a majority, that this node's
    /// ballot is still the highest (a read-index round; nothing is written to the log).
    ReadIndex { read_id: u64 },
    /// Ask this node to try to become master now (e.g. `admin transfer-master`).
    Campaign,
    /// This node wrote an fsync'd checkpoint holding every instance up to `meta.instance_id`:
    /// record its meta in the log, then truncate the log below `truncate_below` (capped at the
    /// checkpoint). See `paxos::checkpoint`.
    CheckpointDurable {
        meta: super::CheckpointMeta,
        truncate_below: InstanceId,
    },
    /// The state machine was replaced by a checkpoint holding every instance up to
    /// `meta.instance_id`: skip to it and learn onward. Feed it before any `Applied` above
    /// the old position.
    CheckpointInstalled(super::CheckpointMeta),
}

/// How a local proposal ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Chosen at this instance, with this value id.
    Chosen {
        instance_id: InstanceId,
        value_id: u64,
    },
    /// The instance is known to hold another value (SQLSTATE 40001 for SQL batches).
    Lost { instance_id: InstanceId },
    /// The proposal queue is full (SQLSTATE 53000).
    Busy,
    /// Refused before proposing, with a reason for the user.
    Refused(String),
}

/// What the core asks the driver to do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Append `records`, sync, then send `then_send`, then feed `Input::Persisted { token }`.
    Persist {
        token: u64,
        records: Vec<Record>,
        then_send: Vec<Envelope>,
    },
    /// Append `records` in queue order without waiting for a sync (the `Chosen` record of an
    /// instance). Durable with the next sync of the log; nothing waits on it (see rule 3).
    Append { records: Vec<Record> },
    /// Send at once (nothing in it depends on an unsynced record).
    Send(Envelope),
    /// Instance `instance_id` chose `value`. Delivered exactly once, in instance order, right
    /// after the `Append` of its `Chosen` record (not after that record is durable).
    Deliver {
        instance_id: InstanceId,
        value: PaxosValue,
        /// The running log checksum after this value (what [`crate::paxos::chain_checksum`]
        /// gives), computed once here so the state machine need not encode the value again.
        checksum_after: u64,
        /// This node's proposer had exactly this value in flight (same value id) for this
        /// instance: the value carries this node's own proposal.
        proposed_here: bool,
    },
    /// A local proposal ended.
    ProposalDone {
        proposal_id: u64,
        outcome: ProposalOutcome,
    },
    /// A peer asked for chosen values from `from_instance` on: read them from the log and send
    /// a `LearnedValues` reply (or `needs_checkpoint` when the log no longer holds them).
    ServeLearn {
        to: NodeId,
        from_instance: InstanceId,
        max_values: u32,
    },
    /// This node needs instances no peer's log holds any more: fetch `peer`'s checkpoint.
    NeedCheckpoint {
        peer: NodeId,
        first_instance: InstanceId,
    },
    /// Remove the log's records below `below` (whole segments; a durable checkpoint covers
    /// them). Carried out only after every `Persist` emitted before it is durable.
    TruncateLog { below: InstanceId },
    /// A read-index round ended: `ok` means this node was master with the highest ballot.
    /// The read may then be served once the state machine applied every instance that was
    /// chosen when the driver fed [`Input::ReadIndex`] (read [`Core::chosen_instance`] then).
    ///
    /// [`Core::chosen_instance`]: super::Core::chosen_instance
    ReadIndexDone { read_id: u64, ok: bool },
    /// The chosen log diverged from this node's (running checksum mismatch) or another broken
    /// invariant was found: stop applying, say so loudly, keep the data for an operator. The
    /// core ignores every later input.
    Halt { reason: String },
}

/// A node's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Follower,
    Candidate,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
        }
    }
}

/// A snapshot of the core for `/status` and the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: NodeId,
    pub role: Role,
    pub master_id: Option<NodeId>,
    /// Highest instance known chosen (None: nothing chosen yet).
    pub chosen_instance: Option<InstanceId>,
    /// Highest instance the state machine reported applied.
    pub applied_instance: Option<InstanceId>,
    pub members: Vec<NodeId>,
    /// Peer addresses of members, as the chosen `Membership` values named them (members added
    /// at run time; the original ones come from `--peers`).
    pub member_addrs: std::collections::BTreeMap<NodeId, String>,
    /// The instance that chose the member list in force (0: the cluster init); a `Membership`
    /// proposal must expect it.
    pub members_version: InstanceId,
    pub cluster_gid: u64,
    /// False when this node may only learn (see [`Config::may_vote`]).
    pub may_vote: bool,
    /// True when this node is master, its lease holds with margin, and it has applied every
    /// instance chosen before its own lease: it may accept writes and serve lease reads.
    pub serving_as_master: bool,
    /// Messages dropped because they carried another cluster id.
    pub foreign_gid_dropped: u64,
    /// Votes and proposals ignored because their sender is not a member.
    pub non_member_dropped: u64,
    /// Set once the core halted (see [`Action::Halt`]).
    pub halted: Option<String>,
}
