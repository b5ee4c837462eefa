//! The log writer thread: group commit (one sync for everything drained), completions only
//! after the sync, reads in queue order, lazily appended records that wait for no sync, and a
//! failed sync that is fatal and final.

mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use paxsql_binlog::{Record, RecordKind};
use paxsql_replicator::runtime::log_writer::{LogWriter, PersistDone};
use paxsql_replicator::runtime::{FatalHandler, RuntimeError, RuntimeMetrics};
use tokio::sync::mpsc;

use runtime_support::{heartbeat, marker, Event, Events, InstrumentedLog};

fn record(instance_id: u64) -> Record {
    Record::new(
        instance_id,
        RecordKind::Acceptor,
        vec![instance_id as u8; 8],
    )
}

fn recording_fatal() -> (FatalHandler, Arc<Mutex<Vec<String>>>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = messages.clone();
    (
        Arc::new(move |message: &str| sink.lock().expect("messages").push(message.to_string())),
        messages,
    )
}

/// A writer over `log` without an outbox: the tests read replies from the completions.
struct Started {
    writer: LogWriter,
    completions: mpsc::Receiver<Vec<PersistDone>>,
    metrics: Arc<RuntimeMetrics>,
    fatal_messages: Arc<Mutex<Vec<String>>>,
}

fn start(log: InstrumentedLog) -> Started {
    let (completions_sender, completions) = mpsc::channel(16);
    let metrics = Arc::new(RuntimeMetrics::new());
    let (fatal, fatal_messages) = recording_fatal();
    let writer = LogWriter::spawn(
        "main",
        Box::new(log),
        completions_sender,
        None,
        metrics.clone(),
        fatal,
    )
    .expect("spawns");
    Started {
        writer,
        completions,
        metrics,
        fatal_messages,
    }
}

fn syncs(events: &Events) -> usize {
    events
        .lock()
        .expect("events")
        .iter()
        .filter(|event| matches!(event, Event::Synced { .. }))
        .count()
}

