//! A deterministic world of Paxos cores: a seeded faulty network (drops, duplicates, delays,
//! reorders, symmetric and one-way partitions), storage whose sync completes late and loses
//! unsynced records on a crash (Chosen records are appended without a sync of their own), a
//! state machine modelled on SQLite with `synchronous=NORMAL` (a crash keeps a random prefix
//! of what it applied, possibly ahead of the log's Chosen records, possibly behind), crashes
//! and restarts that reconcile the two as the runtime does, clients proposing throughout, and
//! one clock rate per node. Invariants are checked after every event; the first violation stops
//! the run and names itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use paxsql_binlog::{LogStore, MemLog, RecordKind};
use paxsql_replicator::paxos::{
    chain_checksum, recovery, Action, CheckpointMeta, Config, Core, Input, NodeId, PlantedBug,
    ProposalOutcome,
};
use paxsql_schema::{
    envelope::Body, paxos_value::Payload, ChosenValue, Envelope, LearnedValues, Membership,
    MembershipOp, Message, PaxosValue,
};

/// A tiny splitmix64 for the world's own choices.
pub struct SimRng(u64);

impl SimRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }
}

/// How one run is set up.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub nodes: usize,
    pub planted_bug: PlantedBug,
    /// Faults happen in [0, fault_ms); then everything heals.
    pub fault_ms: u64,
    /// After healing, a new proposal must be chosen (and every node catch up) within this.
    pub liveness_ms: u64,
    /// During faults, clients also propose member list changes that remove or re-add the
    /// last node (it may be the master). Non-members are exempt from the catch-up check.
    pub membership_changes: bool,
}

const TICK_MS: u64 = 10;
const LEASE_MS: u64 = 1_000;
const MAX_DRIFT_PPM: u64 = 20_000;

enum Event {
    Message(Envelope),
    Tick(usize),
    Sync {
        node: usize,
        incarnation: u64,
    },
    Crash,
    Restart(usize),
    Client,
    Partition,
    HealPartitions,
    HealAll,
    /// After healing: propose the value whose choice proves liveness.
    Marker,
}

struct Node {
    core: Option<Core>,
    log: MemLog,
    incarnation: u64,
    /// Local clock: `base + global × (1 + drift)`.
    drift_ppm: i64,
    clock_base_ms: u64,
    /// Persists appended but not yet synced: (token, messages to send once durable).
    unsynced: Vec<(u64, Vec<Envelope>)>,
    sync_scheduled: bool,
    /// The state machine (like the SQLite file with `synchronous=NORMAL`: a crash keeps a
    /// random prefix of it, never shorter than `durable_delivered`).
    delivered: Vec<PaxosValue>,
    /// How much of `delivered` was made durable (synced before the log said so).
    durable_delivered: usize,
    /// Instances whose delivery said "proposed here": a Chosen outcome must name one of them.
    delivered_as_own: BTreeSet<u64>,
}

impl Node {
    fn local_ms(&self, global_ms: u64) -> u64 {
        let scaled = global_ms as i128 * (1_000_000 + self.drift_ppm as i128) / 1_000_000;
        self.clock_base_ms + scaled as u64
    }
}

pub struct World {
    seed: u64,
    scenario: Scenario,
    rng: SimRng,
    now_ms: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    drop_ppm: u64,
    duplicate_ppm: u64,
    healed: bool,
    /// The first value delivered anywhere for each instance.
    chosen: BTreeMap<u64, PaxosValue>,
    proposals: BTreeMap<u64, bytes::Bytes>,
    next_proposal_id: u64,
    marker: Option<u64>,
    marker_chosen: bool,
    /// Proposals that carry a `Membership` value (checked as such when acknowledged).
    membership_proposals: BTreeSet<u64>,
    pub violation: Option<String>,
    pub chosen_count: u64,
    /// `Membership` values chosen (proves the member-change scenario changed members).
    pub membership_chosen: u64,
    /// Events after which some node served as master (proves the master check is not vacuous).
    pub serving_events: u64,
    /// Restarts whose state machine was ahead of the log, so the node stood on it.
    pub stood_on_state_machine: u64,
    /// Print deliveries and crashes (set by `PAXSQL_SIM_TRACE`).
    pub trace: bool,
}

fn node_id(index: usize) -> NodeId {
    index as NodeId + 1
}

