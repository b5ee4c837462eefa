//! The guard's decisions (token and peer proof: missing, wrong, right, stale, replayed), the
//! token file rules, and both over real loopback TCP: an admin call and a checkpoint fetch.

use std::sync::atomic::{AtomicUsize, Ordering};

use paxsql_replicator::service::checkpoint_stream::{
    self, peer_proof_header, FetchError, PeerIdentity,
};
use tokio::net::TcpListener;

use super::*;
use crate::http::{AdminSource, StreamRoute};

const NOW_MS: u64 = 1_700_000_000_000;
const TOKEN: &str = "0123456789abcdef";
const SECRET: &[u8] = b"the cluster secret";
const STREAM_TARGET: &str = "/checkpoint/stream?group=main&instance=0&offset=0&version=2";

fn request(method: &str, target: &str, headers: &[String]) -> String {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n");
    for line in headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

fn bearer_line(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn proof_line(secret: &[u8], target: &str, unix_ms: u64) -> String {
    let identity = PeerIdentity {
        node_id: 4,
        secret: Arc::from(secret),
    };
    format!(
        "{PEER_PROOF_HEADER}: {}",
        peer_proof_header(&identity, target, unix_ms)
    )
}

fn status_of(outcome: Result<(), HttpResponse>) -> (u16, String) {
    match outcome {
        Ok(()) => (200, String::new()),
        Err(response) => (
            response.status,
            String::from_utf8(response.body).expect("utf-8"),
        ),
    }
}

#[test]
fn only_monitoring_routes_are_open_and_unknown_routes_need_the_token() {
    assert_eq!(access("GET", "/status"), Access::Open);
    assert_eq!(access("GET", "/metrics"), Access::Open);
    assert_eq!(access("GET", "/ready"), Access::Open);
    assert_eq!(access("POST", "/status"), Access::Token);
    assert_eq!(
        access("GET", "/checkpoint/stream"),
        Access::TokenOrPeerProof
    );
    assert_eq!(access("POST", "/admin/checkpoint"), Access::Token);
    assert_eq!(access("POST", "/admin/members"), Access::Token);
    assert_eq!(access("GET", "/backup"), Access::Token);
    assert_eq!(access("GET", "/anything-new"), Access::Token);
}

#[test]
fn admin_routes_need_the_token_missing_is_401_wrong_is_403() {
    let guard = HttpGuard::new(Some(TOKEN), None);
    let (status, body) = status_of(guard.check(&request("POST", "/admin/checkpoint", &[]), NOW_MS));
    assert_eq!(status, 401);
    assert!(
        body.contains("--admin-token-file") && body.contains(ADMIN_TOKEN_ENV),
        "{body}"
    );
    let wrong = [bearer_line("0123456789abcdeX")];
    let (status, body) =
        status_of(guard.check(&request("GET", "/backup?group=main", &wrong), NOW_MS));
    assert_eq!(status, 403);
    assert!(
        body.contains("wrong")
            && body.contains("--admin-token-file")
            && body.contains(ADMIN_TOKEN_ENV),
        "{body}"
    );
    // A prefix of the token, a longer one, another scheme: all wrong.
    for header in [
        bearer_line("0123"),
        bearer_line(&format!("{TOKEN}0")),
        format!("Authorization: Basic {TOKEN}"),
    ] {
        let head = request("POST", "/admin/members?op=remove&node=3", &[header]);
        assert_eq!(status_of(guard.check(&head, NOW_MS)).0, 403, "{head}");
    }
    for header in [bearer_line(TOKEN), format!("authorization: bearer {TOKEN}")] {
        let head = request("POST", "/admin/members?op=remove&node=3", &[header]);
        assert_eq!(guard.check(&head, NOW_MS), Ok(()), "{head}");
    }
}

#[test]
fn monitoring_stays_open_with_a_token() {
    let guard = HttpGuard::new(Some(TOKEN), Some(Arc::from(SECRET)));
    for path in ["/status", "/metrics", "/ready"] {
        assert_eq!(guard.check(&request("GET", path, &[]), NOW_MS), Ok(()));
    }
}

#[test]
fn without_a_token_every_route_is_open_as_before() {
    let guard = HttpGuard::new(None, None);
    for (method, target) in [
        ("POST", "/admin/checkpoint"),
        ("GET", "/backup?group=main"),
        ("GET", STREAM_TARGET),
    ] {
        assert_eq!(guard.check(&request(method, target, &[]), NOW_MS), Ok(()));
    }
    // A secret alone guards the checkpoint stream only.
    let guard = HttpGuard::new(None, Some(Arc::from(SECRET)));
    assert_eq!(
        guard.check(&request("POST", "/admin/checkpoint", &[]), NOW_MS),
        Ok(())
    );
    assert_eq!(
        status_of(guard.check(&request("GET", STREAM_TARGET, &[]), NOW_MS)).0,
        401
    );
}

#[test]
fn checkpoint_stream_takes_a_peer_proof_or_the_token() {
    let guard = HttpGuard::new(Some(TOKEN), Some(Arc::from(SECRET)));
    let (status, body) = status_of(guard.check(&request("GET", STREAM_TARGET, &[]), NOW_MS));
    assert_eq!(status, 401);
    assert!(body.contains("--cluster-secret-file"), "{body}");
    let right = [proof_line(SECRET, STREAM_TARGET, NOW_MS - 1_000)];
    assert_eq!(
        guard.check(&request("GET", STREAM_TARGET, &right), NOW_MS),
        Ok(())
    );
    let token = [bearer_line(TOKEN)];
    assert_eq!(
        guard.check(&request("GET", STREAM_TARGET, &token), NOW_MS),
        Ok(())
    );
    let wrong_token = [bearer_line("nope")];
    assert_eq!(
        status_of(guard.check(&request("GET", STREAM_TARGET, &wrong_token), NOW_MS)).0,
        403
    );
}

#[test]
fn a_wrong_stale_or_replayed_peer_proof_is_403_with_the_reason() {
    let guard = HttpGuard::new(None, Some(Arc::from(SECRET)));
    let wrong = [proof_line(b"another secret", STREAM_TARGET, NOW_MS)];
    let (status, body) = status_of(guard.check(&request("GET", STREAM_TARGET, &wrong), NOW_MS));
    assert_eq!(status, 403);
    assert!(body.contains("--cluster-secret-file"), "{body}");

    let window_ms = PEER_PROOF_SKEW_MAX.as_millis() as u64;
    let stale = [proof_line(SECRET, STREAM_TARGET, NOW_MS - window_ms - 1)];
    let (status, body) = status_of(guard.check(&request("GET", STREAM_TARGET, &stale), NOW_MS));
    assert_eq!(status, 403);
    assert!(body.contains("clock"), "{body}");

    // Made for another target (another offset): refused.
    let other = STREAM_TARGET.replace("offset=0", "offset=4194304");
    let moved = [proof_line(SECRET, &other, NOW_MS)];
    assert_eq!(
        status_of(guard.check(&request("GET", STREAM_TARGET, &moved), NOW_MS)).0,
        403
    );

    let once = [proof_line(SECRET, STREAM_TARGET, NOW_MS)];
    let head = request("GET", STREAM_TARGET, &once);
    assert_eq!(guard.check(&head, NOW_MS), Ok(()));
    let (status, body) = status_of(guard.check(&head, NOW_MS + 10));
    assert_eq!(status, 403);
    assert!(body.contains("replayed"), "{body}");
}

#[test]
fn remembered_nonces_are_bounded_and_expire_with_the_window() {
    let guard = HttpGuard::new(None, Some(Arc::from(SECRET)));
    for _ in 0..PEER_PROOF_NONCES_MAX {
        let head = request(
            "GET",
            STREAM_TARGET,
            &[proof_line(SECRET, STREAM_TARGET, NOW_MS)],
        );
        assert_eq!(guard.check(&head, NOW_MS), Ok(()));
    }
    let one_more = [proof_line(SECRET, STREAM_TARGET, NOW_MS)];
    assert_eq!(
        status_of(guard.check(&request("GET", STREAM_TARGET, &one_more), NOW_MS)).0,
        503
    );
    // Once the window has passed, the old nonces are dropped and room is made.
    let later_ms = NOW_MS + PEER_PROOF_SKEW_MAX.as_millis() as u64 + 1;
    let later = [proof_line(SECRET, STREAM_TARGET, later_ms)];
    assert_eq!(
        guard.check(&request("GET", STREAM_TARGET, &later), later_ms),
        Ok(())
    );
    assert_eq!(guard.seen_nonces.lock().expect("lock").len(), 1);
}

#[test]
fn header_lookup_is_case_insensitive_and_stops_at_the_blank_line() {
    let head = "GET / HTTP/1.1\r\nX-One: a\r\nauthorization: Bearer t \r\n\r\nAuthorization: body";
    assert_eq!(header(head, "Authorization"), Some("Bearer t"));
    assert_eq!(header(head, "x-one"), Some("a"));
    assert_eq!(header("GET / HTTP/1.1\r\n\r\nX-Two: b", "X-Two"), None);
    assert_eq!(bearer("Bearer  abc "), Some("abc"));
    assert_eq!(bearer("Bearerabc"), None);
}

#[test]
fn token_files_are_trimmed_and_bad_ones_refused_with_the_fix() {
    let folder = tempfile::tempdir().expect("tempdir");
    let path = folder.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write");
    assert_eq!(read_admin_token_file(&path).expect("reads"), TOKEN);
    for bad in ["", " \n", "two words", "tab\there"] {
        std::fs::write(&path, bad).expect("write");
        let error = format!("{:#}", read_admin_token_file(&path).expect_err(bad));
        assert!(
            error.contains("--admin-token-file") && error.contains("openssl rand"),
            "{error}"
        );
    }
    let missing = folder.path().join("missing");
    let error = format!(
        "{:#}",
        read_admin_token_file(&missing).expect_err("missing")
    );
    assert!(error.contains("cannot read --admin-token-file"), "{error}");
    assert_eq!(
        authorization_line(Some(TOKEN)),
        format!("Authorization: Bearer {TOKEN}\r\n")
    );
    assert_eq!(authorization_line(None), "");
}

/// A guarded source whose admin route counts its runs and whose checkpoint stream answers
/// 400 "reached the route" (so a fetcher stops there and says so).
struct Guarded {
    guard: HttpGuard,
    runs: Arc<AtomicUsize>,
}

impl AdminSource for Guarded {
    fn status_json(&self) -> serde_json::Value {
        serde_json::json!({"node_id": 1})
    }
    fn metrics_text(&self) -> String {
        String::new()
    }
    fn ready(&self) -> bool {
        true
    }
    fn guard(&self) -> Option<&HttpGuard> {
        Some(&self.guard)
    }
    fn stream_route(&self, method: &str, target: &str) -> Option<StreamRoute> {
        let path = target.split('?').next().unwrap_or(target).to_string();
        if method == "POST" && path == "/admin/checkpoint" {
            self.runs.fetch_add(1, Ordering::SeqCst);
        }
        if path != "/checkpoint/stream" && path != "/admin/checkpoint" {
            return None;
        }
        Some(Box::new(move |mut stream: tokio::net::TcpStream| {
            Box::pin(async move {
                use tokio::io::AsyncWriteExt;
                let (status, body) = if path == "/admin/checkpoint" {
                    (200, "{}".to_string())
                } else {
                    (400, "{\"error\": \"reached the route\"}".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            })
        }))
    }
}

#[tokio::test]
async fn over_tcp_admin_calls_need_the_token_and_fetchers_pass_with_their_proof() {
    let runs = Arc::new(AtomicUsize::new(0));
    let source = Guarded {
        guard: HttpGuard::new(Some(TOKEN), Some(Arc::from(SECRET))),
        runs: runs.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(
        listener,
        Arc::new(source),
        None,
        async {
            let _ = stopped.await;
        },
    ));

    let (status, body) = crate::cli::admin::post(&addr, "/admin/checkpoint", None)
        .await
        .expect("post");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--admin-token-file"), "{body}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a refused call never reaches its route"
    );
    let (status, _) = crate::cli::admin::post(&addr, "/admin/checkpoint", Some(TOKEN))
        .await
        .expect("post");
    assert_eq!(status, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        crate::http::get(&addr, "/status").await.expect("status").0,
        200
    );

    // The real fetcher: without a proof it is refused at once with the reason; with the
    // node's secret it reaches the route.
    let folder = tempfile::tempdir().expect("tempdir");
    let progress = Arc::new(std::sync::Mutex::new(Default::default()));
    let refusal = |error: FetchError| match error {
        FetchError::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other}"),
    };
    let without = checkpoint_stream::fetch(&addr, "main", folder.path(), &progress, None)
        .await
        .expect_err("refused");
    let reason = refusal(without);
    assert!(
        reason.contains("HTTP 401") && reason.contains("--cluster-secret-file"),
        "{reason}"
    );
    let identity = PeerIdentity {
        node_id: 2,
        secret: Arc::from(SECRET),
    };
    let with = checkpoint_stream::fetch(&addr, "main", folder.path(), &progress, Some(&identity))
        .await
        .expect_err("the test route answers 400");
    let reason = refusal(with);
    assert!(reason.contains("reached the route"), "{reason}");

    stop.send(()).expect("server still running");
    server.await.expect("joins").expect("serves cleanly");
}
