//! The [`LogStore`] trait: what a Paxos log must keep, and when.

use bytes::Bytes;

use crate::LogError;

/// What a record holds. Stored as one byte in the record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RecordKind {
    /// The acceptor state of an instance: promised ballot, accepted ballot and value
    /// (an encoded `paxsql_schema::AcceptorState`-like payload owned by the replicator).
    Acceptor = 1,
    /// The value chosen for an instance (an encoded `ChosenValue`).
    Chosen = 2,
    /// Group metadata that is not per instance (e.g. the checkpoint the prefix was cut at).
    Meta = 3,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Acceptor),
            2 => Some(RecordKind::Chosen),
            3 => Some(RecordKind::Meta),
            _ => None,
        }
    }
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub instance_id: u64,
    pub kind: RecordKind,
    pub payload: Bytes,
}

impl Record {
    pub fn new(instance_id: u64, kind: RecordKind, payload: impl Into<Bytes>) -> Self {
        Record {
            instance_id,
            kind,
            payload: payload.into(),
        }
    }
}

/// The durable Paxos log of one group.
///
/// # Correctness obligations (every implementation; the conformance suite checks them)
///
/// 1. **Durability is explicit.** [`append`](LogStore::append) only buffers: after a crash an
///    appended record may be gone. [`sync`](LogStore::sync) returns only when *every* record
///    appended before it is durable: after any later crash, reopening the log yields all of them,
///    byte-exact, in append order. One sync may serve many appends (group commit).
/// 2. **Prefix, not holes.** After a crash, the surviving records are a prefix of the appended
///    sequence that contains at least every synced record. No record after a lost one survives.
/// 3. **Paxos ordering is the caller's job, but depends on 1.** A promise or accept must not be
///    answered until the record that holds it is synced.
/// 4. **A failed sync is fatal.** `sync` returning [`LogError::SyncFailed`] means the node must
///    stop; it must never call `sync` again hoping for success.
/// 5. **Truncation is below a checkpoint only.** [`truncate_prefix`](LogStore::truncate_prefix)
///    may drop records of instances `< below`; the caller guarantees a durable checkpoint covers
///    them. Implementations may keep more (whole segments are deleted), never less.
/// 6. **Corruption is never silent.** A damaged record that is not the torn tail of the last
///    write is reported as [`LogError::Corrupt`] naming the file and offset.
pub trait LogStore: Send {
    /// Buffers a record at the end of the log. Not durable until [`LogStore::sync`].
    fn append(&mut self, record: &Record) -> Result<(), LogError>;

    /// Makes every record appended so far durable.
    fn sync(&mut self) -> Result<(), LogError>;

    /// Every record with `from <= instance_id < to`, in append order.
    fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>, LogError>;

    /// Drops records of instances below `below` (best effort: may keep more).
    fn truncate_prefix(&mut self, below: u64) -> Result<(), LogError>;

    /// The lowest instance id the log still holds, if any record is held.
    fn first_instance(&self) -> Option<u64>;

    /// The highest instance id the log holds, if any record is held.
    fn last_instance(&self) -> Option<u64>;
}