impl World {
    pub fn new(seed: u64, scenario: Scenario) -> World {
        let mut rng = SimRng(seed ^ 0x5eed_5eed);
        let nodes = (0..scenario.nodes)
            .map(|_| Node {
                core: None,
                log: MemLog::new(),
                incarnation: 0,
                drift_ppm: rng.below(2 * MAX_DRIFT_PPM + 1) as i64 - MAX_DRIFT_PPM as i64,
                clock_base_ms: rng.below(1_000_000),
                unsynced: Vec::new(),
                sync_scheduled: false,
                delivered: Vec::new(),
                durable_delivered: 0,
                delivered_as_own: BTreeSet::new(),
            })
            .collect();
        let mut world = World {
            seed,
            scenario,
            rng,
            now_ms: 0,
            sequence: 0,
            events: BTreeMap::new(),
            nodes,
            blocked: BTreeSet::new(),
            drop_ppm: 50_000,
            duplicate_ppm: 20_000,
            healed: false,
            chosen: BTreeMap::new(),
            proposals: BTreeMap::new(),
            next_proposal_id: 1,
            marker: None,
            marker_chosen: false,
            membership_proposals: BTreeSet::new(),
            violation: None,
            chosen_count: 0,
            membership_chosen: 0,
            serving_events: 0,
            stood_on_state_machine: 0,
            trace: std::env::var("PAXSQL_SIM_TRACE").is_ok(),
        };
        for index in 0..scenario.nodes {
            world.start_node(index);
        }
        world.schedule(5, Event::Client);
        let first_crash = world.rng.range(100, 1_500);
        world.schedule(first_crash, Event::Crash);
        let first_partition = world.rng.range(100, 1_500);
        world.schedule(first_partition, Event::Partition);
        world.schedule(scenario.fault_ms, Event::HealAll);
        world
    }

    fn config(&self, index: usize) -> Config {
        let members = (0..self.scenario.nodes).map(node_id).collect();
        let node = &self.nodes[index];
        let seed = self.seed.wrapping_mul(1_000_003) ^ ((index as u64) << 32) ^ node.incarnation;
        let mut config = Config::new(node_id(index), "main", members, seed);
        config.lease_ms = LEASE_MS;
        config.max_drift_ppm = 2 * MAX_DRIFT_PPM;
        config.lease_margin_ms = 100;
        config.phase_timeout_ms = 200;
        config.heartbeat_interval_ms = 100;
        config.backoff_max_ms = 60;
        config.learn_retry_ms = 100;
        config.proposal_queue_max = 64;
        config.batch_count_max = 8;
        config.planted_bug = self.scenario.planted_bug;
        config
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.sequence += 1;
        self.events
            .insert((self.now_ms + after_ms, self.sequence), event);
    }

    fn start_node(&mut self, index: usize) {
        let config = self.config(index);
        self.stand_on_state_machine_if_ahead(index, &config);
        let core = Core::new(config, self.nodes[index].log.records());
        // The state machine catches up from the log, as the runtime does at startup.
        let records: Vec<ChosenValue> = self.nodes[index]
            .log
            .records()
            .iter()
            .filter(|record| record.kind == RecordKind::Chosen)
            .map(|record| {
                ChosenValue::decode(record.payload.as_ref()).expect("chosen record decodes")
            })
            .collect();
        for chosen in records {
            if chosen.instance_id as usize == self.nodes[index].delivered.len() {
                let value = chosen.value.expect("chosen value present");
                self.check_delivery(index, chosen.instance_id, &value);
                self.nodes[index].delivered.push(value);
            }
        }
        let applied = self.nodes[index].delivered.len() as u64;
        self.nodes[index].core = Some(core);
        if applied > 0 {
            self.feed(
                index,
                Input::Applied {
                    instance_id: applied - 1,
                },
            );
        }
        self.schedule(0, Event::Tick(index));
    }

