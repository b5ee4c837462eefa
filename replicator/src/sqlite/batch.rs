//! The master's side of the write path (PhxSQL): a [`Batch`] is one SQLite transaction on the
//! writer, each client statement in its own SAVEPOINT so a failing statement fails alone. When
//! the batch is finished it becomes the value to propose; the transaction stays open in a
//! [`PendingCommit`] until the runtime learns what instance `base + 1` chose.
//!
//! Ordering obligations:
//! - Nothing of a batch is visible to readers before [`PendingCommit::commit`]: readers are
//!   separate WAL connections and the transaction is still open.
//! - `finish` checks everything that could make COMMIT fail (a dead transaction, deferred
//!   foreign keys, the value size) **before** the value is proposed: propose only values that
//!   will commit.
//! - `commit` writes the applied instance in the same transaction, then COMMITs. A COMMIT that
//!   fails after the value was chosen is fatal ([`SqliteError::CommitAfterChosen`]).
//! - Dropping a batch or pending commit without finishing rolls back: nothing half-done stays.

use std::time::Instant;

use paxsql_schema::{paxos_value::Payload, BinlogBatch, Message, PaxosValue, Statement};

use super::connection::value_to_proto;
use super::database::{write_applied, Database};
use super::error::{classify, SqliteError};
use super::meta::PAXSQL_TABLE_PREFIX;
use super::policy;
use super::types::{Column, SqlError, SqlErrorKind, StatementRequest, StatementResult};
use super::vfs::TimePin;

/// Bytes a statement's result fields (rows changed, digest, rowid, flag) and framing add to
/// its SQL and parameters in the encoded value, at most.
const STATEMENT_OVERHEAD_BYTES: usize = 48;

/// An open master transaction: autocommit writes batched together, or one interactive
/// transaction (`BEGIN … COMMIT`, where COMMIT = [`Batch::finish`]).
pub struct Batch<'db> {
    database: Option<&'db mut Database>,
    record: BinlogBatch,
    value_bytes: usize,
    /// Set when a statement ended the whole transaction: every statement of the batch fails.
    dead: Option<SqlError>,
    /// When the batch began: with the statement time limit, its time budget.
    started: Instant,
    /// An interactive transaction's batch: one client owns it, so its SAVEPOINT, RELEASE and
    /// ROLLBACK TO may run (see [`Batch::allow_client_savepoints`]).
    client_savepoints: bool,
}

/// A finished batch whose transaction waits for the Paxos outcome of instance `base + 1`.
/// It keeps only the batch's identity: the value itself goes to Paxos without a copy.
pub struct PendingCommit<'db> {
    database: Option<&'db mut Database>,
    identity: BatchIdentity,
}

/// What tells one batch from another at the same instance without comparing statements: the
/// pinned time and the 64-bit random seed are drawn per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchIdentity {
    base_instance: u64,
    time_unix_ms: i64,
    random_seed: u64,
    statement_count: usize,
}

impl BatchIdentity {
    fn of(batch: &BinlogBatch) -> BatchIdentity {
        BatchIdentity {
            base_instance: batch.base_instance,
            time_unix_ms: batch.time_unix_ms,
            random_seed: batch.random_seed,
            statement_count: batch.statements.len(),
        }
    }
}

impl Database {
    /// Opens a master batch on the writer, executed on top of `base_instance` (which must be
    /// the applied instance) with pinned time and random seed. The batch's time is raised to
    /// the last applied value's time if needed, so pinned time never goes back along the log.
    pub fn begin_batch(
        &mut self,
        base_instance: u64,
        time_unix_ms: i64,
        random_seed: u64,
    ) -> Result<Batch<'_>, SqliteError> {
        if !self.accepts_writes {
            return Err(SqliteError::NotAcceptingWrites);
        }
        if self.applied_instance != Some(base_instance) {
            return Err(SqliteError::StaleBase {
                given: base_instance,
                applied: self.applied_instance,
            });
        }
        if !self.writer.connection.is_autocommit() {
            return Err(SqliteError::WriterBusy);
        }
        if let Err(source) = self.writer.execute_cached("BEGIN IMMEDIATE") {
            return Err(SqliteError::Sqlite {
                context: "beginning a batch".into(),
                source,
            });
        }
        self.writer.set_writes_open(true);
        // Every batch starts from the same last_insert_rowid on master and replicas.
        self.writer.set_last_insert_rowid(0);
        let record = BinlogBatch {
            statements: Vec::new(),
            base_instance,
            time_unix_ms: time_unix_ms.max(self.time_unix_ms),
            random_seed,
        };
        let value_bytes = record.encoded_len();
        Ok(Batch {
            database: Some(self),
            record,
            value_bytes,
            dead: None,
            started: Instant::now(),
            client_savepoints: false,
        })
    }
}

