//! The group driver with a scripted engine: actions carried out in order, replies released
//! only after the sync, appended Chosen records that wait for no sync, deliveries, proposals, read index, learn replies, applied reports.

mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use paxsql_binlog::{LogStore, Record, RecordKind};
use paxsql_replicator::paxos::{Action, Input, ProposalOutcome, Role, Status};
use paxsql_replicator::runtime::group::{spawn_group, GroupChannels, GroupSetup};
use paxsql_replicator::runtime::{
    CheckpointNeeded, Engine, FatalHandler, RuntimeError, RuntimeMetrics,
};
use paxsql_schema::{envelope, paxos_value, Ballot, ChosenValue, Message, PaxosValue};
use tokio_util::sync::CancellationToken;

use runtime_support::{heartbeat, Event, Events, InstrumentedLog, RecordingOutbox};

type Script = Box<dyn FnMut(&Input) -> Vec<Action> + Send>;

/// An engine that records its inputs and answers with scripted actions.
struct ScriptedEngine {
    inputs: Arc<Mutex<Vec<Input>>>,
    status: Arc<Mutex<Status>>,
    script: Script,
}

impl Engine for ScriptedEngine {
    fn step(&mut self, input: Input) -> Vec<Action> {
        let actions = (self.script)(&input);
        self.inputs.lock().expect("inputs").push(input);
        actions
    }

    fn status(&self) -> Status {
        self.status.lock().expect("status").clone()
    }
}

fn status(chosen_instance: Option<u64>) -> Status {
    Status {
        node_id: 1,
        role: Role::Follower,
        master_id: None,
        chosen_instance,
        applied_instance: None,
        members: vec![1, 2, 3],
        member_addrs: Default::default(),
        members_version: 0,
        cluster_gid: 77,
        may_vote: true,
        serving_as_master: false,
        foreign_gid_dropped: 0,
        non_member_dropped: 0,
        halted: None,
    }
}

fn value(value_id: u64) -> PaxosValue {
    PaxosValue {
        value_id,
        checksum_before: 0,
        payload: Some(paxos_value::Payload::Opaque(vec![1, 2, 3].into())),
    }
}

/// Value 55 chosen at instance 1 for proposal `proposal_id`: its delivery, then the outcome.
fn value_55_chosen(proposal_id: u64) -> [Action; 2] {
    [
        Action::Deliver {
            instance_id: 1,
            value: value(55),
            checksum_after: 0x55,
            proposed_here: true,
        },
        Action::ProposalDone {
            proposal_id,
            outcome: ProposalOutcome::Chosen {
                instance_id: 1,
                value_id: 55,
            },
        },
    ]
}

struct Harness {
    channels: GroupChannels,
    inputs: Arc<Mutex<Vec<Input>>>,
    status: Arc<Mutex<Status>>,
    outbox: RecordingOutbox,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    script: Script,
    log: InstrumentedLog,
    events: Events,
    chosen_instance: Option<u64>,
) -> Harness {
    let inputs = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(status(chosen_instance)));
    let outbox = RecordingOutbox::new(events.clone());
    let cancel = CancellationToken::new();
    let fatal: FatalHandler = Arc::new(|message: &str| panic!("unexpected fatal error: {message}"));
    let (_inbox_sender, inbox) = tokio::sync::mpsc::channel(16);
    let (channels, task) = spawn_group(GroupSetup {
        name: "main".into(),
        engine: Box::new(ScriptedEngine {
            inputs: inputs.clone(),
            status: status.clone(),
            script,
        }),
        log: Box::new(log),
        outbox: Arc::new(outbox.clone()),
        inbox,
        metrics: Arc::new(RuntimeMetrics::new()),
        fatal,
        cancel: cancel.clone(),
    })
    .expect("spawns");
    Harness {
        channels,
        inputs,
        status,
        outbox,
        cancel,
        task,
    }
}

