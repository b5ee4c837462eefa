//! Authenticating a forwarding connection with the cluster secret, before any request.
//!
//! # Protocol (after `PXFW` + version: three [`ForwardAuth`] frames, each at most
//! [`FORWARD_AUTH_FRAME_BYTES_MAX`])
//! 1. The master sends its node id and a fresh nonce `Nm`.
//! 2. The follower sends its node id, a fresh nonce `Nf` and
//!    `proof = HMAC(secret, "paxsql forward follower" ‖ follower id ‖ Nm ‖ Nf)`.
//! 3. The master checks that proof, then answers with
//!    `proof = HMAC(secret, "paxsql forward master" ‖ master id ‖ Nf ‖ Nm)`, or with a refusal
//!    that says why, and closes. The follower checks the master's proof.
//!
//! Ordering obligations: the master reads no request before step 3 succeeded (so a request
//! from someone without the secret is never even decoded), and the follower sends no request
//! before it checked the master's proof (so a request never reaches a node that cannot prove
//! the secret).
//!
//! The primitives are the peer handshake's (`paxsql_replicator::runtime::handshake`):
//! HMAC-SHA256, 128-bit nonces from the OS-seeded CSPRNG both ways (an old exchange cannot be
//! replayed), constant-time comparison. The labels differ from the peer handshake's, so a proof
//! made for one protocol or role never passes for another.
//!
//! # Without a secret, and what a secret does not buy
//! With no secret on either node the same frames flow with empty proofs: anyone who reaches the
//! HTTP port can run writes as if they were a follower, so that port must then be trusted like
//! the peer port. A secret on one side only is refused with a message that says which side
//! lacks it. As for peers, the frames after the handshake are neither encrypted nor
//! authenticated: someone on the network path can read them or inject into the connection.

use std::sync::Arc;

use paxsql_replicator::limits::HANDSHAKE_NONCE_BYTES;
use paxsql_replicator::runtime::handshake::{
    check_optional_secret_proof, fresh_nonce, optional_secret_proof, ProofRefusal,
};
use paxsql_schema::ForwardError;
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{read_frame_bounded, write_frame};
use super::FORWARD_AUTH_FRAME_BYTES_MAX;

/// One frame of the handshake. Defined here rather than in `forward.proto` because only this
/// module speaks it.
///
/// `refusal` has tag 3, as `ForwardResponse.error`: a refusal is also a valid `ForwardResponse`,
/// so a follower of protocol version 1 (which reads a response right after its request) shows
/// the master's reason. The other tags (20+) are unused by `ForwardRequest`, so a request sent
/// in place of the handshake decodes as a handshake without proof and without nonce.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardAuth {
    /// Set only by the master, which then closes the connection.
    #[prost(message, optional, tag = "3")]
    pub refusal: Option<ForwardError>,
    #[prost(uint32, tag = "20")]
    pub node_id: u32,
    /// Steps 1 and 2: the sender's fresh nonce.
    #[prost(bytes = "vec", tag = "21")]
    pub nonce: Vec<u8>,
    /// Steps 2 and 3: the sender's proof, empty without a secret.
    #[prost(bytes = "vec", tag = "22")]
    pub proof: Vec<u8>,
}

impl ForwardAuth {
    /// A refusal frame carrying `reason` (also readable as a `ForwardResponse` error).
    pub fn refusal(reason: String) -> Self {
        ForwardAuth {
            refusal: Some(ForwardError {
                kind: "Other".into(),
                message: reason,
            }),
            ..ForwardAuth::default()
        }
    }
}

/// What a node proves itself with: its id and the cluster secret, if it has one.
#[derive(Clone)]
pub struct ForwardCredentials {
    pub node_id: u32,
    pub secret: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ForwardCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        formatter
            .debug_struct("ForwardCredentials")
            .field("node_id", &self.node_id)
            .field("has_secret", &self.secret.is_some())
            .finish()
    }
}

/// The two ends of a forwarding connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Master,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Follower => b"paxsql forward follower",
            Role::Master => b"paxsql forward master",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Follower => Role::Master,
            Role::Master => Role::Follower,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Role::Follower => "follower",
            Role::Master => "master",
        })
    }
}

/// Why a forwarding connection was not authenticated. The texts name both roles, so they read
/// the same in the master's log and (as the refusal it sends) in the follower's.
#[derive(Debug, thiserror::Error)]
pub enum ForwardAuthError {
    #[error("the {checker} has a cluster secret but the {prover} sent no proof of it; configure the same --cluster-secret-file on every node")]
    MissingProof { prover: Role, checker: Role },
    #[error("the {prover} proves a cluster secret but the {checker} has none; configure the same --cluster-secret-file on every node")]
    UnexpectedProof { prover: Role, checker: Role },
    #[error("the {prover}'s proof of the cluster secret is wrong; check --cluster-secret-file on both nodes")]
    WrongProof { prover: Role },
    #[error("the follower speaks forwarding protocol version {follower}, the master {master}; run the same paxsql version on every node")]
    Version { follower: u32, master: u32 },
    #[error("the master refused this forwarding connection: {0}")]
    Refused(String),
    #[error("malformed forwarding handshake from the {from}: {detail}")]
    Malformed { from: Role, detail: String },
    #[error("the connection closed during the forwarding handshake (the master may run another paxsql version or have refused this node; see its log)")]
    Closed,
    #[error("forwarding handshake: {0}")]
    Io(#[from] std::io::Error),
}

impl ForwardAuthError {
    /// True when the two nodes disagree (secret, version, protocol): retrying cannot help, an
    /// operator must. False for network trouble.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, ForwardAuthError::Closed | ForwardAuthError::Io(_))
    }
}

