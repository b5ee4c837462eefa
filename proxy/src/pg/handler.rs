//! The pgwire handlers of one connection: startup (group check, connection limit, trust or
//! SCRAM-SHA-256), simple query, and the extended protocol. They translate between the wire
//! and [`Session`], which holds the connection's state.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt};
use paxsql_replicator::sqlite::types::{Column, StatementResult};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    send_execution_response, send_query_response, send_ready_for_query, ExtendedQueryHandler,
    SimpleQueryHandler,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::extendedquery::{
    Bind, Close, Describe, Execute, Flush, Parse, Sync as PgSync,
};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::cancel::{CancelGate, CancelRegistration, CancelRegistry};
use super::errors::PgError;
use super::extended::{describe_portal, describe_statement, HeldExecute};
use super::session::{Output, Session, SERVER_VERSION};
use super::types;
use crate::sql::params::{param_hints, projection_types, ParamSource};
use crate::sql::{classify_and_rewrite, runs_in_a_transaction, StatementKind};

static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

/// Server parameters reported at startup (psql reads `server_version`).
pub fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_owned();
    parameters.time_zone = "UTC".to_owned();
    parameters
}

/// When the connection last did something, and whether it is doing something now.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Milliseconds since the last message was handled, or 0 while one is being handled.
    pub fn idle_ms(&self) -> u64 {
        if self.busy.load(Ordering::Acquire) > 0 {
            return 0;
        }
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Acquire))
    }

    fn enter(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How clients prove who they are.
pub enum Authentication {
    /// Any user name is accepted.
    Trust,
    /// SCRAM-SHA-256 against the configured users.
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

/// Why a connection is refused before it starts, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    OverConnectionLimit { connections_max: usize },
}

/// All handlers of one connection.
pub struct ConnectionHandlers {
    pub session: Arc<Session>,
    pub activity: Arc<Activity>,
    pub authentication: Arc<Authentication>,
    pub admission: Admission,
    /// Where this session registers for cancel requests once it is authenticated.
    pub cancel_registration: Arc<CancelRegistration>,
    /// Where a cancel request arriving on this connection looks its session up.
    pub cancel_registry: Arc<CancelRegistry>,
    /// The connection's held extended-protocol write (see `pg::extended`).
    pub held: Arc<HeldExecute>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(CancelGate {
            registry: self.cancel_registry.clone(),
        })
    }

    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(QueryHandler {
            session: self.session.clone(),
            activity: self.activity.clone(),
            held: self.held.clone(),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(QueryHandler {
            session: self.session.clone(),
            activity: self.activity.clone(),
            held: self.held.clone(),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(StartupGate {
            session: self.session.clone(),
            authentication: self.authentication.clone(),
            admission: self.admission,
            cancel_registration: self.cancel_registration.clone(),
        })
    }
}

struct StartupGate {
    session: Arc<Session>,
    authentication: Arc<Authentication>,
    admission: Admission,
    cancel_registration: Arc<CancelRegistration>,
}

#[async_trait]
impl StartupHandler for StartupGate {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if let Admission::OverConnectionLimit { connections_max } = self.admission {
                let text = format!(
                    "sorry, too many clients already ({connections_max} connections); retry later"
                );
                return Err(PgError::fatal("53300", text).into_wire());
            }
            let database = startup
                .parameters
                .get("database")
                .map(String::as_str)
                .filter(|d| !d.is_empty());
            let group = database.unwrap_or("main");
            if !self.session.backend().has_group(group) {
                let text = format!(
                    "database \"{group}\" does not exist; paxsql serves one database per configured group \
                     (default \"main\"): connect with dbname=main or another configured group"
                );
                return Err(PgError::fatal("3D000", text).into_wire());
            }
            self.session.set_group(group);
        }
        let outcome = self.authenticate(client, message).await;
        // Authenticated (BackendKeyData sent): cancel requests may now name this session.
        if outcome.is_ok() && matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let (pid, secret_key) = client.pid_and_secret_key();
            self.cancel_registration.register(pid, secret_key);
        }
        outcome
    }
}

impl StartupGate {
    async fn authenticate<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self.authentication.as_ref() {
            Authentication::Scram(handler) => handler.on_startup(client, message).await,
            Authentication::Trust => match &message {
                PgWireFrontendMessage::Startup(startup) => {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, secret_key) = PID_GENERATOR.generate(client);
                    client.set_pid_and_secret_key(pid, secret_key);
                    finish_authentication(client, &server_parameters()).await
                }
                _ => Ok(()),
            },
        }
    }
}

