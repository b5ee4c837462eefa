//! The PostgreSQL-wire front end, on `pgwire`: [`serve`] accepts connections on a bound
//! listener until `shutdown` resolves.
//!
//! - `handler`: the pgwire handlers of one connection (startup, simple and extended query);
//! - `session`: a session's state and how its statements run against the [`Backend`];
//! - `types`: SQLite values as PostgreSQL types; `errors`: SQLSTATEs;
//! - `limits`: connection bounds and timeouts.
//!
//! Per connection: a first-packet check (garbage gets a protocol-violation error and a closed
//! socket), the connection limit (53300), the database name as group (3D000 if unknown),
//! trust or SCRAM-SHA-256 authentication, optional TLS, and idle timeouts. When a connection
//! ends for any reason its open transaction is rolled back.

pub mod cancel;
pub mod errors;
pub mod extended;
pub mod handler;
pub mod options;
pub mod session;
pub mod types;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::tokio::{process_socket, TlsAcceptor};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::backend::Backend;
use handler::{Activity, Admission, Authentication, ConnectionHandlers};
use session::Session;

/// Named bounds of the wire server.
pub mod limits {
    use std::time::Duration;

    /// Default `ServerOptions::connections_max`.
    pub const CONNECTIONS_MAX_DEFAULT: usize = 100;
    /// Connections past the limit that still get a proper 53300 answer; beyond these the
    /// socket is simply closed, so a flood cannot make the server spawn without bound.
    pub const REFUSING_CONNECTIONS_MAX: usize = 64;
    /// How long a new connection has to send its first 8 bytes.
    pub const FIRST_PACKET_WAIT: Duration = Duration::from_secs(10);
    /// How often idle timeouts are checked.
    pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
    /// How long shutdown waits for connections to wind down before aborting them.
    pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
    /// The largest startup packet a client may announce.
    pub const STARTUP_PACKET_BYTES_MAX: u32 = 10_000;
    /// SCRAM iterations for configured users.
    pub const SCRAM_ITERATIONS: usize = 4096;
}

/// A user allowed in with SCRAM-SHA-256.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate_path: PathBuf,
    pub private_key_path: PathBuf,
}

/// How the wire server behaves.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// With no users, any user name is trusted; with users, SCRAM-SHA-256 is required.
    pub users: Vec<User>,
    /// TLS (SSLRequest and direct TLS) when set.
    pub tls: Option<TlsFiles>,
    /// Sessions at once; more get 53300.
    pub connections_max: usize,
    /// Close a session idle (outside a transaction) this long.
    pub idle_session_timeout: Option<Duration>,
    /// Close a session idle inside a transaction this long (its transaction rolls back and
    /// the writer is freed).
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            users: Vec::new(),
            tls: None,
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
            idle_session_timeout: None,
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading TLS file {path}: {source}; check --tls-cert/--tls-key")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration is invalid: {0}; the certificate and key must be PEM and match")]
    TlsConfig(String),
    #[error("SCRAM setup failed: {0}")]
    Scram(String),
    #[error("users file {path} is invalid: {reason}")]
    UsersFile { path: PathBuf, reason: String },
}

struct Shared {
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    /// For plain connections.
    authentication: Arc<Authentication>,
    /// For TLS connections: SCRAM may add channel binding (SCRAM-SHA-256-PLUS), which a
    /// plain connection must never be offered.
    authentication_tls: Arc<Authentication>,
    tls: Option<TlsAcceptor>,
    connections: AtomicUsize,
    /// Admitted sessions by process id, for cancel requests.
    cancel_registry: Arc<cancel::CancelRegistry>,
}