/// The master's side: steps 1 and 3. Answers the follower's claimed node id. On a refusal the
/// follower has been told why (best effort) and the caller must close the connection.
pub async fn accept<S>(
    stream: &mut S,
    credentials: &ForwardCredentials,
) -> Result<u32, ForwardAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let master_nonce = fresh_nonce();
    let challenge = ForwardAuth {
        node_id: credentials.node_id,
        nonce: master_nonce.clone(),
        ..ForwardAuth::default()
    };
    write_frame(stream, &challenge).await?;
    let checked = match receive(stream, Role::Follower).await {
        Ok(hello) => check_proof(
            credentials,
            Role::Follower,
            &hello,
            &master_nonce,
            &hello.nonce,
        )
        .and_then(|()| check_nonce(&hello.nonce, Role::Follower))
        .map(|()| hello),
        Err(error) => Err(error),
    };
    let hello = match checked {
        Ok(hello) => hello,
        Err(error) => {
            if error.is_refusal() {
                send_refusal(stream, error.to_string()).await;
            }
            return Err(error);
        }
    };
    let answer = ForwardAuth {
        node_id: credentials.node_id,
        proof: proof(credentials, Role::Master, &hello.nonce, &master_nonce),
        ..ForwardAuth::default()
    };
    write_frame(stream, &answer).await?;
    Ok(hello.node_id)
}

/// The follower's side: step 2, then the check of step 3. Answers the master's node id.
pub async fn connect<S>(
    stream: &mut S,
    credentials: &ForwardCredentials,
) -> Result<u32, ForwardAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let challenge = receive_from_master(stream).await?;
    check_nonce(&challenge.nonce, Role::Master)?;
    let follower_nonce = fresh_nonce();
    let hello = ForwardAuth {
        node_id: credentials.node_id,
        nonce: follower_nonce.clone(),
        proof: proof(
            credentials,
            Role::Follower,
            &challenge.nonce,
            &follower_nonce,
        ),
        ..ForwardAuth::default()
    };
    write_frame(stream, &hello).await?;
    let answer = receive_from_master(stream).await?;
    // The answer proves the identity the challenge announced.
    let proven = ForwardAuth {
        node_id: challenge.node_id,
        ..answer
    };
    check_proof(
        credentials,
        Role::Master,
        &proven,
        &follower_nonce,
        &challenge.nonce,
    )?;
    Ok(challenge.node_id)
}

/// Tells the follower why it is refused; it may be gone already, so failures are ignored.
pub async fn send_refusal<S>(stream: &mut S, reason: String)
where
    S: AsyncWrite + Unpin,
{
    let _ = write_frame(stream, &ForwardAuth::refusal(reason)).await;
}

/// The proof a node of `role` sends: empty without a secret.
fn proof(
    credentials: &ForwardCredentials,
    role: Role,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Vec<u8> {
    optional_secret_proof(
        credentials.secret.as_deref(),
        role.label(),
        credentials.node_id,
        challenge_nonce,
        sender_nonce,
    )
}

/// Checks the proof in `remote`, sent by a node of `prover` role answering `challenge_nonce`.
fn check_proof(
    credentials: &ForwardCredentials,
    prover: Role,
    remote: &ForwardAuth,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Result<(), ForwardAuthError> {
    let checker = prover.other();
    check_optional_secret_proof(
        credentials.secret.as_deref(),
        prover.label(),
        remote.node_id,
        challenge_nonce,
        sender_nonce,
        &remote.proof,
    )
    .map_err(|refusal| match refusal {
        ProofRefusal::UnexpectedProof => ForwardAuthError::UnexpectedProof { prover, checker },
        ProofRefusal::MissingProof => ForwardAuthError::MissingProof { prover, checker },
        ProofRefusal::WrongProof => ForwardAuthError::WrongProof { prover },
    })
}

fn check_nonce(nonce: &[u8], from: Role) -> Result<(), ForwardAuthError> {
    if nonce.len() == HANDSHAKE_NONCE_BYTES {
        return Ok(());
    }
    Err(ForwardAuthError::Malformed {
        from,
        detail: format!(
            "nonce of {} bytes, expected {HANDSHAKE_NONCE_BYTES} (the forwarding handshake must precede any request)",
            nonce.len()
        ),
    })
}

/// One handshake frame from the master; a refusal becomes [`ForwardAuthError::Refused`].
async fn receive_from_master<S>(stream: &mut S) -> Result<ForwardAuth, ForwardAuthError>
where
    S: AsyncRead + Unpin,
{
    let frame = receive(stream, Role::Master).await?;
    match frame.refusal {
        Some(refusal) => Err(ForwardAuthError::Refused(refusal.message)),
        None => Ok(frame),
    }
}

async fn receive<S>(stream: &mut S, from: Role) -> Result<ForwardAuth, ForwardAuthError>
where
    S: AsyncRead + Unpin,
{
    match read_frame_bounded::<ForwardAuth>(stream, FORWARD_AUTH_FRAME_BYTES_MAX).await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(ForwardAuthError::Closed),
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            Err(ForwardAuthError::Malformed {
                from,
                detail: error.to_string(),
            })
        }
        Err(error) => Err(ForwardAuthError::Io(error)),
    }
}
