//! The extended-protocol messages, answered as PostgreSQL answers them:
//!
//! - **One flush per Sync.** Every reply is buffered; the connection is flushed at Sync and
//!   Flush only (and by the codec when its buffer fills, and by pgwire after an error). pgwire's
//!   default handlers flush after each reply: on loopback each flush is a `sendto` that also
//!   wakes the client, so a Parse/Bind/Describe/Execute/Sync round cost five of each, not one.
//! - **A pipeline is one transaction** (see `session::pipeline`). A write Execute outside a
//!   transaction is **held** — its portal and parameters, checked — until the next message.
//!   A Sync runs it alone as an autocommit unit; a Close is answered after it (sqlx closes
//!   every portal before its Sync); any other message first opens the implicit transaction,
//!   runs the held write in it and answers it, so the answers keep the order of the messages.
//!   Only statements SQLite runs inside a transaction as it runs them alone are held (not
//!   `VACUUM`, `PRAGMA`, `ATTACH`…: `sql::runs_in_a_transaction`, decided at Parse), and only
//!   without a row limit.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::{Sink, SinkExt, StreamExt};
use paxsql_replicator::sqlite::types::Value;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{send_execution_response, send_ready_for_query, ExtendedQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, Response, Tag,
};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, DEFAULT_NAME};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::PgWireBackendMessage;

use super::errors::PgError;
use super::handler::{check_formats, to_response, Prepared, QueryHandler};
use super::types;

/// The write Execute a connection holds until its next message (one at most).
#[derive(Default)]
pub struct HeldExecute(Mutex<Option<Held>>);

struct Held {
    portal: Arc<Portal<Prepared>>,
    params: Vec<Value>,
    /// Close messages that came after the Execute: answered after it (see `close_message`).
    closes: usize,
}

impl HeldExecute {
    fn take(&self) -> Option<Held> {
        self.0.lock().expect("held-execute lock").take()
    }

    fn put(&self, held: Held) {
        let previous = self.0.lock().expect("held-execute lock").replace(held);
        assert!(previous.is_none(), "one Execute is held at a time");
    }

    /// Counts a Close that follows the held Execute; false when nothing is held.
    fn count_close(&self) -> bool {
        match self.0.lock().expect("held-execute lock").as_mut() {
            Some(held) => {
                held.closes += 1;
                true
            }
            None => false,
        }
    }
}

