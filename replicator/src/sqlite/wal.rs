//! SQLite WAL checkpoints off the writer thread ([`install`]).
//!
//! SQLite checkpoints the WAL on the connection that commits, once the WAL holds 1,000 pages:
//! on the writer. With `synchronous=NORMAL` that checkpoint first syncs every WAL page written
//! since the last one (~4 MiB), copies them into the database file and syncs it: 5 to 10 ms
//! in which a master's writer runs no batch and every waiting client waits, and a burst of
//! write-back that the Paxos log's next `fdatasync` queues behind on the same disk.
//!
//! Here the writer's WAL hook only signals a thread of the group, which runs `PASSIVE`
//! checkpoints on a reader connection (one kept for upkeep, outside the clients' bound): they
//! never wait for the writer nor make it wait. A pass is asked for every
//! [`WAL_PAGES_CHECKPOINT`] new pages (1 MiB), a quarter of SQLite's default, so each
//! write-back burst is small (docs/PERFORMANCE.md has the A/B). A pass that ends with frames
//! left (the writer committed meanwhile) is followed by another, shorter one, so that the WAL
//! is wholly copied at some point; the writer's next transaction then starts it again from its
//! beginning (SQLite restarts a WAL only then).
//!
//! Under writes that never pause, the writer opens its next transaction right after each
//! commit, before a pass can finish, so the WAL rarely starts again that way: it grows until
//! [`WAL_PAGES_WRITER_CHECKPOINT`], where the writer checkpoints it itself, as SQLite would
//! have. By then the thread has copied all but the last frames, so that checkpoint is short,
//! and the writer's next transaction starts the WAL again (64 clients for 15 s: 4 such
//! checkpoints on the master, none on the replicas, ~150 passes per node; WAL files of
//! 28–32 MiB). The same bound holds if the thread cannot take a reader. A read that holds an old
//! snapshot pins the frames after it whoever checkpoints (SQLite's rule): while it lasts the
//! WAL grows, and checkpoints are asked for every [`WAL_PAGES_CHECKPOINT`] new pages, not on
//! every commit. A checkpoint error is never the commit's error: the commit happened, and
//! SQLite's own automatic checkpoint ignores its errors the same way.

use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use super::error::SqliteError;
use super::readers::ReaderPool;

/// New WAL pages after which the checkpoint thread is asked for a pass (1 MiB at 4 KiB pages).
pub const WAL_PAGES_CHECKPOINT: c_int = 250;
/// WAL pages at which the writer checkpoints itself (32 MiB at 4 KiB pages).
pub const WAL_PAGES_WRITER_CHECKPOINT: c_int = 8_000;
/// Passes one request may run while the writer keeps adding frames.
const PASSES_PER_REQUEST_MAX: u32 = 8;

/// Counters of a database's WAL checkpoints (`/metrics` and tests read them).
#[derive(Debug, Default)]
pub struct WalCheckpointStats {
    /// Passes the checkpoint thread ran.
    pub background_passes: AtomicU64,
    /// Checkpoints the writer ran itself because the WAL reached its bound.
    pub writer_checkpoints: AtomicU64,
    /// A pass is asked for or running: the hook does not ask again.
    pub pass_requested: AtomicBool,
}

/// Installs the WAL hook on `writer` and starts the group's checkpoint thread. When the thread
/// cannot start, the writer keeps SQLite's own automatic checkpoints (slower, still bounded).
pub fn install(
    writer: &mut Connection,
    readers: ReaderPool,
    database_path: &Path,
    stats: Arc<WalCheckpointStats>,
) -> Result<(), SqliteError> {
    let (signal, requests) = sync_channel::<()>(1);
    let thread_stats = Arc::clone(&stats);
    let spawned = std::thread::Builder::new()
        .name(thread_name(database_path))
        .spawn(move || serve(requests, readers, thread_stats));
    if let Err(error) = spawned {
        tracing::warn!(%error, path = %database_path.display(), "no WAL checkpoint thread: the writer checkpoints the WAL itself");
        return Ok(());
    }
    let mut hook = WriterHook {
        signal,
        stats,
        last_pages: 0,
        asked_at: 0,
    };
    writer
        .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            hook.after_commit(wal, pages);
            Ok(())
        }))
        .map_err(SqliteError::sqlite("installing the WAL hook"))
}

