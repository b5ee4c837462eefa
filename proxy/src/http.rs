//! The HTTP admin endpoint: `GET /status` (JSON), `GET /metrics` (Prometheus text) and
//! `GET /ready` (200 or 503), plus the routes an [`AdminSource`] adds (admin actions, backups,
//! the checkpoint stream).
//!
//! A deliberately tiny HTTP/1.1 server: one request per connection, bounded request size and
//! connection count. It serves operators and scripts, not browsers at scale.
//!
//! Ordering obligation: the source's [`HttpGuard`] (`http_guard.rs`) checks every request head
//! before any route is even looked up, so an unauthenticated request never starts work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::forward::server::{is_forward_magic, ForwardServer};
use crate::log_budget::LogBudget;

#[path = "http_guard.rs"]
mod guard;
pub use guard::{
    access, authorization_line, client_admin_token, read_admin_token_file, Access, HttpGuard,
    ADMIN_TOKEN_BYTES_MAX, ADMIN_TOKEN_ENV, PEER_PROOF_NONCES_MAX,
};

/// Largest request head accepted.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Concurrent admin connections.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// A client must send its request within this time.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoint reports. Implemented by the running node.
pub trait AdminSource: Send + Sync + 'static {
    /// The `/status` document.
    fn status_json(&self) -> serde_json::Value;
    /// The `/metrics` text in Prometheus exposition format.
    fn metrics_text(&self) -> String;
    /// `/ready`: the node knows a master and has applied what was chosen before it started.
    fn ready(&self) -> bool;
    /// Who may use which route; `None`: every route is open (tests, tools).
    fn guard(&self) -> Option<&HttpGuard> {
        None
    }
    /// Extra routes (e.g. admin actions); `None` means 404.
    fn route(&self, _method: &str, _path: &str) -> Option<HttpResponse> {
        None
    }
    /// Routes that wait or stream (checkpoint transfer, membership changes): they take over the
    /// connection after the request head. `target` keeps the query string. `None`: not here.
    fn stream_route(&self, _method: &str, _target: &str) -> Option<StreamRoute> {
        None
    }

    /// Routes answered with a file streamed from disk (backups: larger than memory may
    /// hold). `target` keeps its query string. `None` falls through to [`Self::route`].
    fn file_route(&self, _method: &str, _target: &str) -> Option<FileRouteFuture> {
        None
    }
}

/// A route that writes its whole response itself (see [`AdminSource::stream_route`]).
pub type StreamRoute = Box<
    dyn FnOnce(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>
        + Send,
>;

/// A response whose body is a file on disk, sent in chunks with its length up front.
#[derive(Debug)]
pub struct FileResponse {
    pub content_type: &'static str,
    /// Extra response headers, e.g. `X-Paxsql-Instance`.
    pub headers: Vec<(String, String)>,
    pub path: std::path::PathBuf,
    /// Delete the file once sent (or once sending failed): a temporary export.
    pub remove_after: bool,
}

/// The work behind a file route: the file, or an error response.
pub type FileRouteFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<FileResponse, HttpResponse>> + Send>>;

/// A response to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).expect("a JSON value always serializes");
        body.push(b'\n');
        HttpResponse {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.into().into_bytes(),
        }
    }
}

