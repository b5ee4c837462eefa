//! Rebuilding a core from the records its log held at startup.
//!
//! - Chosen records replay in instance order through the same code as a live choice, so the
//!   running checksum, cluster id, members and lease come back; they must be contiguous.
//! - After a truncation the log starts with a `Meta` record ([`CheckpointMeta`]): the newest
//!   one gives the state after its instance, and only chosen records above it replay.
//! - The acceptor takes the promise of the last Acceptor record (a promise covers every later
//!   instance) and its accepted ballot and value only if that record is for the current
//!   instance.
//! - A state machine ahead of the log (its newest instances' Chosen records were appended
//!   without a sync and lost in a crash) is reconciled by [`state_machine_ahead`]: the node
//!   stands on the state machine's meta like on a checkpoint.

use std::collections::BTreeMap;

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{ChosenValue, Message, PaxosValue};

use super::api::{Config, InstanceId};
use super::checkpoint::CheckpointMeta;
use super::core::Core;

pub(super) fn rebuild(core: &mut Core, records: &[Record]) {
    let mut chosen: BTreeMap<u64, ChosenValue> = BTreeMap::new();
    let mut last_acceptor: Option<paxsql_schema::AcceptorState> = None;
    let mut newest_meta: Option<CheckpointMeta> = None;
    for record in records {
        match record.kind {
            RecordKind::Chosen => {
                let value = ChosenValue::decode(record.payload.as_ref()).expect(
                    "a Chosen record the log returned intact decodes (it was written by this code)",
                );
                chosen.entry(record.instance_id).or_insert(value);
            }
            RecordKind::Acceptor => {
                let state = paxsql_schema::AcceptorState::decode(record.payload.as_ref())
                    .expect("an Acceptor record the log returned intact decodes (it was written by this code)");
                last_acceptor = Some(state);
            }
            RecordKind::Meta => {
                let meta = CheckpointMeta::decode(record.payload.as_ref()).expect(
                    "a Meta record the log returned intact decodes (it was written by this code)",
                );
                if newest_meta
                    .as_ref()
                    .is_none_or(|newest| meta.instance_id >= newest.instance_id)
                {
                    newest_meta = Some(meta);
                }
            }
        }
    }
    if let Some(meta) = &newest_meta {
        core.stand_on_checkpoint(meta);
        chosen.retain(|&instance_id, _| instance_id > meta.instance_id);
    }
    let mut ignored = Vec::new();
    for (position, (instance_id, chosen_value)) in chosen.into_iter().enumerate() {
        let Some(value) = chosen_value.value else {
            continue;
        };
        if position == 0 && newest_meta.is_none() {
            core.instance_id = instance_id;
            core.checksum = value.checksum_before;
        }
        assert_eq!(
            instance_id, core.instance_id,
            "the log's chosen instances have a gap"
        );
        if value.checksum_before != core.checksum {
            core.halted = Some(format!(
                "instance {instance_id}: the log's checksum chain breaks ({:#x} recorded, {:#x} \
                 computed); the log is damaged, restore this node from a healthy checkpoint",
                value.checksum_before, core.checksum
            ));
            return;
        }
        core.apply_chosen(instance_id, &value, &mut Vec::new(), &mut ignored);
    }
    if let Some(state) = last_acceptor {
        core.acceptor.promised = state.promised.unwrap_or_default();
        if state.instance_id == core.instance_id {
            core.acceptor.accepted_ballot = state.accepted_ballot.unwrap_or_default();
            core.acceptor.accepted_value = state.accepted_value;
        }
    }
}

/// Startup reconciliation: is the state machine, which applied every instance up to
/// `applied`, **ahead** of the chosen instances the log `recovered` holds?
///
/// Chosen records are appended without a sync of their own ([`Action::Append`]) and values
/// are delivered at once, so a crash can leave the state machine (SQLite with
/// `synchronous=NORMAL`, whose pages the kernel may write back first) holding instances whose
/// Chosen records were lost. Those instances *were* chosen (a quorum durably accepted them
/// before any node delivered them), so the node stands on its state machine exactly as on a
/// checkpoint. When this answers true the driver must, before it builds the core:
/// 1. make the state machine durable (it must never fall back below the record of step 2),
/// 2. append the state machine's [`CheckpointMeta`] as a `Meta` record ([`CheckpointMeta::record`])
///    and sync it (the next restart then finds no gap below the log's next Chosen record),
/// 3. build the core from `recovered` plus that record: recovery stands on the newest meta.
///
/// False when the log's chosen instance is at or above `applied`: the driver replays the log
/// into the state machine instead, as before.
///
/// [`Action::Append`]: super::Action::Append
pub fn state_machine_ahead(
    config: &Config,
    recovered: &[Record],
    applied: Option<InstanceId>,
) -> bool {
    let Some(applied) = applied else {
        return false;
    };
    let from_log = Core::new(config.clone(), recovered);
    from_log
        .chosen_instance()
        .is_none_or(|chosen| chosen < applied)
}

impl CheckpointMeta {
    /// The meta a state machine holding exactly `values` (instances `0..values.len()`) keeps:
    /// the simulator's model of `_paxsql_meta`. `None` when `values` is empty.
    pub fn after_values(config: &Config, values: &[PaxosValue]) -> Option<CheckpointMeta> {
        let mut core = Core::new(config.clone(), &[]);
        let mut ignored = Vec::new();
        for (instance_id, value) in values.iter().enumerate() {
            core.apply_chosen(
                instance_id as InstanceId,
                value,
                &mut Vec::new(),
                &mut ignored,
            );
        }
        core.checkpoint_meta()
    }
}

impl Core {
    /// This core's state after its last chosen instance, as a checkpoint meta.
    pub(super) fn checkpoint_meta(&self) -> Option<CheckpointMeta> {
        Some(CheckpointMeta {
            instance_id: self.chosen_instance()?,
            checksum_after: self.checksum,
            cluster_gid: self.cluster_gid,
            members: self.members.clone(),
            members_version: self.members_version,
            master_id: self.lease.master_id,
            lease_ms: self.lease.lease_ms,
            lease_version: self.lease.version,
        })
    }
}
