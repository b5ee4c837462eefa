//! A bounded pool of read-only reader connections.
//!
//! Readers are `query_only` connections on the same WAL file: each statement reads the last
//! committed state and never sees the writer's open transaction (a batch waiting for its
//! instance to be chosen). Connections open lazily: clients hold at most `readers_max` at once
//! (past it a read gets a fast "busy" error instead of queueing without limit), paxsql's upkeep
//! at most [`MAINTENANCE_READERS_MAX`] more, so at most their sum is ever open.
//!
//! A read may be canceled ([`ReadCancel`], PostgreSQL's CancelRequest): the reader running it
//! is interrupted (`sqlite3_interrupt`). Readers never write, so an interrupted read leaves
//! nothing behind and its reader goes back to the pool as usual.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::InterruptHandle;
use tokio::sync::watch;

use super::connection::{ConnectionOptions, PaxConnection};
use super::error::SqliteError;
use super::types::{Column, SqlError, SqlErrorKind, StatementRequest, StatementResult};

/// Default bound on reader connections per group.
pub const READERS_MAX_DEFAULT: usize = 16;
/// Readers paxsql's own upkeep may hold beyond the clients' bound: the WAL checkpoint thread
/// and a checkpoint's copy (so neither takes a client's slot).
pub const MAINTENANCE_READERS_MAX: usize = 2;

#[derive(Clone)]
pub struct ReaderPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    path: PathBuf,
    options: ConnectionOptions,
    readers_max: usize,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<PaxConnection>,
    in_use: usize,
    /// Of `in_use`, the readers checked out by [`ReaderPool::get_for_maintenance`].
    maintenance_in_use: usize,
    /// Set while a checkpoint is installed: no connection may be opened or returned.
    closed: bool,
}

/// A reader checked out of the pool; it returns on drop.
pub struct Reader {
    connection: Option<PaxConnection>,
    pool: Arc<PoolInner>,
    maintenance: bool,
}

impl std::ops::Deref for Reader {
    type Target = PaxConnection;
    fn deref(&self) -> &PaxConnection {
        self.connection
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let connection = self.connection.take().expect("dropped once");
        let mut state = self.pool.state.lock().expect("pool lock");
        state.in_use -= 1;
        if self.maintenance {
            state.maintenance_in_use -= 1;
        }
        if !state.closed {
            state.idle.push(connection);
        }
    }
}

impl ReaderPool {
    pub fn new(path: PathBuf, options: ConnectionOptions, readers_max: usize) -> ReaderPool {
        assert!(readers_max > 0, "a group needs at least one reader");
        ReaderPool {
            inner: Arc::new(PoolInner {
                path,
                options,
                readers_max,
                state: Mutex::default(),
            }),
        }
    }

    /// Checks a reader out, opening one if none is idle and the bound allows.
    pub fn get(&self) -> Result<Reader, SqlError> {
        self.checkout(false)
    }

    /// Checks a reader out for paxsql's own upkeep (WAL checkpoints, checkpoint copies): at
    /// most [`MAINTENANCE_READERS_MAX`], never counted against the clients' bound.
    pub fn get_for_maintenance(&self) -> Result<Reader, SqlError> {
        self.checkout(true)
    }

    fn checkout(&self, maintenance: bool) -> Result<Reader, SqlError> {
        let mut state = self.inner.state.lock().expect("pool lock");
        if state.closed {
            return Err(SqlError::new(
                SqlErrorKind::Busy,
                "the database is being replaced by a checkpoint; retry shortly",
            ));
        }
        if maintenance && state.maintenance_in_use >= MAINTENANCE_READERS_MAX {
            return Err(SqlError::new(
                SqlErrorKind::Busy,
                "the readers kept for paxsql's upkeep of this database are busy; retry shortly",
            ));
        }
        // Idle connections are shared by clients and upkeep: the bound is on those in use.
        let client_readers = state.in_use - state.maintenance_in_use;
        if !maintenance && client_readers >= self.inner.readers_max {
            return Err(SqlError::new(
                SqlErrorKind::Busy,
                format!(
                    "all {} reader connections of this database are busy; retry shortly",
                    self.inner.readers_max
                ),
            ));
        }
        state.in_use += 1;
        if maintenance {
            state.maintenance_in_use += 1;
        }
        let reader = |connection| Reader {
            connection: Some(connection),
            pool: Arc::clone(&self.inner),
            maintenance,
        };
        if let Some(connection) = state.idle.pop() {
            return Ok(reader(connection));
        }
        drop(state);
        match PaxConnection::open_reader(&self.inner.path, &self.inner.options) {
            Ok(connection) => Ok(reader(connection)),
            Err(error) => {
                let mut state = self.inner.state.lock().expect("pool lock");
                state.in_use -= 1;
                if maintenance {
                    state.maintenance_in_use -= 1;
                }
                Err(SqlError::new(SqlErrorKind::Other, error.to_string()))
            }
        }
    }

