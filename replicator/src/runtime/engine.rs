//! [`Engine`]: what the group driver needs from the Paxos core.
//!
//! The driver is written against this trait, not against `Core`, so it can be tested with a
//! scripted engine and so the core stays free of tokio. `Core` implements it by forwarding to
//! `Core::step` and `Core::status`.

use crate::paxos::{Action, Input, Status};

/// A deterministic state machine stepped by one driver task.
///
/// The driver carries out the returned actions in order and honors the obligations documented
/// in [`crate::paxos::api`] (persist before `then_send`, deliver in instance order, monotonic
/// ticks).
pub trait Engine: Send + 'static {
    /// Feeds one input; returns the actions to carry out, in order.
    fn step(&mut self, input: Input) -> Vec<Action>;

    /// A snapshot for `/status`, the proxy and learn replies.
    fn status(&self) -> Status;
}
