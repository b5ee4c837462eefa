//! Opening paxsql connections (fixed pragmas, deterministic functions, authorizer, effect
//! recording) and running one client statement on one of them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::Action;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use xxhash_rust::xxh3::Xxh3;

use super::error::{classify, SqliteError};
use super::functions::{register_random, Prng, SharedPrng};
use super::meta::PAXSQL_TABLE_PREFIX;
use super::policy::{self, Policy};
use super::types::{Column, SqlError, SqlErrorKind, StatementRequest, StatementResult, Value};
use super::vfs;

/// Connection settings fixed by configuration. Every node of a cluster must use the same ones
/// (they change what statements do), so clients cannot change them (see [`policy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub foreign_keys: bool,
    pub recursive_triggers: bool,
    pub busy_timeout_ms: u64,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            foreign_keys: true,
            recursive_triggers: false,
            busy_timeout_ms: 5_000,
        }
    }
}

/// Rows changed by the current client statement, as seen by the update hook.
#[derive(Default)]
pub struct EffectRecorder {
    hasher: Option<Xxh3>,
}

impl EffectRecorder {
    fn start(&mut self) {
        self.hasher = Some(Xxh3::new());
    }

    fn record(&mut self, action: Action, table: &str, rowid: i64) {
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&[action as i32 as u8]);
            hasher.update(table.as_bytes());
            hasher.update(&[0]);
            hasher.update(&rowid.to_le_bytes());
        }
    }

    /// The effect digest: the changed rowids (in order) and the rows-changed count.
    fn finish(&mut self, rows_changed: u64) -> u64 {
        let mut hasher = self.hasher.take().unwrap_or_default();
        hasher.update(&rows_changed.to_le_bytes());
        hasher.digest()
    }
}

/// One SQLite connection with paxsql's machinery attached.
pub struct PaxConnection {
    pub connection: Connection,
    pub policy: Arc<Policy>,
    pub prng: SharedPrng,
    effects: Arc<Mutex<EffectRecorder>>,
    /// Readers only: the step budget of a read run on an async worker (see [`ReadBudget`]).
    read_budget: Option<Arc<ReadBudget>>,
    /// Writer only: the time limit of the client statement it runs (see [`Self::execute_within`]).
    deadline: Option<Arc<StatementDeadline>>,
    busy_timeout: Duration,
}

/// When the writer's current client statement must stop: SQLite's progress handler checks it
/// every [`PROGRESS_OPS_PER_CALL`] VM instructions. Disarmed (zero) it never stops anything,
/// so replays and paxsql's own statements always run to their end.
#[derive(Debug)]
struct StatementDeadline {
    /// Micros after `since` at which to interrupt; 0 while disarmed.
    at_micros: AtomicU64,
    since: Instant,
    /// Set when the handler stopped a statement: its error is the limit's, whatever SQLite
    /// says.
    fired: AtomicBool,
}

impl StatementDeadline {
    fn new() -> Self {
        StatementDeadline {
            at_micros: AtomicU64::new(0),
            since: Instant::now(),
            fired: AtomicBool::new(false),
        }
    }

    fn micros_now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn arm(&self, limit: Duration) {
        let limit = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        let at = self.micros_now().saturating_add(limit).max(1);
        self.fired.store(false, Ordering::Relaxed);
        self.at_micros.store(at, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.at_micros.store(0, Ordering::Relaxed);
    }

    /// The progress handler: true interrupts the running statement.
    fn passed(&self) -> bool {
        let passed = match self.at_micros.load(Ordering::Relaxed) {
            0 => false,
            at => self.micros_now() >= at,
        };
        if passed {
            self.fired.store(true, Ordering::Relaxed);
        }
        passed
    }
}

/// SQLite VM instructions between two calls of a connection's progress handler (a reader's
/// step budget, the writer's statement time limit).
pub const PROGRESS_OPS_PER_CALL: i32 = 1_000;

/// Prepared statements each connection keeps (rusqlite's default is 16). An application repeats
/// the texts of its statements, and every write is executed again by every replica: 64 clients
/// of `paxsql bench` use 64 texts, and compiling each statement afresh took ~7 % of the
/// machine's CPU samples at 64 clients. A few KB per statement.
pub const STATEMENT_CACHE_CAPACITY: usize = 256;

/// Maintenance statements whose run time grows with the data and that cannot be split:
/// exempt from the writer's time limit (a large `CREATE INDEX` must be able to finish).
const VERBS_BOUND_BY_THE_DATA: &[&str] = &[
    "CREATE INDEX",
    "REINDEX",
    "ANALYZE",
    "DROP TABLE",
    "DROP INDEX",
];

/// Verbs of client statements that may come from the statement cache: data statements, whose
/// effect is decided when they run. Pragmas take effect when prepared; DDL is rare.
const CACHED_VERBS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "VALUES"];

