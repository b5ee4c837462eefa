//! The tokio runtime that drives the pure Paxos core with real TCP and the real log.
//!
//! - [`engine`]: the [`Engine`] trait the driver steps (the Paxos `Core` implements it).
//! - [`clock`]: the monotonic boot-time clock that ticks carry.
//! - [`frame`]: length-delimited frames (u32 big-endian length + prost bytes) on peer links.
//! - [`handshake`]: the first frames on every peer connection: compatibility and the secret.
//! - [`peer`]: one outbound connection per peer, with reconnect and backoff.
//! - [`transport`]: the listener, inbound connections and routing of envelopes to groups.
//! - [`log_writer`]: the thread that owns a group's log and syncs once per drained batch.
//! - [`learn`]: builds `LearnedValues` replies from log records.
//! - [`group`]: one task per group that owns the engine and carries out its actions in order;
//!   [`GroupHandle`] is how the rest of the node talks to it.
//! - [`node`]: builds the transport and every group driver of a node.
//! - [`metrics`]: counters rendered as Prometheus text.
//! - [`placement`]: a hint that spreads the groups' masters over the nodes.
//!
//! Threads and tasks: every group has one driver task and one log writer thread; every peer has
//! one outbound task; every inbound connection has one task. All queues between them are
//! bounded (see [`crate::limits`]).

pub mod clock;
pub mod engine;
pub mod error;
pub mod frame;
pub mod group;
pub mod handshake;
pub mod learn;
pub mod log_writer;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod placement;
pub mod transport;

pub use engine::Engine;
pub use error::RuntimeError;
pub use group::{CheckpointNeeded, Delivered, GroupChannels, GroupHandle, Outbox};
pub use handshake::{LocalIdentity, PeerInfo};
pub use log_writer::{FatalHandler, LogWriter};
pub use metrics::RuntimeMetrics;
pub use node::{GroupParts, Node, NodeConfig};
pub use transport::Transport;
