//! Forwarding to the master: a follower's proxy relays writes, transactions and master reads
//! to the master's proxy and relays the answers back unchanged.
//!
//! The protocol rides the master's HTTP port: a connection that opens with [`MAGIC`] and
//! [`PROTOCOL_VERSION`] first authenticates both ends with the cluster secret ([`auth`]), then
//! speaks length-delimited `ForwardRequest`/`ForwardResponse` protobuf frames instead of HTTP.
//! One request at a time per connection; a connection that began a transaction is pinned to
//! it and closing it rolls the transaction back.
//!
//! - [`auth`]: the challenge-response over the cluster secret, before any request.
//! - [`convert`]: shared types ↔ protobuf.
//! - [`frame`]: framing with a size bound.
//! - [`server`]: the master side, over a local [`crate::backend::Backend`].
//! - [`client`]: the follower side, a small pool of connections per master.

pub mod auth;
pub mod client;
pub mod convert;
pub mod frame;
pub mod server;

#[cfg(test)]
mod tests;

use std::time::Duration;

/// First bytes of a forwarding connection (then a u32 protocol version).
pub const MAGIC: &[u8; 4] = b"PXFW";
/// Bumped when a frame's meaning changes. 2: the [`auth`] handshake precedes every request.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest frame either way (a big SELECT result is the usual reason to hit it).
pub const FORWARD_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A frame's body buffer grows by at least this much (then doubles) as its bytes arrive.
pub const FORWARD_FRAME_READ_STEP_BYTES: usize = 64 * 1024;
/// Largest frame of the [`auth`] handshake: nothing unauthenticated may cost more.
pub const FORWARD_AUTH_FRAME_BYTES_MAX: usize = 4 * 1024;
/// How long the version and the [`auth`] handshake may take, on either side.
pub const FORWARD_AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections kept per master.
pub const FORWARD_POOL_IDLE_MAX: usize = 16;

const _: () = assert!(FORWARD_AUTH_FRAME_BYTES_MAX <= FORWARD_FRAME_READ_STEP_BYTES);
const _: () = assert!(FORWARD_FRAME_READ_STEP_BYTES <= FORWARD_FRAME_BYTES_MAX);
