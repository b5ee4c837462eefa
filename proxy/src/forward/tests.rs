//! Forwarding over in-memory pipes: the cluster-secret handshake (who is served, who is
//! refused, and that a refused connection never runs anything) and the frame reader's memory
//! bound. The master side is the real [`serve_connection`] over a backend that records calls.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult,
};
use paxsql_schema::{
    forward_request::Kind, ForwardRequest, ForwardResponse, ForwardStatement, ForwardWrite,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::auth::{self, ForwardAuth, ForwardAuthError, ForwardCredentials, Role};
use super::client::{call_on, greet};
use super::frame::{read_body, read_frame, write_frame};
use super::server::{is_forward_magic, serve_connection, ForwardServer};
use super::{
    FORWARD_AUTH_FRAME_BYTES_MAX, FORWARD_FRAME_BYTES_MAX, FORWARD_FRAME_READ_STEP_BYTES, MAGIC,
    PROTOCOL_VERSION,
};
use crate::backend::{Backend, Transaction};

const MASTER_ID: u32 = 1;
const FOLLOWER_ID: u32 = 2;
const PIPE_BYTES: usize = 64 * 1024;

/// A backend that records every call and answers writes with one changed row.
#[derive(Default)]
struct RecordingBackend {
    calls: Mutex<Vec<String>>,
}

impl RecordingBackend {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("not poisoned").clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().expect("not poisoned").push(call);
    }
}

#[async_trait]
impl Backend for RecordingBackend {
    fn has_group(&self, _group: &str) -> bool {
        true
    }

    async fn execute_write(
        &self,
        group: &str,
        statements: Vec<StatementRequest>,
    ) -> Result<Vec<StatementResult>, SqlError> {
        for statement in &statements {
            self.record(format!("write {group}: {}", statement.sql));
        }
        Ok(statements
            .iter()
            .map(|_| StatementResult {
                columns: Vec::new(),
                rows: Vec::new(),
                rows_changed: 1,
                verb: "INSERT".into(),
            })
            .collect())
    }

    async fn read(
        &self,
        group: &str,
        statement: StatementRequest,
        _consistency: Consistency,
    ) -> Result<StatementResult, SqlError> {
        self.record(format!("read {group}: {}", statement.sql));
        Err(SqlError::new(SqlErrorKind::Other, "reads are not served"))
    }

    async fn begin(&self, group: &str) -> Result<Box<dyn Transaction>, SqlError> {
        self.record(format!("begin {group}"));
        Err(SqlError::new(SqlErrorKind::Other, "no transactions here"))
    }

    async fn is_read_only(&self, group: &str, sql: &str) -> Result<bool, SqlError> {
        self.record(format!("is_read_only {group}: {sql}"));
        Ok(false)
    }

    async fn describe(&self, group: &str, sql: &str) -> Result<Vec<Column>, SqlError> {
        self.record(format!("describe {group}: {sql}"));
        Ok(Vec::new())
    }
}

fn credentials(node_id: u32, secret: Option<&[u8]>) -> ForwardCredentials {
    ForwardCredentials {
        node_id,
        secret: secret.map(Arc::from),
    }
}

/// Starts the master side on one end of a pipe, as the HTTP dispatcher does (it consumes the
/// magic, then hands over). Answers the follower's end and the serving task.
fn start_master(
    secret: Option<&[u8]>,
    backend: Arc<RecordingBackend>,
) -> (DuplexStream, JoinHandle<std::io::Result<()>>) {
    let (follower_end, mut master_end) = tokio::io::duplex(PIPE_BYTES);
    let server = Arc::new(ForwardServer {
        backend,
        credentials: credentials(MASTER_ID, secret),
    });
    let task = tokio::spawn(async move {
        let mut magic = [0u8; 4];
        master_end.read_exact(&mut magic).await?;
        assert!(
            is_forward_magic(&magic),
            "the follower opens with the magic"
        );
        serve_connection(master_end, server, "test follower").await
    });
    (follower_end, task)
}

fn write_request(value: i64) -> ForwardRequest {
    ForwardRequest {
        request_id: 7,
        group: "main".into(),
        kind: Some(Kind::Write(ForwardWrite {
            statements: vec![ForwardStatement {
                sql: format!("INSERT INTO t VALUES ({value})"),
                params: Vec::new(),
            }],
        })),
    }
}