impl QueryHandler {
    /// Answers a held write before the message that follows it, inside the pipeline's
    /// implicit transaction (see the module docs). A failure is that message's error: the
    /// pipeline then waits for its Sync, which rolls the transaction back.
    pub(super) async fn answer_held_write<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        self.session
            .open_implicit_transaction()
            .await
            .map_err(PgError::into_wire)?;
        self.run_held(client, held).await
    }

    /// Runs a held write (in the implicit transaction, or alone at a Sync) and answers it.
    async fn run_held<C>(&self, client: &mut C, held: Held) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let response = self
            .run_statement(&held.portal, held.params)
            .await
            .map_err(PgError::into_wire)?;
        feed_response(client, &held.portal, response, 0).await?;
        for _ in 0..held.closes {
            client
                .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn parse_message<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.answer_held_write(client).await?;
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client
                .portal_store()
                .put_empty_statement(message.name.as_deref().unwrap_or(DEFAULT_NAME)),
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    pub(super) async fn bind_message<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.answer_held_write(client).await?;
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) if message.parameters.is_empty() => client
                .portal_store()
                .put_empty_portal(message.portal_name.as_deref().unwrap_or(DEFAULT_NAME)),
            Some(Entry::Empty) => {
                return Err(PgError::new(
                    "08P01",
                    format!(
                        "bind message supplies {} parameters, but the empty statement needs none",
                        message.parameters.len()
                    ),
                )
                .into_wire())
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    pub(super) async fn close_message<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // A Close right after a write Execute (sqlx sends Bind, Execute, Close, Sync for every
        // statement) keeps the write held, so that the Sync still commits it alone: the held
        // write owns its portal, and its CloseComplete follows the write's answer. If the
        // write fails, the CloseComplete goes unsent, as PostgreSQL skips the messages after
        // an error; the statement or portal is gone either way, which the client asked for.
        let held = self.held.count_close();
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        if !held {
            client
                .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn describe_message<C>(
        &self,
        client: &mut C,
        message: Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.answer_held_write(client).await?;
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let response = match client.portal_store().get_statement(name) {
                    Some(Entry::Value(statement)) => describe_statement(&statement.statement),
                    Some(Entry::Empty) => DescribeStatementResponse::no_data(),
                    None => return Err(PgWireError::StatementNotFound(name.to_owned())),
                };
                feed_describe_response(client, &response).await
            }
            TARGET_TYPE_BYTE_PORTAL => {
                let response = match client.portal_store().get_portal(name) {
                    Some(Entry::Value(portal)) => {
                        describe_portal(&portal).map_err(PgError::into_wire)?
                    }
                    Some(Entry::Empty) => DescribePortalResponse::no_data(),
                    None => return Err(PgWireError::PortalNotFound(name.to_owned())),
                };
                feed_describe_response(client, &response).await
            }
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    pub(super) async fn execute_message<C>(
        &self,
        client: &mut C,
        message: Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        self.answer_held_write(client).await?;
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let (initial, finished) = match *portal.state().lock().await {
            PortalExecutionState::Initial => (true, false),
            PortalExecutionState::Finished => (false, true),
            PortalExecutionState::Suspended(_) => (false, false),
        };
        if finished && portal.statement.statement.columns.is_empty() {
            // PostgreSQL runs a portal once: a write executed again must not write again.
            return Err(PgError::new(
                "55000",
                format!("portal \"{name}\" cannot be run again: Bind the statement again to run it again"),
            )
            .into_wire());
        }
        if !initial {
            // A suspended portal: the next rows (none once it is finished).
            return feed_rows(client, &portal, max_rows).await;
        }
        if max_rows == 0 && self.hold_write(&portal).await.map_err(PgError::into_wire)? {
            return Ok(());
        }
        let response = self.run_portal(&portal).await.map_err(PgError::into_wire)?;
        if matches!(response, Response::TransactionEnd(_)) {
            client.portal_store().rm_portal(DEFAULT_NAME);
        }
        feed_response(client, &portal, response, max_rows).await
    }

    /// Holds the portal's write until the next message when the session may (see the module
    /// docs). Its parameters are decoded and checked now: a bad one is this Execute's error.
    async fn hold_write(&self, portal: &Arc<Portal<Prepared>>) -> Result<bool, PgError> {
        let prepared = &portal.statement.statement;
        if !prepared.joins_transaction
            || !self.session.may_hold(&prepared.sql, &prepared.kind).await?
        {
            return Ok(false);
        }
        let params = portal_params(portal)?;
        self.held.put(Held {
            portal: portal.clone(),
            params,
            closes: 0,
        });
        Ok(true)
    }

    pub(super) async fn run_portal(&self, portal: &Portal<Prepared>) -> Result<Response, PgError> {
        let params = portal_params(portal)?;
        self.run_statement(portal, params).await
    }

    async fn run_statement(
        &self,
        portal: &Portal<Prepared>,
        params: Vec<Value>,
    ) -> Result<Response, PgError> {
        let prepared = &portal.statement.statement;
        let output = match self
            .session
            .execute(&prepared.sql, &prepared.kind, params)
            .await
        {
            Ok(output) => output,
            Err(error) => {
                // PostgreSQL drops a portal that failed: it never runs again.
                *portal.state().lock().await = PortalExecutionState::Finished;
                return Err(error);
            }
        };
        to_response(
            output,
            Some(&prepared.column_types),
            &portal.result_column_format,
            self.session.real_format().await,
        )
    }

    /// Ends the pipeline: a held write runs alone (autocommit), or the implicit transaction
    /// commits — or rolls back when `failed` (an error ended the pipeline).
    async fn end_pipeline<C>(&self, client: &mut C, failed: bool) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(held) = self.held.take().filter(|_| !failed) {
            return self.run_held(client, held).await;
        }
        self.session
            .end_implicit_transaction(failed)
            .await
            .map_err(PgError::into_wire)
    }

    /// The Sync: ends the pipeline and says the session is ready, flushing every buffered
    /// reply. An error ending the pipeline is answered before the ReadyForQuery.
    pub(super) async fn sync_message<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let failed = matches!(client.state(), PgWireConnectionState::AwaitingSync);
        if let Err(error) = self.end_pipeline(client, failed).await {
            let info: ErrorInfo = error.into();
            client
                .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                .await?;
        }
        // PostgreSQL drops the portals with their transaction (named ones too), so a portal
        // that failed, or that ran in an earlier transaction, cannot be executed again.
        let status = self.session.transaction_status().await;
        if matches!(status, TransactionStatus::Idle) {
            client.portal_store().clear_portals();
        } else {
            client.portal_store().rm_portal(DEFAULT_NAME);
        }
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    /// A simple Query ends an unsynced pipeline first, as a Sync would (without its
    /// ReadyForQuery). If that fails, the Query is not run: the client gets the pipeline's
    /// error and a ReadyForQuery with the session's real status.
    pub(super) async fn end_pipeline_before_query<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = self.end_pipeline(client, false).await;
        if outcome.is_err() {
            client.set_transaction_status(self.session.transaction_status().await);
        }
        outcome
    }
}

