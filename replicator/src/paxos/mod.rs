//! The multi-Paxos engine of one group, as a pure deterministic state machine (PhxPaxos
//! semantics): `Core::step(input) -> actions`.
//!
//! - [`api`]: the contract between the core and whatever drives it (the tokio runtime or the
//!   simulator): [`Input`], [`Action`], [`Config`], [`Status`].
//!
//! Purity rule: nothing in this folder may use tokio, rusqlite, the network, the file system,
//! a clock or an RNG of its own. Time arrives in [`Input::Tick`]; randomness from
//! [`Config::seed`].

pub mod api;

pub use api::*;
