//! SQLite WAL checkpoints off the writer thread ([`install`]).
//!
//! SQLite checkpoints the WAL on the connection that commits, once the WAL holds 1,000 pages:
//! on the writer. With `synchronous=NORMAL` that checkpoint first syncs every WAL page written
//! since the last one (~4 MiB), copies them into the database file and syncs it: 5 to 10 ms
//! in which a master's writer runs no batch and every waiting client waits, and a burst of
//! write-back that the Paxos log's next `fdatasync` queues behind on the same disk.
//!
//! Here the writer's WAL hook only signals a thread of the group, which runs `PASSIVE`
//! checkpoints on a reader connection: they never wait for the writer nor make it wait. A pass
//! is asked for every [`WAL_PAGES_CHECKPOINT`] new pages (1 MiB), a quarter of SQLite's
//! default, so each write-back burst is small (docs/PERFORMANCE.md has the A/B). A pass that
//! ends with frames left (the writer committed meanwhile) is followed by another, shorter one,
//! so that the WAL is wholly copied at some point; the writer's next transaction then starts
//! it again from its beginning (SQLite restarts a WAL only then).
//!
//! The WAL stays bounded: if it reaches [`WAL_PAGES_WRITER_CHECKPOINT`] anyway (the thread
//! found no free reader, or a long read pinned old frames), the writer checkpoints itself, as
//! SQLite would have. A checkpoint error is never the commit's error: the commit happened, and
//! SQLite's own automatic checkpoint ignores its errors the same way.

use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
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

/// Counters of a database's WAL checkpoints (tests read them).
#[derive(Debug, Default)]
pub struct WalCheckpointStats {
    /// Passes the checkpoint thread ran.
    pub background_passes: AtomicU64,
    /// Checkpoints the writer ran itself because the WAL reached its bound.
    pub writer_checkpoints: AtomicU64,
    /// A pass is asked for or running: the hook does not ask again.
    pub pass_requested: AtomicBool,
}

struct Shared {
    /// The WAL frames the last pass had copied: only frames past them call for a new pass
    /// (the hook counts every frame in the WAL, copied or not, until the WAL starts again).
    copied_frames: AtomicI32,
    stats: Arc<WalCheckpointStats>,
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
    let shared = Arc::new(Shared {
        copied_frames: AtomicI32::new(0),
        stats,
    });
    let thread_shared = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name(thread_name(database_path))
        .spawn(move || serve(requests, readers, thread_shared));
    if let Err(error) = spawned {
        tracing::warn!(%error, path = %database_path.display(), "no WAL checkpoint thread: the writer checkpoints the WAL itself");
        return Ok(());
    }
    writer
        .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            after_commit(&shared, &signal, wal, pages);
            Ok(())
        }))
        .map_err(SqliteError::sqlite("installing the WAL hook"))
}

/// The writer's WAL hook, after each commit, with the pages now in the WAL.
fn after_commit(shared: &Shared, signal: &SyncSender<()>, wal: &mut Wal, pages: c_int) {
    if pages >= WAL_PAGES_WRITER_CHECKPOINT {
        shared
            .stats
            .writer_checkpoints
            .fetch_add(1, Ordering::Relaxed);
        if let Err(error) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            tracing::warn!(%error, pages, "WAL checkpoint on the writer failed; the next commit tries again");
        }
        return;
    }
    let copied = shared.copied_frames.load(Ordering::Acquire);
    // Fewer pages than were copied: the WAL started again from its beginning.
    let fresh = if pages < copied {
        pages
    } else {
        pages - copied
    };
    if fresh >= WAL_PAGES_CHECKPOINT && !shared.stats.pass_requested.swap(true, Ordering::AcqRel) {
        // Capacity one and no pass was asked for: the queue is empty unless the thread is gone.
        if signal.try_send(()).is_err() {
            shared.stats.pass_requested.store(false, Ordering::Release);
        }
    }
}

/// The checkpoint thread: one request at a time until the writer's hook (and its sender) is
/// dropped with the writer connection.
fn serve(requests: Receiver<()>, readers: ReaderPool, shared: Arc<Shared>) {
    while requests.recv().is_ok() {
        run_passes(&readers, &shared);
        shared.stats.pass_requested.store(false, Ordering::Release);
    }
}

fn run_passes(readers: &ReaderPool, shared: &Shared) {
    // A pool closed for a checkpoint install, or wholly busy: the next commit asks again.
    let Ok(reader) = readers.get() else {
        return;
    };
    // A connection finds the WAL only once it has read: a new one would report "not in WAL
    // mode" (-1 frames) and copy nothing.
    if let Err(error) = reader
        .connection
        .query_row("PRAGMA schema_version", [], |_| Ok(()))
    {
        tracing::warn!(%error, "WAL checkpoint: the reader could not read; the next commit asks again");
        return;
    }
    for _ in 0..PASSES_PER_REQUEST_MAX {
        shared
            .stats
            .background_passes
            .fetch_add(1, Ordering::Relaxed);
        match reader
            .connection
            .wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE)
        {
            Ok((frames, copied)) => {
                shared.copied_frames.store(copied.max(0), Ordering::Release);
                // Every frame copied (or not in WAL mode): the writer's next transaction
                // starts the WAL again. Otherwise the writer committed meanwhile: one more.
                if copied >= frames {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint pass failed; the next commit asks again");
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
