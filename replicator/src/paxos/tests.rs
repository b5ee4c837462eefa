//! Core unit tests: the exact actions one step emits.

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{
    envelope::Body, paxos_value::Payload, Accept, Accepted, Ballot, ChosenValue, ClusterInit,
    Envelope, MasterLease, Message, PaxosValue, Prepare, Promise,
};

use super::*;

const GID: u64 = 0xC1;

fn init_value(members: &[NodeId]) -> PaxosValue {
    let init = ClusterInit {
        cluster_gid: GID,
        cluster_name: "paxsql".into(),
        members: members.to_vec(),
    };
    PaxosValue {
        value_id: 1,
        checksum_before: 0,
        payload: Some(Payload::ClusterInit(init)),
    }
}

pub(super) fn chosen_record(instance_id: InstanceId, value: &PaxosValue) -> Record {
    let chosen = ChosenValue {
        instance_id,
        ballot: Some(Ballot::new(1, 1)),
        value: Some(value.clone()),
    };
    Record::new(instance_id, RecordKind::Chosen, chosen.encode_to_vec())
}

/// A log where instance 0 chose the init and instance 1 gave the lease to node 9, so no node
/// under test campaigns or renews during a test.
pub(super) fn log_with_outside_master(members: &[NodeId]) -> Vec<Record> {
    let init = init_value(members);
    let lease = PaxosValue {
        value_id: 2,
        checksum_before: chain_checksum(0, &init),
        payload: Some(Payload::MasterLease(MasterLease {
            master_id: 9,
            lease_ms: 3_000,
            expected_version: 0,
        })),
    };
    vec![chosen_record(0, &init), chosen_record(1, &lease)]
}

fn core(node_id: NodeId, records: &[Record]) -> Core {
    let mut core = Core::new(Config::new(node_id, "main", vec![1, 2, 3], 42), records);
    assert!(core
        .step(Input::Tick { now_ms: 1_000 })
        .iter()
        .all(|action| matches!(action, Action::Send(_))));
    core
}

pub(super) fn message(from: NodeId, to: NodeId, body: Body) -> Input {
    Input::Message(Envelope {
        cluster_gid: GID,
        group: "main".into(),
        from,
        to,
        body: Some(body),
    })
}

fn opaque(proposal_id: u64) -> Input {
    Input::Propose {
        proposal_id,
        payload: Payload::Opaque(vec![proposal_id as u8].into()),
        expected_instance: None,
    }
}

fn only_persist(actions: &[Action]) -> (u64, Vec<Record>, Vec<Envelope>) {
    assert_eq!(actions.len(), 1, "expected one Persist, got {actions:?}");
    match &actions[0] {
        Action::Persist {
            token,
            records,
            then_send,
        } => (*token, records.clone(), then_send.clone()),
        other => panic!("expected Persist, got {other:?}"),
    }
}

fn sent_bodies(actions: &[Action]) -> Vec<(NodeId, Body)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(envelope) => Some((envelope.to, envelope.body.clone().expect("body"))),
            _ => None,
        })
        .collect()
}

fn persist_tokens(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Persist { token, .. } => Some(*token),
            _ => None,
        })
        .collect()
}

#[test]
fn prepare_yields_one_persist_with_the_promise_in_then_send() {
    let mut acceptor = core(2, &log_with_outside_master(&[1, 2, 3]));
    let prepare = Prepare {
        instance_id: 2,
        ballot: Some(Ballot::new(5, 1)),
    };
    let actions = acceptor.step(message(1, 2, Body::Prepare(prepare)));
    let (_, records, then_send) = only_persist(&actions);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, RecordKind::Acceptor);
    let state = paxsql_schema::AcceptorState::decode(records[0].payload.as_ref()).expect("decodes");
    assert_eq!(state.promised, Some(Ballot::new(5, 1)));
    assert_eq!(then_send.len(), 1);
    let Some(Body::Promise(promise)) = &then_send[0].body else {
        panic!("a promise: {then_send:?}")
    };
    assert!(promise.ok);
    assert_eq!(then_send[0].to, 1);
}

