//! The master lease (PhxPaxos MasterStateMachine) and read-index rounds.
//!
//! - A node that sees no live master proposes `MasterLease { self, lease_ms, version }` after
//!   a random pause (so candidates rarely collide); a lease whose expected version is stale
//!   when chosen changes nothing. The version is the instance the current lease was chosen at.
//! - Followers treat the master as alive for `lease_ms` from the tick time at which they
//!   learned the lease (their own clock). A lease recovered from the log counts from the first
//!   tick after a restart.
//! - The master's own lease ends at: the tick time read **before** its proposal was first
//!   sent, plus lease_ms × (1 − max drift), minus the margin. Ticks never extend it; a
//!   restarted node has no start time for older leases, so it is never master until it wins
//!   a new one.
//! - The master serves (writes, lease reads) only once it applied every instance chosen before
//!   the first lease of its term. It renews at about lease/4.

use std::collections::BTreeSet;

use paxsql_schema::{
    envelope::Body, paxos_value::Payload, ClusterInit, MasterLease, PaxosValue, ReadIndexReply,
};

use super::api::{Action, InstanceId, NodeId};
use super::core::{Core, ReadRound, READ_INDEX_PENDING_MAX};

#[derive(Debug, Default)]
pub struct LeaseState {
    pub master_id: Option<NodeId>,
    pub lease_ms: u64,
    /// The instance the current lease was chosen at (0: no lease yet).
    pub version: InstanceId,
    /// This node's tick time when it learned the current lease (None before the first tick).
    pub learned_at_ms: Option<u64>,
    /// Set only when this node is the master and proposed the lease in this incarnation.
    pub own_start_ms: Option<u64>,
    pub own_end_ms: Option<u64>,
    /// The instance of the first lease of this node's current term as master.
    pub term_start_instance: InstanceId,
    pub campaign_at_ms: Option<u64>,
    pub init_at_ms: Option<u64>,
    /// `Input::Campaign` asked to skip the random pause (cleared by any chosen lease).
    pub campaign_requested: bool,
}

impl LeaseState {
    pub fn start_clock(&mut self, now_ms: u64) {
        if self.master_id.is_some() && self.learned_at_ms.is_none() {
            self.learned_at_ms = Some(now_ms);
        }
    }

    pub fn believes_self_master(&self, node_id: NodeId) -> bool {
        self.master_id == Some(node_id) && self.own_end_ms.is_some()
    }
}

impl Core {
    /// Whether this node may accept writes and serve lease reads at `now_ms` (its own clock).
    pub fn is_serving_as_master(&self, now_ms: u64) -> bool {
        let lease = &self.lease;
        self.halted.is_none()
            && lease.master_id == Some(self.config.node_id)
            && self.is_member(self.config.node_id)
            && lease.own_end_ms.is_some_and(|end_ms| now_ms < end_ms)
            && self
                .applied_instance
                .is_some_and(|applied| applied + 1 >= lease.term_start_instance)
    }

    /// The master this node believes alive at `now_ms`.
    pub fn live_master(&self, now_ms: u64) -> Option<NodeId> {
        let lease = &self.lease;
        let alive = lease
            .learned_at_ms
            .is_some_and(|learned_ms| now_ms < learned_ms + lease.lease_ms);
        // A master removed from the member list stops serving as soon as it learns it
        // (`is_serving_as_master`), but one cut off from the members may not learn it before
        // its lease ends: its lease is waited out like any other (it cannot renew it, members
        // ignore a non-member's votes).
        lease.master_id.filter(|_| alive)
    }

    /// A chosen `MasterLease` at `instance_id`.
    pub(super) fn apply_lease(
        &mut self,
        instance_id: InstanceId,
        lease: &MasterLease,
        value: &PaxosValue,
    ) {
        if lease.expected_version != self.lease.version {
            return;
        }
        let node_id = self.config.node_id;
        let now_ms = self.now_ms;
        let own_start_ms = self
            .proposer
            .inflight
            .as_ref()
            .filter(|inflight| inflight.value.value_id == value.value_id)
            .and_then(|inflight| inflight.lease_start_ms)
            .filter(|_| lease.master_id == node_id);
        let continuing = self.lease.master_id == Some(node_id)
            && self
                .lease
                .own_end_ms
                .is_some_and(|end_ms| now_ms.is_some_and(|now_ms| now_ms < end_ms));
        let state = &mut self.lease;
        state.master_id = Some(lease.master_id);
        state.lease_ms = lease.lease_ms;
        state.version = instance_id;
        state.learned_at_ms = now_ms;
        state.campaign_at_ms = None;
        state.campaign_requested = false;
        state.own_start_ms = own_start_ms;
        state.own_end_ms = own_start_ms.map(|start_ms| {
            let drift_ppm = self.config.max_drift_ppm.min(1_000_000);
            let shrunk_ms = lease.lease_ms * (1_000_000 - drift_ppm) / 1_000_000;
            (start_ms + shrunk_ms).saturating_sub(self.config.lease_margin_ms)
        });
        if own_start_ms.is_some() && !continuing {
            state.term_start_instance = instance_id;
        }
    }

    /// On each tick: schedules this node's cluster-init proposal while instance 0 is open.
    pub(super) fn maintain_lease(&mut self) {
        let node_id = self.config.node_id;
        if self.instance_id == 0
            && self.config.initial_members.contains(&node_id)
            && self.lease.init_at_ms.is_none()
        {
            let window_ms = self.config.lease_ms / 4 + 1;
            self.lease.init_at_ms = Some(self.now() + self.rng.below(window_ms));
        }
    }