/// Greets with `follower_secret`, expecting a refusal; answers its text.
async fn refused_greeting(master_secret: Option<&[u8]>, follower_secret: Option<&[u8]>) -> String {
    let backend = Arc::new(RecordingBackend::default());
    let (mut follower, master) = start_master(master_secret, backend.clone());
    let outcome = greet(&mut follower, &credentials(FOLLOWER_ID, follower_secret)).await;
    let error = outcome.expect_err("the greeting must be refused");
    assert!(
        error.is_refusal(),
        "a refusal, not a network error: {error}"
    );
    let ForwardAuthError::Refused(reason) = &error else {
        panic!("the master must say why it refused, got: {error}");
    };
    let reason = reason.clone();
    // The master closed without reading a request; nothing ran.
    let served = master.await.expect("the master task ends");
    assert!(served.is_err(), "the master reports the refusal");
    assert!(
        backend.calls().is_empty(),
        "nothing ran: {:?}",
        backend.calls()
    );
    reason
}

/// Sends `PXFW`, `version` and a write request without the handshake; answers every frame the
/// master sent back until it closed, as raw bodies, and the backend.
async fn raw_request(
    master_secret: Option<&[u8]>,
    version: u32,
) -> (Vec<Vec<u8>>, Arc<RecordingBackend>) {
    let backend = Arc::new(RecordingBackend::default());
    let (mut follower, master) = start_master(master_secret, backend.clone());
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    follower.write_all(&bytes).await.expect("send greeting");
    write_frame(&mut follower, &write_request(666))
        .await
        .expect("send request");
    let mut received = Vec::new();
    follower
        .read_to_end(&mut received)
        .await
        .expect("read until the master closes");
    let _ = master.await.expect("the master task ends");
    let mut frames = Vec::new();
    let mut rest = received.as_slice();
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        frames.push(rest[4..4 + length].to_vec());
        rest = &rest[4 + length..];
    }
    (frames, backend)
}

fn decode_auth(frame: &[u8]) -> ForwardAuth {
    <ForwardAuth as prost::Message>::decode(frame).expect("a handshake frame")
}

#[tokio::test]
async fn the_right_secret_serves_a_write() {
    let backend = Arc::new(RecordingBackend::default());
    let (mut follower, master) = start_master(Some(b"the secret"), backend.clone());
    let master_id = greet(
        &mut follower,
        &credentials(FOLLOWER_ID, Some(b"the secret")),
    )
    .await
    .expect("both know the secret");
    assert_eq!(master_id, MASTER_ID);
    let response = call_on(&mut follower, &write_request(1))
        .await
        .expect("answered");
    assert_eq!(response.error, None);
    assert_eq!(response.results.len(), 1);
    assert_eq!(
        backend.calls(),
        vec!["write main: INSERT INTO t VALUES (1)"]
    );
    drop(follower);
    master
        .await
        .expect("the master task ends")
        .expect("a clean end");
}

#[tokio::test]
async fn without_a_secret_on_either_side_forwarding_works_as_before() {
    let backend = Arc::new(RecordingBackend::default());
    let (mut follower, master) = start_master(None, backend.clone());
    greet(&mut follower, &credentials(FOLLOWER_ID, None))
        .await
        .expect("no secret anywhere: no proof needed");
    let response = call_on(&mut follower, &write_request(2))
        .await
        .expect("answered");
    assert_eq!(response.error, None);
    assert_eq!(
        backend.calls(),
        vec!["write main: INSERT INTO t VALUES (2)"]
    );
    drop(follower);
    master.await.expect("ends").expect("a clean end");
}

