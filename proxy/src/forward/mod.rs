//! Forwarding to the master: a follower's proxy relays writes, transactions and master reads
//! to the master's proxy and relays the answers back unchanged.
//!
//! The protocol rides the master's HTTP port: a connection that opens with [`MAGIC`] speaks
//! length-delimited `ForwardRequest`/`ForwardResponse` protobuf frames instead of HTTP. One
//! request at a time per connection; a connection that began a transaction is pinned to it
//! and closing it rolls the transaction back.
//!
//! - [`convert`]: shared types ↔ protobuf.
//! - [`frame`]: framing with a size bound.
//! - [`server`]: the master side, over a local [`crate::backend::Backend`].
//! - [`client`]: the follower side, a small pool of connections per master.

pub mod client;
pub mod convert;
pub mod frame;
pub mod server;

/// First bytes of a forwarding connection (then a u32 protocol version).
pub const MAGIC: &[u8; 4] = b"PXFW";
/// Bumped when a frame's meaning changes.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either way (a big SELECT result is the usual reason to hit it).
pub const FORWARD_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Idle pooled connections kept per master.
pub const FORWARD_POOL_IDLE_MAX: usize = 16;
