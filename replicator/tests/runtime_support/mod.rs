//! Helpers shared by the runtime tests: an instrumented log, a recording outbox, envelopes.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use paxsql_binlog::{LogError, LogStore, MemLog, Record};
use paxsql_replicator::runtime::Outbox;
use paxsql_schema::{envelope, Envelope, Heartbeat};

/// Something observable that happened, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Appended { instance_id: u64 },
    Synced { records_durable: usize },
    Sent { to: u32, chosen_instance: u64 },
}

pub type Events = Arc<Mutex<Vec<Event>>>;

/// A [`MemLog`] that records appends and syncs, and can be told to fail its next sync.
pub struct InstrumentedLog {
    pub inner: MemLog,
    pub events: Events,
    pub fail_sync: bool,
    /// When set, the next sync waits for one message on it (lets a test queue jobs meanwhile).
    pub gate: Option<std::sync::mpsc::Receiver<()>>,
}

impl InstrumentedLog {
    pub fn new(events: Events) -> Self {
        InstrumentedLog {
            inner: MemLog::new(),
            events,
            fail_sync: false,
            gate: None,
        }
    }
}

impl LogStore for InstrumentedLog {
    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.events.lock().expect("events").push(Event::Appended {
            instance_id: record.instance_id,
        });
        self.inner.append(record)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if let Some(gate) = self.gate.take() {
            gate.recv().expect("the test opens the gate");
        }
        if self.fail_sync {
            return Err(LogError::SyncFailed {
                path: "/test/log".into(),
                source: std::io::Error::other("injected fsync failure"),
            });
        }
        self.inner.sync()?;
        let records_durable = self.inner.records().len();
        self.events
            .lock()
            .expect("events")
            .push(Event::Synced { records_durable });
        Ok(())
    }

    fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>, LogError> {
        self.inner.read_range(from, to)
    }

    fn truncate_prefix(&mut self, below: u64) -> Result<(), LogError> {
        self.inner.truncate_prefix(below)
    }

    fn first_instance(&self) -> Option<u64> {
        self.inner.first_instance()
    }

    fn last_instance(&self) -> Option<u64> {
        self.inner.last_instance()
    }
}

/// An outbox that records every envelope (as an [`Event::Sent`]) and keeps them.
#[derive(Clone, Default)]
pub struct RecordingOutbox {
    pub events: Events,
    pub sent: Arc<Mutex<Vec<Envelope>>>,
}

impl RecordingOutbox {
    pub fn new(events: Events) -> Self {
        RecordingOutbox {
            events,
            sent: Arc::default(),
        }
    }

    pub fn sent(&self) -> Vec<Envelope> {
        self.sent.lock().expect("sent").clone()
    }
}

impl Outbox for RecordingOutbox {
    fn send(&self, envelope: Envelope) {
        let chosen_instance = match &envelope.body {
            Some(envelope::Body::Heartbeat(heartbeat)) => heartbeat.chosen_instance,
            _ => u64::MAX,
        };
        self.events.lock().expect("events").push(Event::Sent {
            to: envelope.to,
            chosen_instance,
        });
        self.sent.lock().expect("sent").push(envelope);
    }
}

/// A heartbeat envelope; `marker` travels in `chosen_instance` so tests can tell them apart.
pub fn heartbeat(group: &str, from: u32, to: u32, marker: u64) -> Envelope {
    Envelope {
        cluster_gid: 0,
        group: group.to_string(),
        from,
        to,
        body: Some(envelope::Body::Heartbeat(Heartbeat {
            chosen_instance: marker,
            now_ms: 0,
        })),
    }
}

/// The marker of a heartbeat built by [`heartbeat`].
pub fn marker(envelope: &Envelope) -> Option<u64> {
    match &envelope.body {
        Some(envelope::Body::Heartbeat(heartbeat)) => Some(heartbeat.chosen_instance),
        _ => None,
    }
}
