//! A bounded pool of read-only reader connections.
//!
//! Readers are `query_only` connections on the same WAL file: each statement reads the last
//! committed state and never sees the writer's open transaction (a batch waiting for its
//! instance to be chosen). Connections open lazily up to the bound; past it a read gets a fast
//! "busy" error instead of queueing without limit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::connection::{ConnectionOptions, PaxConnection};
use super::error::SqliteError;
use super::types::{SqlError, SqlErrorKind, StatementRequest, StatementResult};

/// Default bound on reader connections per group.
pub const READERS_MAX_DEFAULT: usize = 16;

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
    /// Set while a checkpoint is installed: no connection may be opened or returned.
    closed: bool,
}

/// A reader checked out of the pool; it returns on drop.
pub struct Reader {
    connection: Option<PaxConnection>,
    pool: Arc<PoolInner>,
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
        let mut state = self.inner.state.lock().expect("pool lock");
        if state.closed {
            return Err(SqlError::new(
                SqlErrorKind::Busy,
                "the database is being replaced by a checkpoint; retry shortly",
            ));
        }
        if let Some(connection) = state.idle.pop() {
            state.in_use += 1;
            return Ok(Reader {
                connection: Some(connection),
                pool: Arc::clone(&self.inner),
            });
        }
        if state.in_use >= self.inner.readers_max {
            return Err(SqlError::new(
                SqlErrorKind::Busy,
                format!(
                    "all {} reader connections of this database are busy; retry shortly",
                    self.inner.readers_max
                ),
            ));
        }
        state.in_use += 1;
        drop(state);
        match PaxConnection::open_reader(&self.inner.path, &self.inner.options) {
            Ok(connection) => Ok(Reader {
                connection: Some(connection),
                pool: Arc::clone(&self.inner),
            }),
            Err(error) => {
                self.inner.state.lock().expect("pool lock").in_use -= 1;
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

    /// An idle reader, never opening one (opening does file I/O).
    fn get_idle(&self) -> Option<Reader> {
        let mut state = self.inner.state.lock().expect("pool lock");
        if state.closed {
            return None;
        }
        let connection = state.idle.pop()?;
        state.in_use += 1;
        Some(Reader {
            connection: Some(connection),
            pool: Arc::clone(&self.inner),
        })
    }

    /// Runs a read-only statement on a reader.
    pub fn read(&self, request: &StatementRequest) -> Result<StatementResult, SqlError> {
        let reader = self.get()?;
        reader.execute(request).map(|executed| executed.result)
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