#[test]
fn accept_below_the_promised_ballot_is_rejected_at_once() {
    let mut acceptor = core(2, &log_with_outside_master(&[1, 2, 3]));
    acceptor.step(message(
        1,
        2,
        Body::Prepare(Prepare {
            instance_id: 2,
            ballot: Some(Ballot::new(5, 1)),
        }),
    ));
    let value = PaxosValue {
        value_id: 9,
        checksum_before: 0,
        payload: Some(Payload::Opaque(vec![1].into())),
    };
    let accept = Accept {
        instance_id: 2,
        ballot: Some(Ballot::new(4, 3)),
        value: Some(value),
    };
    let actions = acceptor.step(message(3, 2, Body::Accept(accept)));
    let sent = sent_bodies(&actions);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (3, Body::Accepted(accepted)) = &sent[0] else {
        panic!("a rejection to node 3: {sent:?}")
    };
    assert!(!accepted.ok);
    assert_eq!(accepted.promised, Some(Ballot::new(5, 1)));
}

#[test]
fn a_promise_survives_the_move_to_the_next_instance_and_a_restart() {
    let mut records = log_with_outside_master(&[1, 2, 3]);
    let state = paxsql_schema::AcceptorState {
        instance_id: 1,
        promised: Some(Ballot::new(7, 1)),
        accepted_ballot: Some(Ballot::new(7, 1)),
        accepted_value: None,
    };
    records.insert(
        1,
        Record::new(1, RecordKind::Acceptor, state.encode_to_vec()),
    );
    let mut acceptor = core(2, &records);
    let prepare = Prepare {
        instance_id: 2,
        ballot: Some(Ballot::new(6, 3)),
    };
    let sent = sent_bodies(&acceptor.step(message(3, 2, Body::Prepare(prepare))));
    let [(3, Body::Promise(promise))] = sent.as_slice() else {
        panic!("a rejection: {sent:?}")
    };
    assert!(
        !promise.ok,
        "ballot (6, 3) is below the carried promise (7, 1)"
    );
}

/// Drives node 1's proposal through prepare and accept with node 2 as the second vote.
fn choose_first_value(proposer: &mut Core) -> Ballot {
    let actions = proposer.step(opaque(1));
    let (own_promise, _, then_send) = only_persist(&actions);
    assert!(
        then_send.is_empty(),
        "the prepare waits for our own durable promise"
    );
    let sent = sent_bodies(&proposer.step(Input::Persisted { token: own_promise }));
    assert_eq!(sent.len(), 2, "prepare to nodes 2 and 3: {sent:?}");
    let (_, Body::Prepare(prepare)) = &sent[0] else {
        panic!("a prepare: {sent:?}")
    };
    let ballot = prepare.ballot.expect("ballot");
    let promise = Promise {
        instance_id: 2,
        ballot: Some(ballot),
        ok: true,
        chosen_instance: 1,
        ..Default::default()
    };
    let actions = proposer.step(message(2, 1, Body::Promise(promise)));
    let sent = sent_bodies(&actions);
    assert!(
        sent.iter().all(|(_, body)| matches!(body, Body::Accept(_))) && sent.len() == 2,
        "{sent:?}"
    );
    let own_accept = persist_tokens(&actions);
    assert_eq!(own_accept.len(), 1);
    assert!(
        proposer
            .step(Input::Persisted {
                token: own_accept[0]
            })
            .is_empty(),
        "one vote of two"
    );
    let accepted = Accepted {
        instance_id: 2,
        ballot: Some(ballot),
        ok: true,
        promised: Some(ballot),
        chosen_instance: 1,
    };
    let actions = proposer.step(message(2, 1, Body::Accepted(accepted)));
    assert!(sent_bodies(&actions)
        .iter()
        .all(|(_, body)| matches!(body, Body::Chosen(_))));
    assert!(
        persist_tokens(&actions).is_empty(),
        "the Chosen record waits for no sync of its own: {actions:?}"
    );
    let kinds: Vec<&Action> = actions
        .iter()
        .filter(|action| !matches!(action, Action::Send(_)))
        .collect();
    assert!(
        matches!(kinds[0], Action::Append { records } if records.len() == 1 && records[0].kind == RecordKind::Chosen && records[0].instance_id == 2),
        "the Chosen record is appended first: {actions:?}"
    );
    assert!(
        matches!(
            kinds[1],
            Action::Deliver {
                instance_id: 2,
                proposed_here: true,
                ..
            }
        ),
        "then delivered at once, as this node's own proposal: {actions:?}"
    );
    assert!(matches!(
        kinds[2],
        Action::ProposalDone {
            proposal_id: 1,
            outcome: ProposalOutcome::Chosen { instance_id: 2, .. }
        }
    ));
    ballot
}