/// Concurrent forwarding connections from other nodes' proxies (they are long-lived).
pub const FORWARD_CONNECTIONS_MAX: usize = 1024;
/// Connections whose kind is not known yet (waiting for their first bytes) or whose forwarding
/// handshake is not done: bounded apart from the slots of identified connections.
pub const UNIDENTIFIED_CONNECTIONS_MAX: usize = 128;
/// Pause after a failed `accept` (e.g. out of file descriptors) before accepting again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Serves the admin endpoint until `shutdown` completes. When `forward` is set, connections
/// that open with the forwarding magic are served by [`crate::forward::server`] with it.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    forward: Option<Arc<ForwardServer>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    let forward_slots = Arc::new(Semaphore::new(FORWARD_CONNECTIONS_MAX));
    let unidentified = Arc::new(Semaphore::new(UNIDENTIFIED_CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: keep the port alive and try again shortly.
                tracing::warn!(%error, "accepting an HTTP connection failed; retrying");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        // Connections not yet identified (first bytes, a forwarding handshake) are bounded
        // before a task exists for them: over the bound the connection is closed at once.
        let Ok(identifying) = unidentified.clone().try_acquire_owned() else {
            continue;
        };
        let source = source.clone();
        let forward = forward.clone();
        let slots = slots.clone();
        let forward_slots = forward_slots.clone();
        tokio::spawn(async move {
            let outcome = dispatch(stream, source, forward, slots, forward_slots, identifying);
            if let Err(error) = outcome.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// Tells a forwarding connection from an HTTP request by its first bytes, within the bounds
/// of each kind.
async fn dispatch(
    mut stream: TcpStream,
    source: Arc<dyn AdminSource>,
    forward: Option<Arc<ForwardServer>>,
    slots: Arc<Semaphore>,
    forward_slots: Arc<Semaphore>,
    identifying: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut first = [0u8; 4];
    let peeked = match tokio::time::timeout(HTTP_READ_TIMEOUT, stream.peek(&mut first)).await {
        Ok(peeked) => peeked?,
        Err(_) => return Ok(()),
    };
    if let Some(server) = forward.filter(|_| is_forward_magic(&first[..peeked])) {
        stream.read_exact(&mut first).await?;
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |addr| addr.to_string());
        crate::forward::server::authenticate(&mut stream, &server, &peer).await?;
        drop(identifying);
        // Over the bound: drop the connection; the follower answers its client with a retry.
        let Ok(_permit) = forward_slots.try_acquire_owned() else {
            return Ok(());
        };
        return crate::forward::server::serve_authenticated(stream, &server).await;
    }
    drop(identifying);
    // Over the bound: drop the connection rather than queue without limit.
    let Ok(_permit) = slots.try_acquire_owned() else {
        return Ok(());
    };
    handle_connection(stream, source).await
}

async fn handle_connection(
    mut stream: TcpStream,
    source: Arc<dyn AdminSource>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HTTP_READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    if let Some(guard) = source.guard() {
        if let Err(refusal) = guard.check_now(&String::from_utf8_lossy(&head)) {
            // The request line only: never a header (it may carry a token).
            let request = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            let remote = stream.peer_addr().map(|addr| addr.to_string());
            static REFUSALS: LogBudget = LogBudget::new();
            if let Some(left_out) = REFUSALS.admit(std::time::Instant::now()) {
                tracing::info!(
                    status = refusal.status,
                    request,
                    remote = remote.as_deref().unwrap_or("?"),
                    left_out,
                    "refused an HTTP request without valid credentials"
                );
            }
            return write_response(&mut stream, &refusal).await;
        }
    }
    if let Some((method, target)) = request_target(&head) {
        if let Some(route) = source.stream_route(&method, &target) {
            return route(stream).await;
        }
    }
    if let Some(future) =
        request_target(&head).and_then(|(method, target)| source.file_route(&method, &target))
    {
        return match future.await {
            Ok(file) => write_file_response(&mut stream, file).await,
            Err(response) => write_response(&mut stream, &response).await,
        };
    }
    let response = match parse_request_line(&head) {
        Some((method, path)) => respond(source.as_ref(), &method, &path),
        None => HttpResponse::text(400, "bad request: send `GET /status HTTP/1.1`\n"),
    };
    write_response(&mut stream, &response).await
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > HTTP_REQUEST_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(head)
}

/// The method and the full target (with its query string).
fn request_target(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.lines().next()?.split_whitespace();
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

fn parse_request_line(head: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    Some((method, path))
}

/// Sends `file` as the body; the file is removed afterwards when asked, even on failure.
async fn write_file_response(stream: &mut TcpStream, file: FileResponse) -> std::io::Result<()> {
    struct RemoveOnDrop(Option<std::path::PathBuf>);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            if let Some(path) = self.0.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let _cleanup = RemoveOnDrop(file.remove_after.then(|| file.path.clone()));
    let mut body = tokio::fs::File::open(&file.path).await?;
    let length = body.metadata().await?.len();
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {length}\r\n",
        file.content_type
    );
    for (name, value) in &file.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let sent = tokio::io::copy(&mut body, stream).await?;
    if sent != length {
        return Err(std::io::Error::other(format!(
            "{} changed while being sent ({sent} of {length} bytes)",
            file.path.display()
        )));
    }
    stream.shutdown().await
}

fn respond(source: &dyn AdminSource, method: &str, path: &str) -> HttpResponse {
    if let Some(response) = source.route(method, path) {
        return response;
    }
    if method != "GET" {
        return HttpResponse::text(405, "only GET is supported here\n");
    }
    match path {
        "/status" => HttpResponse::json(200, &source.status_json()),
        "/metrics" => HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: source.metrics_text().into_bytes(),
        },
        "/ready" if source.ready() => HttpResponse::text(200, "ready\n"),
        "/ready" => HttpResponse::text(
            503,
            "not ready: no master known yet, or still catching up\n",
        ),
        _ => HttpResponse::text(404, "not found: try /status, /metrics or /ready\n"),
    }
}

async fn write_response(stream: &mut TcpStream, response: &HttpResponse) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Status",
    };
    // RFC 9110: a 401 names the scheme it wants.
    let challenge = if response.status == 401 {
        "WWW-Authenticate: Bearer realm=\"paxsql\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        response.status,
        reason,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

/// A minimal HTTP GET client for `paxsql status` and tests: returns (status code, body).
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    let mut stream = tokio::time::timeout(HTTP_READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("timed out connecting to {addr}"))?
        .with_context(|| {
            format!(
                "cannot connect to {addr}: is the node running, and is this its --http address?"
            )
        })?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(HTTP_READ_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("timed out reading from {addr}"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl AdminSource for Fixed {
        fn status_json(&self) -> serde_json::Value {
            serde_json::json!({"node_id": 1, "role": "master"})
        }
        fn metrics_text(&self) -> String {
            "paxsql_up 1\n".into()
        }
        fn ready(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn serves_status_metrics_ready_and_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(Fixed), None, async {
            let _ = stopped.await;
        }));
        let (code, body) = get(&addr, "/status").await.expect("status");
        assert_eq!(code, 200);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["role"], "master");
        assert_eq!(
            get(&addr, "/metrics").await.expect("metrics"),
            (200, "paxsql_up 1\n".into())
        );
        assert_eq!(get(&addr, "/ready").await.expect("ready").0, 503);
        assert_eq!(get(&addr, "/nope").await.expect("404").0, 404);
        stop.send(()).expect("server still running");
        server.await.expect("joins").expect("serves cleanly");
    }

    #[tokio::test]
    async fn silent_connections_past_the_bound_are_closed_and_the_port_recovers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(Fixed), None, async {
            let _ = stopped.await;
        }));
        // Connections that never say what they are fill the bound...
        let mut silent = Vec::new();
        for _ in 0..UNIDENTIFIED_CONNECTIONS_MAX {
            silent.push(TcpStream::connect(&addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so one more is closed at once instead of getting a task of its own.
        let mut extra = TcpStream::connect(&addr).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte))
            .await
            .expect("closed well before the read timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "over the bound: {read:?}");
        // Once they go, the port serves again (it never stopped accepting).
        drop(silent);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get(&addr, "/status").await.expect("status").0, 200);
        stop.send(()).expect("server still running");
        server.await.expect("joins").expect("serves cleanly");
    }
}
