//! The handshake: the first frames on every peer connection.
//!
//! # Protocol (three frames, each a [`Handshake`] message)
//! 1. The acceptor sends its handshake with a fresh nonce `Na` (no proof yet).
//! 2. The connector checks compatibility, then sends its handshake with a fresh nonce `Nc` and
//!    `auth = HMAC(secret, "connector" ‖ connector id ‖ Na ‖ Nc)`.
//! 3. The acceptor checks compatibility and the proof, then answers with a handshake that carries
//!    only `auth = HMAC(secret, "acceptor" ‖ acceptor id ‖ Nc ‖ Na)`, or closes the connection.
//!    The connector checks that proof.
//!
//! Both sides check: the cluster name, the cluster gid (0 = "not known yet" is accepted), the wire
//! version, the log format version and the SQLite version (replay must run on the same SQLite).
//! A mismatch is refused with a warning that names both values. Node ids must be configured
//! peers, and an outbound connection must reach the node it was configured for.
//!
//! # What the cluster secret buys (honestly)
//! With a secret, the challenge-response (HMAC-SHA256, 128-bit random nonces both ways) proves
//! that both ends know the secret, and an old handshake cannot be replayed. It does **not**
//! encrypt or authenticate the frames that follow: someone on the network path can read the
//! traffic and inject into an established TCP connection. Run peers on a private network or
//! inside a VPN/TLS tunnel when the network is hostile. Without a secret, anyone who can reach
//! the peer port and knows the cluster name can join the conversation.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use paxsql_schema::{Handshake, WIRE_VERSION};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::limits::{HANDSHAKE_FIELD_BYTES_MAX, HANDSHAKE_NONCE_BYTES};
use crate::paxos::NodeId;
use crate::runtime::frame::{decode_body, encode_body, FrameCodec, FrameError};

type HmacSha256 = Hmac<Sha256>;

/// Who this node is, as told to peers.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub cluster_name: String,
    pub node_id: NodeId,
    /// Bumped when a node is replaced with an empty log (replace-member).
    pub incarnation: u64,
    pub log_format_version: u32,
    pub sqlite_version: String,
    /// Where this node's PostgreSQL-wire proxy listens (peers forward writes there).
    pub sql_addr: String,
    pub http_addr: String,
    /// The shared cluster secret, if one is configured.
    pub secret: Option<Arc<[u8]>>,
}

impl LocalIdentity {
    fn handshake(&self, cluster_gid: u64, nonce: Vec<u8>, auth: Vec<u8>) -> Handshake {
        Handshake {
            cluster_name: self.cluster_name.clone(),
            cluster_gid,
            node_id: self.node_id,
            incarnation: self.incarnation,
            wire_version: WIRE_VERSION,
            log_format_version: self.log_format_version,
            sqlite_version: self.sqlite_version.clone(),
            sql_addr: self.sql_addr.clone(),
            http_addr: self.http_addr.clone(),
            auth: auth.into(),
            nonce: nonce.into(),
        }
    }
}

/// What a handshake told us about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: NodeId,
    pub incarnation: u64,
    pub cluster_gid: u64,
    pub sql_addr: String,
    pub http_addr: String,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("cluster name mismatch: this node is in {local:?}, the peer in {remote:?}")]
    ClusterName { local: String, remote: String },
    #[error("cluster gid mismatch: this node has {local}, the peer has {remote}; they belong to different clusters")]
    ClusterGid { local: u64, remote: u64 },
    #[error("wire version mismatch: this node speaks {local}, the peer {remote}; upgrade the older node")]
    WireVersion { local: u32, remote: u32 },
    #[error("log format version mismatch: this node writes {local}, the peer {remote}; upgrade the older node")]
    LogFormatVersion { local: u32, remote: u32 },
    #[error("SQLite version mismatch: this node runs {local}, the peer {remote}; replay needs the same SQLite build everywhere")]
    SqliteVersion { local: String, remote: String },
    #[error("node {remote} is not a configured peer of this node")]
    UnknownNode { remote: NodeId },
    #[error("expected node {expected} at this address, found node {remote}; check --peers")]
    UnexpectedNode { expected: NodeId, remote: NodeId },
    #[error("the peer claims this node's own id {node_id}; check --id and --peers")]
    OwnNodeId { node_id: NodeId },
    #[error("the peer's proof of the cluster secret is wrong; check --cluster-secret-file on both nodes")]
    AuthFailed,
    #[error("cluster secret mismatch: this node {local}, the peer {remote}; configure the same secret on every node")]
    SecretPresence {
        local: &'static str,
        remote: &'static str,
    },
    #[error("malformed handshake: {0}")]
    Malformed(String),
    #[error("the peer closed the connection during the handshake (it may have refused this node; see its log)")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl HandshakeError {
    /// True when the peer is reachable but incompatible (worth a warning, not a debug line).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            HandshakeError::Closed | HandshakeError::Frame(FrameError::Io(_))
        )
    }
}

