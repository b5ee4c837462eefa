//! Builds the `LearnedValues` reply to a learner from records read out of the log.
//!
//! Chosen values are stored as `RecordKind::Chosen` records whose payload is an encoded
//! [`ChosenValue`]. The reply carries consecutive instances from `from_instance` on, at most
//! `max_values` of them and at most [`LEARN_BATCH_BYTES_MAX`] bytes of values (but always at
//! least one value, so a single large value still makes progress: a frame holds one value).

use std::collections::BTreeMap;

use paxsql_binlog::{Record, RecordKind};
use paxsql_schema::{ChosenValue, LearnedValues, Message};

use crate::limits::LEARN_BATCH_BYTES_MAX;
use crate::paxos::InstanceId;

/// The reply for a learner that asked from `from_instance` on.
///
/// `log_first` is the lowest instance the log still holds. When the log starts above
/// `from_instance` (truncated below a checkpoint), or holds no chosen value at `from_instance`
/// although that instance is chosen, the reply says `needs_checkpoint`.
pub fn learned_values(
    records: &[Record],
    log_first: Option<InstanceId>,
    from_instance: InstanceId,
    max_values: usize,
    chosen_instance: Option<InstanceId>,
) -> LearnedValues {
    let mut reply = LearnedValues {
        values: Vec::new(),
        chosen_instance: chosen_instance.unwrap_or(0),
        needs_checkpoint: false,
        first_instance: log_first.unwrap_or(0),
    };
    if log_first.is_some_and(|first| first > from_instance) {
        reply.needs_checkpoint = true;
        return reply;
    }
    let chosen = chosen_by_instance(records);
    let mut bytes = 0;
    let mut instance_id = from_instance;
    while reply.values.len() < max_values {
        let Some(value) = chosen.get(&instance_id) else {
            break;
        };
        let value_bytes = value.encoded_len();
        if !reply.values.is_empty() && bytes + value_bytes > LEARN_BATCH_BYTES_MAX {
            break;
        }
        bytes += value_bytes;
        reply.values.push(value.clone());
        instance_id += 1;
    }
    let from_is_chosen = chosen_instance.is_some_and(|chosen| chosen >= from_instance);
    if reply.values.is_empty() && from_is_chosen {
        // Chosen here but not in the log: truncated away, or a gap this node stood over at
        // startup (its replica was ahead of its log; a `Meta` record marks the gap's end). The
        // learner needs a checkpoint past the gap: a first instance at or below its own would
        // make it ignore the notice and ask again forever.
        let past_gap = records
            .iter()
            .filter(|record| record.kind == RecordKind::Meta && record.instance_id >= from_instance)
            .map(|record| record.instance_id + 1)
            .max();
        reply.needs_checkpoint = true;
        reply.first_instance = past_gap
            .or(log_first)
            .unwrap_or_else(|| chosen_instance.map_or(0, |chosen| chosen + 1));
    }
    reply
}

/// The chosen value of every instance in `records` (a later record supersedes an earlier one).
/// A record that does not decode is corruption: it is reported, and the values stop before it.
fn chosen_by_instance(records: &[Record]) -> BTreeMap<InstanceId, ChosenValue> {
    let mut chosen = BTreeMap::new();
    for record in records
        .iter()
        .filter(|record| record.kind == RecordKind::Chosen)
    {
        match ChosenValue::decode(record.payload.clone()) {
            Ok(value) if value.instance_id == record.instance_id => {
                chosen.insert(record.instance_id, value);
            }
            Ok(value) => {
                tracing::error!(
                    record_instance = record.instance_id,
                    value_instance = value.instance_id,
                    "a chosen record names another instance than its header; not serving it"
                );
                chosen.split_off(&record.instance_id);
                break;
            }
            Err(error) => {
                tracing::error!(instance_id = record.instance_id, %error, "a chosen record does not decode; not serving it");
                chosen.split_off(&record.instance_id);
                break;
            }
        }
    }
    chosen
}
