//! The SQL service of one group: PhxSQL's write path, tying the SQLite state machine to the
//! Paxos group.
//!
//! - [`writer`]: the dedicated thread that owns the group's [`crate::sqlite::Database`]: it
//!   applies chosen values in order, and on the master executes batches and interactive
//!   transactions, proposes them, and COMMITs only when their instance chose them.
//! - [`checkpoints`]: periodic and on-demand checkpoints off the writer thread, retention,
//!   pins, log truncation, and bootstrapping this replica from a peer's checkpoint.
//! - [`checkpoint_stream`]: the chunked, CRC-checked, resumable checkpoint transfer;
//!   [`checkpoint_chunks`]: the per-chunk CRC table it serves, computed when a checkpoint is taken.
//! - [`handle`]: [`SqlService`], the async face the proxy calls (writes, transactions, reads at
//!   each consistency level).
//!
//! The Paxos core is wired to the runtime here too: [`crate::runtime::engine::Engine`] for
//! [`crate::paxos::core::Core`].

pub mod checkpoint_chunks;
pub mod checkpoint_stream;
pub mod checkpoints;
pub mod handle;
pub mod writer;

pub use handle::{SqlService, SqlTransaction};

use crate::paxos::Core;
use crate::paxos::{Action, Input, Status};
use crate::runtime::engine::Engine;

impl Engine for Core {
    fn step(&mut self, input: Input) -> Vec<Action> {
        Core::step(self, input)
    }

    fn status(&self) -> Status {
        Core::status(self)
    }
}