/// Runs the acceptor side. `is_peer` tells whether a node id is a configured peer.
pub async fn accept<S>(
    framed: &mut Framed<S, FrameCodec>,
    identity: &LocalIdentity,
    cluster_gid: u64,
    is_peer: &(dyn Fn(NodeId) -> bool + Sync),
) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let own_nonce = fresh_nonce();
    send(
        framed,
        &identity.handshake(cluster_gid, own_nonce.clone(), Vec::new()),
    )
    .await?;
    let remote = receive(framed).await?;
    check_compatible(identity, cluster_gid, &remote)?;
    if !is_peer(remote.node_id) {
        return Err(HandshakeError::UnknownNode {
            remote: remote.node_id,
        });
    }
    check_proof(
        identity,
        &remote,
        Role::Connector,
        &own_nonce,
        &remote.nonce,
    )?;
    let auth = proof(
        identity,
        Role::Acceptor,
        identity.node_id,
        &remote.nonce,
        &own_nonce,
    );
    let answer = Handshake {
        node_id: identity.node_id,
        auth: auth.into(),
        ..Handshake::default()
    };
    send(framed, &answer).await?;
    Ok(peer_info(&remote))
}

/// Runs the connector side toward the node `expected`.
pub async fn connect<S>(
    framed: &mut Framed<S, FrameCodec>,
    identity: &LocalIdentity,
    cluster_gid: u64,
    expected: NodeId,
) -> Result<PeerInfo, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let remote = receive(framed).await?;
    check_compatible(identity, cluster_gid, &remote)?;
    if remote.node_id != expected {
        return Err(HandshakeError::UnexpectedNode {
            expected,
            remote: remote.node_id,
        });
    }
    let own_nonce = fresh_nonce();
    let auth = proof(
        identity,
        Role::Connector,
        identity.node_id,
        &remote.nonce,
        &own_nonce,
    );
    send(
        framed,
        &identity.handshake(cluster_gid, own_nonce.clone(), auth),
    )
    .await?;
    let answer = receive(framed).await?;
    let proven = Handshake {
        node_id: remote.node_id,
        ..answer
    };
    check_proof(identity, &proven, Role::Acceptor, &own_nonce, &remote.nonce)?;
    Ok(peer_info(&remote))
}

/// Checks everything but identity and proof. Both sides run it.
pub fn check_compatible(
    identity: &LocalIdentity,
    cluster_gid: u64,
    remote: &Handshake,
) -> Result<(), HandshakeError> {
    check_field_lengths(remote)?;
    if remote.cluster_name != identity.cluster_name {
        return Err(HandshakeError::ClusterName {
            local: identity.cluster_name.clone(),
            remote: remote.cluster_name.clone(),
        });
    }
    if cluster_gid != 0 && remote.cluster_gid != 0 && cluster_gid != remote.cluster_gid {
        return Err(HandshakeError::ClusterGid {
            local: cluster_gid,
            remote: remote.cluster_gid,
        });
    }
    if remote.wire_version != WIRE_VERSION {
        return Err(HandshakeError::WireVersion {
            local: WIRE_VERSION,
            remote: remote.wire_version,
        });
    }
    if remote.log_format_version != identity.log_format_version {
        return Err(HandshakeError::LogFormatVersion {
            local: identity.log_format_version,
            remote: remote.log_format_version,
        });
    }
    if remote.sqlite_version != identity.sqlite_version {
        return Err(HandshakeError::SqliteVersion {
            local: identity.sqlite_version.clone(),
            remote: remote.sqlite_version.clone(),
        });
    }
    if remote.node_id == identity.node_id {
        return Err(HandshakeError::OwnNodeId {
            node_id: remote.node_id,
        });
    }
    if remote.nonce.len() != HANDSHAKE_NONCE_BYTES {
        return Err(HandshakeError::Malformed(format!(
            "nonce of {} bytes, expected {HANDSHAKE_NONCE_BYTES}",
            remote.nonce.len()
        )));
    }
    Ok(())
}

fn check_field_lengths(remote: &Handshake) -> Result<(), HandshakeError> {
    let fields = [
        ("cluster_name", remote.cluster_name.len()),
        ("sqlite_version", remote.sqlite_version.len()),
        ("sql_addr", remote.sql_addr.len()),
        ("http_addr", remote.http_addr.len()),
    ];
    match fields
        .iter()
        .find(|(_, bytes)| *bytes > HANDSHAKE_FIELD_BYTES_MAX)
    {
        Some((name, bytes)) => Err(HandshakeError::Malformed(format!(
            "{name} of {bytes} bytes exceeds {HANDSHAKE_FIELD_BYTES_MAX}"
        ))),
        None => Ok(()),
    }
}

#[derive(Clone, Copy)]
enum Role {
    Connector,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Connector => b"paxsql handshake connector",
            Role::Acceptor => b"paxsql handshake acceptor",
        }
    }
}