#[test]
fn after_a_successful_prepare_the_next_instance_skips_prepare() {
    let mut proposer = core(1, &log_with_outside_master(&[1, 2, 3]));
    let ballot = choose_first_value(&mut proposer);
    let actions = proposer.step(opaque(2));
    let sent = sent_bodies(&actions);
    assert_eq!(sent.len(), 2, "{actions:?}");
    for (_, body) in &sent {
        let Body::Accept(accept) = body else {
            panic!("an accept, no prepare: {sent:?}")
        };
        assert_eq!((accept.instance_id, accept.ballot), (3, Some(ballot)));
    }
}

#[test]
fn a_rejected_accept_ends_skip_prepare() {
    let mut proposer = core(1, &log_with_outside_master(&[1, 2, 3]));
    let ballot = choose_first_value(&mut proposer);
    proposer.step(opaque(2));
    for from in [2, 3] {
        let higher = Ballot::new(ballot.number + 5, from);
        let rejected = Accepted {
            instance_id: 3,
            ballot: Some(ballot),
            ok: false,
            promised: Some(higher),
            chosen_instance: 2,
        };
        proposer.step(message(from, 1, Body::Accepted(rejected)));
    }
    // Past the backoff, the retry starts with our own promise for a higher ballot.
    let actions = proposer.step(Input::Tick { now_ms: 5_000 });
    let (_, records, _) = actions
        .iter()
        .find_map(|action| match action {
            Action::Persist {
                token,
                records,
                then_send,
            } => Some((*token, records.clone(), then_send.clone())),
            _ => None,
        })
        .expect("a new prepare persists our own promise first");
    let state = paxsql_schema::AcceptorState::decode(records[0].payload.as_ref()).expect("decodes");
    assert!(state.promised.expect("promised").number > ballot.number + 5);
    assert!(!sent_bodies(&actions)
        .iter()
        .any(|(_, body)| matches!(body, Body::Accept(_))));
}

#[test]
fn a_foreign_cluster_id_is_dropped_and_counted() {
    let mut acceptor = core(2, &log_with_outside_master(&[1, 2, 3]));
    let prepare = Prepare {
        instance_id: 2,
        ballot: Some(Ballot::new(5, 1)),
    };
    let foreign = Envelope {
        cluster_gid: GID + 1,
        group: "main".into(),
        from: 1,
        to: 2,
        body: Some(Body::Prepare(prepare)),
    };
    assert!(acceptor.step(Input::Message(foreign)).is_empty());
    assert_eq!(acceptor.status().foreign_gid_dropped, 1);
}

