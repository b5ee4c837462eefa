//! [`SqlService`]: the async face of one group's SQL, used by the proxy.
//!
//! Writes and transactions go to the writer thread; reads run on the reader pool (short ones in
//! place on the async worker under a step budget, longer ones in `spawn_blocking`), checked
//! against the session's consistency level:
//! - `local`: this replica as it is.
//! - `lease`: only the serving master answers; the read takes its snapshot first and checks the
//!   lease second, so a lease that ended during the read is never trusted.
//! - `linearizable`: the master first confirms through a majority (read index) that it still
//!   holds the highest ballot, waits until it has applied what was chosen, then reads.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::WRITE_OUTCOME_WAIT_MS;
use crate::paxos::InstanceId;
use crate::runtime::group::{Delivered, GroupHandle};
use crate::runtime::log_writer::FatalHandler;
use crate::sqlite::wal::WalCheckpointStats;
use crate::sqlite::{
    Column, Consistency, Database, ReadCancel, ReaderPool, SqlError, SqlErrorKind,
    StatementRequest, StatementResult,
};

use super::checkpoints::ChecksumRing;
use super::writer::{self, WriterContext, WriterMessage, WriterQueues, WRITER_QUEUE_MAX};

/// How long a client waits for the outcome of its write before hearing "unknown" (40003).
pub const WRITE_OUTCOME_WAIT: Duration = Duration::from_millis(WRITE_OUTCOME_WAIT_MS);
/// How long a linearizable read waits for the replica to apply what was chosen.
pub const READ_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Progress-handler calls (each `PROGRESS_OPS_PER_CALL` SQLite VM instructions, tens of
/// microseconds) a read may take on an async worker before it moves to a blocking thread.
/// Point reads finish far below it and skip two thread hand-offs; scans move.
pub const INLINE_READ_CALLS_MAX: u32 = 4;
/// How often the writer thread is ticked (idle-transaction timeouts).
const WRITER_TICK: Duration = Duration::from_millis(100);

/// One group's SQL on this node.
#[derive(Clone)]
pub struct SqlService {
    node_id: u32,
    group: GroupHandle,
    sender: mpsc::Sender<WriterMessage>,
    readers: ReaderPool,
    applied: watch::Receiver<Option<InstanceId>>,
    database_path: std::path::PathBuf,
    /// The running log checksum after each recently delivered instance (for checkpoints).
    checksums: std::sync::Arc<ChecksumRing>,
    wal_stats: std::sync::Arc<WalCheckpointStats>,
}

impl SqlService {
    /// Starts the writer thread over `database`, fed by the group's `deliveries`.
    pub fn start(
        node_id: u32,
        database: Database,
        group: GroupHandle,
        deliveries: mpsc::Receiver<Delivered>,
        fatal: FatalHandler,
    ) -> std::io::Result<SqlService> {
        let (sender, receiver) = mpsc::channel(WRITER_QUEUE_MAX);
        let (applied_sender, applied) = watch::channel(database.applied_instance());
        let readers = database.readers();
        let database_path = database.path().to_path_buf();
        let wal_stats = database.wal_checkpoint_stats().clone();
        let checksums = std::sync::Arc::new(ChecksumRing::default());
        let runtime = tokio::runtime::Handle::current();
        // Chosen values go from the driver straight to the writer thread, waiting for room
        // there (backpressure on the driver); they are never dropped.
        let queues = WriterQueues {
            sender: sender.clone(),
            receiver,
            deliveries,
            checksums: checksums.clone(),
        };
        let context = WriterContext::new(
            node_id,
            group.clone(),
            runtime.clone(),
            queues,
            applied_sender,
            fatal,
        );
        std::thread::Builder::new()
            .name(format!("writer-{}", group.name()))
            .spawn(move || writer::run(database, context))?;
        let tick_sender = sender.clone();
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(WRITER_TICK);
            loop {
                interval.tick().await;
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tick_sender.try_send(WriterMessage::Tick)
                {
                    return;
                }
            }
        });
        Ok(SqlService {
            node_id,
            group,
            sender,
            readers,
            applied,
            database_path,
            checksums,
            wal_stats,
        })
    }

    /// How often this replica's WAL was checkpointed, and by whom (`/metrics`).
    pub fn wal_checkpoint_stats(&self) -> &WalCheckpointStats {
        &self.wal_stats
    }

    /// The reader pool (checkpoints are copied from a reader, off the writer thread).
    pub fn readers(&self) -> &ReaderPool {
        &self.readers
    }

    pub fn database_path(&self) -> &std::path::Path {
        &self.database_path
    }

    pub fn checksums(&self) -> &std::sync::Arc<ChecksumRing> {
        &self.checksums
    }

    /// The version (the instance that chose it) of the member list this replica applied.
    pub fn members_version(&self) -> Option<u64> {
        let reader = self.readers.get().ok()?;
        crate::sqlite::meta::get_i64(
            &reader.connection,
            crate::sqlite::meta::key::MEMBERS_VERSION,
        )
        .ok()
        .flatten()
        .map(|version| version as u64)
    }

    /// Wakes on every change of the applied instance.
    pub fn applied_watch(&self) -> watch::Receiver<Option<InstanceId>> {
        self.applied.clone()
    }

    /// Replaces the replica with a verified checkpoint file on the writer thread; answers the
    /// instance it holds. `Busy` errors are worth retrying.
    pub async fn install_checkpoint(
        &self,
        file: std::path::PathBuf,
    ) -> Result<InstanceId, SqlError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterMessage::InstallCheckpoint { file, reply })
            .await
            .map_err(|_| SqlError::new(SqlErrorKind::Other, "the writer has stopped"))?;
        answer.await.map_err(|_| {
            SqlError::new(SqlErrorKind::Other, "the writer stopped while installing")
        })?
    }

    pub fn group(&self) -> &GroupHandle {
        &self.group
    }

    /// The highest instance this replica has applied.
    pub fn applied_instance(&self) -> Option<InstanceId> {
        *self.applied.borrow()
    }

    fn serving(&self) -> bool {
        let status = self.group.status();
        status.serving_as_master
            && status.master_id == Some(self.node_id)
            && status.halted.is_none()
    }

    fn enqueue(&self, message: WriterMessage) -> Result<(), SqlError> {
        self.sender.try_send(message).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SqlError::new(
                SqlErrorKind::Busy,
                "the writer's queue is full; retry shortly",
            ),
            mpsc::error::TrySendError::Closed(_) => SqlError::new(
                SqlErrorKind::NotMaster,
                "this group's writer has stopped; the statement was not executed",
            ),
        })
    }

    /// One atomic unit of autocommit statements; answers once its value is chosen.
    pub async fn write(
        &self,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(WriterMessage::Write { statements, reply })?;
        await_outcome(answer).await
    }

    /// Opens an interactive transaction on the master's writer.
    pub async fn begin(&self) -> Result<SqlTransaction, SqlError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(WriterMessage::Begin { reply })?;
        let id = await_outcome(answer).await?;
        Ok(SqlTransaction {
            id,
            sender: self.sender.clone(),
            open: true,
        })
    }

    /// Reads at `consistency` (see the module docs).
    pub async fn read(
        &self,
        statement: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        self.read_cancelable(statement, consistency, ReadCancel::new())
            .await
    }

    /// [`Self::read`] that `cancel` can interrupt (PostgreSQL's CancelRequest): a canceled read
    /// fails with [`ReadCancel::error`]. Reads change nothing, so canceling one is always safe.
    pub async fn read_cancelable(
        &self,
        statement: StatementRequest,
        consistency: Consistency,
        cancel: ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        match consistency {
            Consistency::Local => {}
            Consistency::Lease => {
                if !self.serving() {
                    return Err(not_serving());
                }
            }
            Consistency::Linearizable => {
                if !self.serving() || !self.group.read_index().await {
                    return Err(not_serving());
                }
                self.wait_applied_chosen().await?;
            }
        }
        let result = match self
            .readers
            .read_within_budget(&statement, INLINE_READ_CALLS_MAX)
        {
            Some(result) => result,
            None => {
                let readers = self.readers.clone();
                tokio::task::spawn_blocking(move || readers.read_cancelable(&statement, &cancel))
                    .await
                    .map_err(|error| {
                        SqlError::new(SqlErrorKind::Other, format!("read task failed: {error}"))
                    })??
            }
        };
        // Snapshot first, lease second: a lease that ended during the read is not trusted.
        if consistency != Consistency::Local && !self.serving() {
            return Err(not_serving());
        }
        Ok(result)
    }

    async fn wait_applied_chosen(&self) -> Result<(), SqlError> {
        let Some(target) = self.group.status().chosen_instance else {
            return Ok(());
        };
        let mut applied = self.applied.clone();
        let caught_up = tokio::time::timeout(READ_CATCH_UP_WAIT, async move {
            applied
                .wait_for(|applied| applied.is_some_and(|applied| applied >= target))
                .await
                .is_ok()
        });
        match caught_up.await {
            Ok(true) => Ok(()),
            _ => Err(SqlError::new(
                SqlErrorKind::NotMaster,
                format!("this master has not applied instance {target} within {READ_CATCH_UP_WAIT:?}; retry"),
            )),
        }
    }

    /// Whether SQLite itself says `sql` only reads.
    pub async fn is_read_only(&self, sql: &str) -> Result<bool, SqlError> {
        let readers = self.readers.clone();
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || readers.is_read_only(&sql))
            .await
            .map_err(|error| SqlError::new(SqlErrorKind::Other, format!("task failed: {error}")))?
    }

    /// The result columns of `sql` without running it.
    pub async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        describe_with(self.readers.clone(), sql.to_string()).await
    }
}

