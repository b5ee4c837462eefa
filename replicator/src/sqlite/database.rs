//! [`Database`]: one group's replica (`DIR/<group>/db.sqlite`) with its single writer, its
//! readers, and the apply path that replays chosen values.
//!
//! Ordering obligations:
//! - Instances are applied strictly in order; the applied instance id is written in the same
//!   SQLite transaction as the statements of that instance (exactly-once replay after a crash).
//! - The writer is closed to client writes whenever no batch or apply owns it, so a misrouted
//!   write fails instead of diverging: its authorizer refuses every non-read action
//!   (`PaxConnection::set_writes_open`). Only [`Database::apply_with_checksum`] and a master's
//!   [`Batch`] open it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paxsql_schema::{
    paxos_value::Payload, BinlogBatch, ClusterInit, MasterLease, Membership, PaxosValue,
};
use xxhash_rust::xxh3::Xxh3;

use super::connection::{value_from_proto, ConnectionOptions, PaxConnection};
use super::error::SqliteError;
use super::meta::{self, key, MetaSnapshot};
use super::policy;
use super::readers::{ReaderPool, READERS_MAX_DEFAULT};
use super::types::{SqlError, StatementRequest, StatementResult, Value};
use super::vfs::TimePin;
use super::wal::{self, WalCheckpointStats};
use crate::limits::{BATCH_STATEMENTS_MAX, STATEMENT_TIME_MAX_MS, VALUE_BYTES_MAX};

/// How a group's database is opened. Every node of a cluster must use the same connection
/// options; the limits may differ.
#[derive(Clone, Debug)]
pub struct DatabaseOptions {
    pub connection: ConnectionOptions,
    pub readers_max: usize,
    pub batch_statements_max: usize,
    pub value_bytes_max: usize,
    /// How long one client statement may run on the master's writer (never limits replays).
    pub statement_time_max: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            connection: ConnectionOptions::default(),
            readers_max: READERS_MAX_DEFAULT,
            batch_statements_max: BATCH_STATEMENTS_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            statement_time_max: Duration::from_millis(STATEMENT_TIME_MAX_MS),
        }
    }
}

/// What [`Database::apply`] did with an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The value took effect.
    Applied,
    /// The instance was already applied (replay after a crash): nothing happened.
    AlreadyApplied,
    /// A lease or membership change based on a stale version: recorded as applied, no effect
    /// (PhxPaxos MasterStateMachine / SystemVSM rule).
    StaleIgnored,
}

pub struct Database {
    pub(super) path: PathBuf,
    pub(super) options: DatabaseOptions,
    pub(super) writer: PaxConnection,
    pub(super) readers: ReaderPool,
    pub(super) applied_instance: Option<u64>,
    /// Pinned time of the last applied or committed value; new batches never go below it.
    pub(super) time_unix_ms: i64,
    pub(super) accepts_writes: bool,
    /// Kept across checkpoint installs (each reopen starts a new checkpoint thread).
    pub(super) wal_stats: Arc<WalCheckpointStats>,
}