/// A statement prepared by Parse: its class and its parameter and result types.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub(super) sql: String,
    pub(super) kind: StatementKind,
    pub(super) param_types: Vec<Type>,
    pub(super) columns: Vec<Column>,
    pub(super) column_types: Vec<Type>,
    /// A write that may join a pipeline's implicit transaction (`sql::runs_in_a_transaction`),
    /// decided once at Parse.
    pub(super) joins_transaction: bool,
}

/// The query handlers of one connection (their extended-protocol messages: `pg::extended`).
pub(super) struct QueryHandler {
    pub(super) session: Arc<Session>,
    activity: Arc<Activity>,
    /// Shared by the connection's simple and extended handlers (a simple Query ends a pipeline).
    pub(super) held: Arc<HeldExecute>,
}

pub(super) struct PreparingParser {
    session: Arc<Session>,
}

#[async_trait]
impl QueryParser for PreparingParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match prepare(&self.session, sql, types).await {
            Ok(prepared) => Ok(Some(prepared)),
            Err(error) => {
                // A failed Parse aborts an open transaction, as in PostgreSQL.
                self.session.abort_if_open().await;
                Err(error.into_wire())
            }
        }
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement.param_types.clone())
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(types::fields(
            &statement.columns,
            &statement.column_types,
            format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

async fn prepare(
    session: &Session,
    sql: &str,
    client_types: &[Option<Type>],
) -> Result<Prepared, PgError> {
    let (sql, kind) = classify_and_rewrite(sql.trim().trim_end_matches(';'));
    let param_types = infer_param_types(session, &sql, client_types).await;
    let columns = match &kind {
        StatementKind::Read | StatementKind::Write | StatementKind::Undecided => {
            session.describe(&sql).await?
        }
        StatementKind::Show { column, .. } => vec![Column {
            name: column.clone(),
            decl_type: Some("TEXT".into()),
        }],
        StatementKind::Version => vec![Column {
            name: "version".into(),
            decl_type: Some("TEXT".into()),
        }],
        StatementKind::Catalog => match session.execute(&sql, &kind, Vec::new()).await? {
            Output::Result(result) => result.columns,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let guesses = projection_types(&sql);
    let column_types = types::described_types(&columns, guesses.as_deref(), &param_types);
    let joins_transaction = matches!(kind, StatementKind::Write | StatementKind::Undecided)
        && runs_in_a_transaction(&sql);
    Ok(Prepared {
        sql,
        kind,
        param_types,
        columns,
        column_types,
        joins_transaction,
    })
}

/// Client-given types win; otherwise the context's (see `sql::params`); otherwise text.
async fn infer_param_types(
    session: &Session,
    sql: &str,
    client_types: &[Option<Type>],
) -> Vec<Type> {
    let hints = param_hints(sql);
    let count = hints.count.max(client_types.len());
    if count == 0 {
        // No parameter to type: skip describing the tables the statement names (a round trip
        // to a reader, or to the master, per table and per Parse).
        return Vec::new();
    }
    let mut tables: Vec<(String, Vec<Column>)> = Vec::new();
    for table in &hints.tables {
        let quoted = table.replace('"', "\"\"");
        if let Ok(columns) = session
            .describe(&format!("SELECT * FROM \"{quoted}\""))
            .await
        {
            tables.push((table.clone(), columns));
        }
    }
    let declared_of = |column: &Column| column.decl_type.as_deref().map(types::type_for_declared);
    (0..count)
        .map(|index| {
            if let Some(Some(given)) = client_types.get(index) {
                if *given != Type::UNKNOWN {
                    return given.clone();
                }
            }
            hints
                .sources
                .iter()
                .filter(|(i, _)| *i == index)
                .find_map(|(_, source)| match source {
                    ParamSource::Integer => Some(Type::INT8),
                    ParamSource::TypeName(name) => Some(types::type_for_declared(name)),
                    ParamSource::Column(name) => tables
                        .iter()
                        .flat_map(|(_, columns)| columns)
                        .find(|c| c.name.eq_ignore_ascii_case(name))
                        .and_then(declared_of),
                    ParamSource::TableColumn {
                        table,
                        column,
                        position,
                    } => {
                        let (_, columns) =
                            tables.iter().find(|(t, _)| t.eq_ignore_ascii_case(table))?;
                        let found = match column {
                            Some(name) => {
                                columns.iter().find(|c| c.name.eq_ignore_ascii_case(name))
                            }
                            None => columns.get(*position),
                        };
                        found.and_then(declared_of)
                    }
                })
                .unwrap_or(Type::TEXT)
        })
        .collect()
}

/// The command tag for a result without rows.
pub(super) fn command_tag(result: &StatementResult) -> Tag {
    let rows = usize::try_from(result.rows_changed).unwrap_or(usize::MAX);
    match result.verb.as_str() {
        "INSERT" => Tag::new("INSERT").with_oid(0).with_rows(rows),
        "UPDATE" | "DELETE" => Tag::new(&result.verb).with_rows(rows),
        "SELECT" => Tag::new("SELECT").with_rows(result.rows.len()),
        verb => Tag::new(verb),
    }
}

/// Turns a session output into a pgwire response, typed by `described` when Describe fixed
/// the types already.
pub(super) fn to_response(
    output: Output,
    described: Option<&[Type]>,
    format: &Format,
    reals: types::RealFormat,
) -> Result<Response, PgError> {
    let result = match output {
        Output::Begin => return Ok(Response::TransactionStart(Tag::new("BEGIN"))),
        Output::End(tag) => return Ok(Response::TransactionEnd(Tag::new(tag))),
        Output::Set => return Ok(Response::Execution(Tag::new("SET"))),
        Output::Result(result) => result,
    };
    if result.columns.is_empty() {
        return Ok(Response::Execution(command_tag(&result)));
    }
    let column_types = match described {
        Some(described) if described.len() == result.columns.len() => described.to_vec(),
        _ => types::result_types(&result.columns, &result.rows),
    };
    let fields = Arc::new(types::fields(&result.columns, &column_types, format));
    let rows = types::encode_rows(fields.clone(), &result.rows, reals)?;
    let mut response = QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok)));
    response.set_command_tag(match result.verb.as_str() {
        "INSERT" => "INSERT 0",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        _ => "SELECT",
    });
    Ok(Response::Query(response))
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        self.end_pipeline_before_query(client).await?;
        client.set_state(PgWireConnectionState::QueryInProgress);
        let (outputs, error) = self.session.simple_query(&query.query).await;
        if outputs.is_empty() && error.is_none() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        let mut error = error;
        let reals = self.session.real_format().await;
        for output in outputs {
            match to_response(output, None, &Format::UnifiedText, reals) {
                Ok(Response::Query(results)) => send_query_response(client, results, true).await?,
                Ok(
                    Response::Execution(tag)
                    | Response::TransactionStart(tag)
                    | Response::TransactionEnd(tag),
                ) => send_execution_response(client, tag).await?,
                Ok(_) => {}
                Err(encoding_error) => {
                    error = Some(encoding_error);
                    break;
                }
            }
        }
        if let Some(error) = error {
            self.session.abort_if_open().await;
            client
                .feed(PgWireBackendMessage::ErrorResponse(
                    error.into_info().into(),
                ))
                .await?;
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = self.session.transaction_status().await;
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        unreachable!("on_query is overridden and never calls do_query")
    }
}

impl QueryHandler {
    /// After an extended-protocol message: errors abort an open transaction (as in
    /// PostgreSQL), and the client's status follows the session's.
    async fn settle<C: ClientInfo>(
        &self,
        client: &mut C,
        outcome: PgWireResult<()>,
    ) -> PgWireResult<()> {
        if outcome.is_err() {
            self.session.abort_if_open().await;
        }
        client.set_transaction_status(self.session.transaction_status().await);
        outcome
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = PreparingParser;

    fn query_parser(&self) -> Arc<PreparingParser> {
        Arc::new(PreparingParser {
            session: self.session.clone(),
        })
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.parse_message(client, message).await;
        self.settle(client, outcome).await
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.bind_message(client, message).await;
        self.settle(client, outcome).await
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.describe_message(client, message).await;
        self.settle(client, outcome).await
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.execute_message(client, message).await;
        self.settle(client, outcome).await
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.close_message(client, message).await;
        self.settle(client, outcome).await
    }

    async fn on_flush<C>(&self, client: &mut C, _message: Flush) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        let outcome = self.answer_held_write(client).await;
        let outcome = self.settle(client, outcome).await;
        client.flush().await?;
        outcome
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.activity.enter();
        self.sync_message(client).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Not called: `on_describe` answers through `pg::extended` (which this shares).
        Ok(describe_statement(&target.statement))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        describe_portal(portal).map_err(PgError::into_wire)
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.run_portal(portal).await.map_err(PgError::into_wire)
    }
}

/// pgwire indexes per-column format codes without checking their count.
pub(super) fn check_formats(format: &Format, columns: usize) -> Result<(), PgError> {
    match format {
        Format::Individual(codes) if codes.len() != columns => Err(PgError::new(
            "08P01",
            format!(
                "bind message has {} result formats but the query has {columns} columns",
                codes.len()
            ),
        )),
        _ => Ok(()),
    }
}
