//! paxsql's own tables inside the replica, all named `_paxsql_*`.
//!
//! `_paxsql_meta` is a key/value table holding the applied instance, the cluster id and name,
//! the member list, the master record, the running checksum and the pinned time of the last
//! value. **Ordering obligation:** every write here happens inside the same SQLite transaction
//! as the statements of the instance it describes, so a crash leaves both or neither.
//! Keys are only ever UPDATEd after creation: an INSERT would change `last_insert_rowid()`.

use rusqlite::{Connection, OptionalExtension};

use super::error::SqliteError;

/// Prefix of every table paxsql owns; hidden from `content_hash`, `\dt` and backups. A client
/// may read these tables, never change them or name a new object with the prefix (`policy`).
pub const PAXSQL_TABLE_PREFIX: &str = "_paxsql_";

/// Keys of `_paxsql_meta`.
pub mod key {
    pub const FORMAT_VERSION: &str = "format_version";
    pub const APPLIED_INSTANCE: &str = "applied_instance";
    pub const APPLIED_VALUE_ID: &str = "applied_value_id";
    /// `checksum_before` of the last applied value (the runtime chains it forward).
    pub const APPLIED_CHECKSUM_BEFORE: &str = "applied_checksum_before";
    /// The running checksum after the last applied value (startup stands on it when the
    /// replica is ahead of the Paxos log).
    pub const APPLIED_CHECKSUM_AFTER: &str = "applied_checksum_after";
    pub const TIME_UNIX_MS: &str = "time_unix_ms";
    pub const CLUSTER_GID: &str = "cluster_gid";
    pub const CLUSTER_NAME: &str = "cluster_name";
    /// JSON array of node ids.
    pub const MEMBERS: &str = "members";
    /// The instance at which the member list in force was chosen.
    pub const MEMBERS_VERSION: &str = "members_version";
    pub const MASTER_ID: &str = "master_id";
    pub const LEASE_MS: &str = "lease_ms";
    /// The instance at which the lease in force was chosen.
    pub const LEASE_VERSION: &str = "lease_version";

    pub const ALL: &[&str] = &[
        FORMAT_VERSION,
        APPLIED_INSTANCE,
        APPLIED_VALUE_ID,
        APPLIED_CHECKSUM_BEFORE,
        APPLIED_CHECKSUM_AFTER,
        TIME_UNIX_MS,
        CLUSTER_GID,
        CLUSTER_NAME,
        MEMBERS,
        MEMBERS_VERSION,
        MASTER_ID,
        LEASE_MS,
        LEASE_VERSION,
    ];
}

/// Version of the layout of `_paxsql_*` tables.
pub const FORMAT_VERSION: i64 = 1;

/// Creates the meta table and its keys if missing (idempotent).
pub fn create(connection: &Connection) -> Result<(), SqliteError> {
    let transaction = connection
        .unchecked_transaction()
        .map_err(SqliteError::sqlite("creating meta tables"))?;
    transaction
        .execute_batch("CREATE TABLE IF NOT EXISTS _paxsql_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID")
        .map_err(SqliteError::sqlite("creating _paxsql_meta"))?;
    for name in key::ALL {
        transaction
            .execute(
                "INSERT OR IGNORE INTO _paxsql_meta (key, value) VALUES (?1, NULL)",
                [name],
            )
            .map_err(SqliteError::sqlite("creating meta keys"))?;
    }
    if get_i64(&transaction, key::FORMAT_VERSION)?.is_none() {
        set(&transaction, key::FORMAT_VERSION, FORMAT_VERSION)?;
    }
    transaction
        .commit()
        .map_err(SqliteError::sqlite("committing meta tables"))
}

pub fn set<T: rusqlite::ToSql>(
    connection: &Connection,
    name: &str,
    value: T,
) -> Result<(), SqliteError> {
    // Cached: every applied instance writes five keys on every node.
    let updated = connection
        .prepare_cached("UPDATE _paxsql_meta SET value = ?2 WHERE key = ?1")
        .and_then(|mut update| update.execute(rusqlite::params![name, value]))
        .map_err(SqliteError::sqlite(format!("writing meta key {name}")))?;
    assert_eq!(updated, 1, "meta key {name} is created at open");
    Ok(())
}

