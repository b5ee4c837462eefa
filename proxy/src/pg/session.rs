//! One client session: its group, settings and transaction state, and how each statement
//! runs against the [`Backend`]. Nothing here knows the wire format.
//!
//! Transaction states follow PostgreSQL: idle (autocommit), open (`BEGIN` gave a
//! [`Transaction`]), aborted (a statement failed inside the transaction: everything but
//! `ROLLBACK`/`COMMIT`/`ROLLBACK TO` is refused with 25P02 until then).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use paxsql_replicator::sqlite::types::{Consistency, StatementRequest, StatementResult, Value};
use pgwire::messages::response::TransactionStatus;
use tokio::sync::Mutex;

use super::cancel::{canceled_error, SessionCancel};
use super::errors::PgError;
use super::types::RealFormat;
use crate::backend::{Backend, Transaction};
use crate::sql::{self, StatementKind};

mod pipeline;

/// The version string of `SHOW server_version`. psql parses the leading number.
pub const SERVER_VERSION: &str = concat!("15.0 (paxsql ", env!("CARGO_PKG_VERSION"), ")");

/// What one statement produced.
#[derive(Debug)]
pub enum Output {
    /// A statement result: rows (if it has columns) and its command tag.
    Result(StatementResult),
    /// `BEGIN` (or a `BEGIN` inside a transaction, which PostgreSQL only warns about).
    Begin,
    /// The transaction ended with this tag: `COMMIT` or `ROLLBACK`.
    End(&'static str),
    /// `SET`/`RESET` done.
    Set,
}

enum TxState {
    Idle,
    Open(Box<dyn Transaction>),
    Aborted(Box<dyn Transaction>),
}

struct State {
    consistency: Consistency,
    real_format: RealFormat,
    settings: BTreeMap<String, String>,
    tx: TxState,
    /// `tx` is the implicit transaction of an extended-protocol pipeline: the Sync ends it
    /// (see [`pipeline`]).
    implicit: bool,
    implicit_size: pipeline::ImplicitSize,
}

/// A client session. Shared by the connection's handlers; statements run one at a time.
pub struct Session {
    backend: Arc<dyn Backend>,
    group: OnceLock<String>,
    state: Mutex<State>,
    /// What a cancel request for this session stops (see `pg::cancel`).
    cancel: Arc<SessionCancel>,
}

impl Session {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Session {
            backend,
            group: OnceLock::new(),
            state: Mutex::new(State {
                consistency: Consistency::default(),
                real_format: RealFormat::default(),
                settings: BTreeMap::new(),
                tx: TxState::Idle,
                implicit: false,
                implicit_size: Default::default(),
            }),
            cancel: Arc::new(SessionCancel::default()),
        }
    }

    /// The switch a cancel request for this session fires.
    pub fn cancel_switch(&self) -> &Arc<SessionCancel> {
        &self.cancel
    }

