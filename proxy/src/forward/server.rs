//! The master side of forwarding: serves one forwarding connection over the node's local
//! backend (which refuses writes with `NotMaster`, unexecuted, when this node is not master).

use std::sync::Arc;

use paxsql_replicator::sqlite::types::{SqlError, SqlErrorKind};
use paxsql_replicator::sqlite::ReadCancel;
use paxsql_schema::{forward_request::Kind, ForwardRequest, ForwardResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::auth::{self, ForwardAuthError, ForwardCredentials};
use super::convert::{
    columns_to_proto, consistency_from_proto, error_to_proto, result_to_proto, statement_from_proto,
};
use super::frame::{read_frame, write_frame};
use super::{FORWARD_AUTH_TIMEOUT, MAGIC, PROTOCOL_VERSION};
use crate::backend::{Backend, Transaction};
use crate::log_budget::LogBudget;

/// What the master side serves forwarding connections with.
pub struct ForwardServer {
    pub backend: Arc<dyn Backend>,
    /// This node's id and cluster secret: a follower must prove the same secret ([`auth`]).
    pub credentials: ForwardCredentials,
}

/// Serves a connection whose first four bytes (the magic) were already read: the handshake,
/// then the requests.
pub async fn serve_connection<S>(
    mut stream: S,
    server: Arc<ForwardServer>,
    peer: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    authenticate(&mut stream, &server, peer).await?;
    serve_authenticated(stream, &server).await
}

/// The version check and the secret handshake, within [`FORWARD_AUTH_TIMEOUT`]. The HTTP
/// server runs it under its small bound for unidentified connections and gives the
/// connection a forwarding slot only afterwards, so unauthenticated connections cannot take
/// the slots followers need.
pub async fn authenticate<S>(
    stream: &mut S,
    server: &ForwardServer,
    peer: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting =
        tokio::time::timeout(FORWARD_AUTH_TIMEOUT, greet(stream, &server.credentials)).await;
    match greeting {
        Ok(Ok(_follower)) => Ok(()),
        Ok(Err(error)) => {
            if error.is_refusal() {
                static REFUSALS: LogBudget = LogBudget::new();
                if let Some(left_out) = REFUSALS.admit(std::time::Instant::now()) {
                    tracing::warn!(%peer, %error, left_out, "refused a forwarding connection");
                }
            }
            Err(std::io::Error::other(error))
        }
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("forwarding handshake not done within {FORWARD_AUTH_TIMEOUT:?}"),
        )),
    }
}

/// Serves the requests of an authenticated connection until the follower closes it.
pub async fn serve_authenticated<S>(mut stream: S, server: &ForwardServer) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut transaction: Option<Box<dyn Transaction>> = None;
    let outcome = serve_requests(&mut stream, server.backend.as_ref(), &mut transaction).await;
    // A vanished follower (or client behind it) leaves nothing behind.
    if let Some(open) = transaction.take() {
        let _ = open.rollback().await;
    }
    outcome
}

/// The protocol version, then the authentication handshake. Answers the follower's node id.
async fn greet<S>(stream: &mut S, credentials: &ForwardCredentials) -> Result<u32, ForwardAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut version = [0u8; 4];
    stream.read_exact(&mut version).await?;
    let version = u32::from_be_bytes(version);
    if version != PROTOCOL_VERSION {
        let error = ForwardAuthError::Version {
            follower: version,
            master: PROTOCOL_VERSION,
        };
        // A version-1 follower reads this refusal as the response to its request.
        auth::send_refusal(stream, error.to_string()).await;
        return Err(error);
    }
    auth::accept(stream, credentials).await
}

async fn serve_requests<S>(
    stream: &mut S,
    backend: &dyn Backend,
    transaction: &mut Option<Box<dyn Transaction>>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(request) = read_frame::<ForwardRequest>(stream).await? {
        // The follower sends nothing while it waits for an answer, so anything readable now is
        // its end of stream: its client canceled (or vanished). A read is then interrupted;
        // everything else still runs to its real outcome, exactly as before (a write's fate
        // must never depend on a cancel), and the answer is simply not sent.
        let cancel = ReadCancel::new();
        let handling = handle_request(request, backend, transaction, cancel.clone());
        tokio::pin!(handling);
        let mut probe = [0u8; 1];
        let mut follower_gone = false;
        let response = loop {
            tokio::select! {
                response = &mut handling => break response,
                _ = stream.read(&mut probe), if !follower_gone => {
                    follower_gone = true;
                    cancel.cancel();
                }
            }
        };
        if follower_gone {
            return Ok(());
        }
        write_frame(stream, &response).await?;
    }
    Ok(())
}

async fn handle_request(
    request: ForwardRequest,
    backend: &dyn Backend,
    transaction: &mut Option<Box<dyn Transaction>>,
    cancel: ReadCancel,
) -> ForwardResponse {
    let mut response = ForwardResponse {
        request_id: request.request_id,
        ..Default::default()
    };
    let group = request.group.as_str();
    let outcome: Result<(), SqlError> = match request.kind {
        None => Err(SqlError::new(SqlErrorKind::Other, "empty forward request")),
        Some(Kind::Write(write)) => {
            let statements = write
                .statements
                .into_iter()
                .map(statement_from_proto)
                .collect();
            backend
                .execute_write(group, statements)
                .await
                .map(|results| {
                    response.results = results.iter().map(result_to_proto).collect();
                })
        }
        Some(Kind::Read(read)) => match consistency_from_proto(read.consistency) {
            None => Err(SqlError::new(
                SqlErrorKind::Other,
                "unknown consistency level",
            )),
            Some(consistency) => {
                let statement = statement_from_proto(read.statement.unwrap_or_default());
                backend
                    .read_cancelable(group, statement, consistency, cancel)
                    .await
                    .map(|result| {
                        response.results = vec![result_to_proto(&result)];
                    })
            }
        },
        Some(Kind::Begin(_)) => match transaction {
            Some(_) => Err(SqlError::new(
                SqlErrorKind::Other,
                "a transaction is already open",
            )),
            None => backend
                .begin(group)
                .await
                .map(|open| *transaction = Some(open)),
        },
        Some(Kind::TransactionStatement(statement)) => match transaction.as_mut() {
            None => Err(no_transaction()),
            Some(open) => open
                .execute(statement_from_proto(statement))
                .await
                .map(|result| {
                    response.results = vec![result_to_proto(&result)];
                }),
        },
        Some(Kind::TransactionDescribe(statement)) => match transaction.as_mut() {
            None => Err(no_transaction()),
            Some(open) => open
                .describe(&statement.sql)
                .await
                .map(|columns| response.columns = columns_to_proto(&columns)),
        },
        Some(Kind::Commit(_)) => match transaction.take() {
            None => Err(no_transaction()),
            Some(open) => open.commit().await,
        },
        Some(Kind::Rollback(_)) => match transaction.take() {
            None => Ok(()),
            Some(open) => open.rollback().await,
        },
        Some(Kind::Describe(statement)) => backend
            .describe(group, &statement.sql)
            .await
            .map(|columns| response.columns = columns_to_proto(&columns)),
        Some(Kind::IsReadOnly(statement)) => backend
            .is_read_only(group, &statement.sql)
            .await
            .map(|read_only| response.read_only = read_only),
    };
    if let Err(error) = outcome {
        response.error = Some(error_to_proto(&error));
    }
    response
}

fn no_transaction() -> SqlError {
    SqlError::new(
        SqlErrorKind::Other,
        "no transaction is open on this forwarding connection",
    )
}

/// Whether the first bytes of a connection ask for forwarding.
pub fn is_forward_magic(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] == MAGIC
}
