//! [`RoutingBackend`]: the node's [`Backend`] for clients. Writes, transactions and master
//! reads go to the group's master: this node's own backend when it is master, the master's
//! proxy over [`crate::forward`] otherwise. Clients never need to know who is master.
//!
//! Retry rules (DESIGN "Routing and retries"): a forwarded write is retried on another node only
//! after the answer "not master, not executed" (or when it never left); any other failure after
//! sending is "outcome unknown" (40003). With no master known, wait up to the master wait, then
//! fail with 57P03.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult,
};
use paxsql_replicator::sqlite::ReadCancel;
use paxsql_schema::{
    forward_request::Kind, ForwardEmpty, ForwardRead, ForwardRequest, ForwardWrite,
};
use tokio::net::TcpStream;

use crate::backend::{Backend, Transaction};
use crate::forward::auth::ForwardCredentials;
use crate::forward::client::{
    call_on, refused_error, response_error, ForwardClient, ForwardFailure,
};
use crate::forward::convert::{
    columns_from_proto, consistency_to_proto, result_from_proto, statement_to_proto,
};

/// Pause between attempts while a master is being elected or learned.
const ROUTE_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Who is master of what, and where nodes' proxies listen. Implemented by the running node.
pub trait Topology: Send + Sync + 'static {
    fn self_id(&self) -> u32;
    /// The master of `group` as this node currently believes, if any.
    fn master_of(&self, group: &str) -> Option<u32>;
    /// The forwarding (HTTP) address of node `node_id`, learned in the peer handshake.
    fn forward_addr(&self, node_id: u32) -> Option<String>;
    /// How long to wait for a master before answering 57P03.
    fn master_wait(&self) -> Duration;
}

/// Where a request should go right now.
enum Route {
    Local,
    Remote(Arc<ForwardClient>),
    Wait,
}

pub struct RoutingBackend {
    local: Arc<dyn Backend>,
    topology: Arc<dyn Topology>,
    clients: Mutex<HashMap<String, Arc<ForwardClient>>>,
    /// What this node proves itself with to masters it forwards to.
    credentials: ForwardCredentials,
    next_request_id: std::sync::atomic::AtomicU64,
}

impl RoutingBackend {
    pub fn new(
        local: Arc<dyn Backend>,
        topology: Arc<dyn Topology>,
        credentials: ForwardCredentials,
    ) -> Self {
        RoutingBackend {
            local,
            topology,
            clients: Mutex::new(HashMap::new()),
            credentials,
            next_request_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn route(&self, group: &str) -> Route {
        let Some(master) = self.topology.master_of(group) else {
            return Route::Wait;
        };
        if master == self.topology.self_id() {
            return Route::Local;
        }
        let Some(addr) = self.topology.forward_addr(master) else {
            return Route::Wait;
        };
        let mut clients = self
            .clients
            .lock()
            .expect("client map lock is never poisoned");
        let client = clients
            .entry(addr.clone())
            .or_insert_with(|| Arc::new(ForwardClient::new(addr, self.credentials.clone())));
        Route::Remote(client.clone())
    }

    fn request(&self, group: &str, kind: Kind) -> ForwardRequest {
        ForwardRequest {
            request_id: self
                .next_request_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            group: group.to_string(),
            kind: Some(kind),
        }
    }

    fn no_master(&self, group: &str) -> SqlError {
        SqlError::new(
            SqlErrorKind::NoMaster,
            format!(
                "no master for database \"{group}\" within {:?}: an election may be in progress or a majority may be down; retry, and check `paxsql status`",
                self.topology.master_wait()
            ),
        )
    }
}

/// Retries `attempt` while it reports "not master / not sent", until the master wait ends.
macro_rules! with_master {
    ($self:ident, $group:expr, |$route:ident| $attempt:expr) => {{
        let deadline = Instant::now() + $self.topology.master_wait();
        loop {
            let $route = $self.route($group);
            let outcome: Option<Result<_, SqlError>> = $attempt;
            match outcome {
                Some(done) => break done,
                None if Instant::now() >= deadline => break Err($self.no_master($group)),
                None => tokio::time::sleep(ROUTE_RETRY_PAUSE).await,
            }
        }
    }};
}

/// `None` (retry) for "not master, not executed", else the final outcome.
fn settle<T>(outcome: Result<T, SqlError>) -> Option<Result<T, SqlError>> {
    match outcome {
        Err(error) if error.kind == SqlErrorKind::NotMaster => None,
        other => Some(other),
    }
}

#[async_trait]
impl Backend for RoutingBackend {
    fn has_group(&self, group: &str) -> bool {
        self.local.has_group(group)
    }

    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        with_master!(self, group, |route| match route {
            Route::Wait => None,
            Route::Local => settle(self.local.execute_write(group, statements.clone()).await),
            Route::Remote(client) => {
                let write = ForwardWrite {
                    statements: statements.iter().map(statement_to_proto).collect(),
                };
                match client.call(self.request(group, Kind::Write(write))).await {
                    Err(ForwardFailure::NotSent(_)) => None,
                    Err(failure) => Some(Err(failure.into_write_error())),
                    Ok(mut response) => settle(match response_error(&mut response) {
                        Some(error) => Err(error),
                        None => Ok(response
                            .results
                            .into_iter()
                            .map(result_from_proto)
                            .collect()),
                    }),
                }
            }
        })
    }

    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        self.read_cancelable(group, statement, consistency, ReadCancel::new())
            .await
    }