/// Compiling a statement takes microseconds: in place on an idle reader when it can be done
/// without waiting (a hop to a blocking thread cost ~0.1 ms of every extended-protocol Parse,
/// which describes the statement and each table it names), else on a blocking thread.
async fn describe_with(readers: ReaderPool, sql: String) -> Result<Vec<Column>, SqlError> {
    if let Some(described) = readers.describe_in_place(&sql) {
        return described;
    }
    tokio::task::spawn_blocking(move || {
        readers
            .get()?
            .describe(&sql, false)
            .expect("a describe that may wait always answers")
    })
    .await
    .map_err(|error| SqlError::new(SqlErrorKind::Other, format!("task failed: {error}")))?
}

fn not_serving() -> SqlError {
    SqlError::new(
        SqlErrorKind::NotMaster,
        "this node is not the serving master for this read; the read was not answered",
    )
}

async fn await_outcome<T>(answer: oneshot::Receiver<Result<T, SqlError>>) -> Result<T, SqlError> {
    match tokio::time::timeout(WRITE_OUTCOME_WAIT, answer).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(SqlError::new(
            SqlErrorKind::Unknown,
            "the writer stopped before answering; the outcome is unknown, check before retrying",
        )),
        Err(_) => Err(SqlError::new(
            SqlErrorKind::Unknown,
            format!("no outcome within {WRITE_OUTCOME_WAIT:?} (an election or a partition?); the write may or may not be applied, check before retrying"),
        )),
    }
}