#[test]
fn a_full_queue_answers_busy_and_a_stale_binding_loses() {
    let mut config = Config::new(1, "main", vec![1, 2, 3], 42);
    config.proposal_queue_max = 1;
    let mut proposer = Core::new(config, &log_with_outside_master(&[1, 2, 3]));
    assert!(
        proposer.step(opaque(1)).is_empty(),
        "queued before the first tick"
    );
    let actions = proposer.step(opaque(2));
    assert!(matches!(
        &actions[..],
        [Action::ProposalDone {
            proposal_id: 2,
            outcome: ProposalOutcome::Busy
        }]
    ));
    let bound = Input::Propose {
        proposal_id: 3,
        payload: Payload::Opaque(vec![3].into()),
        expected_instance: Some(7),
    };
    let actions = proposer.step(bound);
    assert!(matches!(
        &actions[..],
        [Action::ProposalDone {
            proposal_id: 3,
            outcome: ProposalOutcome::Lost { instance_id: 7 }
        }]
    ));
}

#[test]
fn a_chosen_value_with_another_checksum_halts_the_core() {
    let mut learner = core(3, &log_with_outside_master(&[1, 2, 3]));
    let value = PaxosValue {
        value_id: 5,
        checksum_before: 12345,
        payload: Some(Payload::Opaque(vec![1].into())),
    };
    let learned = paxsql_schema::LearnedValues {
        values: vec![ChosenValue {
            instance_id: 2,
            ballot: Some(Ballot::new(1, 1)),
            value: Some(value),
        }],
        chosen_instance: 2,
        needs_checkpoint: false,
        first_instance: 0,
    };
    let actions = learner.step(message(1, 3, Body::LearnedValues(learned)));
    assert!(matches!(&actions[..], [Action::Halt { .. }]), "{actions:?}");
    assert!(learner.status().halted.is_some());
    assert!(
        learner.step(Input::Tick { now_ms: 9_000 }).is_empty(),
        "a halted core does nothing"
    );
}

#[test]
fn a_single_node_master_serves_only_after_applying_and_until_its_lease_end() {
    let init = init_value(&[1]);
    let mut config = Config::new(1, "main", vec![1], 7);
    config.lease_ms = 3_000;
    let mut master = Core::new(config, &[chosen_record(0, &init)]);
    master.step(Input::Tick { now_ms: 1_000 });
    let mut actions = master.step(Input::Tick { now_ms: 2_000 });
    let mut delivered = false;
    let mut log = vec![chosen_record(0, &init)];
    loop {
        for action in &actions {
            if let Action::Persist { records, .. } | Action::Append { records } = action {
                log.extend(records.iter().cloned());
            }
        }
        delivered |= actions
            .iter()
            .any(|action| matches!(action, Action::Deliver { instance_id: 1, .. }));
        let Some(token) = persist_tokens(&actions).first().copied() else {
            break;
        };
        actions = master.step(Input::Persisted { token });
    }
    assert!(delivered, "the lease was chosen at instance 1");
    assert!(
        !master.is_serving_as_master(2_001),
        "instance 0 is not applied yet"
    );
    master.step(Input::Applied { instance_id: 0 });
    // Lease end: 2,000 + 3,000 × (1 − 0.001) − 300 = 4,697.
    assert!(master.is_serving_as_master(4_696));
    assert!(!master.is_serving_as_master(4_697));
    // A restart forgets when the lease was proposed: not master until it wins a new lease.
    let mut restarted = Core::new(Config::new(1, "main", vec![1], 8), &log);
    assert_eq!(restarted.status().master_id, None, "no tick yet");
    restarted.step(Input::Applied { instance_id: 1 });
    assert!(!restarted.is_serving_as_master(2_001));
}

#[test]
fn a_checkpoint_meta_without_a_master_round_trips() {
    for master_id in [None, Some(0), Some(7)] {
        let meta = CheckpointMeta {
            instance_id: 12,
            checksum_after: 0xABCD,
            cluster_gid: GID,
            members: vec![1, 2, 3],
            members_version: 4,
            master_id,
            lease_ms: 3_000,
            lease_version: 9,
        };
        assert_eq!(CheckpointMeta::decode(&meta.encode()), Some(meta));
    }
}
