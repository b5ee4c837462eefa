//! Learn replies built from log records: consecutive values, bounded, and a checkpoint notice
//! when the log was truncated past what the learner needs.

use paxsql_binlog::{Record, RecordKind};
use paxsql_replicator::runtime::learn::learned_values;
use paxsql_schema::{paxos_value, Ballot, ChosenValue, Message, PaxosValue};

fn chosen_record(instance_id: u64, payload_bytes: usize) -> Record {
    let value = PaxosValue {
        value_id: instance_id,
        checksum_before: 0,
        payload: Some(paxos_value::Payload::Opaque(
            vec![7u8; payload_bytes].into(),
        )),
    };
    let chosen = ChosenValue {
        instance_id,
        ballot: Some(Ballot::new(1, 1)),
        value: Some(value),
    };
    Record::new(instance_id, RecordKind::Chosen, chosen.encode_to_vec())
}

#[test]
fn values_stop_at_the_first_gap() {
    let records = vec![
        chosen_record(3, 10),
        chosen_record(4, 10),
        chosen_record(6, 10),
    ];
    let reply = learned_values(&records, Some(3), 3, 100, Some(6));
    assert_eq!(
        reply
            .values
            .iter()
            .map(|value| value.instance_id)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(reply.chosen_instance, 6);
    assert!(!reply.needs_checkpoint);
}

#[test]
fn a_truncated_log_asks_for_a_checkpoint() {
    let records = vec![chosen_record(10, 10)];
    let reply = learned_values(&records, Some(10), 4, 100, Some(10));
    assert!(reply.needs_checkpoint);
    assert_eq!(reply.first_instance, 10);
    assert!(reply.values.is_empty());
}

#[test]
fn a_chosen_instance_missing_from_the_log_asks_for_a_checkpoint() {
    let reply = learned_values(&[], None, 2, 100, Some(5));
    assert!(reply.needs_checkpoint);
    assert_eq!(reply.first_instance, 6);
}

#[test]
fn a_learner_that_is_up_to_date_gets_an_empty_reply() {
    let reply = learned_values(&[chosen_record(0, 1)], Some(0), 1, 100, Some(0));
    assert!(reply.values.is_empty());
    assert!(!reply.needs_checkpoint);
}

#[test]
fn the_byte_bound_cuts_the_batch_but_never_below_one_value() {
    let big = paxsql_replicator::limits::LEARN_BATCH_BYTES_MAX / 2 + 1;
    let records = vec![
        chosen_record(0, big),
        chosen_record(1, big),
        chosen_record(2, 1),
    ];
    let reply = learned_values(&records, Some(0), 0, 100, Some(2));
    assert_eq!(
        reply.values.len(),
        1,
        "two halves plus overhead exceed the bound"
    );

    let huge = paxsql_replicator::limits::LEARN_BATCH_BYTES_MAX + 1;
    let reply = learned_values(&[chosen_record(0, huge)], Some(0), 0, 100, Some(0));
    assert_eq!(
        reply.values.len(),
        1,
        "one value always goes, or the learner could never progress"
    );
}

#[test]
fn a_corrupt_chosen_record_is_not_served() {
    let mut records = vec![chosen_record(0, 1), chosen_record(1, 1)];
    // A damaged record for instance 1 comes before a good one: corruption is never skipped.
    records.insert(1, Record::new(1, RecordKind::Chosen, vec![0x0f, 0x01]));
    let reply = learned_values(&records, Some(0), 0, 100, Some(1));
    assert_eq!(
        reply
            .values
            .iter()
            .map(|value| value.instance_id)
            .collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn a_gap_stood_over_at_startup_asks_for_a_checkpoint_past_it() {
    // Chosen 0..=3, then the node stood on its replica at 7 (Meta record), then chose 8 on.
    let mut records: Vec<Record> = (0..=3)
        .map(|instance| chosen_record(instance, 10))
        .collect();
    records.push(Record::new(7, RecordKind::Meta, vec![1, 2, 3]));
    records.push(chosen_record(8, 10));
    let reply = learned_values(&records, Some(0), 5, 100, Some(8));
    assert!(reply.values.is_empty());
    assert!(reply.needs_checkpoint);
    assert_eq!(
        reply.first_instance, 8,
        "past the gap, so the learner does not drop the notice"
    );
}