impl Database {
    /// Opens (or creates) the replica at `path`: WAL, `synchronous=NORMAL`, fixed pragmas,
    /// `_paxsql_meta`. The node starts not accepting writes (see [`Database::set_accepts_writes`]).
    pub fn open(path: impl AsRef<Path>, options: DatabaseOptions) -> Result<Database, SqliteError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(SqliteError::io(parent))?;
        }
        let readers = ReaderPool::new(
            path.clone(),
            options.connection.clone(),
            options.readers_max,
        );
        Self::open_with_readers(path, options, readers, Arc::default())
    }

    pub(super) fn open_with_readers(
        path: PathBuf,
        options: DatabaseOptions,
        readers: ReaderPool,
        wal_stats: Arc<WalCheckpointStats>,
    ) -> Result<Database, SqliteError> {
        let mut writer = PaxConnection::open_writer(&path, &options.connection)?;
        wal::install(
            &mut writer.connection,
            readers.clone(),
            &path,
            Arc::clone(&wal_stats),
        )?;
        meta::create(&writer.connection)?;
        let snapshot = meta::snapshot(&writer.connection)?;
        // Client writes stay closed on the writer until a batch or an apply opens them.
        writer.set_writes_open(false);
        readers.reopen();
        Ok(Database {
            path,
            options,
            writer,
            readers,
            applied_instance: snapshot.applied_instance,
            time_unix_ms: snapshot.time_unix_ms.unwrap_or(0),
            accepts_writes: false,
            wal_stats,
        })
    }

    /// How often the WAL was checkpointed, and by whom (see [`super::wal`]).
    pub fn wal_checkpoint_stats(&self) -> &Arc<WalCheckpointStats> {
        &self.wal_stats
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last instance whose value is in this replica (None before instance 0).
    pub fn applied_instance(&self) -> Option<u64> {
        self.applied_instance
    }

    /// Pinned time of the last applied value: the floor for the next batch's time.
    pub fn time_unix_ms(&self) -> i64 {
        self.time_unix_ms
    }

    /// The replicated metadata (cluster id, members, master record…).
    pub fn meta(&self) -> Result<MetaSnapshot, SqliteError> {
        meta::snapshot(&self.writer.connection)
    }

    /// The master turns this on once it has applied everything chosen before its first
    /// instance; followers keep it off so only the apply path writes.
    pub fn set_accepts_writes(&mut self, accepts_writes: bool) {
        self.accepts_writes = accepts_writes;
    }

    pub fn accepts_writes(&self) -> bool {
        self.accepts_writes
    }

    /// The reader pool; clone it to read from other threads.
    pub fn readers(&self) -> ReaderPool {
        self.readers.clone()
    }

    /// Runs a read-only statement on a reader connection.
    pub fn read(&self, request: &StatementRequest) -> Result<StatementResult, SqlError> {
        self.readers.read(request)
    }

    /// See [`PaxConnection::is_read_only`].
    pub fn is_read_only(&self, sql: &str) -> Result<bool, SqlError> {
        self.readers.is_read_only(sql)
    }

    /// Replays chosen instance `instance_id`. Instances at or below the applied one are skipped
    /// (exactly-once); a gap is an error. A replay that diverges from the master's recorded
    /// effect returns [`SqliteError::Divergence`]: the caller must stop applying.
    pub fn apply(
        &mut self,
        instance_id: u64,
        value: &PaxosValue,
    ) -> Result<ApplyOutcome, SqliteError> {
        let checksum_after = crate::paxos::chain_checksum(value.checksum_before, value);
        self.apply_with_checksum(instance_id, value, checksum_after)
    }

    /// [`Database::apply`] with the running log checksum after the value already known (the
    /// group driver computes it once per instance; encoding the value again costs a copy).
    pub fn apply_with_checksum(
        &mut self,
        instance_id: u64,
        value: &PaxosValue,
        checksum_after: u64,
    ) -> Result<ApplyOutcome, SqliteError> {
        let expected = self.applied_instance.map_or(0, |applied| applied + 1);
        if instance_id < expected {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        if instance_id > expected {
            return Err(SqliteError::OutOfOrder {
                instance_id,
                expected,
            });
        }
        self.writer.set_writes_open(true);
        let outcome = self.apply_in_transaction(instance_id, value, checksum_after);
        self.writer.set_writes_open(false);
        outcome
    }

    fn apply_in_transaction(
        &mut self,
        instance_id: u64,
        value: &PaxosValue,
        checksum_after: u64,
    ) -> Result<ApplyOutcome, SqliteError> {
        self.writer
            .execute_cached("BEGIN IMMEDIATE")
            .map_err(SqliteError::sqlite("beginning the apply transaction"))?;
        let applied = self.apply_payload(instance_id, value, checksum_after);
        let (outcome, time_unix_ms) = match applied {
            Ok(applied) => applied,
            Err(error) => {
                // Nothing of a failed instance may stay; a failed ROLLBACK leaves the writer unusable.
                if !self.writer.connection.is_autocommit() {
                    if let Err(rollback_error) = self.writer.connection.execute_batch("ROLLBACK") {
                        panic!("ROLLBACK after a failed apply ({error}) failed: {rollback_error}");
                    }
                }
                return Err(error);
            }
        };
        // The value is chosen: a failed COMMIT leaves this node unable to follow the log.
        self.writer
            .execute_cached("COMMIT")
            .map_err(|source| SqliteError::CommitAfterChosen {
                instance_id,
                detail: source.to_string(),
            })?;
        self.applied_instance = Some(instance_id);
        self.time_unix_ms = time_unix_ms;
        Ok(outcome)
    }

    /// Applies the payload and records the applied instance, inside the open transaction.
    pub(super) fn apply_payload(
        &self,
        instance_id: u64,
        value: &PaxosValue,
        checksum_after: u64,
    ) -> Result<(ApplyOutcome, i64), SqliteError> {
        let mut time_unix_ms = self.time_unix_ms;
        let outcome = match &value.payload {
            Some(Payload::Binlog(batch)) => {
                self.replay_batch(instance_id, batch)?;
                time_unix_ms = batch.time_unix_ms;
                ApplyOutcome::Applied
            }
            Some(Payload::ClusterInit(init)) => self.record_cluster_init(instance_id, init)?,
            Some(Payload::MasterLease(lease)) => self.record_lease(instance_id, lease)?,
            Some(Payload::Membership(membership)) => {
                self.record_membership(instance_id, membership)?
            }
            Some(Payload::Opaque(_)) | Some(Payload::BatchedOpaque(_)) | None => {
                ApplyOutcome::Applied
            }
        };
        write_applied(
            &self.writer.connection,
            instance_id,
            value,
            checksum_after,
            time_unix_ms,
        )?;
        Ok((outcome, time_unix_ms))
    }

    /// Replays the statements of a master's batch with its pinned time, seeds and
    /// `last_insert_rowid`, and checks each effect against the master's.
    fn replay_batch(&self, instance_id: u64, batch: &BinlogBatch) -> Result<(), SqliteError> {
        let expected_base = instance_id
            .checked_sub(1)
            .ok_or(SqliteError::BaseMismatch {
                instance_id,
                base_instance: batch.base_instance,
                expected_base: 0,
            })?;
        if batch.base_instance != expected_base {
            return Err(SqliteError::BaseMismatch {
                instance_id,
                base_instance: batch.base_instance,
                expected_base,
            });
        }
        let _time = TimePin::new(batch.time_unix_ms);
        let mut previous_rowid = 0;
        for (statement_index, statement) in batch.statements.iter().enumerate() {
            self.writer.set_last_insert_rowid(previous_rowid);
            previous_rowid = statement.last_insert_rowid;
            if statement.failed {
                continue;
            }
            let diverged = |detail: String| SqliteError::Divergence {
                instance_id,
                statement_index,
                sql: statement.sql.clone(),
                detail,
            };
            // The SQL text is borrowed from the chosen value; only parameters are converted.
            let params: Vec<Value> = statement.params.iter().map(value_from_proto).collect();
            self.writer.seed_random(batch.random_seed, statement_index);
            // A savepoint statement that succeeded on the master came from an interactive
            // transaction (the only batches that run them).
            let executed = if policy::is_savepoint_control(&statement.sql) {
                self.writer
                    .execute_savepoint_control(&statement.sql, &params)
            } else {
                self.writer.execute(&statement.sql, &params)
            };
            let executed = executed.map_err(|error| {
                diverged(format!(
                    "it failed here but succeeded on the master: {error}"
                ))
            })?;
            let replica = (
                executed.result.rows_changed,
                executed.effect_digest,
                executed.last_insert_rowid,
            );
            let master = (
                statement.rows_changed,
                statement.effect_digest,
                statement.last_insert_rowid,
            );
            if replica != master {
                return Err(diverged(format!(
                    "(rows changed, effect digest, last_insert_rowid) is {replica:?} here but {master:?} on the master"
                )));
            }
        }
        Ok(())
    }

    fn record_cluster_init(
        &self,
        instance_id: u64,
        init: &ClusterInit,
    ) -> Result<ApplyOutcome, SqliteError> {
        let connection = &self.writer.connection;
        meta::set(connection, key::CLUSTER_GID, init.cluster_gid as i64)?;
        meta::set(connection, key::CLUSTER_NAME, init.cluster_name.as_str())?;
        set_members(connection, &init.members, instance_id)?;
        Ok(ApplyOutcome::Applied)
    }

    fn record_lease(
        &self,
        instance_id: u64,
        lease: &MasterLease,
    ) -> Result<ApplyOutcome, SqliteError> {
        let connection = &self.writer.connection;
        let current_version =
            meta::get_i64(connection, key::LEASE_VERSION)?.map_or(0, |version| version as u64);
        if lease.expected_version != current_version {
            return Ok(ApplyOutcome::StaleIgnored);
        }
        meta::set(connection, key::MASTER_ID, i64::from(lease.master_id))?;
        meta::set(connection, key::LEASE_MS, lease.lease_ms as i64)?;
        meta::set(connection, key::LEASE_VERSION, instance_id as i64)?;
        Ok(ApplyOutcome::Applied)
    }

    fn record_membership(
        &self,
        instance_id: u64,
        membership: &Membership,
    ) -> Result<ApplyOutcome, SqliteError> {
        let connection = &self.writer.connection;
        let current_version =
            meta::get_i64(connection, key::MEMBERS_VERSION)?.map_or(0, |version| version as u64);
        if membership.expected_version != current_version {
            return Ok(ApplyOutcome::StaleIgnored);
        }
        set_members(connection, &membership.members, instance_id)?;
        Ok(ApplyOutcome::Applied)
    }

    /// A deterministic hash of the schema and content of every user table (not `_paxsql_*`,
    /// not `sqlite_*`), read in one snapshot. Two replicas at the same instance must agree.
    pub fn content_hash(&self) -> Result<u64, SqliteError> {
        let reader = self.readers.get().map_err(|error| SqliteError::NotPaxsql {
            path: self.path.clone(),
            detail: error.message,
        })?;
        let connection = &reader.connection;
        let snapshot = connection
            .unchecked_transaction()
            .map_err(SqliteError::sqlite("opening a snapshot"))?;
        let hash = hash_user_content(connection)?;
        snapshot
            .finish()
            .map_err(SqliteError::sqlite("closing a snapshot"))?;
        Ok(hash)
    }
}

fn set_members(
    connection: &rusqlite::Connection,
    members: &[u32],
    instance_id: u64,
) -> Result<(), SqliteError> {
    let json = serde_json::to_string(members).expect("a list of integers always serializes");
    meta::set(connection, key::MEMBERS, json)?;
    meta::set(connection, key::MEMBERS_VERSION, instance_id as i64)
}

/// Records instance `instance_id` as applied. Must run inside the instance's transaction.
pub(super) fn write_applied(
    connection: &rusqlite::Connection,
    instance_id: u64,
    value: &PaxosValue,
    checksum_after: u64,
    time_unix_ms: i64,
) -> Result<(), SqliteError> {
    meta::set_five(
        connection,
        &[
            (key::APPLIED_INSTANCE, instance_id as i64),
            (key::APPLIED_VALUE_ID, value.value_id as i64),
            (key::APPLIED_CHECKSUM_BEFORE, value.checksum_before as i64),
            (key::APPLIED_CHECKSUM_AFTER, checksum_after as i64),
            (key::TIME_UNIX_MS, time_unix_ms),
        ],
    )
}

fn hash_user_content(connection: &rusqlite::Connection) -> Result<u64, SqliteError> {
    let context = "hashing the content";
    let mut hasher = Xxh3::new();
    let mut objects = connection
        .prepare(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
             ORDER BY type, name",
        )
        .map_err(SqliteError::sqlite(context))?;
    let objects: Vec<(String, String, String)> = objects
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(SqliteError::sqlite(context))?
        .collect::<Result<_, _>>()
        .map_err(SqliteError::sqlite(context))?;
    for (kind, name, sql) in &objects {
        hasher.update(format!("{kind}\0{name}\0{sql}\0").as_bytes());
        if kind != "table" {
            continue;
        }
        let without_rowid = sql
            .to_ascii_uppercase()
            .replace(char::is_whitespace, "")
            .contains("WITHOUTROWID");
        let quoted = name.replace('"', "\"\"");
        let query = if without_rowid {
            format!("SELECT * FROM \"{quoted}\"")
        } else {
            format!("SELECT _rowid_, * FROM \"{quoted}\" ORDER BY _rowid_")
        };
        hash_rows(connection, &query, &mut hasher)?;
    }
    Ok(hasher.digest())
}

fn hash_rows(
    connection: &rusqlite::Connection,
    query: &str,
    hasher: &mut Xxh3,
) -> Result<(), SqliteError> {
    let context = "hashing the content";
    let mut statement = connection
        .prepare(query)
        .map_err(SqliteError::sqlite(context))?;
    let column_count = statement.column_count();
    let mut rows = statement.query([]).map_err(SqliteError::sqlite(context))?;
    while let Some(row) = rows.next().map_err(SqliteError::sqlite(context))? {
        for index in 0..column_count {
            match row.get_ref(index).map_err(SqliteError::sqlite(context))? {
                rusqlite::types::ValueRef::Null => hasher.update(b"n"),
                rusqlite::types::ValueRef::Integer(integer) => {
                    hasher.update(b"i");
                    hasher.update(&integer.to_le_bytes());
                }
                rusqlite::types::ValueRef::Real(real) => {
                    hasher.update(b"r");
                    hasher.update(&real.to_bits().to_le_bytes());
                }
                rusqlite::types::ValueRef::Text(text) => {
                    hasher.update(b"t");
                    hasher.update(&(text.len() as u64).to_le_bytes());
                    hasher.update(text);
                }
                rusqlite::types::ValueRef::Blob(blob) => {
                    hasher.update(b"b");
                    hasher.update(&(blob.len() as u64).to_le_bytes());
                    hasher.update(blob);
                }
            }
        }
        hasher.update(b"\n");
    }
    Ok(())
}