/// How much work a read may do before SQLite interrupts it. Disarmed (the normal state) it
/// never interrupts; armed with `calls`, the statement is interrupted after about
/// `calls × PROGRESS_OPS_PER_CALL` VM instructions. Async callers arm it to run short reads
/// in place and hand long ones to a blocking thread (which runs them again, unbudgeted).
#[derive(Debug, Default)]
pub struct ReadBudget {
    /// Progress-handler calls left; negative while disarmed.
    calls_left: AtomicI64,
}

impl ReadBudget {
    fn disarmed() -> Self {
        ReadBudget {
            calls_left: AtomicI64::new(-1),
        }
    }

    /// True to interrupt the running statement. One connection runs on one thread at a time,
    /// so relaxed loads and stores are enough.
    fn on_progress(&self) -> bool {
        match self.calls_left.load(Ordering::Relaxed) {
            left if left < 0 => false,
            0 => true,
            left => {
                self.calls_left.store(left - 1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// What a client statement produced, plus what the binlog records about it.
pub struct Executed {
    pub result: StatementResult,
    pub effect_digest: u64,
    pub last_insert_rowid: i64,
}

impl PaxConnection {
    /// Opens the single writer (creates the file; WAL; `synchronous=NORMAL`).
    pub fn open_writer(
        path: &Path,
        options: &ConnectionOptions,
    ) -> Result<PaxConnection, SqliteError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut pax = Self::open(path, flags, options, true, 0)?;
        let mode: String = pax
            .connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(SqliteError::sqlite("switching to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::NotPaxsql {
                path: path.into(),
                detail: format!("journal mode stays {mode}, not WAL"),
            });
        }
        pax.connection
            .execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(SqliteError::sqlite("setting synchronous=NORMAL"))?;
        let deadline = Arc::new(StatementDeadline::new());
        let handler_deadline = Arc::clone(&deadline);
        pax.connection
            .progress_handler(
                PROGRESS_OPS_PER_CALL,
                Some(move || handler_deadline.passed()),
            )
            .map_err(SqliteError::sqlite("installing the statement time limit"))?;
        pax.deadline = Some(deadline);
        Ok(pax)
    }

    /// [`Self::execute`] on the writer, stopped once it has run for `limit` (a `LimitExceeded`
    /// error), unless it is an index build or drop ([`VERBS_BOUND_BY_THE_DATA`]). Only for a
    /// client statement the master runs: a replay must never be cut short, or a replica would
    /// fail what the master did. A write stopped this way inside a transaction makes SQLite
    /// roll back the whole transaction (the caller checks `is_autocommit`); a stopped read
    /// undoes nothing.
    pub fn execute_within(
        &self,
        sql: &str,
        params: &[Value],
        limit: Duration,
    ) -> Result<Executed, SqlError> {
        let verb = policy::verb(sql);
        let deadline = match &self.deadline {
            Some(deadline) if !VERBS_BOUND_BY_THE_DATA.contains(&verb.as_str()) => deadline,
            // The detached stand-in holds no tables a client could wait on.
            _ => return self.execute_verb(sql, params, verb),
        };
        deadline.arm(limit);
        let outcome = self.execute_verb(sql, params, verb);
        deadline.disarm();
        let stopped = deadline.fired.swap(false, Ordering::Relaxed);
        match outcome {
            Err(_) if stopped => Err(SqlError::new(
                SqlErrorKind::LimitExceeded,
                format!(
                    "the statement ran for more than {limit:?} on the master's writer, which holds up \
                     every write to this database, and was stopped (a write is rolled back); add an \
                     index or split the work into smaller statements"
                ),
            )),
            other => other,
        }
    }

    /// Opens a reader: `query_only`, so it can never write; real clock and real randomness.
    pub fn open_reader(
        path: &Path,
        options: &ConnectionOptions,
    ) -> Result<PaxConnection, SqliteError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut pax = Self::open(path, flags, options, false, rand::random())?;
        pax.set_query_only(true)?;
        let budget = Arc::new(ReadBudget::disarmed());
        let handler_budget = Arc::clone(&budget);
        pax.connection
            .progress_handler(
                PROGRESS_OPS_PER_CALL,
                Some(move || handler_budget.on_progress()),
            )
            .map_err(SqliteError::sqlite("installing the read budget"))?;
        pax.read_budget = Some(budget);
        Ok(pax)
    }

    /// Runs a read-only statement within about `calls × PROGRESS_OPS_PER_CALL` VM
    /// instructions and without waiting for locks; `None` when it did not finish that way
    /// (over budget, busy, or any error): the caller runs it again with [`Self::execute`] on a
    /// thread that may block, which also gives the authoritative error. Readers only.
    pub fn execute_within_budget(
        &self,
        request: &StatementRequest,
        calls: u32,
    ) -> Option<StatementResult> {
        let budget = self
            .read_budget
            .as_ref()
            .expect("execute_within_budget is called on readers only");
        budget.calls_left.store(i64::from(calls), Ordering::Relaxed);
        // A busy wait would block the async worker: no waiting for locks in this attempt.
        let no_wait = self.connection.busy_timeout(Duration::ZERO);
        let outcome = no_wait
            .ok()
            .and_then(|()| self.execute(&request.sql, &request.params).ok());
        budget.calls_left.store(-1, Ordering::Relaxed);
        self.connection
            .busy_timeout(self.busy_timeout)
            .expect("restoring a busy timeout only sets two fields of the connection");
        outcome.map(|executed| executed.result)
    }

    /// The columns `sql` would return (names and declared types), without running it. With
    /// `no_wait`, `None` when SQLite would have to wait for a lock to compile it (a schema
    /// change being read): the caller describes again where it may block.
    pub fn describe(&self, sql: &str, no_wait: bool) -> Option<Result<Vec<Column>, SqlError>> {
        if no_wait {
            self.connection.busy_timeout(Duration::ZERO).ok()?;
        }
        let described = self.describe_current(sql);
        if no_wait {
            self.connection
                .busy_timeout(self.busy_timeout)
                .expect("restoring a busy timeout only sets two fields of the connection");
        }
        match described {
            Ok(columns) => Some(Ok(columns)),
            Err(error) if no_wait && is_lock_wait(&error) => None,
            Err(error) => Some(Err(match self.policy.take_refusal() {
                Some(reason) => SqlError::new(SqlErrorKind::NotReplicable, reason),
                None => classify(&error),
            })),
        }
    }

    fn describe_current(&self, sql: &str) -> rusqlite::Result<Vec<Column>> {
        // Compiling uses the schema this connection last loaded; only running a statement
        // checks it against the file (and reloads it). Without this step a reader describes a
        // table as it was before the writer's ALTER TABLE: the client is told wrong columns.
        // Its row is held while `sql` compiles, so both see one snapshot. (It names the
        // reserved prefix: a client's text is never served this unjudged cached statement.)
        let mut schema_read = self
            .connection
            .prepare_cached("SELECT count(*) FROM sqlite_schema WHERE name = '_paxsql_meta'")?;
        let mut snapshot = schema_read.query([])?;
        snapshot.next()?;
        // Judged like any client statement: a flag pragma takes effect when compiled.
        let _policing = self.policy.police();
        let statement = self.connection.prepare(sql)?;
        Ok(statement
            .columns()
            .map(|column| Column {
                name: column.name().to_string(),
                decl_type: column.decl_type().map(str::to_string),
            })
            .collect())
    }

    /// A private in-memory connection standing in for the writer while the replica file is
    /// being replaced; it holds no paxsql tables, so nothing can be applied to it.
    pub fn open_detached() -> Result<PaxConnection, SqliteError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let pax = Self::open(
            Path::new(":memory:"),
            flags,
            &ConnectionOptions::default(),
            true,
            0,
        )?;
        pax.set_query_only(true)?;
        Ok(pax)
    }

    fn open(
        path: &Path,
        flags: OpenFlags,
        options: &ConnectionOptions,
        writer: bool,
        seed: u64,
    ) -> Result<PaxConnection, SqliteError> {
        vfs::register().map_err(SqliteError::VfsRegistration)?;
        let mut connection = Connection::open_with_flags_and_vfs(path, flags, vfs::VFS_NAME)
            .map_err(SqliteError::sqlite(format!("opening {}", path.display())))?;
        connection
            .busy_timeout(Duration::from_millis(options.busy_timeout_ms))
            .map_err(SqliteError::sqlite("setting the busy timeout"))?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let on_off = |flag: bool| if flag { "ON" } else { "OFF" };
        connection
            .execute_batch(&format!(
                "PRAGMA foreign_keys = {}; PRAGMA recursive_triggers = {}; PRAGMA trusted_schema = OFF;",
                on_off(options.foreign_keys),
                on_off(options.recursive_triggers)
            ))
            .map_err(SqliteError::sqlite("setting connection pragmas"))?;
        let prng: SharedPrng = Arc::new(Mutex::new(Prng::new(seed)));
        register_random(&connection, &prng).map_err(SqliteError::sqlite("registering random()"))?;
        let policy = Policy::new(writer);
        policy::install(&mut connection, &policy)
            .map_err(SqliteError::sqlite("installing the authorizer"))?;
        let effects = Arc::new(Mutex::new(EffectRecorder::default()));
        let hook_effects = Arc::clone(&effects);
        connection
            .update_hook(Some(
                move |action: Action, _db: &str, table: &str, rowid: i64| {
                    hook_effects
                        .lock()
                        .expect("effect lock")
                        .record(action, table, rowid);
                },
            ))
            .map_err(SqliteError::sqlite("installing the update hook"))?;
        Ok(PaxConnection {
            connection,
            policy,
            prng,
            effects,
            read_budget: None,
            deadline: None,
            busy_timeout: Duration::from_millis(options.busy_timeout_ms),
        })
    }

    /// Opens or closes the writer for client writes: they run only inside a batch or an apply.
    /// A flag in the authorizer, not `PRAGMA query_only`: switching that pragma expires every
    /// prepared statement, and the writer switches twice per value on every node.
    pub fn set_writes_open(&self, open: bool) {
        self.policy.set_writes_open(open);
    }

    pub fn set_query_only(&self, query_only: bool) -> Result<(), SqliteError> {
        // Not from the statement cache: a flag pragma takes effect when it is *prepared*.
        let value = if query_only { "ON" } else { "OFF" };
        self.connection
            .execute_batch(&format!("PRAGMA query_only = {value}"))
            .map_err(SqliteError::sqlite("switching query_only"))
    }

    /// Runs one of paxsql's own fixed statements (BEGIN, COMMIT, SAVEPOINT; never a pragma) from
    /// the connection's statement cache: they run for every value or statement on every node,
    /// and parsing them again each time showed in profiles.
    pub fn execute_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(|_| ())
    }