/// The decoded parameters of a portal, checked against its statement.
fn portal_params(portal: &Portal<Prepared>) -> Result<Vec<Value>, PgError> {
    let prepared = &portal.statement.statement;
    check_formats(&portal.result_column_format, prepared.columns.len())?;
    if portal.parameters.len() != prepared.param_types.len() {
        return Err(PgError::new(
            "08P01",
            format!(
                "bind message supplies {} parameters, but the statement needs {}",
                portal.parameters.len(),
                prepared.param_types.len()
            ),
        ));
    }
    if let Format::Individual(codes) = &portal.parameter_format {
        if codes.len() != portal.parameters.len() {
            return Err(PgError::new(
                "08P01",
                "parameter format codes do not match the parameter count",
            ));
        }
    }
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            types::decode_param(
                bytes.as_deref(),
                &prepared.param_types[index],
                portal.parameter_format.is_binary(index),
            )
        })
        .collect()
}

pub(super) fn describe_statement(prepared: &Prepared) -> DescribeStatementResponse {
    let fields = types::fields(
        &prepared.columns,
        &prepared.column_types,
        &Format::UnifiedText,
    );
    DescribeStatementResponse::new(prepared.param_types.clone(), fields)
}

pub(super) fn describe_portal(
    portal: &Portal<Prepared>,
) -> Result<DescribePortalResponse, PgError> {
    let prepared = &portal.statement.statement;
    check_formats(&portal.result_column_format, prepared.columns.len())?;
    Ok(DescribePortalResponse::new(types::fields(
        &prepared.columns,
        &prepared.column_types,
        &portal.result_column_format,
    )))
}

async fn feed_describe_response<C, R>(client: &mut C, response: &R) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    R: DescribeResponse,
{
    if let Some(parameters) = response.parameters() {
        let oids = parameters.iter().map(|parameter| parameter.oid()).collect();
        client
            .feed(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(oids),
            ))
            .await?;
    }
    let last = if response.is_no_data() {
        PgWireBackendMessage::NoData(NoData::new())
    } else {
        let fields = response.fields().iter().map(Into::into).collect();
        PgWireBackendMessage::RowDescription(RowDescription::new(fields))
    };
    client.feed(last).await?;
    Ok(())
}

/// Answers an Execute whose statement ran: rows (up to `max_rows`, 0 for all) and the
/// command tag, or the tag alone. (A transaction's end also drops the unnamed portal: the
/// caller's part.)
async fn feed_response<C>(
    client: &mut C,
    portal: &Portal<Prepared>,
    response: Response,
    max_rows: usize,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match response {
        Response::Query(results) => {
            portal.start(results).await;
            feed_rows(client, portal, max_rows).await
        }
        Response::Execution(tag)
        | Response::TransactionStart(tag)
        | Response::TransactionEnd(tag) => {
            *portal.state().lock().await = PortalExecutionState::Finished;
            send_execution_response(client, tag).await
        }
        _ => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            Ok(())
        }
    }
}

/// The next rows of a started portal (0: all), then its command tag, or PortalSuspended
/// when rows are left.
async fn feed_rows<C>(
    client: &mut C,
    portal: &Portal<Prepared>,
    max_rows: usize,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let fetched = portal.fetch(max_rows).await?;
    let mut response = fetched.response;
    let command_tag = response.command_tag().to_owned();
    let mut rows = 0;
    while let Some(row) = response.data_rows().next().await {
        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
        rows += 1;
    }
    let last = if fetched.suspended {
        PgWireBackendMessage::PortalSuspended(PortalSuspended::new())
    } else {
        PgWireBackendMessage::CommandComplete(Tag::new(&command_tag).with_rows(rows).into())
    };
    client.feed(last).await?;
    Ok(())
}