    /// Runs a short read in place on an idle reader, for async callers that must not block:
    /// `None` when no reader is idle or the statement did not finish within `calls` progress
    /// calls without waiting (the caller then runs [`Self::read`] on a blocking thread).
    pub fn read_within_budget(
        &self,
        request: &StatementRequest,
        calls: u32,
    ) -> Option<StatementResult> {
        let reader = self.get_idle()?;
        reader.execute_within_budget(request, calls)
    }

    /// Describes `sql` in place on an idle reader, for async callers that must not block:
    /// `None` when no reader is idle or compiling it would wait for a lock.
    pub fn describe_in_place(&self, sql: &str) -> Option<Result<Vec<Column>, SqlError>> {
        self.get_idle()?.describe(sql, true)
    }

    /// An idle reader, never opening one (opening does file I/O).
    fn get_idle(&self) -> Option<Reader> {
        let mut state = self.inner.state.lock().expect("pool lock");
        if state.closed || state.in_use - state.maintenance_in_use >= self.inner.readers_max {
            return None;
        }
        let connection = state.idle.pop()?;
        state.in_use += 1;
        Some(Reader {
            connection: Some(connection),
            pool: Arc::clone(&self.inner),
            maintenance: false,
        })
    }

    /// Runs a read-only statement on a reader.
    pub fn read(&self, request: &StatementRequest) -> Result<StatementResult, SqlError> {
        let reader = self.get()?;
        reader
            .execute(&request.sql, &request.params)
            .map(|executed| executed.result)
    }

    /// Runs a read-only statement on a reader that `cancel` can interrupt. A read canceled
    /// before or while it runs fails with [`ReadCancel::error`]; one that finished first keeps
    /// its result. Blocks: call it off the async workers.
    pub fn read_cancelable(
        &self,
        request: &StatementRequest,
        cancel: &ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        let reader = self.get()?;
        let connection: &PaxConnection = &reader;
        let attached = cancel.attach(connection.connection.get_interrupt_handle());
        if cancel.is_canceled() {
            return Err(ReadCancel::error());
        }
        let outcome = reader.execute(&request.sql, &request.params);
        // Detach before the reader returns to the pool: a later cancel must never interrupt
        // another session's read on the same connection.
        drop(attached);
        match outcome {
            Ok(executed) => Ok(executed.result),
            Err(_) if cancel.is_canceled() => Err(ReadCancel::error()),
            Err(error) => Err(error),
        }
    }

    /// See [`PaxConnection::is_read_only`].
    pub fn is_read_only(&self, sql: &str) -> Result<bool, SqlError> {
        self.get()?.is_read_only(sql)
    }

    /// Closes every idle reader and refuses new ones; fails if some are still checked out.
    pub(crate) fn close(&self) -> Result<(), SqliteError> {
        let mut state = self.inner.state.lock().expect("pool lock");
        if state.in_use > 0 {
            return Err(SqliteError::ReadersInUse {
                in_use: state.in_use,
            });
        }
        state.closed = true;
        state.idle.clear();
        Ok(())
    }

    pub(crate) fn reopen(&self) {
        self.inner.state.lock().expect("pool lock").closed = false;
    }
}

/// The cancel switch of one read. The session that may cancel holds one clone, the reader
/// running the read another. Canceling is sticky (a later attach sees it) and interrupts the
/// connection only while the read is attached to it.
#[derive(Clone)]
pub struct ReadCancel {
    inner: Arc<ReadCancelInner>,
}

struct ReadCancelInner {
    canceled: watch::Sender<bool>,
    /// The running read's connection, set only between attach and detach.
    running: Mutex<Option<InterruptHandle>>,
}