/// Sets five integer keys in one statement instead of five: every applied instance writes
/// these on every node. Its text is repeated in `tests/sqlite_statements.rs`: a client that
/// sends it must still be judged, though this compiled statement sits in the same cache.
pub fn set_five(connection: &Connection, values: &[(&str, i64); 5]) -> Result<(), SqliteError> {
    let updated = connection
        .prepare_cached(
            "UPDATE _paxsql_meta SET value = CASE key \
             WHEN ?1 THEN ?2 WHEN ?3 THEN ?4 WHEN ?5 THEN ?6 WHEN ?7 THEN ?8 WHEN ?9 THEN ?10 END \
             WHERE key IN (?1, ?3, ?5, ?7, ?9)",
        )
        .and_then(|mut update| {
            let [(k1, v1), (k2, v2), (k3, v3), (k4, v4), (k5, v5)] = *values;
            update.execute(rusqlite::params![k1, v1, k2, v2, k3, v3, k4, v4, k5, v5])
        })
        .map_err(SqliteError::sqlite(
            "writing the applied-instance meta keys",
        ))?;
    assert_eq!(
        updated, 5,
        "the five meta keys are distinct and created at open"
    );
    Ok(())
}

pub fn get_i64(connection: &Connection, name: &str) -> Result<Option<i64>, SqliteError> {
    connection
        .query_row(
            "SELECT value FROM _paxsql_meta WHERE key = ?1",
            [name],
            |row| row.get::<_, Option<i64>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(SqliteError::sqlite(format!("reading meta key {name}")))
}

pub fn get_text(connection: &Connection, name: &str) -> Result<Option<String>, SqliteError> {
    connection
        .query_row(
            "SELECT value FROM _paxsql_meta WHERE key = ?1",
            [name],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(SqliteError::sqlite(format!("reading meta key {name}")))
}

/// The applied instance as stored (instance ids are u64; SQLite stores i64 bit patterns).
pub fn applied_instance(connection: &Connection) -> Result<Option<u64>, SqliteError> {
    Ok(get_i64(connection, key::APPLIED_INSTANCE)?.map(|stored| stored as u64))
}

/// The replicated metadata, read in one go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaSnapshot {
    pub applied_instance: Option<u64>,
    pub applied_value_id: Option<u64>,
    pub applied_checksum_before: Option<u64>,
    pub applied_checksum_after: Option<u64>,
    pub time_unix_ms: Option<i64>,
    pub cluster_gid: Option<u64>,
    pub cluster_name: Option<String>,
    pub members: Vec<u32>,
    pub members_version: Option<u64>,
    pub master_id: Option<u32>,
    pub lease_ms: Option<u64>,
    pub lease_version: Option<u64>,
}

pub fn snapshot(connection: &Connection) -> Result<MetaSnapshot, SqliteError> {
    let unsigned = |name| get_i64(connection, name).map(|value| value.map(|stored| stored as u64));
    let members = match get_text(connection, key::MEMBERS)? {
        Some(json) => serde_json::from_str(&json).map_err(|error| SqliteError::NotPaxsql {
            path: connection.path().unwrap_or_default().into(),
            detail: format!("meta key members holds {json:?}: {error}"),
        })?,
        None => Vec::new(),
    };
    Ok(MetaSnapshot {
        applied_instance: unsigned(key::APPLIED_INSTANCE)?,
        applied_value_id: unsigned(key::APPLIED_VALUE_ID)?,
        applied_checksum_before: unsigned(key::APPLIED_CHECKSUM_BEFORE)?,
        applied_checksum_after: unsigned(key::APPLIED_CHECKSUM_AFTER)?,
        time_unix_ms: get_i64(connection, key::TIME_UNIX_MS)?,
        cluster_gid: unsigned(key::CLUSTER_GID)?,
        cluster_name: get_text(connection, key::CLUSTER_NAME)?,
        members,
        members_version: unsigned(key::MEMBERS_VERSION)?,
        master_id: unsigned(key::MASTER_ID)?.map(|id| id as u32),
        lease_ms: unsigned(key::LEASE_MS)?,
        lease_version: unsigned(key::LEASE_VERSION)?,
    })
}