fn position(events: &[Event], wanted: &Event) -> usize {
    events
        .iter()
        .position(|event| event == wanted)
        .unwrap_or_else(|| panic!("{wanted:?} missing from {events:?}"))
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test]
async fn actions_run_in_order_and_then_send_waits_for_the_sync() {
    let script: Script = Box::new(|input| match input {
        Input::Propose { proposal_id, .. } => vec![
            Action::Persist {
                token: 7,
                records: vec![Record::new(1, RecordKind::Acceptor, vec![9])],
                then_send: vec![heartbeat("main", 1, 2, 100)],
            },
            Action::Send(heartbeat("main", 1, 3, 200)),
        ]
        .into_iter()
        .chain(value_55_chosen(*proposal_id))
        .collect(),
        Input::Persisted { token: 7 } => vec![Action::Send(heartbeat("main", 1, 2, 300))],
        _ => Vec::new(),
    });
    let events = Events::default();
    let (open_gate, gate) = std::sync::mpsc::channel();
    let mut log = InstrumentedLog::new(events.clone());
    log.gate = Some(gate);
    let mut harness = start(script, log, events.clone(), None);

    // Phase 1: with the sync held, the actions after Persist still run, in order.
    let outcome = harness
        .channels
        .handle
        .propose(paxos_value::Payload::Opaque(vec![1].into()), Some(1))
        .await;
    assert_eq!(
        outcome.expect("answered"),
        ProposalOutcome::Chosen {
            instance_id: 1,
            value_id: 55
        }
    );
    let delivered = harness.channels.deliveries.recv().await.expect("delivered");
    assert_eq!((delivered.instance_id, delivered.value.value_id), (1, 55));
    let before_sync = events.lock().expect("events").clone();
    assert!(
        before_sync.contains(&Event::Sent {
            to: 3,
            chosen_instance: 200
        }),
        "{before_sync:?}"
    );
    assert!(
        !before_sync
            .iter()
            .any(|event| matches!(event, Event::Sent { to: 2, .. })),
        "a reply left before its sync: {before_sync:?}"
    );

    // Phase 2: the sync releases the reply, then Persisted is fed and its actions run.
    open_gate.send(()).expect("gate open");
    wait_until(|| {
        events.lock().expect("events").contains(&Event::Sent {
            to: 2,
            chosen_instance: 300,
        })
    })
    .await;
    let all = events.lock().expect("events").clone();
    let synced = position(&all, &Event::Synced { records_durable: 1 });
    let reply = position(
        &all,
        &Event::Sent {
            to: 2,
            chosen_instance: 100,
        },
    );
    let after = position(
        &all,
        &Event::Sent {
            to: 2,
            chosen_instance: 300,
        },
    );
    assert!(position(&all, &Event::Appended { instance_id: 1 }) < synced);
    assert!(synced < reply && reply < after, "{all:?}");
    let inputs = harness.inputs.lock().expect("inputs").clone();
    assert!(inputs
        .iter()
        .any(|input| matches!(input, Input::Persisted { token: 7 })));
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
}

#[tokio::test]
async fn an_appended_chosen_record_is_delivered_without_waiting_for_a_sync() {
    let script: Script = Box::new(|input| match input {
        Input::Propose { proposal_id, .. } => vec![Action::Append {
            records: vec![chosen_record(1)],
        }]
        .into_iter()
        .chain(value_55_chosen(*proposal_id))
        .collect(),
        _ => Vec::new(),
    });
    let events = Events::default();
    let mut harness = start(
        script,
        InstrumentedLog::new(events.clone()),
        events.clone(),
        None,
    );
    let outcome = harness
        .channels
        .handle
        .propose(paxos_value::Payload::Opaque(vec![1].into()), Some(1))
        .await;
    assert!(matches!(outcome, Ok(ProposalOutcome::Chosen { .. })));
    let delivered = harness.channels.deliveries.recv().await.expect("delivered");
    assert_eq!(delivered.instance_id, 1);
    wait_until(|| {
        events
            .lock()
            .expect("events")
            .contains(&Event::Appended { instance_id: 1 })
    })
    .await;
    let all = events.lock().expect("events").clone();
    assert!(
        !all.iter()
            .any(|event| matches!(event, Event::Synced { .. })),
        "an appended record waits for no sync: {all:?}"
    );
    let inputs = harness.inputs.lock().expect("inputs").clone();
    assert!(
        !inputs
            .iter()
            .any(|input| matches!(input, Input::Persisted { .. })),
        "no completion for an append: {inputs:?}"
    );
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
}

