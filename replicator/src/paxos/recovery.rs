//! Rebuilding a core from the records its log held at startup.
//!
//! - Chosen records replay in instance order through the same code as a live choice, so the
//!   running checksum, cluster id, members and lease come back; they must be contiguous.
//! - After a truncation the log starts with a `Meta` record ([`CheckpointMeta`]): the newest
//!   one gives the state after its instance, and only chosen records above it replay.
//! - The acceptor takes the promise of the last Acceptor record (a promise covers every later
//!   instance) and its accepted ballot and value only if that record is for the current
//!   instance.

use std::collections::BTreeMap;

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{ChosenValue, Message};

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
