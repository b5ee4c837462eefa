//! The proposer: ballots, prepare → accept, skip-prepare, backoff, local proposal outcomes.
//!
//! - Ballots are (number, node id); a new one is above every number this node has seen.
//! - After a successful prepare the proposer keeps its ballot for the following instances and
//!   sends only accepts (one RTT per commit) until a rejection, a timeout or a membership
//!   change ends skip-prepare. This is safe because a promise covers every later instance.
//! - Its own acceptor votes like any other, and its vote counts only once durable.
//! - A value proposed at instance i that loses there: a bound proposal ends `Lost`; unbound
//!   ones go back to the front of the queue and ride a fresh value at the next instance.

use std::collections::BTreeSet;

use paxsql_schema::{
    envelope::Body, paxos_value::Payload, Accept, Accepted, Ballot, BatchedOpaque, Chosen,
    PaxosValue, Prepare, Promise,
};

use super::api::{Action, InstanceId, NodeId, PlantedBug, ProposalOutcome};
use super::core::{Core, QueuedProposal};

#[derive(Debug, Default)]
pub struct Proposer {
    pub phase: Phase,
    /// The last ballot this proposer used.
    pub ballot: Ballot,
    /// The highest ballot number seen in any reply.
    pub highest_seen: u64,
    /// Skip-prepare: a quorum promised `ballot` for the current and every later instance.
    pub prepared: bool,
    pub backoff_until_ms: u64,
    /// This node's own value for the current instance.
    pub inflight: Option<Inflight>,
}

impl Proposer {
    pub fn campaigning(&self) -> bool {
        self.inflight
            .as_ref()
            .is_some_and(|inflight| inflight.lease_start_ms.is_some())
    }
}

#[derive(Debug, Default)]
pub enum Phase {
    #[default]
    Idle,
    Preparing(Round),
    Accepting(Round),
}

#[derive(Debug)]
pub struct Round {
    pub instance_id: InstanceId,
    pub ballot: Ballot,
    pub started_ms: u64,
    pub granted: BTreeSet<NodeId>,
    pub rejected: BTreeSet<NodeId>,
    /// Prepare: whether the peers were sent the prepare (after our own promise was durable).
    pub announced: bool,
    /// Prepare: the highest accepted value reported. Accept: the value being accepted.
    pub value: Option<(Ballot, PaxosValue)>,
}

#[derive(Debug)]
pub struct Inflight {
    pub instance_id: InstanceId,
    pub value: PaxosValue,
    pub proposals: Vec<QueuedProposal>,
    /// For a lease proposal: the tick time read before it was first sent.
    pub lease_start_ms: Option<u64>,
}

impl Core {
    pub(super) fn handle_propose(
        &mut self,
        proposal_id: u64,
        payload: Payload,
        expected_instance: Option<InstanceId>,
        actions: &mut Vec<Action>,
    ) {
        let outcome = if expected_instance.is_some_and(|expected| expected != self.instance_id) {
            let instance_id = expected_instance.expect("checked just above");
            Some(ProposalOutcome::Lost { instance_id })
        } else if self.cluster_gid != 0 && !self.is_member(self.config.node_id) {
            Some(ProposalOutcome::Refused(
                "this node is not a member of the group".into(),
            ))
        } else if self.queue.len() >= self.config.proposal_queue_max {
            Some(ProposalOutcome::Busy)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            actions.push(Action::ProposalDone {
                proposal_id,
                outcome,
            });
            return;
        }
        self.queue.push_back(QueuedProposal {
            proposal_id,
            payload,
            expected_instance,
        });
        self.try_propose(actions);
    }

    /// Starts a round if the proposer is idle, not backing off, and has something to propose.
    pub(super) fn try_propose(&mut self, actions: &mut Vec<Action>) {
        let idle = matches!(self.proposer.phase, Phase::Idle);
        if !idle || self.now() < self.proposer.backoff_until_ms || self.now_ms.is_none() {
            return;
        }
        // A node that may not vote forgot its promises, and with them the ballots it used.
        if !self.is_member(self.config.node_id) || !self.config.may_vote {
            return;
        }
        if self.proposer.inflight.is_none() {
            self.proposer.inflight = self.next_inflight(actions);
        }
        let Some(inflight) = &self.proposer.inflight else {
            return;
        };
        assert_eq!(
            inflight.instance_id, self.instance_id,
            "an in-flight value belongs to the current instance"
        );
        if self.proposer.prepared {
            let value = inflight.value.clone();
            self.start_accept(self.proposer.ballot, value, actions);
        } else {
            self.start_prepare(actions);
        }
    }

