//! The extended-protocol messages, answered as PostgreSQL answers them:
//!
//! - **One flush per Sync.** Every reply is buffered; the connection is flushed at Sync and
//!   Flush only (and by the codec when its buffer fills). pgwire's default handlers flush after
//!   each reply: on loopback each flush is a `sendto` that also wakes the client, so a
//!   Parse/Bind/Describe/Execute/Sync round cost five of each instead of one.
//! - **A pipeline is one transaction.** The Executes a client sends before its Sync commit
//!   together (see `session::pipeline`): a write outside a transaction is held until the next
//!   message, which decides whether it runs alone (Sync) or opens the implicit transaction the
//!   rest of the pipeline runs in. Every message first answers a held write, so the answers
//!   keep the order of the messages.

use std::fmt::Debug;
use std::sync::Arc;

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
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::PgWireBackendMessage;

use super::errors::PgError;
use super::handler::{check_formats, command_tag, to_response, Prepared, QueryHandler};
use super::session::Output;
use super::types;

impl QueryHandler {
    /// Answers a held write before the message that follows it (see the module docs). A
    /// failure is that message's error: the pipeline then waits for its Sync.
    pub(super) async fn answer_held_write<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self.session.open_pipeline_transaction().await {
            Ok(None) => Ok(()),
            Ok(Some(output)) => send_execution_response(client, held_write_tag(output)).await,
            Err(error) => Err(error.into_wire()),
        }
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
        self.answer_held_write(client).await?;
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        client
            .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
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
        let started = !matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        if !started && self.hold_write(&portal).await.map_err(PgError::into_wire)? {
            return Ok(());
        }
        if !started {
            match self.run_portal(&portal).await.map_err(PgError::into_wire)? {
                Response::Query(results) => portal.start(results).await,
                Response::Execution(tag) | Response::TransactionStart(tag) => {
                    return send_execution_response(client, tag).await;
                }
                Response::TransactionEnd(tag) => {
                    client.portal_store().rm_portal(DEFAULT_NAME);
                    return send_execution_response(client, tag).await;
                }
                _ => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                    return Ok(());
                }
            }
        }
        // A row limit of 0 means all rows.
        let fetched = portal
            .fetch(usize::try_from(message.max_rows).unwrap_or(0))
            .await?;
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

    /// Holds the portal's write until the next message when the session may (see
    /// `session::pipeline`); statements that return rows always run at once.
    async fn hold_write(&self, portal: &Portal<Prepared>) -> Result<bool, PgError> {
        let prepared = &portal.statement.statement;
        if !prepared.columns.is_empty()
            || !self.session.may_hold(&prepared.sql, &prepared.kind).await?
        {
            return Ok(false);
        }
        let params = portal_params(portal)?;
        self.session
            .hold(&prepared.sql, &prepared.kind, params)
            .await;
        Ok(true)
    }

    pub(super) async fn run_portal(&self, portal: &Portal<Prepared>) -> Result<Response, PgError> {
        let prepared = &portal.statement.statement;
        let params = portal_params(portal)?;
        let output = self
            .session
            .execute(&prepared.sql, &prepared.kind, params)
            .await?;
        to_response(
            output,
            Some(&prepared.column_types),
            &portal.result_column_format,
            self.session.real_format().await,
        )
    }

    /// The Sync: ends the pipeline (runs a held write, or commits or rolls back its implicit
    /// transaction) and says the session is ready, flushing every buffered reply.
    pub(super) async fn sync_message<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let failed = matches!(client.state(), PgWireConnectionState::AwaitingSync);
        match self.session.finish_pipeline(failed).await {
            Ok(None) => {}
            Ok(Some(output)) => send_execution_response(client, held_write_tag(output)).await?,
            Err(error) => {
                let info: ErrorInfo = error.into_info();
                client
                    .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
            }
        }
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = self.session.transaction_status().await;
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    /// A simple Query ends an unsynced pipeline first, as a Sync would (without its
    /// ReadyForQuery): the held write runs, the implicit transaction commits.
    pub(super) async fn end_pipeline_before_query<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self.session.finish_pipeline(false).await {
            Ok(None) => Ok(()),
            Ok(Some(output)) => send_execution_response(client, held_write_tag(output)).await,
            Err(error) => Err(error.into_wire()),
        }
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

fn describe_statement(prepared: &Prepared) -> DescribeStatementResponse {
    let fields = types::fields(
        &prepared.columns,
        &prepared.column_types,
        &Format::UnifiedText,
    );
    DescribeStatementResponse::new(prepared.param_types.clone(), fields)
}

fn describe_portal(portal: &Portal<Prepared>) -> Result<DescribePortalResponse, PgError> {
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

/// The command tag of a held write's output (held writes return no rows).
fn held_write_tag(output: Output) -> Tag {
    match output {
        Output::Result(result) => command_tag(&result),
        Output::Begin => Tag::new("BEGIN"),
        Output::End(tag) => Tag::new(tag),
        Output::Set => Tag::new("SET"),
    }
}