#[tokio::test]
async fn ticks_carry_a_monotonic_clock_and_applied_reaches_the_engine() {
    let harness = start(
        Box::new(|_| Vec::new()),
        InstrumentedLog::new(Events::default()),
        Events::default(),
        None,
    );
    harness.channels.handle.applied(4);
    harness.channels.handle.applied(2); // An older report never moves the engine back.
    let inputs = harness.inputs.clone();
    wait_until(|| {
        let inputs = inputs.lock().expect("inputs");
        inputs
            .iter()
            .filter(|input| matches!(input, Input::Tick { .. }))
            .count()
            >= 5
            && inputs
                .iter()
                .any(|input| matches!(input, Input::Applied { .. }))
    })
    .await;
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
    let inputs = harness.inputs.lock().expect("inputs").clone();
    let applied: Vec<u64> = inputs
        .iter()
        .filter_map(|input| {
            if let Input::Applied { instance_id } = input {
                Some(*instance_id)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(applied.first(), Some(&4), "{applied:?}");
    assert!(
        applied.iter().all(|instance_id| *instance_id == 4),
        "{applied:?}"
    );
    let ticks: Vec<u64> = inputs
        .iter()
        .filter_map(|input| {
            if let Input::Tick { now_ms } = input {
                Some(*now_ms)
            } else {
                None
            }
        })
        .collect();
    assert!(ticks.windows(2).all(|pair| pair[0] <= pair[1]), "{ticks:?}");
    assert!(ticks[0] > 0);
}

#[tokio::test]
async fn read_index_campaign_and_checkpoint_notices_flow_through() {
    let script: Script = Box::new(|input| match input {
        Input::ReadIndex { read_id } => vec![Action::ReadIndexDone {
            read_id: *read_id,
            ok: true,
        }],
        Input::Campaign => vec![Action::NeedCheckpoint {
            peer: 3,
            first_instance: 40,
        }],
        _ => Vec::new(),
    });
    let mut harness = start(
        script,
        InstrumentedLog::new(Events::default()),
        Events::default(),
        None,
    );
    assert!(harness.channels.handle.read_index().await);
    harness.channels.handle.campaign().expect("queued");
    let notice = harness
        .channels
        .checkpoints_needed
        .recv()
        .await
        .expect("notice");
    assert_eq!(
        notice,
        CheckpointNeeded {
            peer: 3,
            first_instance: 40
        }
    );
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
}

#[tokio::test]
async fn status_changes_are_published() {
    let status_cell: Arc<Mutex<Option<Arc<Mutex<Status>>>>> = Arc::default();
    let cell = status_cell.clone();
    let script: Script = Box::new(move |input| {
        if let Input::Campaign = input {
            let guard = cell.lock().expect("cell");
            let mut status = guard.as_ref().expect("set").lock().expect("status");
            status.role = Role::Master;
            status.master_id = Some(1);
        }
        Vec::new()
    });
    let harness = start(
        script,
        InstrumentedLog::new(Events::default()),
        Events::default(),
        None,
    );
    *status_cell.lock().expect("cell") = Some(harness.status.clone());
    assert_eq!(harness.channels.handle.status().role, Role::Follower);
    let mut watch = harness.channels.handle.status_watch();
    harness.channels.handle.campaign().expect("queued");
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|status| status.role == Role::Master),
    )
    .await
    .expect("published in time")
    .expect("driver alive");
    assert_eq!(harness.channels.handle.status().master_id, Some(1));
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
}

fn chosen_record(instance_id: u64) -> Record {
    let chosen = ChosenValue {
        instance_id,
        ballot: Some(Ballot::new(1, 1)),
        value: Some(value(1000 + instance_id)),
    };
    Record::new(instance_id, RecordKind::Chosen, chosen.encode_to_vec())
}

#[tokio::test]
async fn a_learn_request_is_served_from_the_log() {
    let events = Events::default();
    let mut log = InstrumentedLog::new(events.clone());
    for instance_id in 0..4 {
        log.append(&Record::new(instance_id, RecordKind::Acceptor, vec![0]))
            .expect("append");
        log.append(&chosen_record(instance_id)).expect("append");
    }
    log.sync().expect("sync");
    let script: Script = Box::new(|input| match input {
        Input::Campaign => vec![Action::ServeLearn {
            to: 2,
            from_instance: 1,
            max_values: 2,
        }],
        _ => Vec::new(),
    });
    let harness = start(script, log, events, Some(3));
    harness.channels.handle.campaign().expect("queued");
    let outbox = harness.outbox.clone();
    wait_until(|| !outbox.sent().is_empty()).await;
    let reply = harness.outbox.sent().remove(0);
    assert_eq!(
        (
            reply.from,
            reply.to,
            reply.cluster_gid,
            reply.group.as_str()
        ),
        (1, 2, 77, "main")
    );
    let Some(envelope::Body::LearnedValues(learned)) = reply.body else {
        panic!("not a learn reply: {reply:?}")
    };
    let instances: Vec<u64> = learned
        .values
        .iter()
        .map(|value| value.instance_id)
        .collect();
    assert_eq!(instances, vec![1, 2], "max_values bounds the reply");
    assert_eq!(
        learned.values[1].value.as_ref().expect("value").value_id,
        1002
    );
    assert_eq!(learned.chosen_instance, 3);
    assert!(!learned.needs_checkpoint);
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
}

#[tokio::test]
async fn a_proposal_pending_when_the_driver_stops_has_an_unknown_outcome() {
    let harness = start(
        Box::new(|_| Vec::new()),
        InstrumentedLog::new(Events::default()),
        Events::default(),
        None,
    );
    let handle = harness.channels.handle.clone();
    let proposal = tokio::spawn(async move {
        handle
            .propose(paxos_value::Payload::Opaque(vec![1].into()), None)
            .await
    });
    let inputs = harness.inputs.clone();
    wait_until(|| {
        inputs
            .lock()
            .expect("inputs")
            .iter()
            .any(|input| matches!(input, Input::Propose { .. }))
    })
    .await;
    harness.cancel.cancel();
    harness.task.await.expect("driver ends");
    let outcome = proposal.await.expect("joins");
    assert!(
        matches!(outcome, Err(RuntimeError::OutcomeUnknown { .. })),
        "{outcome:?}"
    );
    let late = harness
        .channels
        .handle
        .propose(paxos_value::Payload::Opaque(vec![2].into()), None)
        .await;
    assert!(
        matches!(late, Err(RuntimeError::NotRunning { .. })),
        "{late:?}"
    );
}