    /// A canceled read stops waiting at once: a read changes nothing, so dropping it anywhere
    /// is safe. A forwarded one is dropped with its forwarding connection, which tells the
    /// master to interrupt it (see `forward::server`).
    async fn read_cancelable(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
        cancel: ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        if consistency == Consistency::Local {
            return self
                .local
                .read_cancelable(group, statement, consistency, cancel)
                .await;
        }
        let routed = self.read_routed(group, statement, consistency, cancel.clone());
        tokio::select! {
            outcome = routed => outcome,
            () = cancel.canceled() => Err(ReadCancel::error()),
        }
    }

    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError> {
        with_master!(self, group, |route| match route {
            Route::Wait => None,
            Route::Local => settle(self.local.begin(group).await),
            Route::Remote(client) => match client.connect().await {
                Err(ForwardFailure::Refused(message)) => {
                    Some(Err(refused_error(&message, "transaction")))
                }
                Err(_) => None,
                Ok(mut stream) => {
                    let request = self.request(group, Kind::Begin(ForwardEmpty {}));
                    match call_on(&mut stream, &request).await {
                        Err(_) => None,
                        Ok(mut response) => settle(match response_error(&mut response) {
                            Some(error) => Err(error),
                            None => Ok(Box::new(ForwardedTransaction {
                                stream,
                                group: group.to_string(),
                                next_request_id: 1,
                            }) as Box<dyn Transaction>),
                        }),
                    }
                }
            },
        })
    }

    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError> {
        match self.local.is_read_only(group, sql).await {
            Err(error) if replica_may_lag(&error) => {
                let kind = Kind::IsReadOnly(statement_to_proto(&StatementRequest::new(sql)));
                match self.ask_master(group, kind).await {
                    Some(Ok(response)) => Ok(response.read_only),
                    Some(Err(master_error)) => Err(master_error),
                    None => Err(error),
                }
            }
            other => other,
        }
    }

    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError> {
        match self.local.describe(group, sql).await {
            Err(error) if replica_may_lag(&error) => {
                let kind = Kind::Describe(statement_to_proto(&StatementRequest::new(sql)));
                match self.ask_master(group, kind).await {
                    Some(Ok(response)) => Ok(columns_from_proto(response.columns)),
                    Some(Err(master_error)) => Err(master_error),
                    None => Err(error),
                }
            }
            other => other,
        }
    }
}