    /// Picks what to propose next: the cluster init, a lease, or queued proposals.
    fn next_inflight(&mut self, actions: &mut Vec<Action>) -> Option<Inflight> {
        if self.instance_id == 0 {
            let payload = self.init_payload_if_due()?;
            return Some(self.make_inflight(payload, Vec::new(), None));
        }
        if let Some(payload) = self.lease_payload_if_due() {
            let start_ms = self.now();
            return Some(self.make_inflight(payload, Vec::new(), Some(start_ms)));
        }
        while let Some(front) = self.queue.front() {
            if front
                .expected_instance
                .is_none_or(|expected| expected == self.instance_id)
            {
                break;
            }
            let stale = self.queue.pop_front().expect("front exists");
            let instance_id = stale.expected_instance.expect("bound, checked above");
            actions.push(Action::ProposalDone {
                proposal_id: stale.proposal_id,
                outcome: ProposalOutcome::Lost { instance_id },
            });
        }
        let first = self.queue.pop_front()?;
        let mut proposals = vec![first];
        if let (None, Payload::Opaque(first_bytes)) =
            (proposals[0].expected_instance, &proposals[0].payload)
        {
            let mut bytes = first_bytes.len();
            while proposals.len() < self.config.batch_count_max {
                let Some(QueuedProposal {
                    expected_instance: None,
                    payload: Payload::Opaque(next),
                    ..
                }) = self.queue.front()
                else {
                    break;
                };
                if bytes + next.len() > self.config.batch_bytes_max {
                    break;
                }
                bytes += next.len();
                proposals.push(self.queue.pop_front().expect("front exists"));
            }
        }
        let payload = if proposals.len() == 1 {
            proposals[0].payload.clone()
        } else {
            let items = proposals
                .iter()
                .map(|proposal| match &proposal.payload {
                    Payload::Opaque(bytes) => bytes.clone(),
                    _ => unreachable!("only opaque proposals are batched"),
                })
                .collect();
            Payload::BatchedOpaque(BatchedOpaque { items })
        };
        Some(self.make_inflight(payload, proposals, None))
    }

    fn make_inflight(
        &mut self,
        payload: Payload,
        proposals: Vec<QueuedProposal>,
        lease_start_ms: Option<u64>,
    ) -> Inflight {
        let value = PaxosValue {
            value_id: self.take_value_id(),
            checksum_before: self.checksum,
            payload: Some(payload),
        };
        Inflight {
            instance_id: self.instance_id,
            value,
            proposals,
            lease_start_ms,
        }
    }

    fn start_prepare(&mut self, actions: &mut Vec<Action>) {
        let number = self
            .proposer
            .highest_seen
            .max(self.proposer.ballot.number)
            .max(self.acceptor.promised.number)
            + 1;
        let ballot = Ballot::new(number, self.config.node_id);
        self.proposer.ballot = ballot;
        self.proposer.phase = Phase::Preparing(Round::new(self.instance_id, ballot, self.now()));
        // Our own promise goes first; the peers hear of the ballot only once it is durable, so
        // after a crash this node never reuses a ballot it already sent.
        let prepare = Prepare {
            instance_id: self.instance_id,
            ballot: Some(ballot),
        };
        self.handle_prepare(self.config.node_id, prepare, actions);
    }

    fn start_accept(&mut self, ballot: Ballot, value: PaxosValue, actions: &mut Vec<Action>) {
        let mut round = Round::new(self.instance_id, ballot, self.now());
        round.value = Some((ballot, value.clone()));
        self.proposer.phase = Phase::Accepting(round);
        let accept = Accept {
            instance_id: self.instance_id,
            ballot: Some(ballot),
            value: Some(value),
        };
        self.broadcast(Body::Accept(accept.clone()), actions);
        self.handle_accept(self.config.node_id, accept, actions);
    }

    pub(super) fn handle_promise(
        &mut self,
        from: NodeId,
        gid_known: bool,
        promise: Promise,
        actions: &mut Vec<Action>,
    ) {
        if gid_known && promise.chosen_instance >= self.instance_id {
            self.note_peer_chosen(from, promise.chosen_instance, actions);
        }
        if !self.is_member(from) {
            self.non_member_dropped += 1;
            return;
        }
        let ballot = promise.ballot.unwrap_or_default();
        let quorum = self.quorum();
        let Phase::Preparing(round) = &mut self.proposer.phase else {
            return;
        };
        if round.instance_id != promise.instance_id || round.ballot != ballot {
            return;
        }
        if !promise.ok {
            round.rejected.insert(from);
            let rejected = round.rejected.len();
            self.see_ballot(promise.promised.unwrap_or_default());
            if rejected + quorum > self.members.len() {
                self.on_conflict(actions);
            }
            return;
        }
        round.granted.insert(from);
        let accepted_ballot = promise.accepted_ballot.unwrap_or_default();
        if let Some(value) = promise
            .accepted_value
            .filter(|_| !accepted_ballot.is_zero())
        {
            if round
                .value
                .as_ref()
                .is_none_or(|(best, _)| accepted_ballot > *best)
            {
                round.value = Some((accepted_ballot, value));
            }
        }
        let announce = from == self.config.node_id && !round.announced;
        round.announced |= announce;
        let reached = round.granted.len() >= quorum;
        if announce {
            let prepare = Prepare {
                instance_id: promise.instance_id,
                ballot: Some(ballot),
            };
            self.broadcast(Body::Prepare(prepare), actions);
        }
        if !reached {
            return;
        }
        let Phase::Preparing(round) = &mut self.proposer.phase else {
            unreachable!("matched above")
        };
        let adopted = round.value.take().map(|(_, value)| value);
        let own = self
            .proposer
            .inflight
            .as_ref()
            .map(|inflight| inflight.value.clone());
        let value = adopted
            .or(own)
            .expect("a prepare round always has a value of its own");
        self.proposer.prepared = true;
        self.start_accept(ballot, value, actions);
    }