/// The proof a node of `role` sends: empty without a secret.
fn proof(
    identity: &LocalIdentity,
    role: Role,
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Vec<u8> {
    optional_secret_proof(
        identity.secret.as_deref(),
        role.label(),
        sender,
        challenge_nonce,
        sender_nonce,
    )
}

/// Checks the proof in `remote.auth`, sent by a node of `role` that answered `challenge_nonce`.
fn check_proof(
    identity: &LocalIdentity,
    remote: &Handshake,
    role: Role,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Result<(), HandshakeError> {
    check_optional_secret_proof(
        identity.secret.as_deref(),
        role.label(),
        remote.node_id,
        challenge_nonce,
        sender_nonce,
        &remote.auth,
    )
    .map_err(|refusal| match refusal {
        ProofRefusal::UnexpectedProof => HandshakeError::SecretPresence {
            local: "has no secret",
            remote: "uses one",
        },
        ProofRefusal::MissingProof => HandshakeError::SecretPresence {
            local: "uses a secret",
            remote: "has none",
        },
        ProofRefusal::WrongProof => HandshakeError::AuthFailed,
    })
}

/// Why a proof over an optional cluster secret was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofRefusal {
    /// This side has no secret but the other sent a proof.
    UnexpectedProof,
    /// This side has a secret but the other sent no proof.
    MissingProof,
    /// The proof does not match this side's secret.
    WrongProof,
}

/// [`secret_proof`] when there is a secret; empty (the "no secret" answer) when there is none.
pub fn optional_secret_proof(
    secret: Option<&[u8]>,
    label: &[u8],
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Vec<u8> {
    secret.map_or_else(Vec::new, |secret| {
        secret_proof(secret, label, sender, challenge_nonce, sender_nonce)
    })
}

/// Checks a proof made by [`optional_secret_proof`] against this side's optional secret: both
/// sides without a secret pass, a secret on one side only is refused, a proof is compared in
/// constant time.
pub fn check_optional_secret_proof(
    secret: Option<&[u8]>,
    label: &[u8],
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
    proof: &[u8],
) -> Result<(), ProofRefusal> {
    match (secret, proof.is_empty()) {
        (None, true) => Ok(()),
        (None, false) => Err(ProofRefusal::UnexpectedProof),
        (Some(_), true) => Err(ProofRefusal::MissingProof),
        (Some(secret), false) => {
            secret_proof_matches(secret, label, sender, challenge_nonce, sender_nonce, proof)
                .then_some(())
                .ok_or(ProofRefusal::WrongProof)
        }
    }
}

/// HMAC-SHA256 keyed with the secret over `label ‖ sender ‖ challenge nonce ‖ sender nonce`.
/// The label separates protocols and roles, so a proof made for one never passes for another.
fn labeled_mac(
    secret: &[u8],
    label: &[u8],
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> HmacSha256 {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.update(&sender.to_be_bytes());
    mac.update(challenge_nonce);
    mac.update(sender_nonce);
    mac
}

/// The proof that `sender` knows `secret`, answering `challenge_nonce` (the other side's fresh
/// nonce) with its own fresh `sender_nonce`: the primitive of this handshake, shared with other
/// challenge-responses over the cluster secret (the proxy's forwarding connections). `label`
/// names the protocol and the sender's role and must differ for every (protocol, role).
pub fn secret_proof(
    secret: &[u8],
    label: &[u8],
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
) -> Vec<u8> {
    labeled_mac(secret, label, sender, challenge_nonce, sender_nonce)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Whether `proof` is [`secret_proof`] of the same inputs, compared in constant time.
pub fn secret_proof_matches(
    secret: &[u8],
    label: &[u8],
    sender: NodeId,
    challenge_nonce: &[u8],
    sender_nonce: &[u8],
    proof: &[u8],
) -> bool {
    labeled_mac(secret, label, sender, challenge_nonce, sender_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// A fresh random nonce of [`HANDSHAKE_NONCE_BYTES`].
pub fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; HANDSHAKE_NONCE_BYTES];
    // The thread RNG is a CSPRNG seeded from the OS: nonces are unpredictable.
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn peer_info(remote: &Handshake) -> PeerInfo {
    PeerInfo {
        node_id: remote.node_id,
        incarnation: remote.incarnation,
        cluster_gid: remote.cluster_gid,
        sql_addr: remote.sql_addr.clone(),
        http_addr: remote.http_addr.clone(),
    }
}

async fn send<S>(
    framed: &mut Framed<S, FrameCodec>,
    handshake: &Handshake,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(encode_body(handshake)?).await?;
    Ok(())
}

async fn receive<S>(framed: &mut Framed<S, FrameCodec>) -> Result<Handshake, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body: Bytes = framed.next().await.ok_or(HandshakeError::Closed)??;
    Ok(decode_body::<Handshake>(body)?)
}
