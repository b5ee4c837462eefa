//! The multi-Paxos engine of one group, as a pure deterministic state machine (PhxPaxos
//! semantics): `Core::step(input) -> actions`.
//!
//! - [`api`]: the contract between the core and whatever drives it (the tokio runtime or the
//!   simulator): [`Input`], [`Action`], [`Config`], [`Status`].
//! - [`Core`] (`core`): state, the one dispatch `match`, delivery in order.
//! - `acceptor`: promise/accept rules; a promise covers every later instance.
//! - `proposer`: ballots, prepare → accept, skip-prepare, backoff, proposal outcomes.
//! - `learner`: Chosen notices, catching up, checkpoint requests.
//! - `lease`: the master lease and read-index rounds.
//! - `membership`: the cluster init, member lists and the lease as values on the log.
//! - `checkpoint`: standing on a checkpoint instead of the log below it ([`CheckpointMeta`]).
//! - `recovery`: rebuilding the state from the log at startup.
//! - `rng`: the core's seeded PRNG.
//!
//! Purity rule: nothing in this folder may use tokio, rusqlite, the network, the file system,
//! a clock or an RNG of its own. Time arrives in [`Input::Tick`]; randomness from
//! [`Config::seed`].

mod acceptor;
pub mod api;
mod checkpoint;
mod core;
mod learner;
mod lease;
mod membership;
mod proposer;
pub mod recovery;
mod rng;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_membership;

pub use self::core::{chain_checksum, Core, READ_INDEX_PENDING_MAX};
pub use api::*;
pub use checkpoint::CheckpointMeta;