impl<'db> Batch<'db> {
    fn database(&self) -> &Database {
        self.database
            .as_deref()
            .expect("a live batch holds the database")
    }

    /// The pinned time of this batch (after the monotonic floor).
    pub fn time_unix_ms(&self) -> i64 {
        self.record.time_unix_ms
    }

    /// The columns `sql` would return, as this batch's open transaction sees the schema (a
    /// table it created included). Nothing runs: a Parse inside `BEGIN`.
    pub fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        let writer = &self.database().writer;
        let described = writer
            .describe(sql, false)
            .expect("a describe that may wait always answers");
        if writer.connection.is_autocommit() {
            // An I/O error while reading rolls back the whole transaction, even for a read.
            self.dead = Some(SqlError::new(
                SqlErrorKind::Other,
                "the transaction was rolled back by an error while a statement was described",
            ));
        }
        described
    }

    /// The value this batch would propose, as far as it ran.
    pub fn record(&self) -> &BinlogBatch {
        &self.record
    }

    pub fn statement_count(&self) -> usize {
        self.record.statements.len()
    }

    /// True once a statement ended the whole transaction.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// Records a lease renewal of node `node_id` chosen at the batch's instance while the
    /// batch ran, inside the batch's transaction, and moves the batch onto it (it will be
    /// proposed for the instance after). A lease leaves user tables as the statements saw
    /// them, so they need not run again; a batch that runs longer than the renewal interval
    /// (a quarter of the lease) would otherwise lose its instance to every renewal, run again,
    /// and lose again. `false` (nothing changed, or the batch must be abandoned if the
    /// recording failed half-way) when the value is anything else, or when a statement of the
    /// batch names paxsql's own tables (it may have read what the lease changes).
    pub fn absorb_lease_renewal(
        &mut self,
        instance_id: u64,
        value: &PaxosValue,
        checksum_after: u64,
        node_id: u32,
    ) -> bool {
        let own_renewal = matches!(
            &value.payload,
            Some(Payload::MasterLease(lease)) if lease.master_id == node_id
        );
        let reads_paxsql_tables = || {
            self.record.statements.iter().any(|statement| {
                policy::contains_ignore_ascii_case(&statement.sql, PAXSQL_TABLE_PREFIX)
            })
        };
        if !own_renewal
            || self.dead.is_some()
            || instance_id != self.record.base_instance + 1
            || reads_paxsql_tables()
        {
            return false;
        }
        match self
            .database()
            .apply_payload(instance_id, value, checksum_after)
        {
            Ok(_) => {
                self.record.base_instance = instance_id;
                true
            }
            Err(error) => {
                tracing::warn!(instance_id, %error, "recording a lease renewal inside a batch failed; the batch runs again");
                false
            }
        }
    }

    /// True once the batch has held the writer for longer than one statement may. The limit
    /// bounds each statement; this bounds a batch of independent writes: the caller stops
    /// adding units (those left wait for the next batch), so many slow autocommit writes
    /// queued together do not hold every other write for several limits. A transaction (a
    /// multi-statement message, `BEGIN … COMMIT`) is one unit: it holds the writer until its
    /// end, as a transaction holds SQLite's write lock.
    pub fn is_past_time_budget(&self) -> bool {
        self.started.elapsed() > self.database().options.statement_time_max
    }

    /// Runs one statement in its own savepoint. A failing statement fails alone, unless it
    /// ended the whole transaction (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`, FULL, IOERR, BUSY):
    /// then the batch is dead and every statement in it fails.
    pub fn execute(&mut self, request: &StatementRequest) -> Result<StatementResult, SqlError> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        let mut statement = Statement {
            sql: request.sql.clone(),
            params: request.params.iter().map(value_to_proto).collect(),
            ..Statement::default()
        };
        self.check_limits(&statement)?;
        let statement_index = self.record.statements.len();
        let outcome = if self.client_savepoints && policy::is_savepoint_control(&request.sql) {
            self.run_savepoint_control(request)
        } else {
            self.run_in_savepoint(request, statement_index)
        };
        let writer = &self.database().writer;
        statement.last_insert_rowid = writer.connection.last_insert_rowid();
        match &outcome {
            Ok(executed) => {
                statement.rows_changed = executed.result.rows_changed;
                statement.effect_digest = executed.effect_digest;
            }
            Err(_) => statement.failed = true,
        }
        self.value_bytes += statement.encoded_len() + STATEMENT_OVERHEAD_BYTES;
        self.record.statements.push(statement);
        outcome.map(|executed| executed.result)
    }

    fn check_limits(&self, statement: &Statement) -> Result<(), SqlError> {
        let options = &self.database().options;
        if self.record.statements.len() >= options.batch_statements_max {
            return Err(SqlError::new(
                SqlErrorKind::LimitExceeded,
                format!(
                    "a transaction holds at most {} statements; commit and start a new one",
                    options.batch_statements_max
                ),
            ));
        }
        let bytes = self.value_bytes + statement.encoded_len() + STATEMENT_OVERHEAD_BYTES;
        if bytes > options.value_bytes_max {
            return Err(SqlError::new(
                SqlErrorKind::LimitExceeded,
                format!(
                    "this statement would make the transaction's replicated value {bytes} bytes, over the \
                     limit of {} bytes; split it into smaller transactions",
                    options.value_bytes_max
                ),
            ));
        }
        Ok(())
    }

    /// Lets the client's own SAVEPOINT, RELEASE and ROLLBACK TO run in this batch. Only for an
    /// interactive transaction: in a batch of autocommit statements from many clients, one
    /// client's ROLLBACK TO would undo statements other clients were told succeeded.
    pub fn allow_client_savepoints(&mut self) {
        self.client_savepoints = true;
    }

    /// Runs a client's savepoint statement as it is: wrapped in a savepoint of paxsql's own, the
    /// wrapper's RELEASE would release the client's savepoint with it. A savepoint statement
    /// changes no row and fails whole, so it needs no wrapper to fail alone. Replicas replay it
    /// in the same place, so a ROLLBACK TO undoes the same statements everywhere.
    fn run_savepoint_control(
        &mut self,
        request: &StatementRequest,
    ) -> Result<super::connection::Executed, SqlError> {
        let writer = &self.database().writer;
        let outcome = writer.execute_savepoint_control(&request.sql, &request.params);
        if outcome.is_err() && writer.connection.is_autocommit() {
            // Never expected (no savepoint statement ends a transaction), checked as after any
            // error (DESIGN "Rules that keep it correct").
            self.dead = Some(SqlError::new(
                SqlErrorKind::Other,
                "the transaction ended at a savepoint statement; every statement of it was rolled back",
            ));
        }
        outcome
    }

    fn run_in_savepoint(
        &mut self,
        request: &StatementRequest,
        statement_index: usize,
    ) -> Result<super::connection::Executed, SqlError> {
        let time_unix_ms = self.record.time_unix_ms;
        let random_seed = self.record.random_seed;
        let time_max = self.database().options.statement_time_max;
        let writer = &self.database().writer;
        let internal = |error: rusqlite::Error| {
            SqlError::new(
                SqlErrorKind::Other,
                format!("paxsql savepoint failed: {error}"),
            )
        };
        writer
            .execute_cached("SAVEPOINT paxsql_statement")
            .map_err(internal)?;
        writer.seed_random(random_seed, statement_index);
        let outcome = {
            let _time = TimePin::new(time_unix_ms);
            writer.execute_within(&request.sql, &request.params, time_max)
        };
        let Err(error) = outcome else {
            writer
                .execute_cached("RELEASE paxsql_statement")
                .map_err(internal)?;
            return outcome;
        };
        if writer.connection.is_autocommit() {
            // The statement ended the whole transaction, not just its savepoint.
            self.dead = Some(SqlError::new(
                error.kind.clone(),
                format!(
                    "statement {} ended the whole transaction ({}); every statement of it was rolled back",
                    statement_index + 1,
                    error.message
                ),
            ));
            return Err(error);
        }
        let undo = writer
            .connection
            .execute_batch("ROLLBACK TO paxsql_statement; RELEASE paxsql_statement");
        if let Err(undo_error) = undo {
            self.dead = Some(SqlError::new(
                SqlErrorKind::Other,
                format!("the transaction could not be undone: {undo_error}"),
            ));
        }
        Err(error)
    }

    /// Ends the batch: checks that COMMIT will succeed and returns the value to propose, with
    /// the transaction still open. On error the whole batch is rolled back and nothing is
    /// proposed; the error applies to every statement of the batch.
    pub fn finish(mut self) -> Result<(BinlogBatch, PendingCommit<'db>), SqlError> {
        let failure = self.commit_blocker();
        let database = self
            .database
            .take()
            .expect("a live batch holds the database");
        let record = std::mem::take(&mut self.record);
        let pending = PendingCommit {
            database: Some(database),
            identity: BatchIdentity::of(&record),
        };
        if let Some(error) = failure {
            // Dropping the pending commit rolls back.
            drop(pending);
            return Err(error);
        }
        Ok((record, pending))
    }

    fn commit_blocker(&self) -> Option<SqlError> {
        if let Some(dead) = &self.dead {
            return Some(dead.clone());
        }
        let writer = &self.database().writer;
        let violations = writer.deferred_foreign_key_violations();
        if violations > 0 {
            return Some(SqlError::new(
                SqlErrorKind::ForeignKeyViolation,
                format!(
                    "the transaction leaves {violations} deferred foreign key violations; it was rolled back \
                     — insert the referenced rows in the same transaction"
                ),
            ));
        }
        let bytes = self.record.encoded_len();
        let limit = self.database().options.value_bytes_max;
        if bytes > limit {
            return Some(SqlError::new(
                SqlErrorKind::LimitExceeded,
                format!("the transaction's replicated value is {bytes} bytes, over the limit of {limit}; split it"),
            ));
        }
        None
    }

    /// Abandons the batch: nothing of it stays.
    pub fn rollback(self) {
        drop(self);
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            rollback_writer(database);
        }
    }
}

