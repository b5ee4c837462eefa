//! The learner: Chosen notices, catching up from peers, checkpoint requests.
//!
//! - A Chosen notice names (instance, ballot, value id). A node that accepted that value at
//!   that ballot (or proposed it) marks it chosen; any other node asks the sender for it.
//! - A node that sees a peer ahead (Promise/Accepted/Heartbeat hints, messages for later
//!   instances) sends a `LearnRequest`; the driver answers through [`Action::ServeLearn`] from
//!   its log in bounded batches. A `needs_checkpoint` answer becomes [`Action::NeedCheckpoint`].
//! - Peers report "chosen instance" as a number where 0 is ambiguous (nothing, or instance 0);
//!   the envelope's cluster gid is 0 exactly while the sender has nothing chosen, so callers
//!   pass hints only from envelopes with a known gid.

use paxsql_schema::{envelope::Body, Chosen, LearnRequest, LearnedValues};

use super::api::{Action, InstanceId, NodeId};
use super::core::Core;
use super::proposer::Phase;
use crate::limits::LEARN_BATCH_VALUES_MAX;

impl Core {
    pub(super) fn handle_chosen(
        &mut self,
        from: NodeId,
        chosen: Chosen,
        actions: &mut Vec<Action>,
    ) {
        if chosen.instance_id < self.instance_id {
            return;
        }
        if chosen.instance_id > self.instance_id {
            self.note_peer_chosen(from, chosen.instance_id, actions);
            return;
        }
        let ballot = chosen.ballot.unwrap_or_default();
        let from_round = match &self.proposer.phase {
            Phase::Accepting(round)
                if round.instance_id == chosen.instance_id && round.ballot == ballot =>
            {
                round.value.as_ref().map(|(_, value)| value.clone())
            }
            _ => None,
        };
        let from_acceptor = self
            .acceptor
            .accepted_value
            .clone()
            .filter(|_| self.acceptor.accepted_ballot == ballot && !ballot.is_zero());
        match from_round
            .or(from_acceptor)
            .filter(|value| value.value_id == chosen.value_id)
        {
            Some(value) => self.commit_chosen(chosen.instance_id, ballot, value, actions),
            None => self.note_peer_chosen(from, chosen.instance_id, actions),
        }
    }

    pub(super) fn handle_learn_request(
        &mut self,
        from: NodeId,
        request: LearnRequest,
        actions: &mut Vec<Action>,
    ) {
        if request.from_instance >= self.instance_id {
            return;
        }
        let max_values = request.max_values.min(LEARN_BATCH_VALUES_MAX as u32).max(1);
        actions.push(Action::ServeLearn {
            to: from,
            from_instance: request.from_instance,
            max_values,
        });
    }

    pub(super) fn handle_learned_values(
        &mut self,
        from: NodeId,
        learned: LearnedValues,
        actions: &mut Vec<Action>,
    ) {
        self.learn_requested_ms = None;
        if learned.needs_checkpoint {
            actions.push(Action::NeedCheckpoint {
                peer: from,
                first_instance: learned.first_instance,
            });
            return;
        }
        let had_values = !learned.values.is_empty();
        let mut values = learned.values;
        values.sort_by_key(|value| value.instance_id);
        for chosen in values {
            if chosen.instance_id != self.instance_id {
                continue;
            }
            let Some(value) = chosen.value else { continue };
            self.commit_chosen(
                chosen.instance_id,
                chosen.ballot.unwrap_or_default(),
                value,
                actions,
            );
            if self.halted.is_some() {
                return;
            }
        }
        if had_values {
            self.note_peer_chosen(from, learned.chosen_instance, actions);
        }
    }

    /// A peer reports `peer_chosen` as chosen; ask it for what we lack.
    pub(super) fn note_peer_chosen(
        &mut self,
        from: NodeId,
        peer_chosen: InstanceId,
        actions: &mut Vec<Action>,
    ) {
        if from == self.config.node_id || peer_chosen < self.instance_id {
            return;
        }
        if self
            .peer_chosen_hint
            .is_none_or(|(hint, _)| peer_chosen >= hint)
        {
            self.peer_chosen_hint = Some((peer_chosen, from));
        }
        self.maybe_learn(actions);
    }

    /// Sends a learn request when a peer is ahead and no request is outstanding.
    pub(super) fn maybe_learn(&mut self, actions: &mut Vec<Action>) {
        let Some((hint, peer)) = self.peer_chosen_hint else {
            return;
        };
        if hint < self.instance_id {
            self.peer_chosen_hint = None;
            return;
        }
        let now_ms = self.now();
        if self
            .learn_requested_ms
            .is_some_and(|asked| now_ms < asked + self.config.learn_retry_ms)
        {
            return;
        }
        self.learn_requested_ms = Some(now_ms);
        let request = LearnRequest {
            from_instance: self.instance_id,
            max_values: LEARN_BATCH_VALUES_MAX as u32,
        };
        actions.push(Action::Send(
            self.envelope(peer, Body::LearnRequest(request)),
        ));
    }
}
