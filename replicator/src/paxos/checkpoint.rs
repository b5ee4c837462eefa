//! Checkpoints as the core sees them: what it needs to stand on a checkpoint instead of the
//! log below it, and the two inputs that use it.
//!
//! - [`CheckpointMeta`] is the core's own state after the checkpoint's last instance: the
//!   running checksum, the cluster id, the member list and the lease. It is stored in the log
//!   as a `RecordKind::Meta` record at that instance, so recovery after a truncation starts
//!   from it instead of from the (gone) instance 0.
//! - `Input::CheckpointDurable` (this node wrote an fsync'd checkpoint): persist the meta
//!   record and the acceptor state again, then truncate the log below the given instance.
//!   **Ordering:** the `TruncateLog` action follows the `Persist` that holds the meta record;
//!   the driver's log writer truncates only after the sync that covers the records queued
//!   before it, so a crash never leaves a truncated log without its meta record.
//! - `Input::CheckpointInstalled` (the state machine was replaced by a peer's checkpoint):
//!   every instance up to the checkpoint counts as chosen and applied; the core takes the
//!   meta's state and learns onward. The acceptor's promise is kept (a promise covers every
//!   later instance) and re-persisted at the new instance before the old log is cut.

use paxsql_binlog::{Record, RecordKind};

use super::api::{Action, InstanceId, NodeId, ProposalOutcome};
use super::core::Core;
use super::proposer::Phase;

/// The core's state right after instance `instance_id` (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// The last instance the checkpoint contains.
    pub instance_id: InstanceId,
    /// The running log checksum after `instance_id`.
    pub checksum_after: u64,
    pub cluster_gid: u64,
    pub members: Vec<NodeId>,
    /// The instance at which the member list was chosen (0: the init).
    pub members_version: InstanceId,
    pub master_id: Option<NodeId>,
    pub lease_ms: u64,
    /// The instance at which the lease in force was chosen (0: none).
    pub lease_version: InstanceId,
}

/// Layout version of an encoded [`CheckpointMeta`].
const META_FORMAT_VERSION: u8 = 1;

impl CheckpointMeta {
    /// A small fixed layout (version byte, little-endian integers, member count, members).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64 + 4 * self.members.len());
        bytes.push(META_FORMAT_VERSION);
        for number in [
            self.instance_id,
            self.checksum_after,
            self.cluster_gid,
            self.members_version,
            self.master_id.map_or(0, |id| u64::from(id) + 1),
            self.lease_ms,
            self.lease_version,
            self.members.len() as u64,
        ] {
            bytes.extend_from_slice(&number.to_le_bytes());
        }
        for member in &self.members {
            bytes.extend_from_slice(&member.to_le_bytes());
        }
        bytes
    }

    /// `None` when the bytes are not an encoded meta of this version.
    pub fn decode(bytes: &[u8]) -> Option<CheckpointMeta> {
        let (&version, mut rest) = bytes.split_first()?;
        if version != META_FORMAT_VERSION {
            return None;
        }
        let mut next_u64 = || {
            let (head, tail) = rest.split_at_checked(8)?;
            rest = tail;
            Some(u64::from_le_bytes(head.try_into().ok()?))
        };
        let instance_id = next_u64()?;
        let checksum_after = next_u64()?;
        let cluster_gid = next_u64()?;
        let members_version = next_u64()?;
        let master_plus_one = next_u64()?;
        let lease_ms = next_u64()?;
        let lease_version = next_u64()?;
        let count = usize::try_from(next_u64()?).ok()?;
        if rest.len() != count.checked_mul(4)? {
            return None;
        }
        // 0 encodes "no master"; any other value is the node id + 1.
        let master_id = match master_plus_one.checked_sub(1) {
            None => None,
            Some(id) => Some(NodeId::try_from(id).ok()?),
        };
        let members = rest
            .chunks_exact(4)
            .map(|chunk| u32::from_le_bytes(chunk.try_into().expect("chunks of 4")))
            .collect();
        Some(CheckpointMeta {
            instance_id,
            checksum_after,
            cluster_gid,
            members,
            members_version,
            master_id,
            lease_ms,
            lease_version,
        })
    }

    pub fn record(&self) -> Record {
        Record::new(self.instance_id, RecordKind::Meta, self.encode())
    }
}

