//! Checkpoints: consistent snapshots of the replica, and installing one in place of the
//! replica (bootstrapping a node that fell behind the peers' truncated logs).
//!
//! A snapshot is taken with SQLite's backup API from a reader connection: it copies pages
//! exactly (VACUUM INTO could renumber rowids of tables without INTEGER PRIMARY KEY) inside one
//! WAL read transaction, so the writer is never blocked. The applied instance travels inside
//! the file, in `_paxsql_meta`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use super::connection::PaxConnection;
use super::database::Database;
use super::error::SqliteError;
use super::meta::{self, MetaSnapshot};
use super::readers::ReaderPool;

impl Database {
    /// Writes a consistent snapshot to `path` (via `path.tmp`, fsync'd, renamed, directory
    /// fsync'd) and returns the instance it contains.
    pub fn checkpoint_to(&self, path: &Path) -> Result<u64, SqliteError> {
        let meta = write_checkpoint(&self.readers, &self.path, path)?;
        meta.applied_instance.ok_or(SqliteError::NothingApplied)
    }

    /// Replaces this replica with the checkpoint `file` and reopens it (DESIGN "Checkpoints"):
    /// stop applying and close the connections; fsync the file; rename it into place; delete
    /// stale `-wal` and `-shm` files; fsync the directory. The Paxos log is not touched.
    ///
    /// Every reader must be back in the pool ([`SqliteError::ReadersInUse`] otherwise, with
    /// nothing changed). An error after step 1 (I/O, fsync) is fatal: the node stops.
    pub fn install_checkpoint(&mut self, file: &Path) -> Result<(), SqliteError> {
        // Validate before destroying anything.
        checkpoint_instance(file)?;
        self.readers.close()?;
        let detached = PaxConnection::open_detached()?;
        let writer = std::mem::replace(&mut self.writer, detached);
        let replaced = replace_file(writer, file, &self.path);
        let reopened = Database::open_with_readers(
            self.path.clone(),
            self.options.clone(),
            self.readers.clone(),
            Arc::clone(&self.wal_stats),
        )?;
        *self = reopened;
        replaced
    }
}

/// Writes a consistent snapshot of the replica behind `readers` to `path` (via `path.tmp`,
/// fsync'd, renamed, directory fsync'd) and returns the metadata inside it. Runs on any
/// thread: it only takes a reader, so the writer is never blocked.
pub fn write_checkpoint(
    readers: &ReaderPool,
    database_path: &Path,
    path: &Path,
) -> Result<MetaSnapshot, SqliteError> {
    let temporary = path.with_extension("tmp");
    remove_if_present(&temporary)?;
    {
        let reader = readers
            .get_for_maintenance()
            .map_err(|error| SqliteError::NotPaxsql {
                path: database_path.into(),
                detail: error.message,
            })?;
        let mut destination = Connection::open(&temporary)
            .map_err(SqliteError::sqlite("creating the checkpoint file"))?;
        // The whole file is fsync'd below; a journal for the copy would only double the I/O.
        destination
            .execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            .map_err(SqliteError::sqlite("preparing the checkpoint file"))?;
        let backup = rusqlite::backup::Backup::new(&reader.connection, &mut destination)
            .map_err(SqliteError::sqlite("starting the checkpoint backup"))?;
        // All pages in one step: one read transaction, one consistent snapshot.
        backup
            .step(-1)
            .map_err(SqliteError::sqlite("copying the checkpoint"))?;
    }
    let meta = checkpoint_meta(&temporary)?;
    if meta.applied_instance.is_none() {
        remove_if_present(&temporary)?;
        return Err(SqliteError::NothingApplied);
    }
    sync_file(&temporary)?;
    std::fs::rename(&temporary, path).map_err(SqliteError::io(path))?;
    sync_parent_directory(path)?;
    Ok(meta)
}

/// Every paxsql meta key inside a checkpoint file.
pub fn checkpoint_meta(file: &Path) -> Result<MetaSnapshot, SqliteError> {
    let connection =
        Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|error| {
            SqliteError::NotPaxsql {
                path: file.into(),
                detail: error.to_string(),
            }
        })?;
    meta::snapshot(&connection).map_err(|error| SqliteError::NotPaxsql {
        path: file.into(),
        detail: error.to_string(),
    })
}

/// Steps 1 to 5 of a checkpoint install, once the readers are closed.
fn replace_file(writer: PaxConnection, file: &Path, path: &Path) -> Result<(), SqliteError> {
    if let Err((_connection, error)) = writer.connection.close() {
        return Err(SqliteError::Sqlite {
            context: "closing the writer before a checkpoint install".into(),
            source: error,
        });
    }
    sync_file(file)?;
    std::fs::rename(file, path).map_err(SqliteError::io(path))?;
    for suffix in ["-wal", "-shm"] {
        let mut stale = path.as_os_str().to_owned();
        stale.push(suffix);
        remove_if_present(Path::new(&stale))?;
    }
    sync_parent_directory(path)
}

/// The applied instance inside a checkpoint file.
pub fn checkpoint_instance(file: &Path) -> Result<u64, SqliteError> {
    let not_paxsql = |detail: String| SqliteError::NotPaxsql {
        path: file.into(),
        detail,
    };
    let connection = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|error| not_paxsql(error.to_string()))?;
    let instance =
        meta::applied_instance(&connection).map_err(|error| not_paxsql(error.to_string()))?;
    instance.ok_or(SqliteError::NothingApplied)
}

pub fn remove_if_present(path: &Path) -> Result<(), SqliteError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(SqliteError::Io {
            path: path.into(),
            source: error,
        }),
    }
}

/// fsync failures are fatal and never retried (fsyncgate): the caller stops the node.
pub fn sync_file(path: &Path) -> Result<(), SqliteError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(SqliteError::io(path))
}

pub fn sync_parent_directory(path: &Path) -> Result<(), SqliteError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(SqliteError::io(parent))
}
