//! Core unit tests of membership: a removed master, a joining node.

use paxsql_binlog::Record;
use paxsql_schema::{
    envelope::Body, paxos_value::Payload, Ballot, Membership, Message, PaxosValue, Prepare,
};

use super::tests::{chosen_record, log_with_outside_master, message};
use super::*;

/// Every envelope the actions send, directly or after a persist.
fn envelopes(actions: &[Action]) -> Vec<(NodeId, Body)> {
    let mut out = Vec::new();
    for action in actions {
        match action {
            Action::Send(envelope) => out.push(envelope.clone()),
            Action::Persist { then_send, .. } => out.extend(then_send.iter().cloned()),
            _ => {}
        }
    }
    out.into_iter()
        .map(|envelope| (envelope.to, envelope.body.expect("body")))
        .collect()
}

/// Ticks `core` every 50 ms from `from_ms` to `to_ms`, making every persist durable at once;
/// answers the prepares it sent, by target.
fn prepares_while_ticking(core: &mut Core, from_ms: u64, to_ms: u64) -> Vec<NodeId> {
    let mut targets = Vec::new();
    for now_ms in (from_ms..=to_ms).step_by(50) {
        let mut actions = core.step(Input::Tick { now_ms });
        let tokens: Vec<u64> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Persist { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        for token in tokens {
            actions.extend(core.step(Input::Persisted { token }));
        }
        for (to, body) in envelopes(&actions) {
            if matches!(body, Body::Prepare(_)) {
                targets.push(to);
            }
        }
    }
    targets
}

/// Instance 0: init with 1, 2, 9; instance 1: node 9 is master; then (optionally) instance 2
/// removes node 9.
fn log(remove_master: bool) -> Vec<Record> {
    let mut records = log_with_outside_master(&[1, 2, 9]);
    if remove_master {
        let before = records.iter().fold(0, |checksum, record| {
            let chosen =
                paxsql_schema::ChosenValue::decode(record.payload.clone()).expect("chosen record");
            chain_checksum(checksum, &chosen.value.expect("value"))
        });
        let removal = PaxosValue {
            value_id: 3,
            checksum_before: before,
            payload: Some(Payload::Membership(Membership {
                op: 2,
                members: vec![1, 2],
                expected_version: 0,
                member_info: Vec::new(),
            })),
        };
        records.push(chosen_record(2, &removal));
    }
    records
}

/// A removed master that has not learned its removal (partitioned) keeps serving until its
/// own lease ends: the members must not elect another master before that (two masters).
#[test]
fn a_master_removed_from_the_member_list_is_waited_out_then_members_campaign() {
    let lease_ms = 3_000;
    // While node 9 is a member, its lease holds: node 1 waits.
    let mut waiting = Core::new(Config::new(1, "main", vec![1, 2, 9], 7), &log(false));
    assert!(prepares_while_ticking(&mut waiting, 1_000, 1_000 + lease_ms / 2).is_empty());
    assert_eq!(waiting.status().master_id, Some(9));

    // Once node 9 is removed, node 1 still waits out its lease, then campaigns toward
    // members only.
    let mut campaigning = Core::new(Config::new(1, "main", vec![1, 2, 9], 7), &log(true));
    assert_eq!(campaigning.members(), &[1, 2]);
    assert!(
        prepares_while_ticking(&mut campaigning, 1_000, 1_000 + lease_ms - 50).is_empty(),
        "no campaign while the removed master's lease may still hold"
    );
    let targets = prepares_while_ticking(&mut campaigning, 1_000 + lease_ms, 1_000 + 2 * lease_ms);
    assert!(targets.contains(&2), "node 1 campaigned: {targets:?}");
    assert!(
        !targets.contains(&9),
        "never toward the removed node: {targets:?}"
    );
}

#[test]
fn a_joining_node_never_founds_a_cluster_and_refuses_votes_until_listed() {
    let mut joiner = Core::new(Config::new(4, "main", Vec::new(), 7), &[]);
    let sent = prepares_while_ticking(&mut joiner, 1_000, 10_000);
    assert!(sent.is_empty(), "a joining node proposes nothing: {sent:?}");
    let prepare = Prepare {
        instance_id: 0,
        ballot: Some(Ballot::new(5, 1)),
    };
    let actions = joiner.step(message(1, 4, Body::Prepare(prepare)));
    assert!(
        actions.is_empty(),
        "no promise before it is a member: {actions:?}"
    );
    assert_eq!(joiner.status().non_member_dropped, 1);
}

#[test]
fn a_node_that_may_not_vote_never_promises_nor_campaigns() {
    let mut config = Config::new(1, "main", vec![1, 2, 9], 7);
    config.may_vote = false;
    let mut learner = Core::new(config, &log(true));
    assert!(prepares_while_ticking(&mut learner, 1_000, 5_000).is_empty());
    let prepare = Prepare {
        instance_id: 3,
        ballot: Some(Ballot::new(5, 2)),
    };
    let actions = learner.step(message(2, 1, Body::Prepare(prepare)));
    assert!(envelopes(&actions).is_empty(), "no promise: {actions:?}");
    assert!(!learner.status().may_vote);
}
