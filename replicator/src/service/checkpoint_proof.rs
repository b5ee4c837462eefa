//! The checkpoint fetcher's proof of the cluster secret: the [`PEER_PROOF_HEADER`] header.
//!
//! A peer bootstrapping from a checkpoint holds the cluster secret but not the admin token, so
//! when the serving node has a secret, `GET /checkpoint/stream` accepts this proof in place of
//! the token. The header value is four fields separated by single spaces:
//!
//! `NODE_ID UNIX_MS NONCE_HEX PROOF_HEX`, where
//! `PROOF = HMAC(secret, "paxsql checkpoint" ‖ node id ‖ unix ms ‖ nonce ‖ request target)`
//!
//! built with the peer handshake's [`secret_proof`] (challenge: the time as 8 big-endian bytes;
//! sender nonce: a fresh nonce followed by the request target as sent, query string included).
//! The label differs from every other use of the secret, so no other proof passes for this one.
//! The server accepts a proof within [`PEER_PROOF_SKEW_MAX`] of its own clock, for the exact
//! target it was made for; the nonce lets it refuse a replay inside that window (the proxy's
//! HTTP guard remembers the nonces it accepted).
//!
//! What it does not buy: the stream itself is neither encrypted nor authenticated, as for the
//! peer links; someone on the network path can read the checkpoint.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::HANDSHAKE_NONCE_BYTES;
use crate::paxos::api::NodeId;
use crate::runtime::handshake::{fresh_nonce, secret_proof, secret_proof_matches};

/// The request header that carries the proof.
pub const PEER_PROOF_HEADER: &str = "X-Paxsql-Peer-Proof";
/// Largest difference between the proof's time and the server's clock.
pub const PEER_PROOF_SKEW_MAX: Duration = Duration::from_secs(5 * 60);
/// Names this protocol inside the HMAC.
const PEER_PROOF_LABEL: &[u8] = b"paxsql checkpoint";

/// Who fetches, and the secret it proves.
#[derive(Clone)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        formatter
            .debug_struct("PeerIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// A proof that passed: who made it, when, and its nonce (for replay detection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProof {
    pub node_id: NodeId,
    pub unix_ms: u64,
    pub nonce: Vec<u8>,
}