impl<'db> PendingCommit<'db> {
    /// Whether `chosen` is the batch this transaction proposed. Call it only for a value the
    /// group delivered as proposed here (`Delivered::proposed_here`): the value id already
    /// tells this node's proposals apart; this also checks that it is this very batch.
    pub fn is_this_batch(&self, chosen: &BinlogBatch) -> bool {
        BatchIdentity::of(chosen) == self.identity
    }

    /// Instance `instance_id` chose this batch (`value` is the chosen value, delivered as
    /// proposed here and [`PendingCommit::is_this_batch`]): record the applied instance in the
    /// same transaction and COMMIT. A failure here is fatal: the value is chosen and this node
    /// can no longer commit it.
    pub fn commit(self, instance_id: u64, value: &PaxosValue) -> Result<(), SqliteError> {
        let checksum_after = crate::paxos::chain_checksum(value.checksum_before, value);
        self.commit_with_checksum(instance_id, value, checksum_after)
    }

    /// [`PendingCommit::commit`] with the running log checksum after the value already known.
    pub fn commit_with_checksum(
        mut self,
        instance_id: u64,
        value: &PaxosValue,
        checksum_after: u64,
    ) -> Result<(), SqliteError> {
        // Checked before the database is taken: a failed check drops `self`, which rolls back.
        assert_eq!(
            instance_id,
            self.identity.base_instance + 1,
            "a batch commits at the instance after its base"
        );
        let Some(Payload::Binlog(chosen)) = &value.payload else {
            panic!("commit is called only when instance {instance_id} chose this batch, not another payload");
        };
        assert!(
            self.is_this_batch(chosen),
            "commit is called only when instance {instance_id} chose this very batch"
        );
        let database = self
            .database
            .take()
            .expect("a pending commit holds the database");
        let connection = &database.writer.connection;
        let fatal = |detail: String| SqliteError::CommitAfterChosen {
            instance_id,
            detail,
        };
        write_applied(
            connection,
            instance_id,
            value,
            checksum_after,
            self.identity.time_unix_ms,
        )
        .map_err(|error| fatal(error.to_string()))?;
        database
            .writer
            .execute_cached("COMMIT")
            .map_err(|error| fatal(error.to_string()))?;
        database.applied_instance = Some(instance_id);
        database.time_unix_ms = self.identity.time_unix_ms;
        database.writer.set_writes_open(false);
        Ok(())
    }

    /// Another value won the instance (or it was never proposed): roll back. The runtime then
    /// applies the chosen value with [`Database::apply_with_checksum`].
    pub fn rollback(self) {
        drop(self);
    }
}

impl Drop for PendingCommit<'_> {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            rollback_writer(database);
        }
    }
}

/// Rolls back whatever the writer has open and closes it for client writes again. A failure to roll back
/// leaves the writer unusable, which is a broken invariant.
fn rollback_writer(database: &mut Database) {
    let connection = &database.writer.connection;
    if !connection.is_autocommit() {
        if let Err(error) = connection.execute_batch("ROLLBACK") {
            panic!(
                "ROLLBACK of an open batch failed ({error}); the writer is unusable: {}",
                classify(&error)
            );
        }
    }
    database.writer.set_writes_open(false);
}