    /// The runtime's startup reconciliation (`proxy/src/node.rs`): a state machine ahead of
    /// the log's chosen instance is made durable and its meta appended and synced as a `Meta`
    /// record, on which the core then stands.
    fn stand_on_state_machine_if_ahead(&mut self, index: usize, config: &Config) {
        let node = &mut self.nodes[index];
        let applied = (node.delivered.len() as u64).checked_sub(1);
        if !recovery::state_machine_ahead(config, node.log.records(), applied) {
            return;
        }
        let meta = CheckpointMeta::after_values(config, &node.delivered)
            .expect("a state machine ahead of the log applied something");
        node.durable_delivered = node.delivered.len();
        node.log.append(&meta.record()).expect("memlog append");
        node.log.sync().expect("memlog sync");
        self.stood_on_state_machine += 1;
        if self.trace {
            println!(
                "{} ms: node {} stands on its state machine at instance {}",
                self.now_ms,
                node_id(index),
                meta.instance_id
            );
        }
    }

    /// Runs until the end of the liveness window or the first violation.
    pub fn run(&mut self) {
        let end_ms = self.scenario.fault_ms + self.scenario.liveness_ms;
        while self.violation.is_none() {
            let Some(((at_ms, _), event)) = self.events.pop_first() else {
                break;
            };
            if at_ms > end_ms {
                break;
            }
            self.now_ms = at_ms;
            self.handle(event);
            self.check_single_master();
        }
        if self.violation.is_none() {
            self.check_liveness();
        }
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {} ms: {what}", self.now_ms));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Message(envelope) => {
                let index = envelope.to as usize - 1;
                if self.nodes[index].core.is_some() {
                    self.feed(index, Input::Message(envelope));
                }
            }
            Event::Tick(index) => self.handle_tick(index),
            Event::Sync { node, incarnation } => self.handle_sync(node, incarnation),
            Event::Crash => self.handle_crash(),
            Event::Restart(index) => {
                if self.nodes[index].core.is_none() {
                    self.start_node(index);
                }
            }
            Event::Client => self.handle_client(),
            Event::Partition => self.handle_partition(),
            Event::HealPartitions => self.blocked.clear(),
            Event::HealAll => self.handle_heal_all(),
            Event::Marker => {
                let index = self.rng.below(self.nodes.len() as u64) as usize;
                // The outcome may come back at once (a removed node refuses): the marker must
                // be known before the proposal is fed.
                self.marker = Some(self.next_proposal_id);
                self.marker = self.propose_at(index, None);
            }
        }
    }

    fn handle_tick(&mut self, index: usize) {
        let Some(_) = &self.nodes[index].core else {
            return;
        };
        let now_ms = self.nodes[index].local_ms(self.now_ms);
        self.feed(index, Input::Tick { now_ms });
        // TICK_MS of local time, in global time.
        let global_ms = TICK_MS * 1_000_000 / (1_000_000 + self.nodes[index].drift_ppm) as u64;
        self.schedule(global_ms.max(1), Event::Tick(index));
    }

    fn handle_sync(&mut self, index: usize, incarnation: u64) {
        let node = &mut self.nodes[index];
        if node.incarnation != incarnation || node.core.is_none() {
            return;
        }
        node.log.sync().expect("memlog sync");
        node.sync_scheduled = false;
        let completed = std::mem::take(&mut node.unsynced);
        for (token, then_send) in completed {
            for envelope in then_send {
                self.send(envelope);
            }
            self.feed(index, Input::Persisted { token });
        }
    }

    fn handle_crash(&mut self) {
        if self.healed {
            return;
        }
        // Power cuts like to strike while a sync is pending: prefer a node with unsynced
        // records half of the time, else pick any node.
        // (A persist waits for its sync: lazily appended Chosen records alone do not count,
        // nearly every node has some.)
        let syncing: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| !self.nodes[index].unsynced.is_empty())
            .collect();
        let index = if !syncing.is_empty() && self.rng.below(4) != 0 {
            syncing[self.rng.below(syncing.len() as u64) as usize]
        } else {
            self.rng.below(self.nodes.len() as u64) as usize
        };
        let node = &mut self.nodes[index];
        if node.core.is_some() {
            if self.trace {
                println!("{} ms: node {} crashes", self.now_ms, node_id(index));
            }
            node.core = None;
            node.log.crash();
            // SQLite with synchronous=NORMAL: the newest commits may be lost too.
            let kept = self.rng.range(
                node.durable_delivered as u64,
                node.delivered.len() as u64 + 1,
            );
            node.delivered.truncate(kept as usize);
            node.delivered_as_own.clear();
            node.unsynced.clear();
            node.sync_scheduled = false;
            node.incarnation += 1;
            // Half the restarts are quick, while the peers' rounds are still open.
            let down_ms = if self.rng.below(2) == 0 {
                self.rng.range(5, 60)
            } else {
                self.rng.range(60, 800)
            };
            self.schedule(down_ms, Event::Restart(index));
        }
        let next_ms = self.rng.range(20, 500);
        self.schedule(next_ms, Event::Crash);
    }

    fn handle_partition(&mut self) {
        if self.healed {
            return;
        }
        let count = self.nodes.len() as u64;
        self.blocked.clear();
        match self.rng.below(3) {
            0 => {
                let side: Vec<bool> = (0..count).map(|_| self.rng.below(2) == 0).collect();
                for a in 0..self.nodes.len() {
                    for b in 0..self.nodes.len() {
                        if side[a] != side[b] {
                            self.blocked.insert((node_id(a), node_id(b)));
                        }
                    }
                }
            }
            1 => {
                for _ in 0..self.rng.range(1, count) {
                    let from = node_id(self.rng.below(count) as usize);
                    let to = node_id(self.rng.below(count) as usize);
                    self.blocked.insert((from, to));
                }
            }
            _ => {}
        }
        let heal_ms = self.rng.range(50, 1_500);
        self.schedule(heal_ms, Event::HealPartitions);
        let next_ms = heal_ms + self.rng.range(50, 1_000);
        self.schedule(next_ms, Event::Partition);
    }

    fn handle_heal_all(&mut self) {
        self.healed = true;
        self.blocked.clear();
        self.drop_ppm = 10_000;
        self.duplicate_ppm = 0;
        for index in 0..self.nodes.len() {
            if self.nodes[index].core.is_none() {
                self.nodes[index].incarnation += 1;
                self.start_node(index);
            }
        }
        self.schedule(0, Event::Marker);
    }

    fn handle_client(&mut self) {
        if !self.healed {
            let index = self.rng.below(self.nodes.len() as u64) as usize;
            let bound = self.rng.below(5) == 0;
            let expected = if bound {
                self.nodes[index]
                    .core
                    .as_ref()
                    .map(|core| core.chosen_instance().map_or(0, |c| c + 1))
            } else {
                None
            };
            self.propose_at(index, expected);
            if self.scenario.membership_changes && self.rng.below(20) == 0 {
                self.propose_member_toggle(index);
            }
            if self.rng.below(10) == 0 {
                let read_id = self.rng.next_u64();
                if self.nodes[index].core.is_some() {
                    self.feed(index, Input::ReadIndex { read_id });
                }
            }
        }
        let next_ms = self.rng.range(2, 30);
        self.schedule(next_ms, Event::Client);
    }

    /// Proposes, at node `index`, the member list in force there with the last node removed
    /// (or added back if it is out).
    fn propose_member_toggle(&mut self, index: usize) {
        let Some(core) = self.nodes[index].core.as_ref() else {
            return;
        };
        let status = core.status();
        let last = node_id(self.nodes.len() - 1);
        let mut members = status.members.clone();
        let op = if members.contains(&last) {
            members.retain(|member| *member != last);
            MembershipOp::Remove
        } else {
            members.push(last);
            MembershipOp::Add
        };
        let proposal_id = self.next_proposal_id;
        self.next_proposal_id += 1;
        self.membership_proposals.insert(proposal_id);
        let change = Membership {
            op: op as i32,
            members,
            expected_version: status.members_version,
            member_info: Vec::new(),
        };
        self.feed(
            index,
            Input::Propose {
                proposal_id,
                payload: Payload::Membership(change),
                expected_instance: None,
            },
        );
    }

    fn propose_at(&mut self, index: usize, expected_instance: Option<u64>) -> Option<u64> {
        self.nodes[index].core.as_ref()?;
        let proposal_id = self.next_proposal_id;
        self.next_proposal_id += 1;
        let payload = bytes::Bytes::from(format!("s{}-p{proposal_id}", self.seed));
        self.proposals.insert(proposal_id, payload.clone());
        self.feed(
            index,
            Input::Propose {
                proposal_id,
                payload: Payload::Opaque(payload),
                expected_instance,
            },
        );
        Some(proposal_id)
    }

    fn send(&mut self, envelope: Envelope) {
        if self.blocked.contains(&(envelope.from, envelope.to))
            || self.rng.chance_ppm(self.drop_ppm)
        {
            return;
        }
        if self.rng.chance_ppm(self.duplicate_ppm) {
            let delay_ms = self.rng.range(1, 40);
            self.schedule(delay_ms, Event::Message(envelope.clone()));
        }
        let delay_ms = self.rng.range(1, 15);
        self.schedule(delay_ms, Event::Message(envelope));
    }

    /// Feeds one input and carries out every action (and the inputs they cause) in order.
    fn feed(&mut self, index: usize, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let Some(core) = self.nodes[index].core.as_mut() else {
                return;
            };
            let actions = core.step(input);
            for action in actions {
                self.carry_out(index, action, &mut inputs);
            }
        }
    }

    fn carry_out(&mut self, index: usize, action: Action, inputs: &mut VecDeque<Input>) {
        match action {
            Action::Persist {
                token,
                records,
                then_send,
            } => {
                let node = &mut self.nodes[index];
                for record in &records {
                    node.log.append(record).expect("memlog append");
                }
                node.unsynced.push((token, then_send));
                if !node.sync_scheduled {
                    node.sync_scheduled = true;
                    let incarnation = node.incarnation;
                    let delay_ms = self.rng.range(0, 25);
                    self.schedule(
                        delay_ms,
                        Event::Sync {
                            node: index,
                            incarnation,
                        },
                    );
                }
            }
            Action::Append { records } => {
                // Durable only with the node's next sync; a crash before it loses them.
                let node = &mut self.nodes[index];
                for record in &records {
                    node.log.append(record).expect("memlog append");
                }
            }
            Action::Send(envelope) => self.send(envelope),
            Action::Deliver {
                instance_id,
                value,
                checksum_after,
                proposed_here,
            } => {
                let expected_checksum = chain_checksum(value.checksum_before, &value);
                if checksum_after != expected_checksum {
                    self.violate(format!(
                        "node {} delivered instance {instance_id} with checksum_after {checksum_after:#x}, the value's chain gives {expected_checksum:#x}",
                        node_id(index)
                    ));
                    return;
                }
                // Value ids are (node << 40) | counter: a value this node proposed has its id.
                if proposed_here && value.value_id >> 40 != u64::from(node_id(index)) {
                    self.violate(format!(
                        "node {} called instance {instance_id}'s value {:#x} its own proposal",
                        node_id(index),
                        value.value_id
                    ));
                    return;
                }
                if instance_id as usize != self.nodes[index].delivered.len() {
                    let have = self.nodes[index].delivered.len();
                    self.violate(format!(
                        "node {} delivered instance {instance_id} after {have} values",
                        node_id(index)
                    ));
                    return;
                }
                self.check_delivery(index, instance_id, &value);
                if self.trace {
                    println!(
                        "{} ms: node {} delivers {instance_id}: {:?}",
                        self.now_ms,
                        node_id(index),
                        value.payload
                    );
                }
                if proposed_here {
                    self.nodes[index].delivered_as_own.insert(instance_id);
                }
                self.nodes[index].delivered.push(value);
                inputs.push_back(Input::Applied { instance_id });
            }
            Action::ProposalDone {
                proposal_id,
                outcome,
            } => self.check_outcome(index, proposal_id, outcome),
            Action::ServeLearn {
                to,
                from_instance,
                max_values,
            } => self.serve_learn(index, to, from_instance, max_values),
            Action::NeedCheckpoint { .. } => self.violate(format!(
                "node {} asked for a checkpoint, but no log was truncated",
                node_id(index)
            )),
            Action::TruncateLog { below } => self.violate(format!(
                "node {} truncated its log below {below}, but no checkpoint was made",
                node_id(index)
            )),
            Action::ReadIndexDone { .. } => {}
            Action::Halt { reason } => {
                self.violate(format!("node {} halted: {reason}", node_id(index)))
            }
        }
    }

    fn check_delivery(&mut self, index: usize, instance_id: u64, value: &PaxosValue) {
        match self.chosen.get(&instance_id) {
            Some(first) if first != value => {
                let what = format!(
                    "agreement: node {} learned value {:#x} for instance {instance_id}, another node learned {:#x}",
                    node_id(index),
                    value.value_id,
                    first.value_id
                );
                self.violate(what);
            }
            Some(_) => {}
            None => {
                self.chosen.insert(instance_id, value.clone());
                self.chosen_count += 1;
                if matches!(value.payload, Some(Payload::Membership(_))) {
                    self.membership_chosen += 1;
                }
            }
        }
    }

    fn check_outcome(&mut self, index: usize, proposal_id: u64, outcome: ProposalOutcome) {
        if Some(proposal_id) == self.marker && !matches!(outcome, ProposalOutcome::Chosen { .. }) {
            // Busy (a queue filled during the faults) or refused: the client retries.
            self.schedule(20, Event::Marker);
        }
        let ProposalOutcome::Chosen {
            instance_id,
            value_id,
        } = outcome
        else {
            return;
        };
        if Some(proposal_id) == self.marker {
            self.marker_chosen = true;
        }
        // The state machine tells its own batch from another master's by this flag alone.
        if !self.nodes[index].delivered_as_own.contains(&instance_id) {
            self.violate(format!(
                "node {} acked proposal {proposal_id} at instance {instance_id}, but its delivery did not say proposed here",
                node_id(index)
            ));
        }
        let payload = self
            .proposals
            .get(&proposal_id)
            .cloned()
            .unwrap_or_default();
        let membership = self.membership_proposals.contains(&proposal_id);
        let holds = self.chosen.get(&instance_id).is_some_and(|value| {
            value.value_id == value_id
                && match &value.payload {
                    Some(Payload::Membership(_)) => membership,
                    Some(Payload::Opaque(bytes)) => *bytes == payload,
                    Some(Payload::BatchedOpaque(batch)) => batch.items.contains(&payload),
                    _ => false,
                }
        });
        if !holds {
            self.violate(format!(
                "acknowledged value lost: node {} acked proposal {proposal_id} at instance {instance_id}, which holds another value",
                node_id(index)
            ));
        }
    }

    fn serve_learn(&mut self, index: usize, to: NodeId, from_instance: u64, max_values: u32) {
        let node = &self.nodes[index];
        let core = node
            .core
            .as_ref()
            .expect("a live node serves learn requests");
        // Consecutive instances from `from_instance`, as the runtime serves them: a node that
        // stood on its state machine may lack some (then it sends only what it has).
        let mut values: Vec<ChosenValue> = Vec::new();
        for record in node.log.records() {
            let next = from_instance + values.len() as u64;
            if record.kind != RecordKind::Chosen || record.instance_id != next {
                continue;
            }
            if values.len() >= max_values as usize {
                break;
            }
            values
                .push(ChosenValue::decode(record.payload.as_ref()).expect("chosen record decodes"));
        }
        let learned = LearnedValues {
            values,
            chosen_instance: core.chosen_instance().unwrap_or(0),
            needs_checkpoint: false,
            first_instance: 0,
        };
        let envelope = core.envelope(to, Body::LearnedValues(learned));
        self.send(envelope);
    }

    /// At most one node believes it is serving as master at this global time.
    fn check_single_master(&mut self) {
        let serving: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&index| {
                let node = &self.nodes[index];
                node.core
                    .as_ref()
                    .is_some_and(|core| core.is_serving_as_master(node.local_ms(self.now_ms)))
            })
            .map(node_id)
            .collect();
        if !serving.is_empty() {
            self.serving_events += 1;
        }
        if serving.len() > 1 && self.trace {
            for node in &self.nodes {
                if let Some(core) = &node.core {
                    println!("{:?} local {}", core.status(), node.local_ms(self.now_ms));
                }
            }
        }
        if serving.len() > 1 {
            self.violate(format!(
                "two masters: nodes {serving:?} serve as master at the same time"
            ));
        }
    }

    fn check_liveness(&mut self) {
        if !self.marker_chosen {
            self.violate(format!(
                "liveness: a proposal made when faults healed was not chosen within {} ms",
                self.scenario.liveness_ms
            ));
            return;
        }
        let longest = self
            .nodes
            .iter()
            .map(|node| node.delivered.len())
            .max()
            .unwrap_or(0);
        for index in 0..self.nodes.len() {
            let member = self.nodes[index]
                .core
                .as_ref()
                .is_none_or(|core| core.members().contains(&node_id(index)));
            if self.scenario.membership_changes && !member {
                // A removed node hears no heartbeats; it is not expected to keep up.
                continue;
            }
            let have = self.nodes[index].delivered.len();
            if have + 2 < longest {
                self.violate(format!(
                    "liveness: node {} delivered {have} values, {longest} are chosen, after healing",
                    node_id(index)
                ));
            }
        }
    }
}
