//! A master batch that ran while the master's own lease renewal was chosen moves onto it
//! (`Batch::absorb_lease_renewal`), and replicas that apply the renewal and then the batch end
//! with the same data and the same bookkeeping.

mod sqlite_common;

use paxsql_replicator::paxos::chain_checksum;
use paxsql_replicator::sqlite::Value;
use paxsql_schema::{paxos_value::Payload, MasterLease, PaxosValue};
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_000;
/// The master of these tests (a member of `init_value`).
const MASTER_NODE: u32 = 1;

/// Instance 1 of every node here: the table.
fn create_table_value() -> PaxosValue {
    let mut scratch = master();
    commit_batch(
        &mut scratch.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")],
    )
}

fn with_table(mut node: Node) -> Node {
    node.database
        .apply(1, &create_table_value())
        .expect("instance 1");
    node
}

fn lease_of(master_id: u32) -> PaxosValue {
    PaxosValue {
        value_id: 900 + u64::from(master_id),
        checksum_before: 0,
        payload: Some(Payload::MasterLease(MasterLease {
            master_id,
            lease_ms: 3_000,
            expected_version: 0,
        })),
    }
}

fn checksum_of(value: &PaxosValue) -> u64 {
    chain_checksum(value.checksum_before, value)
}

#[test]
fn a_batch_moves_onto_its_own_masters_lease_renewal_and_replicas_end_identical() {
    let mut master = with_table(master());
    let lease = lease_of(MASTER_NODE);
    let mut batch = batch_with_one_insert(&mut master, 1, TIME_MS);
    assert!(
        batch.absorb_lease_renewal(2, &lease, checksum_of(&lease), MASTER_NODE),
        "the master's own renewal at the next instance is absorbed"
    );
    let (record, pending) = batch.finish().expect("finish");
    assert_eq!(
        record.base_instance, 2,
        "the batch now builds on the renewal"
    );
    let value = binlog_value(500, record);
    pending
        .commit(3, &value)
        .expect("commit at the instance after the renewal");

    let mut follower = with_table(node());
    follower.database.apply(2, &lease).expect("the renewal");
    follower
        .database
        .apply(3, &value)
        .expect("the batch replays on it");
    assert_eq!(
        master.database.content_hash().expect("hash"),
        follower.database.content_hash().expect("hash")
    );
    let (master_meta, follower_meta) = (
        master.database.meta().expect("meta"),
        follower.database.meta().expect("meta"),
    );
    assert_eq!(master_meta, follower_meta);
    assert_eq!(master_meta.applied_instance, Some(3));
    assert_eq!(master_meta.lease_version, Some(2));
    assert_eq!(master_meta.master_id, Some(MASTER_NODE));
    assert_eq!(master.database.applied_instance(), Some(3));
}

#[test]
fn only_the_masters_own_renewal_at_the_next_instance_is_absorbed() {
    let mut master = with_table(master());
    let own = lease_of(MASTER_NODE);
    let other = lease_of(2);
    let mut batch = batch_with_one_insert(&mut master, 1, TIME_MS);
    assert!(
        !batch.absorb_lease_renewal(2, &other, checksum_of(&other), MASTER_NODE),
        "another node's lease means this node is no longer master"
    );
    assert!(
        !batch.absorb_lease_renewal(3, &own, checksum_of(&own), MASTER_NODE),
        "not the next instance"
    );
    let binlog = create_table_value();
    assert!(
        !batch.absorb_lease_renewal(2, &binlog, checksum_of(&binlog), MASTER_NODE),
        "SQL changes user tables"
    );
    let (record, pending) = batch.finish().expect("finish");
    assert_eq!(record.base_instance, 1, "nothing moved the batch");
    pending.rollback();
}

#[test]
fn a_batch_that_names_paxsql_tables_is_not_moved() {
    let mut master = with_table(master());
    let lease = lease_of(MASTER_NODE);
    let mut batch = master.database.begin_batch(1, TIME_MS, 2).expect("begin");
    // It read the lease version the renewal changes: moved, it would claim a value the
    // replicas (which apply the renewal first) never see.
    batch
        .execute(&sql(
            "INSERT INTO t (a) SELECT value FROM _paxsql_META WHERE key = 'lease_version'",
        ))
        .expect("reading paxsql's tables is allowed");
    assert!(!batch.absorb_lease_renewal(2, &lease, checksum_of(&lease), MASTER_NODE));
    drop(batch);
}

#[test]
fn a_rolled_back_batch_takes_the_absorbed_renewal_with_it() {
    let mut master = with_table(master());
    let lease = lease_of(MASTER_NODE);
    let mut batch = batch_with_one_insert(&mut master, 1, TIME_MS);
    assert!(batch.absorb_lease_renewal(2, &lease, checksum_of(&lease), MASTER_NODE));
    let (_record, pending) = batch.finish().expect("finish");
    pending.rollback();
    // Nothing of the batch, renewal included: the writer applies the renewal again.
    let meta = master.database.meta().expect("meta");
    assert_eq!(meta.applied_instance, Some(1));
    assert_eq!(meta.lease_version, None);
    assert_eq!(master.database.applied_instance(), Some(1));
    assert_eq!(count(&master.database, "t"), 0);
    master.database.apply(2, &lease).expect("apply the renewal");
    assert_eq!(master.database.meta().expect("meta").lease_version, Some(2));
    assert_eq!(
        rows(&master.database, "SELECT count(*) FROM t"),
        vec![vec![Value::Integer(0)]]
    );
}
