//! The SQLite state machine: master batches, follower replay, deterministic functions.
//!
//! - [`types`]: the statement and result types shared with the proxy.

pub mod types;

pub use types::*;