    pub(super) fn handle_accepted(
        &mut self,
        from: NodeId,
        gid_known: bool,
        accepted: Accepted,
        actions: &mut Vec<Action>,
    ) {
        if gid_known && accepted.chosen_instance >= self.instance_id {
            self.note_peer_chosen(from, accepted.chosen_instance, actions);
        }
        if !self.is_member(from) {
            self.non_member_dropped += 1;
            return;
        }
        let ballot = accepted.ballot.unwrap_or_default();
        let quorum = self.quorum();
        let Phase::Accepting(round) = &mut self.proposer.phase else {
            return;
        };
        if round.instance_id != accepted.instance_id || round.ballot != ballot {
            return;
        }
        if !accepted.ok {
            round.rejected.insert(from);
            let rejected = round.rejected.len();
            self.see_ballot(accepted.promised.unwrap_or_default());
            if self.config.planted_bug != PlantedBug::SkipPrepareAfterRejection {
                self.proposer.prepared = false;
            }
            if rejected + quorum > self.members.len() {
                self.on_conflict(actions);
            }
            return;
        }
        round.granted.insert(from);
        if round.granted.len() < quorum {
            return;
        }
        let instance_id = round.instance_id;
        let (_, value) = round
            .value
            .take()
            .expect("an accept round carries its value");
        let chosen = Chosen {
            instance_id,
            ballot: Some(ballot),
            value_id: value.value_id,
        };
        self.broadcast(Body::Chosen(chosen), actions);
        self.commit_chosen(instance_id, ballot, value, actions);
    }

    fn see_ballot(&mut self, ballot: Ballot) {
        self.proposer.highest_seen = self.proposer.highest_seen.max(ballot.number);
    }

    /// Another proposer got in the way: end the round, pause a random while, retry.
    fn on_conflict(&mut self, actions: &mut Vec<Action>) {
        self.proposer.phase = Phase::Idle;
        if self.config.planted_bug == PlantedBug::SkipPrepareAfterRejection
            && self.proposer.prepared
        {
            // The bug: raise the ballot and keep skipping prepare.
            let number = self.proposer.highest_seen.max(self.proposer.ballot.number) + 1;
            self.proposer.ballot = Ballot::new(number, self.config.node_id);
        } else {
            self.proposer.prepared = false;
        }
        self.proposer.backoff_until_ms =
            self.now() + 1 + self.rng.below(self.config.backoff_max_ms);
        self.fail_reads(actions);
    }

    pub(super) fn check_proposer_timeout(&mut self, actions: &mut Vec<Action>) {
        let started_ms = match &self.proposer.phase {
            Phase::Idle => return,
            Phase::Preparing(round) | Phase::Accepting(round) => round.started_ms,
        };
        if self.now() >= started_ms + self.config.phase_timeout_ms {
            self.proposer.prepared = false;
            self.on_conflict(actions);
        }
    }

    /// Instance `instance_id` chose `value`: settle this node's value and queued proposals
    /// bound to that instance. `outcomes` are emitted after the value's delivery.
    pub(super) fn proposer_on_chosen(
        &mut self,
        instance_id: InstanceId,
        value: &PaxosValue,
        outcomes: &mut Vec<Action>,
    ) {
        self.proposer.phase = Phase::Idle;
        if let Some(inflight) = self.proposer.inflight.take() {
            assert_eq!(
                inflight.instance_id, instance_id,
                "an in-flight value belongs to the current instance"
            );
            let won = inflight.value.value_id == value.value_id;
            let mut requeue = Vec::new();
            for proposal in inflight.proposals {
                let outcome = if won {
                    ProposalOutcome::Chosen {
                        instance_id,
                        value_id: value.value_id,
                    }
                } else if proposal.expected_instance.is_some() {
                    ProposalOutcome::Lost { instance_id }
                } else {
                    requeue.push(proposal);
                    continue;
                };
                outcomes.push(Action::ProposalDone {
                    proposal_id: proposal.proposal_id,
                    outcome,
                });
            }
            for proposal in requeue.into_iter().rev() {
                self.queue.push_front(proposal);
            }
        }
        let mut kept = std::collections::VecDeque::with_capacity(self.queue.len());
        for proposal in self.queue.drain(..) {
            match proposal.expected_instance {
                Some(expected) if expected <= instance_id => outcomes.push(Action::ProposalDone {
                    proposal_id: proposal.proposal_id,
                    outcome: ProposalOutcome::Lost {
                        instance_id: expected,
                    },
                }),
                _ => kept.push_back(proposal),
            }
        }
        self.queue = kept;
    }
}

impl Round {
    fn new(instance_id: InstanceId, ballot: Ballot, started_ms: u64) -> Self {
        Round {
            instance_id,
            ballot,
            started_ms,
            granted: BTreeSet::new(),
            rejected: BTreeSet::new(),
            announced: false,
            value: None,
        }
    }
}