/// Serves PostgreSQL clients on `listener` until `shutdown` resolves; then closes every
/// connection (rolling back open transactions) and returns.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    shutdown: impl Future,
) -> Result<(), ServeError> {
    let tls = options.tls.as_ref().map(load_tls).transpose()?;
    let authentication_tls = Arc::new(authentication(&options, true)?);
    let authentication = Arc::new(authentication(&options, false)?);
    let shared = Arc::new(Shared {
        backend,
        authentication,
        authentication_tls,
        tls,
        connections: AtomicUsize::new(0),
        cancel_registry: Arc::new(cancel::CancelRegistry::new(options.connections_max)),
        options,
    });
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let shared = shared.clone();
                    let stop = stop_receiver.clone();
                    connections.spawn(async move { run_connection(socket, shared, stop).await });
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accepting a SQL connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_sender.send(true);
    let drained = tokio::time::timeout(limits::SHUTDOWN_WAIT, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
    Ok(())
}

struct ConnectionCount(Arc<Shared>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn run_connection(
    mut socket: TcpStream,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let active = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let _count = ConnectionCount(shared.clone());
    let connections_max = shared.options.connections_max;
    if active > connections_max + limits::REFUSING_CONNECTIONS_MAX {
        return;
    }
    if !first_packet_is_valid(&socket, shared.tls.is_some()).await {
        let _ = socket.write_all(&protocol_violation_message()).await;
        let _ = socket.shutdown().await;
        return;
    }
    let _ = socket.set_nodelay(true);
    let asks_for_tls = shared.tls.is_some() && asks_for_tls(&socket).await;
    // A second handle on the socket, to say goodbye (FATAL) after pgwire's task has gone.
    let (socket, spare) = match split_spare(socket) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "could not set up a SQL connection");
            return;
        }
    };
    let admission = if active > connections_max {
        Admission::OverConnectionLimit { connections_max }
    } else {
        Admission::Admitted
    };
    let session = Arc::new(Session::new(shared.backend.clone()));
    let activity = Arc::new(Activity::new());
    let cancel_registration = Arc::new(cancel::CancelRegistration::new(
        shared.cancel_registry.clone(),
        session.cancel_switch().clone(),
    ));
    let handlers = Arc::new(ConnectionHandlers {
        session: session.clone(),
        activity: activity.clone(),
        authentication: if asks_for_tls {
            shared.authentication_tls.clone()
        } else {
            shared.authentication.clone()
        },
        admission,
        cancel_registration: cancel_registration.clone(),
        cancel_registry: shared.cancel_registry.clone(),
        held: Arc::default(),
    });
    let idle_timeout = tokio::select! {
        outcome = process_socket(socket, shared.tls.clone(), handlers) => {
            if let Err(error) = outcome {
                tracing::debug!(%error, "SQL connection ended with an error");
            }
            None
        }
        timeout = watch_idle(&session, &activity, &shared.options) => Some(timeout),
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    if let Some(timeout) = idle_timeout {
        tracing::info!(?timeout, "closing an idle SQL session");
        // Over TLS plain bytes would corrupt the stream: there the socket just closes.
        if !asks_for_tls {
            say_fatal(spare, timeout.sqlstate(), timeout.message()).await;
        }
    } else {
        drop(spare);
    }
    cancel_registration.unregister();
    session.close().await;
}

/// Which idle timeout ended a session.
#[derive(Clone, Copy, Debug)]
enum IdleTimeout {
    Session,
    InTransaction,
}

impl IdleTimeout {
    /// PostgreSQL's SQLSTATEs for the same events.
    fn sqlstate(self) -> &'static str {
        match self {
            IdleTimeout::Session => "57P05",
            IdleTimeout::InTransaction => "25P03",
        }
    }

    fn message(self) -> &'static str {
        match self {
            IdleTimeout::Session => {
                "terminating connection due to idle-session timeout; reconnect"
            }
            IdleTimeout::InTransaction => {
                "terminating connection due to idle-in-transaction timeout; the transaction was rolled back, reconnect and retry it"
            }
        }
    }
}

/// Resolves when the session has been idle past its timeout.
async fn watch_idle(
    session: &Session,
    activity: &Activity,
    options: &ServerOptions,
) -> IdleTimeout {
    if options.idle_session_timeout.is_none() && options.idle_in_transaction_timeout.is_none() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(limits::IDLE_CHECK_INTERVAL).await;
        let idle = Duration::from_millis(activity.idle_ms());
        let (limit, which) = if session.in_transaction().await {
            (
                options.idle_in_transaction_timeout,
                IdleTimeout::InTransaction,
            )
        } else {
            (options.idle_session_timeout, IdleTimeout::Session)
        };
        if limit.is_some_and(|limit| idle > limit) {
            return which;
        }
    }
}

