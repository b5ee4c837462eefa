//! The follower side of forwarding: a small pool of connections to one master.

use std::sync::Mutex;
use std::time::Duration;

use paxsql_replicator::sqlite::types::{SqlError, SqlErrorKind};
use paxsql_schema::{ForwardRequest, ForwardResponse};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::{self, ForwardAuthError, ForwardCredentials};
use super::convert::error_from_proto;
use super::frame::{read_frame, write_frame};
use super::{FORWARD_AUTH_TIMEOUT, FORWARD_POOL_IDLE_MAX, MAGIC, PROTOCOL_VERSION};

/// How long connecting to the master may take.
pub const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one forwarded request may take before its outcome is declared unknown.
pub const FORWARD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a forwarded call failed before an answer came back.
#[derive(Debug)]
pub enum ForwardFailure {
    /// Nothing was sent: safe to retry anywhere.
    NotSent(String),
    /// The request left but no answer came back: the outcome is unknown (40003 for writes).
    Unanswered(String),
    /// The master refused the connection before any request (cluster secret or version
    /// mismatch): nothing was sent, and retrying cannot help until an operator fixes it.
    Refused(String),
}

/// A pooled client to one master's forwarding endpoint (its HTTP address).
pub struct ForwardClient {
    pub addr: String,
    /// What this node proves itself with to the master ([`auth`]).
    credentials: ForwardCredentials,
    idle: Mutex<Vec<TcpStream>>,
}

impl ForwardClient {
    pub fn new(addr: String, credentials: ForwardCredentials) -> Self {
        ForwardClient {
            addr,
            credentials,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a new authenticated forwarding connection (used directly to pin a transaction).
    pub async fn connect(&self) -> Result<TcpStream, ForwardFailure> {
        let connect = tokio::time::timeout(FORWARD_CONNECT_TIMEOUT, TcpStream::connect(&self.addr));
        let mut stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return Err(ForwardFailure::NotSent(format!(
                    "connect to master at {}: {error}",
                    self.addr
                )))
            }
            Err(_) => {
                return Err(ForwardFailure::NotSent(format!(
                    "connect to master at {} timed out",
                    self.addr
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(FORWARD_AUTH_TIMEOUT, greet(&mut stream, &self.credentials))
            .await
        {
            Ok(Ok(_master)) => Ok(stream),
            Ok(Err(error)) if error.is_refusal() => {
                // The operator reads this node's log: say it here, not only to the client.
                tracing::warn!(master = %self.addr, %error, "cannot forward to the master");
                Err(ForwardFailure::Refused(format!(
                    "forwarding to the master at {}: {error}",
                    self.addr
                )))
            }
            Ok(Err(error)) => Err(ForwardFailure::NotSent(format!(
                "greet master at {}: {error}",
                self.addr
            ))),
            Err(_) => Err(ForwardFailure::NotSent(format!(
                "greet master at {}: no answer within {FORWARD_AUTH_TIMEOUT:?}",
                self.addr
            ))),
        }
    }

    /// Sends one request on a pooled connection and returns the answer.
    pub async fn call(&self, request: ForwardRequest) -> Result<ForwardResponse, ForwardFailure> {
        // A pooled connection the master closed since (it stopped, or lost mastership and
        // restarted) is dropped here, BEFORE sending: a write sent on it would otherwise end
        // as "outcome unknown" although it never reached a live master.
        let pooled = loop {
            let candidate = self.idle.lock().expect("pool lock is never poisoned").pop();
            match candidate {
                Some(stream) if !is_still_open(&stream) => continue,
                other => break other,
            }
        };
        let mut stream = match pooled {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        let response = call_on(&mut stream, &request).await?;
        let mut idle = self.idle.lock().expect("pool lock is never poisoned");
        if idle.len() < FORWARD_POOL_IDLE_MAX {
            idle.push(stream);
        }
        Ok(response)
    }
}

/// Whether an idle pooled connection is still open: no end-of-file and no stray bytes wait on
/// it. Asks the kernel directly (a non-blocking peek), because the runtime's cached readiness
/// may not have seen the master's FIN yet.
fn is_still_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket this function borrows.
    let peeked = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    peeked < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Opens the protocol on `stream`: the magic, the version, then the [`auth`] handshake. Answers
/// the master's node id; once it returns `Ok`, requests may follow.
pub async fn greet<S>(
    stream: &mut S,
    credentials: &ForwardCredentials,
) -> Result<u32, ForwardAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = Vec::with_capacity(8);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    stream.write_all(&hello).await?;
    auth::connect(stream, credentials).await
}

/// One request/response on a given (greeted) connection.
pub async fn call_on<S>(
    stream: &mut S,
    request: &ForwardRequest,
) -> Result<ForwardResponse, ForwardFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A pooled connection may have been closed by the master since; a failed *write* means the
    // request did not get through whole, and the master executes only complete frames.
    write_frame(stream, request)
        .await
        .map_err(|error| ForwardFailure::NotSent(format!("send to master: {error}")))?;
    match tokio::time::timeout(
        FORWARD_REQUEST_TIMEOUT,
        read_frame::<ForwardResponse>(stream),
    )
    .await
    {
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => Err(ForwardFailure::Unanswered(
            "the master closed the connection".into(),
        )),
        Ok(Err(error)) => Err(ForwardFailure::Unanswered(format!(
            "read from master: {error}"
        ))),
        Err(_) => Err(ForwardFailure::Unanswered(format!(
            "no answer from the master within {FORWARD_REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// The response's error, if it carries one.
pub fn response_error(response: &mut ForwardResponse) -> Option<SqlError> {
    response.error.take().map(error_from_proto)
}

impl ForwardFailure {
    /// The error a client sees when a forwarded *write* failed this way.
    pub fn into_write_error(self) -> SqlError {
        match self {
            ForwardFailure::NotSent(message) => SqlError::new(
                SqlErrorKind::NoMaster,
                format!("{message}; the write was not sent, retry it"),
            ),
            ForwardFailure::Unanswered(message) => SqlError::new(
                SqlErrorKind::Unknown,
                format!(
                    "{message}; the write may or may not have been applied: check before retrying"
                ),
            ),
            ForwardFailure::Refused(message) => refused_error(&message, "write"),
        }
    }
}

/// The error a client sees when the master refused this node's forwarding connection: `what`
/// (a write, a read, a transaction) was not sent, so it was not executed.
pub fn refused_error(message: &str, what: &str) -> SqlError {
    SqlError::new(
        SqlErrorKind::Other,
        format!("{message}; the {what} was not executed"),
    )
}