/// An open interactive transaction on the master's writer. Dropping it rolls it back.
pub struct SqlTransaction {
    id: u64,
    sender: mpsc::Sender<WriterMessage>,
    open: bool,
}

impl SqlTransaction {
    pub async fn execute(
        &mut self,
        statement: StatementRequest,
    ) -> Result<StatementResult, SqlError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriterMessage::TransactionStatement {
            transaction: self.id,
            statement,
            reply,
        })
        .await?;
        await_outcome(answer).await
    }

    /// Columns of `sql` as this transaction sees the schema (a table it created included):
    /// described on the writer, inside the transaction.
    pub async fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriterMessage::TransactionDescribe {
            transaction: self.id,
            sql: sql.to_string(),
            reply,
        })
        .await?;
        await_outcome(answer).await
    }

    pub async fn commit(mut self) -> Result<(), SqlError> {
        self.open = false;
        let (reply, answer) = oneshot::channel();
        self.send(WriterMessage::Commit {
            transaction: self.id,
            reply,
        })
        .await?;
        await_outcome(answer).await
    }

    pub async fn rollback(mut self) -> Result<(), SqlError> {
        self.open = false;
        self.send(WriterMessage::Rollback {
            transaction: self.id,
        })
        .await
    }

    async fn send(&self, message: WriterMessage) -> Result<(), SqlError> {
        // Statements of an open transaction wait for room: the writer is theirs.
        self.sender
            .send(message)
            .await
            .map_err(|_| SqlError::new(SqlErrorKind::Unknown, "this group's writer has stopped"))
    }
}

impl Drop for SqlTransaction {
    fn drop(&mut self) {
        if self.open {
            // Best effort; if the queue is full the idle timeout ends the transaction.
            let _ = self.sender.try_send(WriterMessage::Rollback {
                transaction: self.id,
            });
        }
    }
}