/// Whether the client opens with an SSLRequest or a TLS ClientHello.
async fn asks_for_tls(socket: &TcpStream) -> bool {
    let mut header = [0u8; 8];
    match socket.peek(&mut header).await {
        Ok(n) if n >= 1 && header[0] == 0x16 => true,
        Ok(8) => u32::from_be_bytes([header[4], header[5], header[6], header[7]]) == 80_877_103,
        _ => false,
    }
}

/// The socket for pgwire, and a duplicate handle kept to write a last FATAL message.
fn split_spare(socket: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let spare = socket.try_clone()?;
    Ok((TcpStream::from_std(socket)?, spare))
}

/// Writes a FATAL ErrorResponse on a socket pgwire no longer uses, then closes it.
async fn say_fatal(spare: std::net::TcpStream, sqlstate: &str, message: &str) {
    let Ok(mut socket) = TcpStream::from_std(spare) else {
        return;
    };
    let bytes = error_message("FATAL", sqlstate, message);
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&bytes)).await;
    let _ = socket.shutdown().await;
}

/// Whether the first 8 bytes are a PostgreSQL startup, SSL, GSSAPI or cancel request (or a
/// TLS ClientHello when TLS is on).
async fn first_packet_is_valid(socket: &TcpStream, tls: bool) -> bool {
    let mut header = [0u8; 8];
    let peeked = tokio::time::timeout(limits::FIRST_PACKET_WAIT, async {
        loop {
            match socket.peek(&mut header).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= header.len() => return true,
                Ok(n) if tls && header[0] == 0x16 && n >= 1 => return true,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
    if !peeked.await.unwrap_or(false) {
        return false;
    }
    if tls && header[0] == 0x16 {
        return true;
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    match code {
        80_877_103 | 80_877_104 => length == 8,
        80_877_102 => length == 16,
        196_608 | 196_610 => (8..=limits::STARTUP_PACKET_BYTES_MAX).contains(&length),
        _ => false,
    }
}

/// A FATAL 08P01 ErrorResponse, written by hand because the peer never spoke the protocol.
fn protocol_violation_message() -> Vec<u8> {
    error_message(
        "FATAL",
        "08P01",
        "invalid startup packet: this port speaks the PostgreSQL protocol (v3); connect with a PostgreSQL client",
    )
}

/// An ErrorResponse message, byte for byte.
fn error_message(severity: &str, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(
        &u32::try_from(fields.len() + 4)
            .expect("short message")
            .to_be_bytes(),
    );
    message.extend_from_slice(&fields);
    message
}

#[derive(Debug)]
struct UserStore {
    passwords: HashMap<String, String>,
}

#[async_trait]
impl AuthSource for UserStore {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let password = self
            .passwords
            .get(user)
            .ok_or_else(|| PgWireError::InvalidPassword(user.to_owned()))?;
        let salt: Vec<u8> = (0..16).map(|_| rand_byte()).collect();
        Ok(Password::new(
            Some(salt.clone()),
            gen_salted_password(password, &salt, limits::SCRAM_ITERATIONS),
        ))
    }
}

/// A salt byte. Salts need uniqueness, not secrecy; the std hasher's random keys suffice.
fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u8
}

fn authentication(
    options: &ServerOptions,
    channel_binding: bool,
) -> Result<Authentication, ServeError> {
    if options.users.is_empty() {
        return Ok(Authentication::Trust);
    }
    let passwords = options
        .users
        .iter()
        .map(|u| (u.name.clone(), u.password.clone()))
        .collect();
    let mut scram = ScramAuth::new(Arc::new(UserStore { passwords }));
    scram.set_iterations(limits::SCRAM_ITERATIONS);
    if let Some(files) = options.tls.as_ref().filter(|_| channel_binding) {
        let certificate = read(&files.certificate_path)?;
        scram
            .configure_certificate(&certificate)
            .map_err(|e| ServeError::Scram(e.to_string()))?;
    }
    let parameters = Arc::new(handler::server_parameters());
    Ok(Authentication::Scram(
        SASLAuthStartupHandler::new(parameters).with_scram(scram),
    ))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::TlsFile {
        path: path.clone(),
        source,
    })
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certificates = CertificateDer::pem_slice_iter(&read(&files.certificate_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::TlsConfig(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.private_key_path)?)
        .map_err(|e| ServeError::TlsConfig(e.to_string()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| ServeError::TlsConfig(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