impl RoutingBackend {
    /// A read at `consistency` on the master, wherever it is, retried while no master answers.
    async fn read_routed(
        &self,
        group: &str,
        statement: StatementRequest,
        consistency: Consistency,
        cancel: ReadCancel,
    ) -> Result<StatementResult, SqlError> {
        with_master!(self, group, |route| match route {
            Route::Wait => None,
            Route::Local => settle(
                self.local
                    .read_cancelable(group, statement.clone(), consistency, cancel.clone())
                    .await
            ),
            Route::Remote(client) => {
                let read = ForwardRead {
                    statement: Some(statement_to_proto(&statement)),
                    consistency: consistency_to_proto(consistency),
                };
                // A read changes nothing, so an unanswered read is simply retried.
                match client.call(self.request(group, Kind::Read(read))).await {
                    Err(ForwardFailure::Refused(message)) => {
                        Some(Err(refused_error(&message, "read")))
                    }
                    Err(_) => None,
                    Ok(mut response) => settle(match response_error(&mut response) {
                        Some(error) => Err(error),
                        None => response
                            .results
                            .pop()
                            .map(result_from_proto)
                            .ok_or_else(|| {
                                SqlError::new(SqlErrorKind::Other, "the master sent no result")
                            }),
                    }),
                }
            }
        })
    }
}

/// Errors a lagging replica gives for a table or column the master already has: a client that
/// just created a table through this follower must be able to Parse a statement on it.
fn replica_may_lag(error: &SqlError) -> bool {
    matches!(
        error.kind,
        SqlErrorKind::UndefinedTable | SqlErrorKind::UndefinedColumn
    )
}

impl RoutingBackend {
    /// Asks the master (once, without waiting for an election) a question that changes
    /// nothing. `None` when this node is master or no master answered: the local answer stands.
    async fn ask_master(
        &self,
        group: &str,
        kind: Kind,
    ) -> Option<Result<paxsql_schema::ForwardResponse, SqlError>> {
        let Route::Remote(client) = self.route(group) else {
            return None;
        };
        let mut response = client.call(self.request(group, kind)).await.ok()?;
        Some(match response_error(&mut response) {
            Some(error) => Err(error),
            None => Ok(response),
        })
    }
}

/// A transaction open on the master, pinned to one forwarding connection. Dropping it closes
/// the connection, and the master rolls the transaction back.
struct ForwardedTransaction {
    stream: TcpStream,
    group: String,
    next_request_id: u64,
}

impl ForwardedTransaction {
    async fn call(&mut self, kind: Kind) -> Result<paxsql_schema::ForwardResponse, SqlError> {
        let request = ForwardRequest {
            request_id: self.next_request_id,
            group: self.group.clone(),
            kind: Some(kind),
        };
        self.next_request_id += 1;
        let mut response = call_on(&mut self.stream, &request)
            .await
            .map_err(|failure| match failure {
                ForwardFailure::NotSent(message)
                | ForwardFailure::Unanswered(message)
                | ForwardFailure::Refused(message) => SqlError::new(
                    SqlErrorKind::Unknown,
                    format!("{message}; the transaction's connection to the master broke"),
                ),
            })?;
        match response_error(&mut response) {
            Some(error) => Err(error),
            None => Ok(response),
        }
    }
}

#[async_trait]
impl Transaction for ForwardedTransaction {
    async fn execute(&mut self, statement: StatementRequest) -> Result<StatementResult, SqlError> {
        let mut response = self
            .call(Kind::TransactionStatement(statement_to_proto(&statement)))
            .await?;
        response
            .results
            .pop()
            .map(result_from_proto)
            .ok_or_else(|| SqlError::new(SqlErrorKind::Other, "the master sent no result"))
    }

    async fn describe(&mut self, sql: &str) -> Result<Vec<Column>, SqlError> {
        let statement = statement_to_proto(&StatementRequest::new(sql));
        let response = self.call(Kind::TransactionDescribe(statement)).await?;
        Ok(columns_from_proto(response.columns))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), SqlError> {
        self.call(Kind::Commit(ForwardEmpty {})).await.map(|_| ())
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), SqlError> {
        self.call(Kind::Rollback(ForwardEmpty {})).await.map(|_| ())
    }
}
