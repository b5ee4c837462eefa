//! [`MemLog`]: the log in memory, for the deterministic simulator and tests.

use crate::{LogError, LogStore, Record};

/// A log in memory. [`MemLog::crash`] drops every record appended since the last sync, which is
/// exactly what a power cut may do to a [`LogStore`].
#[derive(Debug, Default, Clone)]
pub struct MemLog {
    records: Vec<Record>,
    /// Records `[..synced]` are durable.
    synced: usize,
    /// Instances below this were truncated.
    truncated_below: u64,
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a crash: everything not yet synced is lost.
    pub fn crash(&mut self) {
        self.records.truncate(self.synced);
    }

    /// How many records are appended but not yet durable.
    pub fn unsynced_len(&self) -> usize {
        self.records.len() - self.synced
    }

    /// Every record held, in append order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

impl LogStore for MemLog {
    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.records.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        self.synced = self.records.len();
        Ok(())
    }

    fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>, LogError> {
        Ok(self
            .records
            .iter()
            .filter(|record| record.instance_id >= from && record.instance_id < to)
            .cloned()
            .collect())
    }

    fn truncate_prefix(&mut self, below: u64) -> Result<(), LogError> {
        // Only synced records may be dropped; unsynced ones keep their place in the crash model.
        let keep_from = self.records[..self.synced]
            .iter()
            .position(|record| record.instance_id >= below)
            .unwrap_or(self.synced);
        self.records.drain(..keep_from);
        self.synced -= keep_from;
        self.truncated_below = self.truncated_below.max(below);
        Ok(())
    }

    fn first_instance(&self) -> Option<u64> {
        self.records.iter().map(|record| record.instance_id).min()
    }

    fn last_instance(&self) -> Option<u64> {
        self.records.iter().map(|record| record.instance_id).max()
    }
}
