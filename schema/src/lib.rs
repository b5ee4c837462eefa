//! The wire and log schema of paxsql, generated from `proto/paxsql.proto` by `prost`.
//!
//! - Peer messages travel in an [`Envelope`] (cluster gid, group, from, to).
//! - A Paxos instance chooses a [`PaxosValue`]: a cluster init, a [`BinlogBatch`] of SQL, a
//!   [`MasterLease`] or a [`Membership`] change.
//! - Checkpoints travel as [`CheckpointChunk`]s.

#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/paxsql.rs"));

/// Bumped when an old node could misread a new message. Checked in the peer handshake.
pub const WIRE_VERSION: u32 = 1;

pub use prost::Message;

impl Ballot {
    /// The zero ballot: "nothing promised or accepted".
    pub const ZERO: Ballot = Ballot {
        number: 0,
        node_id: 0,
    };

    pub fn new(number: u64, node_id: u32) -> Self {
        Ballot { number, node_id }
    }

    pub fn is_zero(&self) -> bool {
        self.number == 0 && self.node_id == 0
    }

    /// Ballots order by number, then node id.
    pub fn key(&self) -> (u64, u32) {
        (self.number, self.node_id)
    }
}

impl PartialOrd for Ballot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ballot {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_number_then_node() {
        assert!(Ballot::new(2, 1) > Ballot::new(1, 3));
        assert!(Ballot::new(2, 3) > Ballot::new(2, 1));
        assert!(Ballot::ZERO.is_zero());
    }

    #[test]
    fn envelope_round_trips() {
        let envelope = Envelope {
            cluster_gid: 7,
            group: "main".into(),
            from: 1,
            to: 2,
            body: Some(envelope::Body::Prepare(Prepare {
                instance_id: 9,
                ballot: Some(Ballot::new(3, 1)),
            })),
        };
        let bytes = envelope.encode_to_vec();
        assert_eq!(
            Envelope::decode(bytes.as_slice()).expect("decodes"),
            envelope
        );
    }
}