    /// Reseeds `random()`/`randomblob()` for statement `statement_index` of a value.
    pub fn seed_random(&self, value_seed: u64, statement_index: usize) {
        *self.prng.lock().expect("PRNG lock") = Prng::for_statement(value_seed, statement_index);
    }

    pub fn set_last_insert_rowid(&self, rowid: i64) {
        // SAFETY: the handle is valid while `self.connection` lives; this call only sets an
        // integer on the connection and is not re-entrant with anything we hold.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(self.connection.handle(), rowid) };
    }

    /// Pending deferred foreign-key violations of the open transaction.
    pub fn deferred_foreign_key_violations(&self) -> i32 {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: valid handle; SQLite writes two ints.
        unsafe {
            rusqlite::ffi::sqlite3_db_status(
                self.connection.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
                &mut current,
                &mut highwater,
                0,
            )
        };
        current
    }

    /// Runs one client statement under the policy. Time and randomness are whatever the caller
    /// pinned and seeded. On error the caller checks [`Connection::is_autocommit`].
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<Executed, SqlError> {
        self.execute_verb(sql, params, policy::verb(sql))
    }

    /// [`Self::execute`] for a client's savepoint statement ([`policy::is_savepoint_control`]),
    /// which the policy lets through only here: in an interactive transaction on the master
    /// (one client owns the writer) or in the replay of one. Writer only.
    pub fn execute_savepoint_control(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Executed, SqlError> {
        let _open = self.policy.open_savepoints();
        self.execute(sql, params)
    }

    /// [`Self::execute`] with the statement's [`policy::verb`] already computed (once per
    /// statement: it allocates).
    fn execute_verb(
        &self,
        sql: &str,
        params: &[Value],
        verb: String,
    ) -> Result<Executed, SqlError> {
        let text_params: Vec<&str> = params
            .iter()
            .filter_map(|value| match value {
                Value::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if let Some(reason) = policy::text_refusal(sql, &text_params) {
            return Err(SqlError::new(SqlErrorKind::NotReplicable, reason));
        }
        let _policing = self.policy.police();
        self.effects.lock().expect("effect lock").start();
        let total_before = self.connection.total_changes();
        let outcome = self.run(sql, params, &verb);
        let outcome = outcome.map_err(|error| match self.policy.take_refusal() {
            Some(reason) => SqlError::new(SqlErrorKind::NotReplicable, reason),
            None => error,
        });
        let rows_changed = if self.connection.total_changes() == total_before {
            0
        } else {
            self.connection.changes()
        };
        let effect_digest = self
            .effects
            .lock()
            .expect("effect lock")
            .finish(rows_changed);
        let (columns, rows) = outcome?;
        let result = StatementResult {
            columns,
            rows,
            rows_changed,
            verb,
        };
        Ok(Executed {
            result,
            effect_digest,
            last_insert_rowid: self.connection.last_insert_rowid(),
        })
    }

    /// Whether SQLite considers `sql` read-only. True also for BEGIN, COMMIT, SAVEPOINT, ATTACH and
    /// `PRAGMA foreign_keys=…`: callers classify transaction control and pragmas with sqlparser
    /// first and ask this only for everything else.
    pub fn is_read_only(&self, sql: &str) -> Result<bool, SqlError> {
        let statement = self
            .connection
            .prepare(sql)
            .map_err(|error| classify(&error))?;
        Ok(statement.readonly())
    }

    fn run(
        &self,
        sql: &str,
        params: &[Value],
        verb: &str,
    ) -> Result<(Vec<Column>, Vec<Vec<Value>>), SqlError> {
        // The authorizer runs when a statement is compiled, so a statement from the cache was
        // judged then. That judgement holds while nothing it depended on changed: the text, the
        // connection (writer or reader), the schema (SQLite compiles a statement again, with
        // the authorizer, when the schema changed; ANALYZE expires the statements of the
        // connection that runs it) and, on the writer, the writes-open guard — so the writer
        // takes statements from the cache only while writes are open. paxsql's own statements
        // share the cache unjudged (policing is off for them): its data statements all name
        // its `_paxsql_` tables, and a client text that does is never taken from the cache;
        // the others (BEGIN, COMMIT, SAVEPOINT, RELEASE) have verbs outside CACHED_VERBS.
        if CACHED_VERBS.contains(&verb)
            && self.policy.judgement_reusable()
            && !mentions_reserved_name(sql)
        {
            let mut statement = self
                .connection
                .prepare_cached(sql)
                .map_err(|error| classify(&error))?;
            step_to_end(&mut statement, params)
        } else {
            let mut statement = self
                .connection
                .prepare(sql)
                .map_err(|error| classify(&error))?;
            step_to_end(&mut statement, params)
        }
    }
}

/// Whether `sql` contains [`PAXSQL_TABLE_PREFIX`] in any ASCII case.
fn mentions_reserved_name(sql: &str) -> bool {
    policy::contains_ignore_ascii_case(sql, PAXSQL_TABLE_PREFIX)
}

/// Binds `params`, then steps `statement` to its end and collects the rows.
fn step_to_end(
    statement: &mut rusqlite::Statement<'_>,
    params: &[Value],
) -> Result<(Vec<Column>, Vec<Vec<Value>>), SqlError> {
    bind_parameters(statement, params)?;
    let columns: Vec<Column> = statement
        .columns()
        .map(|column| Column {
            name: column.name().to_string(),
            decl_type: column.decl_type().map(str::to_string),
        })
        .collect();
    let mut rows = Vec::new();
    let mut cursor = statement.raw_query();
    while let Some(row) = cursor.next().map_err(|error| classify(&error))? {
        let mut values = Vec::with_capacity(columns.len());
        for index in 0..columns.len() {
            values.push(value_from_ref(
                row.get_ref(index).map_err(|error| classify(&error))?,
            ));
        }
        rows.push(values);
    }
    Ok((columns, rows))
}

/// Binds `params` by parameter name: `$n` and `?n` bind `params[n-1]` (SQLite numbers `$n` by
/// first appearance, so `SELECT $2, $1` must not bind by position); `?`, `:name` and `@name`
/// bind by their SQLite index.
fn bind_parameters(
    statement: &mut rusqlite::Statement<'_>,
    params: &[Value],
) -> Result<(), SqlError> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).map(str::to_string);
        let number = name
            .as_deref()
            .and_then(|name| name.strip_prefix('$').or_else(|| name.strip_prefix('?')))
            .and_then(|digits| digits.parse::<usize>().ok())
            .unwrap_or(index);
        let Some(value) = number
            .checked_sub(1)
            .and_then(|position| params.get(position))
        else {
            let shown = name.unwrap_or_else(|| format!("?{index}"));
            return Err(SqlError::new(
                SqlErrorKind::Other,
                format!(
                    "the statement uses parameter {shown} but only {} parameters were supplied",
                    params.len()
                ),
            ));
        };
        statement
            .raw_bind_parameter(index, BindValue(value))
            .map_err(|error| classify(&error))?;
    }
    Ok(())
}