impl std::fmt::Debug for ReadCancel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReadCancel")
            .field("canceled", &self.is_canceled())
            .finish()
    }
}

impl Default for ReadCancel {
    fn default() -> Self {
        ReadCancel::new()
    }
}

impl ReadCancel {
    pub fn new() -> Self {
        ReadCancel {
            inner: Arc::new(ReadCancelInner {
                canceled: watch::Sender::new(false),
                running: Mutex::new(None),
            }),
        }
    }

    /// The error of a canceled read (the front end answers it with SQLSTATE 57014).
    pub fn error() -> SqlError {
        SqlError::new(
            SqlErrorKind::Other,
            "canceling statement due to user request",
        )
    }

    pub fn is_canceled(&self) -> bool {
        *self.inner.canceled.borrow()
    }

    /// Resolves once the read is canceled (for callers that wait on another node instead).
    pub async fn canceled(&self) {
        let mut receiver = self.inner.canceled.subscribe();
        // The sender lives in `self`, so the wait cannot fail while `self` is borrowed.
        let _ = receiver.wait_for(|canceled| *canceled).await;
    }

    /// Cancels the read: marks it canceled, then interrupts its connection if it is running.
    /// Ordering: the mark comes first, and [`Self::attach`] sets the handle before the reader
    /// checks the mark, so a cancel racing the start is seen by one side or the other.
    pub fn cancel(&self) {
        self.inner.canceled.send_replace(true);
        self.interrupt_if_running();
    }

    /// Interrupts the connection again if the read is still running; false once it is not.
    /// SQLite forgets an interrupt that lands between statements or before the first step,
    /// so a canceler repeats this a few times while the read is still attached.
    pub fn interrupt_if_running(&self) -> bool {
        let running = self.inner.running.lock().expect("read cancel lock");
        match running.as_ref() {
            Some(handle) => {
                handle.interrupt();
                true
            }
            None => false,
        }
    }

    fn attach(&self, handle: InterruptHandle) -> Attached<'_> {
        *self.inner.running.lock().expect("read cancel lock") = Some(handle);
        Attached(self)
    }
}

/// A read attached to its connection; detaches on drop.
struct Attached<'a>(&'a ReadCancel);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        *self.0.inner.running.lock().expect("read cancel lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sqlite::{Database, DatabaseOptions};

    const RUNAWAY: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

    #[test]
    fn a_canceled_read_is_interrupted_and_its_reader_serves_the_next_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let database =
            Database::open(dir.path().join("db.sqlite"), DatabaseOptions::default()).expect("open");
        let readers = database.readers();
        let cancel = ReadCancel::new();
        let running = {
            let (readers, cancel) = (readers.clone(), cancel.clone());
            std::thread::spawn(move || {
                readers.read_cancelable(&StatementRequest::new(RUNAWAY), &cancel)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let canceled_at = Instant::now();
        cancel.cancel();
        let outcome = running.join().expect("read thread");
        assert!(canceled_at.elapsed() < Duration::from_secs(2));
        assert_eq!(outcome, Err(ReadCancel::error()));
        assert!(
            !cancel.interrupt_if_running(),
            "detached once the read ended"
        );
        let next = readers
            .read_cancelable(&StatementRequest::new("SELECT 1"), &ReadCancel::new())
            .expect("the same reader reads again");
        assert_eq!(next.rows, vec![vec![crate::sqlite::Value::Integer(1)]]);
    }

    #[test]
    fn a_cancel_before_the_read_stops_it_and_one_after_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let database =
            Database::open(dir.path().join("db.sqlite"), DatabaseOptions::default()).expect("open");
        let readers = database.readers();
        let early = ReadCancel::new();
        early.cancel();
        assert_eq!(
            readers.read_cancelable(&StatementRequest::new(RUNAWAY), &early),
            Err(ReadCancel::error())
        );
        let late = ReadCancel::new();
        let result = readers
            .read_cancelable(&StatementRequest::new("SELECT 2"), &late)
            .expect("read");
        late.cancel();
        assert_eq!(result.rows, vec![vec![crate::sqlite::Value::Integer(2)]]);
        // The reader the late cancel ran on is not interrupted for the next read.
        assert!(readers.read(&StatementRequest::new("SELECT 3")).is_ok());
    }
}
