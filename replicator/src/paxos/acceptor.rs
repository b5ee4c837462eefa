//! The acceptor: promise and accept rules for the current instance (PhxPaxos `AcceptorState`).
//!
//! - A promise for ballot b covers the current instance **and every later one**: moving to the
//!   next instance keeps `promised` and resets only the accepted ballot and value. Skip-prepare
//!   is safe only because of this.
//! - Every promise/accept is answered only after its Acceptor record is durable
//!   ([`Core::persist_then_reply`]). A rejection changes nothing and leaves at once.
//! - Only the current instance is answered: an older one is already chosen (the reply tells the
//!   proposer our chosen instance so it learns), a newer one means this node must learn first.

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{
    envelope::Body, Accept, Accepted, Ballot, Message, PaxosValue, Prepare, Promise,
};

use super::api::{Action, NodeId, PlantedBug};
use super::core::Core;

/// The acceptor state of the current instance.
#[derive(Clone, Debug, Default)]
pub struct AcceptorState {
    pub promised: Ballot,
    pub accepted_ballot: Ballot,
    pub accepted_value: Option<PaxosValue>,
}

impl AcceptorState {
    /// Keeps the promise (it covers later instances), forgets what was accepted.
    pub fn move_to_next_instance(&mut self, planted_bug: PlantedBug) {
        self.accepted_ballot = Ballot::ZERO;
        self.accepted_value = None;
        if planted_bug == PlantedBug::ForgetPromiseOnNextInstance {
            self.promised = Ballot::ZERO;
        }
    }
}

impl Core {
    pub(super) fn acceptor_record(&self) -> Record {
        let state = paxsql_schema::AcceptorState {
            instance_id: self.instance_id,
            promised: Some(self.acceptor.promised),
            accepted_ballot: Some(self.acceptor.accepted_ballot),
            accepted_value: self.acceptor.accepted_value.clone(),
        };
        Record::new(
            self.instance_id,
            RecordKind::Acceptor,
            state.encode_to_vec(),
        )
    }

    /// Our chosen instance for hints in replies (0 also when nothing is chosen; peers tell the
    /// two apart by the envelope's cluster gid, which is 0 until instance 0 is chosen).
    fn chosen_hint(&self) -> u64 {
        self.instance_id.saturating_sub(1)
    }

    /// Whether this acceptor may answer `from` about `instance_id` at all.
    fn acceptor_may_answer(
        &mut self,
        from: NodeId,
        instance_id: u64,
        actions: &mut Vec<Action>,
    ) -> bool {
        if !self.config.may_vote {
            return false;
        }
        if !self.is_member(from) {
            self.non_member_dropped += 1;
            if instance_id < self.instance_id && self.cluster_gid != 0 {
                // A removed node that has not learned its removal keeps proposing: tell it how
                // far the log goes, so it learns the change and stops.
                let hint = paxsql_schema::Heartbeat {
                    chosen_instance: self.instance_id - 1,
                    now_ms: self.now(),
                };
                actions.push(Action::Send(self.envelope(from, Body::Heartbeat(hint))));
            }
            return false;
        }
        if instance_id > self.instance_id {
            // The proposer is ahead: instances up to instance_id − 1 are chosen. Learn them.
            self.note_peer_chosen(from, instance_id - 1, actions);
            return false;
        }
        true
    }

    pub(super) fn handle_prepare(
        &mut self,
        from: NodeId,
        prepare: Prepare,
        actions: &mut Vec<Action>,
    ) {
        if !self.acceptor_may_answer(from, prepare.instance_id, actions) {
            return;
        }
        let ballot = prepare.ballot.unwrap_or_default();
        let current = prepare.instance_id == self.instance_id;
        if !current || ballot < self.acceptor.promised {
            let reject = Promise {
                instance_id: prepare.instance_id,
                ballot: Some(ballot),
                ok: false,
                promised: Some(self.acceptor.promised),
                accepted_ballot: None,
                accepted_value: None,
                chosen_instance: self.chosen_hint(),
            };
            actions.push(Action::Send(self.envelope(from, Body::Promise(reject))));
            return;
        }
        self.acceptor.promised = ballot;
        let promise = Promise {
            instance_id: prepare.instance_id,
            ballot: Some(ballot),
            ok: true,
            promised: Some(ballot),
            accepted_ballot: Some(self.acceptor.accepted_ballot),
            accepted_value: self.acceptor.accepted_value.clone(),
            chosen_instance: self.chosen_hint(),
        };
        let reply = self.envelope(from, Body::Promise(promise));
        let record = self.acceptor_record();
        if self.config.planted_bug == PlantedBug::PromiseBeforePersist
            && from != self.config.node_id
        {
            let token = self.take_token();
            actions.push(Action::Send(reply));
            actions.push(Action::Persist {
                token,
                records: vec![record],
                then_send: Vec::new(),
            });
            return;
        }
        self.persist_then_reply(record, reply, actions);
    }

    pub(super) fn handle_accept(
        &mut self,
        from: NodeId,
        accept: Accept,
        actions: &mut Vec<Action>,
    ) {
        if !self.acceptor_may_answer(from, accept.instance_id, actions) {
            return;
        }
        let ballot = accept.ballot.unwrap_or_default();
        let current = accept.instance_id == self.instance_id;
        let lower_allowed = self.config.planted_bug == PlantedBug::AcceptLowerBallot;
        let Some(value) = accept
            .value
            .filter(|_| current && (ballot >= self.acceptor.promised || lower_allowed))
        else {
            let reject = Accepted {
                instance_id: accept.instance_id,
                ballot: Some(ballot),
                ok: false,
                promised: Some(self.acceptor.promised),
                chosen_instance: self.chosen_hint(),
            };
            actions.push(Action::Send(self.envelope(from, Body::Accepted(reject))));
            return;
        };
        self.acceptor.promised = self.acceptor.promised.max(ballot);
        self.acceptor.accepted_ballot = ballot;
        self.acceptor.accepted_value = Some(value);
        let accepted = Accepted {
            instance_id: accept.instance_id,
            ballot: Some(ballot),
            ok: true,
            promised: Some(self.acceptor.promised),
            chosen_instance: self.chosen_hint(),
        };
        let reply = self.envelope(from, Body::Accepted(accepted));
        let record = self.acceptor_record();
        self.persist_then_reply(record, reply, actions);
    }

    /// Answers a read-index round at once (nothing is written): yes while no higher ballot is
    /// promised here and this node is not past the master's instance.
    pub(super) fn handle_read_index_request(
        &mut self,
        from: NodeId,
        request: paxsql_schema::ReadIndexRequest,
        actions: &mut Vec<Action>,
    ) {
        if !self.config.may_vote {
            return;
        }
        if !self.is_member(from) {
            self.non_member_dropped += 1;
            return;
        }
        let ballot = request.ballot.unwrap_or_default();
        let ok = self.acceptor.promised <= ballot && self.instance_id <= request.instance_id;
        let reply = paxsql_schema::ReadIndexReply {
            read_id: request.read_id,
            ok,
            promised: Some(self.acceptor.promised),
        };
        actions.push(Action::Send(
            self.envelope(from, Body::ReadIndexReply(reply)),
        ));
    }
}