/// The refusal of a handshake between these secrets names the problem and the fix.
async fn assert_refused_saying(
    master_secret: Option<&[u8]>,
    follower_secret: Option<&[u8]>,
    problem: &str,
    fix: &str,
) {
    let reason = refused_greeting(master_secret, follower_secret).await;
    assert!(reason.contains(problem) && reason.contains(fix), "{reason}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_the_fix_and_nothing_runs() {
    assert_refused_saying(
        Some(b"the secret"),
        Some(b"another secret"),
        "the follower's proof of the cluster secret is wrong",
        "check --cluster-secret-file on both nodes",
    )
    .await;
}

#[tokio::test]
async fn a_secret_on_the_master_only_is_refused_saying_so() {
    assert_refused_saying(
        Some(b"the secret"),
        None,
        "the master has a cluster secret but the follower sent no proof of it",
        "--cluster-secret-file",
    )
    .await;
}

#[tokio::test]
async fn a_secret_on_the_follower_only_is_refused_saying_so() {
    assert_refused_saying(
        None,
        Some(b"the secret"),
        "the follower proves a cluster secret but the master has none",
        "--cluster-secret-file",
    )
    .await;
}

#[tokio::test]
async fn a_request_without_the_handshake_is_refused_unexecuted() {
    for secret in [Some(&b"the secret"[..]), None] {
        let (frames, backend) = raw_request(secret, PROTOCOL_VERSION).await;
        assert_eq!(frames.len(), 2, "a challenge, then a refusal; then closed");
        let challenge = decode_auth(&frames[0]);
        assert_eq!(challenge.node_id, MASTER_ID);
        assert_eq!(challenge.nonce.len(), 16);
        let refusal = decode_auth(&frames[1]).refusal.expect("a refusal");
        let expected = match secret {
            Some(_) => "the master has a cluster secret but the follower sent no proof of it",
            None => "the forwarding handshake must precede any request",
        };
        assert!(refusal.message.contains(expected), "{}", refusal.message);
        assert!(
            backend.calls().is_empty(),
            "nothing ran: {:?}",
            backend.calls()
        );
    }
}

#[tokio::test]
async fn an_old_protocol_version_gets_the_reason_as_its_response() {
    let (frames, backend) = raw_request(Some(b"the secret"), 1).await;
    assert_eq!(frames.len(), 1, "one refusal, then closed");
    // A version-1 follower reads the refusal as the response to its request.
    let response =
        <ForwardResponse as prost::Message>::decode(frames[0].as_slice()).expect("a response");
    let error = response.error.expect("an error");
    assert!(
        error.message.contains("version 1, the master 2")
            && error
                .message
                .contains("run the same paxsql version on every node"),
        "{}",
        error.message
    );
    assert!(backend.calls().is_empty());
}

#[tokio::test]
async fn an_oversized_handshake_frame_is_refused() {
    let backend = Arc::new(RecordingBackend::default());
    let (mut follower, master) = start_master(Some(b"the secret"), backend.clone());
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    bytes.extend_from_slice(&((FORWARD_AUTH_FRAME_BYTES_MAX + 1) as u32).to_be_bytes());
    follower.write_all(&bytes).await.expect("send");
    let _challenge: ForwardAuth = read_frame(&mut follower)
        .await
        .expect("read")
        .expect("a challenge");
    let refusal: ForwardAuth = read_frame(&mut follower)
        .await
        .expect("read")
        .expect("a refusal");
    let message = refusal.refusal.expect("a refusal").message;
    assert!(
        message.contains("malformed forwarding handshake"),
        "{message}"
    );
    assert!(master.await.expect("ends").is_err());
    assert!(backend.calls().is_empty());
}

/// Plays a master that answers the follower's proof with `answer_proof`; answers the
/// follower's error and every byte it sent after its hello.
async fn follower_against_fake_master(answer_proof: Vec<u8>) -> (ForwardAuthError, Vec<u8>) {
    let (mut follower, mut master) = tokio::io::duplex(PIPE_BYTES);
    let fake = tokio::spawn(async move {
        let mut greeting = [0u8; 8];
        master.read_exact(&mut greeting).await.expect("greeting");
        let challenge = ForwardAuth {
            node_id: MASTER_ID,
            nonce: vec![9u8; 16],
            ..ForwardAuth::default()
        };
        write_frame(&mut master, &challenge)
            .await
            .expect("challenge");
        let hello: ForwardAuth = read_frame(&mut master)
            .await
            .expect("read")
            .expect("the follower's hello");
        assert!(!hello.proof.is_empty(), "the follower proves its secret");
        let answer = ForwardAuth {
            node_id: MASTER_ID,
            proof: answer_proof,
            ..ForwardAuth::default()
        };
        write_frame(&mut master, &answer).await.expect("answer");
        let mut after = Vec::new();
        master.read_to_end(&mut after).await.expect("read to end");
        after
    });
    let outcome = greet(
        &mut follower,
        &credentials(FOLLOWER_ID, Some(b"the secret")),
    )
    .await;
    drop(follower);
    let error = outcome.expect_err("the follower must not trust this master");
    (error, fake.await.expect("the fake master ends"))
}

#[tokio::test]
async fn a_follower_sends_nothing_to_a_master_that_cannot_prove_the_secret() {
    let (error, after) = follower_against_fake_master(vec![0u8; 32]).await;
    assert!(
        matches!(
            error,
            ForwardAuthError::WrongProof {
                prover: Role::Master
            }
        ),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("check --cluster-secret-file on both nodes"));
    assert!(after.is_empty(), "no request after a failed proof");

    let (error, after) = follower_against_fake_master(Vec::new()).await;
    assert!(
        matches!(
            error,
            ForwardAuthError::MissingProof {
                prover: Role::Master,
                checker: Role::Follower
            }
        ),
        "{error}"
    );
    assert!(
        after.is_empty(),
        "no request to a master without the secret"
    );
}

#[tokio::test]
async fn a_proof_for_one_master_nonce_does_not_pass_for_another() {
    // The master's proof binds the follower's fresh nonce: replaying an answer from an earlier
    // connection (here: made for another follower nonce) fails.
    let stale = paxsql_replicator::runtime::handshake::secret_proof(
        b"the secret",
        b"paxsql forward master",
        MASTER_ID,
        &[1u8; 16],
        &[9u8; 16],
    );
    let (error, after) = follower_against_fake_master(stale).await;
    assert!(
        matches!(
            error,
            ForwardAuthError::WrongProof {
                prover: Role::Master
            }
        ),
        "{error}"
    );
    assert!(after.is_empty());
}

#[tokio::test]
async fn a_declared_64_mib_frame_that_ends_early_costs_one_step_not_64_mib() {
    let (mut writer, mut reader) = tokio::io::duplex(PIPE_BYTES);
    writer
        .write_all(&(FORWARD_FRAME_BYTES_MAX as u32).to_be_bytes())
        .await
        .expect("header");
    writer.write_all(&[7u8; 1000]).await.expect("some bytes");
    drop(writer);
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await.expect("header");
    let length = u32::from_be_bytes(header) as usize;
    assert_eq!(length, FORWARD_FRAME_BYTES_MAX);
    let mut body = Vec::new();
    let error = read_body(&mut reader, length, &mut body)
        .await
        .expect_err("the stream ended early");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(body.len(), 1000);
    assert!(
        body.capacity() <= FORWARD_FRAME_READ_STEP_BYTES,
        "allocated {} bytes for 1000 received",
        body.capacity()
    );

    // The same through read_frame: an error, not a 64 MiB buffer waiting for bytes.
    let (mut writer, mut reader) = tokio::io::duplex(PIPE_BYTES);
    writer
        .write_all(&(FORWARD_FRAME_BYTES_MAX as u32).to_be_bytes())
        .await
        .expect("header");
    drop(writer);
    let error = read_frame::<ForwardRequest>(&mut reader)
        .await
        .expect_err("the stream ended early");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn a_frame_of_many_steps_arrives_whole_within_twice_its_size() {
    let big_sql = "x".repeat(5 * FORWARD_FRAME_READ_STEP_BYTES + 123);
    let request = ForwardRequest {
        kind: Some(Kind::Describe(ForwardStatement {
            sql: big_sql,
            params: Vec::new(),
        })),
        ..write_request(3)
    };
    // A small pipe: the body arrives in many pieces.
    let (mut writer, mut reader) = tokio::io::duplex(4096);
    let sent = request.clone();
    let writing = tokio::spawn(async move { write_frame(&mut writer, &sent).await });
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await.expect("header");
    let length = u32::from_be_bytes(header) as usize;
    let mut body = Vec::new();
    read_body(&mut reader, length, &mut body)
        .await
        .expect("whole body");
    writing.await.expect("joins").expect("written");
    assert_eq!(body.len(), length);
    assert!(body.capacity() < 2 * length, "capacity {}", body.capacity());
    let decoded = <ForwardRequest as prost::Message>::decode(body.as_slice()).expect("decodes");
    assert_eq!(decoded, request);
}

#[test]
fn credentials_never_print_the_secret() {
    let shown = format!("{:?}", credentials(3, Some(b"hunter2")));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("has_secret: true"), "{shown}");
}

#[tokio::test]
async fn accept_and_connect_agree_over_a_bare_pipe() {
    // The two halves of the handshake alone, both with the secret: each learns the other's id.
    let (mut follower, mut master) = tokio::io::duplex(PIPE_BYTES);
    let master_side = tokio::spawn(async move {
        auth::accept(&mut master, &credentials(MASTER_ID, Some(b"s"))).await
    });
    let master_id = auth::connect(&mut follower, &credentials(FOLLOWER_ID, Some(b"s")))
        .await
        .expect("follower side");
    let follower_id = master_side.await.expect("joins").expect("master side");
    assert_eq!((master_id, follower_id), (MASTER_ID, FOLLOWER_ID));
}