    /// An autocommit read that a cancel request may interrupt (57014). Only reads are ever
    /// canceled: a write's client always gets the write's real outcome.
    async fn read(
        &self,
        request: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, PgError> {
        let running = self.cancel.start_read();
        let outcome = self
            .backend
            .read_cancelable(self.group(), request, consistency, running.switch())
            .await;
        match outcome {
            Err(_) if running.is_canceled() => Err(canceled_error()),
            other => Ok(other?),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How REAL values are written in text results (`SET paxsql.real_format`).
    pub async fn real_format(&self) -> RealFormat {
        self.state.lock().await.real_format
    }

    /// Binds the session to its group at startup (once).
    pub fn set_group(&self, group: &str) {
        let _already_set = self.group.set(group.to_owned());
    }

    pub fn group(&self) -> &str {
        self.group.get().map(String::as_str).unwrap_or("main")
    }

    /// The ReadyForQuery status letter's meaning.
    pub async fn transaction_status(&self) -> TransactionStatus {
        match self.state.lock().await.tx {
            TxState::Idle => TransactionStatus::Idle,
            TxState::Open(_) => TransactionStatus::Transaction,
            TxState::Aborted(_) => TransactionStatus::Error,
        }
    }

    pub async fn in_transaction(&self) -> bool {
        !matches!(self.state.lock().await.tx, TxState::Idle)
    }

    /// An error outside the session's own statement handling (a bad Bind, a failed encoding)
    /// aborts an open transaction, as in PostgreSQL.
    pub async fn abort_if_open(&self) {
        let mut state = self.state.lock().await;
        state.tx = match std::mem::replace(&mut state.tx, TxState::Idle) {
            TxState::Open(tx) | TxState::Aborted(tx) => TxState::Aborted(tx),
            TxState::Idle => TxState::Idle,
        };
    }

    /// Ends the session: an open transaction rolls back.
    pub async fn close(&self) {
        let tx = std::mem::replace(&mut self.state.lock().await.tx, TxState::Idle);
        if let TxState::Open(tx) | TxState::Aborted(tx) = tx {
            if let Err(error) = tx.rollback().await {
                tracing::warn!(%error, "rolling back the transaction of a closed session failed");
            }
        }
    }

    /// Runs a simple-Query message. Results come back in order; processing stops at the first
    /// error, which is returned last. Outside a transaction, each run of consecutive data
    /// statements that contains a write is one atomic write unit (as PostgreSQL runs a
    /// multi-statement message in one implicit transaction).
    pub async fn simple_query(&self, text: &str) -> (Vec<Output>, Option<PgError>) {
        let pieces: Vec<(String, StatementKind)> = sql::split_statements(text)
            .into_iter()
            .map(|piece| sql::classify_and_rewrite(&piece))
            .collect();
        let has_savepoint = pieces
            .iter()
            .any(|(_, kind)| *kind == StatementKind::SavepointControl);
        // Only such messages pay for a look at the session's state.
        if has_savepoint && savepoint_outside_a_block(&pieces, self.in_transaction().await) {
            // PostgreSQL runs such statements in one implicit transaction, which the savepoint
            // statement's error rolls back: nothing of the message may commit here either.
            return (Vec::new(), Some(savepoint_outside_transaction_error()));
        }
        let mut outputs = Vec::new();
        let mut index = 0;
        while index < pieces.len() {
            let run_end = (index..pieces.len())
                .find(|&i| !is_data(&pieces[i].1))
                .unwrap_or(pieces.len());
            let outcome = if run_end > index + 1 && !self.in_transaction().await {
                self.run_unit(&pieces[index..run_end]).await.map(|results| {
                    outputs.extend(results.into_iter().map(Output::Result));
                    index = run_end;
                })
            } else {
                let (piece, kind) = &pieces[index];
                self.execute(piece, kind, Vec::new()).await.map(|output| {
                    outputs.push(output);
                    index += 1;
                })
            };
            if let Err(error) = outcome {
                return (outputs, Some(error));
            }
        }
        (outputs, None)
    }

    /// Several autocommit data statements of one message: one write unit if any writes,
    /// else one read each.
    async fn run_unit(
        &self,
        pieces: &[(String, StatementKind)],
    ) -> Result<Vec<StatementResult>, PgError> {
        let mut any_write = false;
        for (piece, kind) in pieces {
            any_write |= self.resolve(piece, kind).await? == StatementKind::Write;
        }
        if any_write {
            let requests = pieces
                .iter()
                .map(|(piece, _)| StatementRequest::new(piece.clone()))
                .collect();
            return Ok(self.backend.execute_write(self.group(), requests).await?);
        }
        let consistency = self.state.lock().await.consistency;
        let mut results = Vec::with_capacity(pieces.len());
        for (piece, _) in pieces {
            results.push(
                self.read(StatementRequest::new(piece.clone()), consistency)
                    .await?,
            );
        }
        Ok(results)
    }

    /// Read or Write for a data statement, asking SQLite when sqlparser could not tell.
    async fn resolve(&self, sql: &str, kind: &StatementKind) -> Result<StatementKind, PgError> {
        match kind {
            StatementKind::Undecided => {
                Ok(if self.backend.is_read_only(self.group(), sql).await? {
                    StatementKind::Read
                } else {
                    StatementKind::Write
                })
            }
            other => Ok(other.clone()),
        }
    }

    /// Runs one statement with its parameters (`params[n-1]` binds `$n`).
    pub async fn execute(
        &self,
        sql: &str,
        kind: &StatementKind,
        params: Vec<Value>,
    ) -> Result<Output, PgError> {
        let mut state = self.state.lock().await;
        if matches!(
            kind,
            StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback
        ) {
            // Inside a pipeline's implicit transaction, BEGIN makes it explicit (the Sync
            // leaves it open) and COMMIT/ROLLBACK end it, as in PostgreSQL.
            state.implicit = false;
        }
        match kind {
            StatementKind::Begin => self.begin(&mut state).await,
            StatementKind::Commit => end_transaction(&mut state, true).await,
            StatementKind::Rollback => end_transaction(&mut state, false).await,
            StatementKind::SavepointControl if state.implicit => Err(PgError::new(
                "25P01",
                "SAVEPOINT, RELEASE and ROLLBACK TO can only be used in transaction blocks; \
                 send BEGIN first (the Executes before a Sync are an implicit transaction)",
            )),
            _ if matches!(state.tx, TxState::Aborted(_))
                && *kind != StatementKind::SavepointControl =>
            {
                Err(aborted_error())
            }
            StatementKind::Set { name, value } => {
                set(&mut state, name, value.as_deref()).map(|()| Output::Set)
            }
            StatementKind::Show { name, column } => show(&state, name, column).map(Output::Result),
            StatementKind::Version => Ok(Output::Result(single_text(
                "version",
                &format!("PostgreSQL {SERVER_VERSION}"),
            ))),
            StatementKind::Catalog => {
                let consistency = state.consistency;
                drop(state);
                Ok(Output::Result(
                    sql::catalog::answer(self.backend.as_ref(), self.group(), sql, consistency)
                        .await?,
                ))
            }
            _ => {
                if state.implicit {
                    self.make_room(&mut state, sql, &params).await?;
                }
                self.run_data(&mut state, sql, kind, params).await
            }
        }
    }

    async fn begin(&self, state: &mut State) -> Result<Output, PgError> {
        if matches!(state.tx, TxState::Idle) {
            state.tx = TxState::Open(self.backend.begin(self.group()).await?);
        }
        Ok(Output::Begin)
    }

    async fn run_data(
        &self,
        state: &mut State,
        sql: &str,
        kind: &StatementKind,
        params: Vec<Value>,
    ) -> Result<Output, PgError> {
        let request = StatementRequest::with_params(sql, params);
        match &mut state.tx {
            TxState::Idle if *kind == StatementKind::SavepointControl => {
                Err(savepoint_outside_transaction_error())
            }
            TxState::Idle => match self.resolve(sql, kind).await? {
                StatementKind::Read => {
                    Ok(Output::Result(self.read(request, state.consistency).await?))
                }
                _ => {
                    let mut results = self
                        .backend
                        .execute_write(self.group(), vec![request])
                        .await?;
                    assert!(
                        results.len() == 1,
                        "a write unit of one statement returned {} results",
                        results.len()
                    );
                    Ok(Output::Result(results.remove(0)))
                }
            },
            TxState::Open(tx) => match tx.execute(request).await {
                Ok(result) => Ok(Output::Result(result)),
                Err(error) => {
                    let TxState::Open(tx) = std::mem::replace(&mut state.tx, TxState::Idle) else {
                        unreachable!("matched Open above")
                    };
                    state.tx = TxState::Aborted(tx);
                    Err(error.into())
                }
            },
            TxState::Aborted(tx) => {
                // Only ROLLBACK TO reaches here (see `execute`): it recovers the transaction.
                // The verb comes from the tokenizer: a leading comment must not hide it.
                let is_rollback_to =
                    matches!(sql::command_verb(sql).as_str(), "ROLLBACK" | "ABORT");
                if !is_rollback_to {
                    return Err(aborted_error());
                }
                let result = tx.execute(request).await?;
                let TxState::Aborted(tx) = std::mem::replace(&mut state.tx, TxState::Idle) else {
                    unreachable!("matched Aborted above")
                };
                state.tx = TxState::Open(tx);
                Ok(Output::Result(result))
            }
        }
    }

    /// Column descriptions for Describe, seen from inside the open transaction if any.
    pub async fn describe(
        &self,
        sql: &str,
    ) -> Result<Vec<paxsql_replicator::sqlite::types::Column>, PgError> {
        let mut state = self.state.lock().await;
        match &mut state.tx {
            TxState::Open(tx) | TxState::Aborted(tx) => Ok(tx.describe(sql).await?),
            TxState::Idle => {
                drop(state);
                Ok(self.backend.describe(self.group(), sql).await?)
            }
        }
    }
}

fn is_data(kind: &StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Read | StatementKind::Write | StatementKind::Undecided
    )
}

/// Whether a savepoint statement of the message would run outside a transaction block,
/// following the message's own BEGIN, COMMIT and ROLLBACK from the session's state.
fn savepoint_outside_a_block(pieces: &[(String, StatementKind)], in_transaction: bool) -> bool {
    let mut in_block = in_transaction;
    for (_, kind) in pieces {
        match kind {
            StatementKind::Begin => in_block = true,
            StatementKind::Commit | StatementKind::Rollback => in_block = false,
            StatementKind::SavepointControl if !in_block => return true,
            _ => {}
        }
    }
    false
}

fn savepoint_outside_transaction_error() -> PgError {
    PgError::new(
        "25P01",
        "SAVEPOINT, RELEASE and ROLLBACK TO can only be used in transaction blocks; run BEGIN first",
    )
}

fn aborted_error() -> PgError {
    PgError::new("25P02", "current transaction is aborted, commands ignored until end of transaction block; run ROLLBACK")
}

async fn end_transaction(state: &mut State, commit: bool) -> Result<Output, PgError> {
    match std::mem::replace(&mut state.tx, TxState::Idle) {
        TxState::Idle => Ok(Output::End(if commit { "COMMIT" } else { "ROLLBACK" })),
        TxState::Open(tx) if commit => tx
            .commit()
            .await
            .map(|()| Output::End("COMMIT"))
            .map_err(PgError::from),
        TxState::Open(tx) | TxState::Aborted(tx) => {
            tx.rollback().await?;
            Ok(Output::End("ROLLBACK"))
        }
    }
}

/// Settings clients commonly send that paxsql accepts and remembers but does not act on.
const ACCEPTED_SETTINGS: &[&str] = &[
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "application_name",
    "search_path",
    "timezone",
    "intervalstyle",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "standard_conforming_strings",
    "client_min_messages",
    "bytea_output",
    "default_transaction_isolation",
    "transaction",
    "transaction_isolation",
    "session_replication_role",
    "jit",
    "synchronous_commit",
];

fn set(state: &mut State, name: &str, value: Option<&str>) -> Result<(), PgError> {
    if name == "paxsql.real_format" {
        state.real_format = match value.map(|text| text.trim().to_ascii_lowercase()).as_deref() {
            None | Some("postgres") => RealFormat::Postgres,
            Some("sqlite") => RealFormat::Sqlite,
            Some(other) => {
                return Err(PgError::new(
                    "22023",
                    format!("invalid value for parameter \"paxsql.real_format\": \"{other}\"; use 'postgres' or 'sqlite'"),
                ))
            }
        };
        return Ok(());
    }
    if name == "paxsql.consistency" {
        state.consistency = match value {
            None => Consistency::default(),
            Some(text) => Consistency::parse(text).ok_or_else(|| {
                PgError::new(
                    "22023",
                    format!("invalid value for parameter \"paxsql.consistency\": \"{text}\"; use 'local', 'lease' or 'linearizable'"),
                )
            })?,
        };
        return Ok(());
    }
    let custom = name.contains('.') && !name.starts_with("paxsql.");
    if !custom && !ACCEPTED_SETTINGS.contains(&name) {
        return Err(PgError::new(
            "42704",
            format!("unrecognized configuration parameter \"{name}\""),
        ));
    }
    match value {
        Some(value) => state.settings.insert(name.to_owned(), value.to_owned()),
        None => state.settings.remove(name),
    };
    Ok(())
}

fn show(state: &State, name: &str, column: &str) -> Result<StatementResult, PgError> {
    let value = match name {
        "paxsql.consistency" => state.consistency.as_str().to_owned(),
        "paxsql.real_format" => match state.real_format {
            RealFormat::Postgres => "postgres".to_owned(),
            RealFormat::Sqlite => "sqlite".to_owned(),
        },
        "server_version" => SERVER_VERSION.to_owned(),
        "server_version_num" => "150000".to_owned(),
        _ => match state.settings.get(name) {
            Some(value) => value.clone(),
            None => default_setting(name)
                .ok_or_else(|| {
                    PgError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?
                .to_owned(),
        },
    };
    Ok(single_text(column, &value))
}

fn default_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "intervalstyle" => "postgres",
        "integer_datetimes" | "standard_conforming_strings" | "is_superuser" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "serializable",
        "transaction_read_only" | "default_transaction_read_only" => "off",
        "search_path" => "public",
        "application_name" => "",
        "extra_float_digits" => "1",
        "max_identifier_length" => "63",
        "lc_collate" | "lc_ctype" => "C",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "bytea_output" => "hex",
        "client_min_messages" => "notice",
        _ => return None,
    })
}

/// A one-row, one-column text result.
pub fn single_text(column: &str, value: &str) -> StatementResult {
    StatementResult {
        columns: vec![paxsql_replicator::sqlite::types::Column {
            name: column.to_owned(),
            decl_type: Some("TEXT".to_owned()),
        }],
        rows: vec![vec![Value::Text(value.to_owned())]],
        rows_changed: 0,
        verb: if column == "version" || column == "current_setting" {
            "SELECT"
        } else {
            "SHOW"
        }
        .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<(String, StatementKind)> {
        sql::split_statements(text)
            .into_iter()
            .map(|piece| sql::classify_and_rewrite(&piece))
            .collect()
    }

    #[test]
    fn a_savepoint_outside_a_block_is_found_anywhere_in_the_message() {
        for (text, in_transaction) in [
            ("SAVEPOINT a", false),
            ("INSERT INTO t VALUES (1); SAVEPOINT a", false),
            (
                "BEGIN; COMMIT; INSERT INTO t VALUES (1); SAVEPOINT a",
                false,
            ),
            ("COMMIT; INSERT INTO t VALUES (1); SAVEPOINT a", true),
            ("ROLLBACK; /* x */ ROLLBACK TO a", true),
        ] {
            assert!(
                savepoint_outside_a_block(&pieces(text), in_transaction),
                "{text}"
            );
        }
        for (text, in_transaction) in [
            (
                "BEGIN; SAVEPOINT a; INSERT INTO t VALUES (1); RELEASE a; COMMIT",
                false,
            ),
            ("SAVEPOINT a", true),
            ("INSERT INTO t VALUES (1); COMMIT", true),
            ("INSERT INTO t VALUES (1)", false),
        ] {
            assert!(
                !savepoint_outside_a_block(&pieces(text), in_transaction),
                "{text}"
            );
        }
    }
}