impl Core {
    /// Takes the state of `meta` as the state after its instance (recovery and installs).
    pub(super) fn stand_on_checkpoint(&mut self, meta: &CheckpointMeta) {
        self.instance_id = meta.instance_id + 1;
        self.checksum = meta.checksum_after;
        if meta.cluster_gid != 0 {
            self.cluster_gid = meta.cluster_gid;
        }
        if !meta.members.is_empty() {
            let mut members = meta.members.clone();
            members.sort_unstable();
            members.dedup();
            self.members = members;
            self.members_version = meta.members_version;
        }
        self.lease.master_id = meta.master_id;
        self.lease.lease_ms = meta.lease_ms;
        self.lease.version = meta.lease_version;
        // Counts from now (or from the first tick): never assume the master died earlier.
        self.lease.learned_at_ms = self.now_ms;
        self.lease.own_start_ms = None;
        self.lease.own_end_ms = None;
        self.acceptor
            .move_to_next_instance(super::api::PlantedBug::None);
        self.proposer.prepared = false;
    }

    /// `Input::CheckpointDurable`: keep the meta in the log, then cut the log below `below`
    /// (never above the checkpoint).
    pub(super) fn handle_checkpoint_durable(
        &mut self,
        meta: CheckpointMeta,
        below: InstanceId,
        actions: &mut Vec<Action>,
    ) {
        if meta.instance_id >= self.instance_id {
            // The state machine cannot be ahead of the chosen log; ignore a stale or bogus call.
            return;
        }
        let below = below.min(meta.instance_id + 1);
        let token = self.take_token();
        actions.push(Action::Persist {
            token,
            records: vec![meta.record(), self.acceptor_record()],
            then_send: Vec::new(),
        });
        actions.push(Action::TruncateLog { below });
    }

    /// `Input::CheckpointInstalled`: the state machine now holds every instance up to
    /// `meta.instance_id`.
    pub(super) fn handle_checkpoint_installed(
        &mut self,
        meta: CheckpointMeta,
        actions: &mut Vec<Action>,
    ) {
        if meta.instance_id < self.instance_id {
            // Already past it (learned meanwhile); nothing to skip.
            return;
        }
        if self.cluster_gid != 0 && meta.cluster_gid != 0 && meta.cluster_gid != self.cluster_gid {
            let reason = format!(
                "the installed checkpoint belongs to cluster {:#x}, this node to {:#x}",
                meta.cluster_gid, self.cluster_gid
            );
            self.halt(reason, actions);
            return;
        }
        self.settle_proposals_before(meta.instance_id, actions);
        self.stand_on_checkpoint(&meta);
        self.applied_instance = Some(meta.instance_id);
        self.learn_requested_ms = None;
        let token = self.take_token();
        actions.push(Action::Persist {
            token,
            records: vec![meta.record(), self.acceptor_record()],
            then_send: Vec::new(),
        });
        actions.push(Action::TruncateLog {
            below: meta.instance_id + 1,
        });
        self.maybe_learn(actions);
    }

    /// Ends every local proposal that cannot survive a jump past `last_skipped`.
    fn settle_proposals_before(&mut self, last_skipped: InstanceId, actions: &mut Vec<Action>) {
        self.proposer.phase = Phase::Idle;
        if let Some(inflight) = self.proposer.inflight.take() {
            for proposal in inflight.proposals.into_iter().rev() {
                if proposal.expected_instance.is_some() {
                    actions.push(Action::ProposalDone {
                        proposal_id: proposal.proposal_id,
                        outcome: ProposalOutcome::Lost {
                            instance_id: inflight.instance_id,
                        },
                    });
                } else {
                    self.queue.push_front(proposal);
                }
            }
        }
        let queue = std::mem::take(&mut self.queue);
        for proposal in queue {
            match proposal.expected_instance {
                Some(expected) if expected <= last_skipped => actions.push(Action::ProposalDone {
                    proposal_id: proposal.proposal_id,
                    outcome: ProposalOutcome::Lost {
                        instance_id: expected,
                    },
                }),
                _ => self.queue.push_back(proposal),
            }
        }
    }
}