/// Why a proof did not pass. The texts say what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerProofError {
    #[error(
        "malformed {PEER_PROOF_HEADER} header ({0}); run the same paxsql release on every node"
    )]
    Malformed(&'static str),
    #[error("the {PEER_PROOF_HEADER} of node {node_id} is {skew_s} s away from this node's clock (at most {} s accepted): synchronize the clocks (NTP)", PEER_PROOF_SKEW_MAX.as_secs())]
    Stale { node_id: NodeId, skew_s: u64 },
    #[error("the {PEER_PROOF_HEADER} of node {node_id} does not prove this node's cluster secret: configure the same --cluster-secret-file on every node")]
    Wrong { node_id: NodeId },
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The header value proving `identity` for a request of `target`, made at `unix_ms`.
pub fn peer_proof_header(identity: &PeerIdentity, target: &str, unix_ms: u64) -> String {
    let nonce = fresh_nonce();
    let proof = secret_proof(
        &identity.secret,
        PEER_PROOF_LABEL,
        identity.node_id,
        &unix_ms.to_be_bytes(),
        &[nonce.as_slice(), target.as_bytes()].concat(),
    );
    format!(
        "{} {unix_ms} {} {}",
        identity.node_id,
        to_hex(&nonce),
        to_hex(&proof)
    )
}

/// Checks a [`PEER_PROOF_HEADER`] value for a request of `target` against `secret`, at the
/// server's time `now_unix_ms`. The HMAC is compared in constant time.
pub fn check_peer_proof(
    secret: &[u8],
    header: &str,
    target: &str,
    now_unix_ms: u64,
) -> Result<PeerProof, PeerProofError> {
    let mut fields = header.trim().split(' ');
    let mut next = |what: &'static str| fields.next().ok_or(PeerProofError::Malformed(what));
    let node_id: NodeId = next("no node id")?
        .parse()
        .map_err(|_| PeerProofError::Malformed("the node id is not a number"))?;
    let unix_ms: u64 = next("no time")?
        .parse()
        .map_err(|_| PeerProofError::Malformed("the time is not a number"))?;
    let nonce =
        from_hex(next("no nonce")?).ok_or(PeerProofError::Malformed("the nonce is not hex"))?;
    let proof =
        from_hex(next("no proof")?).ok_or(PeerProofError::Malformed("the proof is not hex"))?;
    if fields.next().is_some() {
        return Err(PeerProofError::Malformed("more than four fields"));
    }
    if nonce.len() != HANDSHAKE_NONCE_BYTES {
        return Err(PeerProofError::Malformed("the nonce has the wrong length"));
    }
    let skew_ms = now_unix_ms.abs_diff(unix_ms);
    if u128::from(skew_ms) > PEER_PROOF_SKEW_MAX.as_millis() {
        return Err(PeerProofError::Stale {
            node_id,
            skew_s: skew_ms / 1_000,
        });
    }
    let matches = secret_proof_matches(
        secret,
        PEER_PROOF_LABEL,
        node_id,
        &unix_ms.to_be_bytes(),
        &[nonce.as_slice(), target.as_bytes()].concat(),
        &proof,
    );
    if !matches {
        return Err(PeerProofError::Wrong { node_id });
    }
    Ok(PeerProof {
        node_id,
        unix_ms,
        nonce,
    })
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;
    const TARGET: &str = "/checkpoint/stream?group=main&instance=0&offset=0&version=2";

    fn identity(secret: &[u8]) -> PeerIdentity {
        PeerIdentity {
            node_id: 4,
            secret: Arc::from(secret),
        }
    }

    #[test]
    fn a_proof_passes_for_its_secret_target_and_time() {
        let header = peer_proof_header(&identity(b"secret"), TARGET, NOW_MS);
        let proof = check_peer_proof(b"secret", &header, TARGET, NOW_MS + 1_000).expect("passes");
        assert_eq!((proof.node_id, proof.unix_ms), (4, NOW_MS));
        assert_eq!(proof.nonce.len(), HANDSHAKE_NONCE_BYTES);
    }

    #[test]
    fn another_secret_target_or_node_id_fails() {
        let header = peer_proof_header(&identity(b"secret"), TARGET, NOW_MS);
        assert_eq!(
            check_peer_proof(b"other secret", &header, TARGET, NOW_MS),
            Err(PeerProofError::Wrong { node_id: 4 })
        );
        let other_target = TARGET.replace("offset=0", "offset=4194304");
        assert_eq!(
            check_peer_proof(b"secret", &header, &other_target, NOW_MS),
            Err(PeerProofError::Wrong { node_id: 4 })
        );
        let claimed_other_node = header.replacen('4', "5", 1);
        assert_eq!(
            check_peer_proof(b"secret", &claimed_other_node, TARGET, NOW_MS),
            Err(PeerProofError::Wrong { node_id: 5 })
        );
    }

    #[test]
    fn a_proof_outside_the_window_is_stale_either_way() {
        let header = peer_proof_header(&identity(b"secret"), TARGET, NOW_MS);
        let window_ms = PEER_PROOF_SKEW_MAX.as_millis() as u64;
        assert!(check_peer_proof(b"secret", &header, TARGET, NOW_MS + window_ms).is_ok());
        assert_eq!(
            check_peer_proof(b"secret", &header, TARGET, NOW_MS + window_ms + 1),
            Err(PeerProofError::Stale {
                node_id: 4,
                skew_s: window_ms / 1_000
            })
        );
        assert!(matches!(
            check_peer_proof(b"secret", &header, TARGET, NOW_MS - window_ms - 1),
            Err(PeerProofError::Stale { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        for header in ["", "4", "4 x", "4 1 zz 00", "4 1 00 00 extra", "4 1 00 00"] {
            assert!(
                matches!(
                    check_peer_proof(b"secret", header, TARGET, NOW_MS),
                    Err(PeerProofError::Malformed(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes.to_vec()));
        assert_eq!(from_hex("abc"), None);
    }

    #[test]
    fn the_debug_form_hides_the_secret() {
        let text = format!("{:?}", identity(b"do-not-print"));
        assert!(!text.contains("do-not-print"), "{text}");
    }
}