    /// Whether this node should propose a lease now, decided on the current state (never on
    /// an earlier tick's view: a lease learned since then changes the answer).
    fn lease_due(&mut self) -> bool {
        let now_ms = self.now();
        let node_id = self.config.node_id;
        let lease = &self.lease;
        if self.instance_id == 0 || !self.is_member(node_id) {
            return false;
        }
        if lease.master_id == Some(node_id) {
            return lease
                .own_start_ms
                .is_none_or(|start_ms| now_ms >= start_ms + self.config.lease_ms / 4);
        }
        if self.live_master(now_ms).is_some()
            || (lease.master_id.is_some() && lease.learned_at_ms.is_none())
        {
            self.lease.campaign_at_ms = None;
            return false;
        }
        if std::mem::take(&mut self.lease.campaign_requested) {
            return true;
        }
        let window_ms = self.config.lease_ms / 4 + 1;
        let campaign_at_ms = match self.lease.campaign_at_ms {
            Some(at_ms) => at_ms,
            None => now_ms + self.rng.below(window_ms),
        };
        self.lease.campaign_at_ms = Some(campaign_at_ms);
        now_ms >= campaign_at_ms
    }

    pub(super) fn lease_payload_if_due(&mut self) -> Option<Payload> {
        if !self.lease_due() {
            return None;
        }
        Some(Payload::MasterLease(MasterLease {
            master_id: self.config.node_id,
            lease_ms: self.config.lease_ms,
            expected_version: self.lease.version,
        }))
    }

    pub(super) fn init_payload_if_due(&mut self) -> Option<Payload> {
        let due = self
            .lease
            .init_at_ms
            .is_some_and(|at_ms| self.now() >= at_ms);
        if !due {
            return None;
        }
        let cluster_gid = match self.config.cluster_gid {
            0 => self.rng.next_u64() | 1,
            known => known,
        };
        Some(Payload::ClusterInit(ClusterInit {
            cluster_gid,
            cluster_name: self.config.cluster_name.clone(),
            members: self.config.initial_members.clone(),
        }))
    }

    /// `Input::Campaign`: propose a lease now if no other master is alive (a live master must
    /// step down, or its lease run out, first: two masters must never overlap).
    pub(super) fn handle_campaign(&mut self, actions: &mut Vec<Action>) {
        let now_ms = self.now();
        let other_alive = self
            .live_master(now_ms)
            .is_some_and(|master| master != self.config.node_id);
        if self.instance_id > 0 && self.is_member(self.config.node_id) && !other_alive {
            self.lease.campaign_requested = true;
            self.try_propose(actions);
        }
    }

    pub(super) fn handle_read_index(&mut self, read_id: u64, actions: &mut Vec<Action>) {
        let ballot = self.proposer.ballot;
        let refused = !self.is_serving_as_master(self.now())
            || !self.proposer.prepared
            || self.reads.len() >= READ_INDEX_PENDING_MAX
            || self.reads.contains_key(&read_id);
        if refused {
            actions.push(Action::ReadIndexDone { read_id, ok: false });
            return;
        }
        let mut granted = BTreeSet::new();
        if self.config.may_vote && self.acceptor.promised <= ballot {
            granted.insert(self.config.node_id);
        }
        if granted.len() >= self.quorum() {
            actions.push(Action::ReadIndexDone { read_id, ok: true });
            return;
        }
        self.reads.insert(
            read_id,
            ReadRound {
                ballot,
                granted,
                started_ms: self.now(),
            },
        );
        let request = paxsql_schema::ReadIndexRequest {
            read_id,
            ballot: Some(ballot),
            instance_id: self.instance_id,
        };
        self.broadcast(Body::ReadIndexRequest(request), actions);
    }

    pub(super) fn handle_read_index_reply(
        &mut self,
        from: NodeId,
        reply: ReadIndexReply,
        actions: &mut Vec<Action>,
    ) {
        if !self.is_member(from) {
            self.non_member_dropped += 1;
            return;
        }
        let quorum = self.quorum();
        let Some(round) = self.reads.get_mut(&reply.read_id) else {
            return;
        };
        if !reply.ok {
            let promised = reply.promised.unwrap_or_default();
            if promised > round.ballot {
                self.proposer.prepared = false;
                self.proposer.highest_seen = self.proposer.highest_seen.max(promised.number);
            }
            self.reads.remove(&reply.read_id);
            actions.push(Action::ReadIndexDone {
                read_id: reply.read_id,
                ok: false,
            });
            return;
        }
        round.granted.insert(from);
        if round.granted.len() >= quorum {
            self.reads.remove(&reply.read_id);
            actions.push(Action::ReadIndexDone {
                read_id: reply.read_id,
                ok: true,
            });
        }
    }

    pub(super) fn check_read_timeouts(&mut self, actions: &mut Vec<Action>) {
        let now_ms = self.now();
        let timeout_ms = self.config.phase_timeout_ms;
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, round)| round.started_ms + timeout_ms <= now_ms)
            .map(|(read_id, _)| *read_id)
            .collect();
        for read_id in expired {
            self.reads.remove(&read_id);
            actions.push(Action::ReadIndexDone { read_id, ok: false });
        }
    }

    /// Our ballot lost: no pending read can be confirmed any more.
    pub(super) fn fail_reads(&mut self, actions: &mut Vec<Action>) {
        for read_id in std::mem::take(&mut self.reads).into_keys() {
            actions.push(Action::ReadIndexDone { read_id, ok: false });
        }
    }
}
