//! The durable Paxos log (the *binlog*) of one paxsql group.
//!
//! - [`store`]: the [`LogStore`] trait and the durability contract every log must keep.
//! - [`mem`]: [`MemLog`], the log in memory with `crash()`, for the simulator and tests.
//! - [`file`]: [`FileLog`], the log on disk: segment files ([`segment`]) of CRC32C-checked
//!   records ([`record`]), preallocated (zero-filled) so a sync is a pure data flush, fsync,
//!   torn-tail recovery, truncation of whole segments.
//! - [`value`]: the binlog value format (a [`paxsql_schema::PaxosValue`] / `BinlogBatch`) and its
//!   size limits.
//! - [`error`]: the [`LogError`] enum.
//! - `fault`: test hooks from the environment (`PAXSQL_FAULT_LOG_FULL_AFTER_BYTES`,
//!   `PAXSQL_FAULT_LOG_FAIL_SYNC_AFTER`) that make the real binary hit a full disk or a failed
//!   fsync.
//!
//! The log is a stream of [`Record`]s. Each record belongs to one Paxos instance and has a
//! [`RecordKind`]: the acceptor state of that instance, or the value chosen for it. Later
//! records of the same instance and kind supersede earlier ones.

pub mod error;
mod fault;
pub mod file;
pub mod mem;
pub mod record;
pub mod segment;
pub mod store;
pub mod value;

pub use error::LogError;
pub use file::{FileLog, FileLogOptions, RecoveryReport};
pub use mem::MemLog;
pub use segment::TornTail;
pub use store::{LogStore, Record, RecordKind};
pub use value::ValueError;