/// The writer's side: its WAL hook runs after each commit with the pages now in the WAL
/// (copied or not: SQLite counts every frame until the WAL starts again).
struct WriterHook {
    signal: SyncSender<()>,
    stats: Arc<WalCheckpointStats>,
    /// Pages in the WAL at the previous commit: fewer now means the WAL started again.
    last_pages: c_int,
    /// Pages in the WAL when a checkpoint was last asked for (or run by the writer). Asking
    /// again only every [`WAL_PAGES_CHECKPOINT`] pages keeps a read that pins old frames from
    /// turning every commit into a checkpoint.
    asked_at: c_int,
}

impl WriterHook {
    fn after_commit(&mut self, wal: &mut Wal, pages: c_int) {
        if pages < self.last_pages {
            self.asked_at = 0;
        }
        self.last_pages = pages;
        if pages - self.asked_at < WAL_PAGES_CHECKPOINT {
            return;
        }
        if pages >= WAL_PAGES_WRITER_CHECKPOINT {
            self.asked_at = pages;
            match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                Ok(_) => {
                    self.stats
                        .writer_checkpoints
                        .fetch_add(1, Ordering::Relaxed);
                }
                // Busy while the thread's pass runs: that pass copies the same frames.
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if failure.code == rusqlite::ErrorCode::DatabaseBusy => {}
                Err(error) => {
                    tracing::warn!(%error, pages, "WAL checkpoint on the writer failed; a later commit tries again")
                }
            }
            return;
        }
        // While a pass runs, the next commit asks again (the pass may end short of the WAL).
        if !self.stats.pass_requested.swap(true, Ordering::AcqRel) {
            self.asked_at = pages;
            // Capacity one and no pass was asked for: the queue is empty unless the thread
            // is gone.
            if self.signal.try_send(()).is_err() {
                self.stats.pass_requested.store(false, Ordering::Release);
            }
        }
    }
}

/// The checkpoint thread: one request at a time until the writer's hook (and its sender) is
/// dropped with the writer connection.
fn serve(requests: Receiver<()>, readers: ReaderPool, stats: Arc<WalCheckpointStats>) {
    while requests.recv().is_ok() {
        run_passes(&readers, &stats);
        stats.pass_requested.store(false, Ordering::Release);
    }
}

fn run_passes(readers: &ReaderPool, stats: &WalCheckpointStats) {
    // A pool closed for a checkpoint install, or both upkeep readers busy: a later commit
    // asks again.
    let Ok(reader) = readers.get_for_maintenance() else {
        return;
    };
    // A connection finds the WAL only once it has read: a new one would report "not in WAL
    // mode" (-1 frames) and copy nothing.
    if let Err(error) = reader
        .connection
        .query_row("PRAGMA schema_version", [], |_| Ok(()))
    {
        tracing::warn!(%error, "WAL checkpoint: the reader could not read; a later commit asks again");
        return;
    }
    let mut copied_before = -1;
    for _ in 0..PASSES_PER_REQUEST_MAX {
        stats.background_passes.fetch_add(1, Ordering::Relaxed);
        match reader
            .connection
            .wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE)
        {
            // Every frame copied (or not in WAL mode): the writer's next transaction starts
            // the WAL again. No progress: a read pins the frames after its snapshot.
            Ok((frames, copied)) if copied >= frames || copied <= copied_before => return,
            // The writer committed meanwhile: one more, shorter pass.
            Ok((_, copied)) => copied_before = copied,
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint pass failed; a later commit asks again");
                return;
            }
        }
    }
}

/// `wal-<group>` from `DIR/<group>/db.sqlite`, as the writer thread is `writer-<group>`.
fn thread_name(database_path: &Path) -> String {
    let group = database_path
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("wal-{group}")
}