struct BindValue<'a>(&'a Value);

impl ToSql for BindValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(integer) => ValueRef::Integer(*integer),
            Value::Real(real) => ValueRef::Real(*real),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Blob(blob) => ValueRef::Blob(blob),
        }))
    }
}

pub fn value_from_ref(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(integer) => Value::Integer(integer),
        ValueRef::Real(real) => Value::Real(real),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(blob) => Value::Blob(blob.to_vec()),
    }
}

/// Converts between the client value type and the binlog's.
pub fn value_to_proto(value: &Value) -> paxsql_schema::SqlValue {
    use paxsql_schema::sql_value::Value as Proto;
    let proto = match value {
        Value::Null => Proto::Null(true),
        Value::Integer(integer) => Proto::Integer(*integer),
        Value::Real(real) => Proto::Real(*real),
        Value::Text(text) => Proto::Text(text.clone()),
        Value::Blob(blob) => Proto::Blob(blob.clone().into()),
    };
    paxsql_schema::SqlValue { value: Some(proto) }
}

pub fn value_from_proto(value: &paxsql_schema::SqlValue) -> Value {
    use paxsql_schema::sql_value::Value as Proto;
    match &value.value {
        None | Some(Proto::Null(_)) => Value::Null,
        Some(Proto::Integer(integer)) => Value::Integer(*integer),
        Some(Proto::Real(real)) => Value::Real(*real),
        Some(Proto::Text(text)) => Value::Text(text.clone()),
        Some(Proto::Blob(blob)) => Value::Blob(blob.to_vec()),
    }
}

/// True when SQLite gave up waiting for a lock (with no busy timeout: at once).
fn is_lock_wait(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
