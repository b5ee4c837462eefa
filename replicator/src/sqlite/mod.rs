//! The SQLite state machine of one group: master batches, follower replay, deterministic
//! functions, checkpoints.
//!
//! - [`types`]: the statement and result types shared with the proxy.
//! - [`database`]: [`Database`] — the replica file, its writer, the apply path, content hash.
//! - [`batch`]: [`Batch`] and [`PendingCommit`] — the master's open transaction and its commit.
//! - [`readers`]: [`ReaderPool`] — bounded read-only connections that never see open batches.
//! - [`connection`]: opening connections and running one statement (binding `$n` by name).
//! - [`policy`]: the authorizer and checks that refuse what cannot be replicated.
//! - [`vfs`]: the VFS that pins "now"; [`functions`]: deterministic `random()`/`randomblob()`.
//! - [`meta`]: paxsql's own `_paxsql_*` tables; [`checkpoint`]: snapshots and their install.
//! - [`wal`]: SQLite's WAL checkpoints, on a thread of their own instead of the writer.
//! - [`error`]: [`SqliteError`] and the classification of SQLite errors for clients.
//!
//! The library is synchronous (rusqlite); the runtime runs each group's [`Database`] on a
//! dedicated thread. Run nodes with `TZ=UTC`.

pub mod batch;
pub mod checkpoint;
pub mod connection;
pub mod database;
pub mod error;
pub mod functions;
pub mod meta;
pub mod policy;
pub mod readers;
pub mod types;
pub mod vfs;
pub mod wal;

pub use batch::{Batch, PendingCommit};
pub use checkpoint::checkpoint_instance;
pub use connection::ConnectionOptions;
pub use database::{ApplyOutcome, Database, DatabaseOptions};
pub use error::SqliteError;
pub use meta::MetaSnapshot;
pub use readers::{ReadCancel, Reader, ReaderPool};
pub use types::*;