#[tokio::test]
async fn persist_jobs_queued_together_share_one_sync_and_complete_after_it() {
    let events = Events::default();
    let (open_gate, gate) = std::sync::mpsc::channel();
    let mut log = InstrumentedLog::new(events.clone());
    log.gate = Some(gate);
    let Started {
        writer,
        mut completions,
        metrics,
        fatal_messages,
    } = start(log);

    // Phase 1: the first job's sync is held at the gate while three more jobs queue up.
    writer
        .persist(1, vec![record(1)], vec![heartbeat("main", 1, 2, 1)])
        .await
        .expect("queued");
    wait_until(|| {
        events
            .lock()
            .expect("events")
            .contains(&Event::Appended { instance_id: 1 })
    })
    .await;
    for token in 2..=4 {
        writer
            .persist(
                token,
                vec![record(token), record(token)],
                vec![heartbeat("main", 1, 2, token)],
            )
            .await
            .expect("queued");
    }
    assert!(
        completions.try_recv().is_err(),
        "nothing completes before its sync"
    );
    open_gate.send(()).expect("gate open");

    // Phase 2: job 1 completes alone; jobs 2..=4 complete together after one more sync.
    let first = completions.recv().await.expect("first sync");
    assert_eq!(
        first.iter().map(|done| done.token).collect::<Vec<_>>(),
        vec![1]
    );
    let second = completions.recv().await.expect("second sync");
    assert_eq!(
        second.iter().map(|done| done.token).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(
        second
            .iter()
            .map(|done| marker(&done.then_send[0]).expect("heartbeat"))
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(syncs(&events), 2, "{:?}", events.lock().expect("events"));

    // The second sync came after every append of the drained jobs.
    let log_events = events.lock().expect("events").clone();
    let last_sync = log_events
        .iter()
        .rposition(|event| matches!(event, Event::Synced { .. }))
        .expect("synced");
    assert_eq!(log_events[last_sync], Event::Synced { records_durable: 7 });
    assert_eq!(
        log_events
            .iter()
            .filter(|event| matches!(event, Event::Appended { .. }))
            .count(),
        7
    );

    assert_eq!(metrics.fsyncs.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(
        metrics
            .synced_records_total
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    assert_eq!(
        metrics
            .synced_persist_jobs_total
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert!(fatal_messages.lock().expect("messages").is_empty());
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .expect("closes");
}

#[tokio::test]
async fn a_read_sees_every_earlier_persist_and_truncation_drops_the_prefix() {
    let events = Events::default();
    let Started {
        writer,
        mut completions,
        ..
    } = start(InstrumentedLog::new(events.clone()));
    for instance_id in 0..5 {
        writer
            .persist(instance_id, vec![record(instance_id)], Vec::new())
            .await
            .expect("queued");
    }
    let read = writer.reader().read(1, 4).await.expect("reads");
    assert_eq!(
        read.records
            .iter()
            .map(|record| record.instance_id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(read.first_instance, Some(0));

    // Drain the completions so every record is durable, then cut below 3.
    let mut completed = 0;
    while completed < 5 {
        completed += completions.recv().await.expect("completes").len();
    }
    writer.truncate_prefix(3).await.expect("queued");
    let read = writer.reader().read(0, 10).await.expect("reads");
    assert_eq!(read.first_instance, Some(3));
    assert_eq!(
        read.records
            .iter()
            .map(|record| record.instance_id)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .expect("closes");
}

#[tokio::test]
async fn appended_records_cause_no_sync_and_become_durable_with_the_next_one() {
    let events = Events::default();
    let Started {
        writer,
        mut completions,
        metrics,
        fatal_messages,
    } = start(InstrumentedLog::new(events.clone()));
    writer
        .append(vec![record(1), record(2)])
        .await
        .expect("queued");
    // A read runs after every earlier job: it sees the lazily appended records, unsynced.
    let read = writer.reader().read(0, 10).await.expect("reads");
    assert_eq!(read.records.len(), 2);
    assert_eq!(syncs(&events), 0, "an append alone never syncs");
    assert_eq!(
        metrics
            .lazy_records
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    // The next persist's sync covers the appended records too.
    writer
        .persist(7, vec![record(3)], Vec::new())
        .await
        .expect("queued");
    let done = completions.recv().await.expect("completes");
    assert_eq!(
        done.iter().map(|done| done.token).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(syncs(&events), 1);
    assert!(events
        .lock()
        .expect("events")
        .contains(&Event::Synced { records_durable: 3 }));
    assert_eq!(
        metrics
            .synced_records_total
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );

    // Closing syncs a lazily appended tail, so a clean restart finds it.
    writer.append(vec![record(4)]).await.expect("queued");
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .expect("closes");
    assert_eq!(syncs(&events), 2);
    assert!(fatal_messages.lock().expect("messages").is_empty());
}

#[tokio::test]
async fn a_failed_sync_is_fatal_and_releases_nothing() {
    let events = Events::default();
    let mut log = InstrumentedLog::new(events.clone());
    log.fail_sync = true;
    let Started {
        writer,
        mut completions,
        fatal_messages,
        ..
    } = start(log);
    writer
        .persist(1, vec![record(1)], vec![heartbeat("main", 1, 2, 1)])
        .await
        .expect("queued");

    // The writer stops: the completion channel closes without ever carrying token 1.
    let completion = tokio::time::timeout(Duration::from_secs(5), completions.recv())
        .await
        .expect("writer stops");
    assert!(
        completion.is_none(),
        "a completion escaped a failed sync: {completion:?}"
    );
    let messages = fatal_messages.lock().expect("messages").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("fsync failed") && messages[0].contains("main"),
        "{messages:?}"
    );

    // It never syncs again: later work is refused, not retried.
    let refused = writer.persist(2, vec![record(2)], Vec::new()).await;
    assert!(
        matches!(refused, Err(RuntimeError::LogWriterStopped { .. })),
        "{refused:?}"
    );
    assert_eq!(syncs(&events), 0);
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
