//! The durable Paxos log (the *binlog*) of one paxsql group.
//!
//! - [`store`]: the [`LogStore`] trait and the durability contract every log must keep.
//! - [`mem`]: [`MemLog`], the log in memory with `crash()`, for the simulator and tests.
//! - [`error`]: [`LogError`].
//!
//! The log is a stream of [`Record`]s. Each record belongs to one Paxos instance and has a
//! [`RecordKind`]: the acceptor state of that instance, or the value chosen for it. Later
//! records of the same instance and kind supersede earlier ones.

pub mod error;
pub mod mem;
pub mod store;

pub use error::LogError;
pub use mem::MemLog;
pub use store::{LogStore, Record, RecordKind};
