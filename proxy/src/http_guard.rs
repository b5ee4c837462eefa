//! Who may use which route of the HTTP port ([`HttpGuard`]), and the admin token clients send.
//!
//! | routes | without `--admin-token-file` | with it |
//! |---|---|---|
//! | `GET /status`, `/metrics`, `/ready` | open | open (monitoring; they hold no secret) |
//! | `GET /checkpoint/stream` | open, or the peer proof when the node has a cluster secret | the same, or the token |
//! | every other route (`/admin/*`, `/backup`, …) | open | `Authorization: Bearer TOKEN` |
//!
//! A missing credential answers `401`, a wrong one `403`, each with a body that names the fix.
//! Without a cluster secret `/checkpoint/stream` stays open even with a token: peers have
//! nothing to prove, and the peer port (which streams the same data as Paxos learning) is open
//! to whoever reaches it anyway. A route not listed here needs the token: new routes are closed
//! by default.
//!
//! The token is compared in constant time: both sides are HMAC'd under a key drawn at startup
//! and the MACs compared by `hmac` (no early exit, and the token's length does not leak).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use paxsql_replicator::runtime::handshake::{fresh_nonce, secret_proof, secret_proof_matches};
use paxsql_replicator::service::checkpoint_stream::{
    check_peer_proof, unix_ms_now, PEER_PROOF_HEADER, PEER_PROOF_SKEW_MAX,
};

use super::HttpResponse;

/// The environment variable clients read the admin token from (when no file is given).
pub const ADMIN_TOKEN_ENV: &str = "PAXSQL_ADMIN_TOKEN";
/// Peer-proof nonces remembered to refuse replays (each for [`PEER_PROOF_SKEW_MAX`]): far more
/// than the checkpoint fetches a cluster makes in that window (one request per attempt).
pub const PEER_PROOF_NONCES_MAX: usize = 4_096;
/// Longest admin token accepted (it travels in a request head of at most 8 KiB).
pub const ADMIN_TOKEN_BYTES_MAX: usize = 1_024;
/// Names the token comparison inside the HMAC.
const TOKEN_LABEL: &[u8] = b"paxsql admin token";

/// What a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Monitoring: never guarded.
    Open,
    /// The checkpoint stream: the admin token or a peer's proof of the cluster secret.
    TokenOrPeerProof,
    /// Admin and data routes: the admin token.
    Token,
}

/// The access `method` on `path` (no query string) requires.
pub fn access(method: &str, path: &str) -> Access {
    match (method, path) {
        ("GET", "/status" | "/metrics" | "/ready") => Access::Open,
        ("GET", "/checkpoint/stream") => Access::TokenOrPeerProof,
        _ => Access::Token,
    }
}

/// The configured admin token, kept only as its MAC under a key of this process.
struct TokenCheck {
    key: Vec<u8>,
    expected: Vec<u8>,
}

impl TokenCheck {
    fn new(token: &str) -> Self {
        let key = fresh_nonce();
        let expected = secret_proof(&key, TOKEN_LABEL, 0, token.as_bytes(), b"");
        TokenCheck { key, expected }
    }

    fn matches(&self, presented: &str) -> bool {
        secret_proof_matches(
            &self.key,
            TOKEN_LABEL,
            0,
            presented.as_bytes(),
            b"",
            &self.expected,
        )
    }
}

/// Checks each HTTP request's credentials before any route runs (see the module docs).
pub struct HttpGuard {
    token: Option<TokenCheck>,
    cluster_secret: Option<Arc<[u8]>>,
    /// Accepted peer-proof nonces and their proof time (ms), bounded by
    /// [`PEER_PROOF_NONCES_MAX`]; pruned once older than the window.
    seen_nonces: Mutex<HashMap<Vec<u8>, u64>>,
}

impl HttpGuard {
    /// `token`: from `--admin-token-file`; `cluster_secret`: from `--cluster-secret-file`.
    pub fn new(token: Option<&str>, cluster_secret: Option<Arc<[u8]>>) -> Self {
        HttpGuard {
            token: token.map(TokenCheck::new),
            cluster_secret,
            seen_nonces: Mutex::new(HashMap::new()),
        }
    }

    /// Guards nothing: the behaviour without a token or a secret.
    pub fn open() -> Self {
        HttpGuard::new(None, None)
    }

    /// [`Self::check`] at this node's current time.
    pub fn check_now(&self, head: &str) -> Result<(), HttpResponse> {
        self.check(head, unix_ms_now())
    }

    /// `Ok` when the request in `head` (the raw request head) may reach its route, else the
    /// response to send instead. `now_unix_ms` is this node's clock.
    pub fn check(&self, head: &str, now_unix_ms: u64) -> Result<(), HttpResponse> {
        let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
        let method = request_line.next().unwrap_or("");
        let target = request_line.next().unwrap_or("");
        let path = target.split('?').next().unwrap_or(target);
        match access(method, path) {
            Access::Open => Ok(()),
            Access::Token => self.check_token(head),
            Access::TokenOrPeerProof => self.check_token_or_proof(head, target, now_unix_ms),
        }
    }

