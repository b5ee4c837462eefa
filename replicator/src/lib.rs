//! paxsql's replication layer.
//!
//! - [`paxos`]: the multi-Paxos engine as a pure, deterministic state machine
//!   (`Core::step(input) -> actions`): no I/O, no clock, no randomness of its own.
//! - [`runtime`]: tokio tasks that drive the core with real TCP and the real log.
//! - [`sqlite`]: the SQLite state machine (batches, deterministic replay, checkpoints).
//! - [`limits`]: every bound in one place.

pub mod limits;
pub mod paxos;
pub mod runtime;
pub mod service;
pub mod sqlite;