    fn check_token(&self, head: &str) -> Result<(), HttpResponse> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let Some(value) = header(head, "Authorization") else {
            return Err(HttpResponse::text(401, format!(
                "this node requires its admin token: pass --admin-token-file FILE to the paxsql command (or set {ADMIN_TOKEN_ENV}), or send `Authorization: Bearer TOKEN`\n"
            )));
        };
        let presented = bearer(value).unwrap_or("");
        if token.matches(presented) {
            return Ok(());
        }
        Err(HttpResponse::text(403, format!(
            "the admin token is wrong: pass the file given to this node's --admin-token-file as --admin-token-file to the paxsql command (or set {ADMIN_TOKEN_ENV} to its contents)\n"
        )))
    }

    fn check_token_or_proof(
        &self,
        head: &str,
        target: &str,
        now_unix_ms: u64,
    ) -> Result<(), HttpResponse> {
        // Without a secret peers cannot prove anything: the route is as open as the peer port.
        let Some(secret) = &self.cluster_secret else {
            return Ok(());
        };
        if let Some(value) = header(head, PEER_PROOF_HEADER) {
            return match check_peer_proof(secret, value, target, now_unix_ms) {
                Ok(proof) => self.remember_nonce(proof.nonce, proof.unix_ms, now_unix_ms),
                Err(error) => Err(HttpResponse::text(403, format!("{error}\n"))),
            };
        }
        if self.token.is_some() && header(head, "Authorization").is_some() {
            return self.check_token(head);
        }
        Err(HttpResponse::text(401, format!(
            "the checkpoint stream needs a proof of the cluster secret (peers send it when every node has the same --cluster-secret-file) or, when the node has one, its admin token (--admin-token-file or {ADMIN_TOKEN_ENV})\n"
        )))
    }

    /// Refuses a nonce accepted before (a replayed header).
    fn remember_nonce(
        &self,
        nonce: Vec<u8>,
        proof_unix_ms: u64,
        now_unix_ms: u64,
    ) -> Result<(), HttpResponse> {
        let window_ms = u64::try_from(PEER_PROOF_SKEW_MAX.as_millis()).unwrap_or(u64::MAX);
        let mut seen = self.seen_nonces.lock().expect("nonce lock");
        if seen.len() >= PEER_PROOF_NONCES_MAX {
            // A proof older than the window fails anyway: its nonce need not be remembered.
            seen.retain(|_, at| at.saturating_add(window_ms) >= now_unix_ms);
        }
        if seen.contains_key(&nonce) {
            return Err(HttpResponse::text(
                403,
                format!("this {PEER_PROOF_HEADER} was used before (a replayed request)\n"),
            ));
        }
        if seen.len() >= PEER_PROOF_NONCES_MAX {
            return Err(HttpResponse::text(
                503,
                "too many checkpoint requests in the last minutes; retry later\n",
            ));
        }
        seen.insert(nonce, proof_unix_ms);
        Ok(())
    }
}

impl Default for HttpGuard {
    fn default() -> Self {
        HttpGuard::open()
    }
}

/// The value of header `name` (case-insensitive) in a raw request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then(|| token.trim())
}

/// Reads an admin token file: surrounding whitespace (a trailing newline) is dropped; an
/// unreadable or empty file, or one that cannot travel in an HTTP header, is an error.
pub fn read_admin_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?;
    valid_token(text.trim()).with_context(|| format!("--admin-token-file {}", path.display()))
}

fn valid_token(token: &str) -> anyhow::Result<String> {
    if token.is_empty() {
        bail!("the admin token is empty: put a random token in the file (e.g. `openssl rand -hex 32 > FILE`)");
    }
    if token.len() > ADMIN_TOKEN_BYTES_MAX {
        bail!("the admin token is longer than {ADMIN_TOKEN_BYTES_MAX} bytes");
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        bail!("the admin token must be printable ASCII without spaces (e.g. `openssl rand -hex 32 > FILE`)");
    }
    Ok(token.to_string())
}

/// The token a client command sends: from `file` when given, else from
/// [`ADMIN_TOKEN_ENV`] when set and not empty, else none.
pub fn client_admin_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        return read_admin_token_file(path).map(Some);
    }
    match std::env::var(ADMIN_TOKEN_ENV) {
        Ok(value) if !value.trim().is_empty() => valid_token(value.trim())
            .with_context(|| format!("the {ADMIN_TOKEN_ENV} environment variable"))
            .map(Some),
        _ => Ok(None),
    }
}

/// The request header line (with its CRLF) that sends `token`; empty without one.
pub fn authorization_line(token: Option<&str>) -> String {
    token.map_or_else(String::new, |token| {
        format!("Authorization: Bearer {token}\r\n")
    })
}

#[cfg(test)]
#[path = "http_guard_tests.rs"]
mod tests;
