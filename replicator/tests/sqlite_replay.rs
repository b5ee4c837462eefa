//! Master batch → follower replay: identical content, exactly-once, divergence halts.

mod sqlite_common;

use paxsql_replicator::sqlite::{ApplyOutcome, Database, DatabaseOptions, SqliteError, Value};
use paxsql_schema::paxos_value::Payload;
use sqlite_common::*;

const TIME_MS: i64 = 1_700_000_000_123;

fn nondeterministic_statements() -> Vec<paxsql_replicator::sqlite::StatementRequest> {
    vec![
        sql("CREATE TABLE events (id INTEGER PRIMARY KEY, r INTEGER, blob BLOB, dt TEXT, ts TEXT, d TEXT, t TEXT, \
             unix INTEGER, jd REAL, created TEXT DEFAULT CURRENT_TIMESTAMP, noted TEXT, \
             salt INTEGER DEFAULT (random()))"),
        sql("CREATE TABLE audit (event_id INTEGER, at TEXT, r INTEGER)"),
        sql("CREATE TRIGGER events_audit AFTER INSERT ON events BEGIN \
             INSERT INTO audit VALUES (new.id, datetime('now'), random()); END"),
        sql("INSERT INTO events (r, blob, dt, ts, d, t, unix, jd) VALUES (random(), randomblob(16), datetime('now'), \
             CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, unixepoch(), julianday('now'))"),
        sql("INSERT INTO events (r, blob, dt, ts, d, t, unix, jd) SELECT random(), randomblob(8), datetime('now', 'subsec'), \
             CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, unixepoch('now'), julianday('now') FROM events"),
        sql("UPDATE events SET noted = hex(randomblob(4)) WHERE id = last_insert_rowid()"),
        sql("INSERT INTO events (r) SELECT random() FROM (SELECT 1 UNION ALL SELECT 2) ORDER BY random()"),
    ]
}

#[test]
fn follower_replay_of_nondeterministic_statements_gives_identical_content() {
    // Phase 1: the master runs time- and randomness-dependent statements in one batch.
    let mut master = master();
    let value = commit_batch(
        &mut master.database,
        TIME_MS,
        0xDEAD_BEEF,
        &nondeterministic_statements(),
    );
    // Phase 2: a follower replays the chosen value.
    let mut follower = node();
    assert_eq!(
        follower.database.apply(1, &value).expect("replay"),
        ApplyOutcome::Applied
    );
    // Phase 3: both replicas hold the same bytes, and the pinned time was used.
    assert_eq!(
        master.database.content_hash().expect("hash"),
        follower.database.content_hash().expect("hash")
    );
    let pinned = rows(
        &follower.database,
        "SELECT dt, created, unix, d FROM events WHERE id = 1",
    );
    assert_eq!(
        pinned[0],
        vec![
            Value::Text("2023-11-14 22:13:20".into()),
            Value::Text("2023-11-14 22:13:20".into()),
            Value::Integer(TIME_MS / 1000),
            Value::Text("2023-11-14".into())
        ]
    );
    let audit = rows(&follower.database, "SELECT DISTINCT at FROM audit");
    assert_eq!(audit, vec![vec![Value::Text("2023-11-14 22:13:20".into())]]);
}

#[test]
fn replay_with_another_seed_would_differ_so_the_seed_matters() {
    // Guards the test above: without pinning, random() would make replicas differ.
    let mut first = master();
    let mut second = master();
    commit_batch(
        &mut first.database,
        TIME_MS,
        1,
        &nondeterministic_statements(),
    );
    commit_batch(
        &mut second.database,
        TIME_MS,
        2,
        &nondeterministic_statements(),
    );
    assert_ne!(
        first.database.content_hash().expect("hash"),
        second.database.content_hash().expect("hash")
    );
}

#[test]
fn pinned_time_never_goes_back_along_the_log() {
    let mut master = master();
    commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (a)")],
    );
    let value = commit_batch(
        &mut master.database,
        TIME_MS - 60_000,
        2,
        &[sql("INSERT INTO t VALUES (unixepoch('now', 'subsec'))")],
    );
    let Some(Payload::Binlog(batch)) = &value.payload else {
        panic!("binlog value")
    };
    assert_eq!(batch.time_unix_ms, TIME_MS);
    assert_eq!(
        rows(&master.database, "SELECT a FROM t"),
        vec![vec![Value::Real(TIME_MS as f64 / 1000.0)]]
    );
}

#[test]
fn replay_is_exactly_once_across_a_reopen() {
    let mut master = master();
    let value = commit_batch(
        &mut master.database,
        TIME_MS,
        7,
        &[sql("CREATE TABLE t (a)"), sql("INSERT INTO t VALUES (1)")],
    );
    let follower = node();
    let path = follower.database.path().to_path_buf();
    let mut database = follower.database;
    database.apply(1, &value).expect("first apply");
    drop(database);
    // After a crash the runtime replays from the log: instance 1 again must be a no-op.
    let mut reopened = Database::open(&path, DatabaseOptions::default()).expect("reopen");
    assert_eq!(reopened.applied_instance(), Some(1));
    assert_eq!(
        reopened.apply(1, &value).expect("second apply"),
        ApplyOutcome::AlreadyApplied
    );
    assert_eq!(count(&reopened, "t"), 1);
    let _keep_dir = follower.dir;
}

#[test]
fn instances_apply_strictly_in_order() {
    let mut follower = node();
    let value = binlog_value(5, Default::default());
    let error = follower.database.apply(2, &value).expect_err("gap");
    assert!(
        matches!(
            error,
            SqliteError::OutOfOrder {
                instance_id: 2,
                expected: 1
            }
        ),
        "{error}"
    );
}

#[test]
fn effect_digest_mismatch_halts_replay_and_leaves_nothing() {
    let mut master = master();
    let create = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[sql("CREATE TABLE t (a)")],
    );
    let insert = commit_batch(
        &mut master.database,
        TIME_MS,
        1,
        &[
            sql("INSERT INTO t VALUES (1)"),
            sql("INSERT INTO t VALUES (2)"),
        ],
    );
    let mut follower = node();
    follower.database.apply(1, &create).expect("create");
    // Phase: the follower's state differs from the master's (as after a bug or a bad disk).
    let mut tampered = insert.clone();
    if let Some(Payload::Binlog(batch)) = &mut tampered.payload {
        batch.statements[1].effect_digest ^= 1;
    }
    let error = follower
        .database
        .apply(2, &tampered)
        .expect_err("divergence");
    assert!(
        matches!(
            error,
            SqliteError::Divergence {
                instance_id: 2,
                statement_index: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_fatal());
    assert_eq!(follower.database.applied_instance(), Some(1));
    assert_eq!(
        count(&follower.database, "t"),
        0,
        "the diverging instance left nothing behind"
    );
}

#[test]
fn lease_and_membership_values_are_recorded_with_versions() {
    use paxsql_schema::{MasterLease, Membership, PaxosValue};
    let mut follower = node();
    let lease = |expected_version| PaxosValue {
        value_id: 9,
        checksum_before: 77,
        payload: Some(Payload::MasterLease(MasterLease {
            master_id: 2,
            lease_ms: 3000,
            expected_version,
        })),
    };
    assert_eq!(
        follower.database.apply(1, &lease(0)).expect("lease"),
        ApplyOutcome::Applied
    );
    assert_eq!(
        follower.database.apply(2, &lease(0)).expect("stale lease"),
        ApplyOutcome::StaleIgnored
    );
    let membership = PaxosValue {
        value_id: 10,
        checksum_before: 78,
        payload: Some(Payload::Membership(Membership {
            members: vec![1, 2, 4],
            expected_version: 0,
            ..Default::default()
        })),
    };
    follower.database.apply(3, &membership).expect("membership");
    let meta = follower.database.meta().expect("meta");
    assert_eq!(
        (meta.master_id, meta.lease_ms, meta.lease_version),
        (Some(2), Some(3000), Some(1))
    );
    assert_eq!(
        (meta.members, meta.members_version),
        (vec![1, 2, 4], Some(3))
    );
    assert_eq!(
        (
            meta.cluster_gid,
            meta.applied_instance,
            meta.applied_checksum_before
        ),
        (Some(42), Some(3), Some(78))
    );
}

/// Every apply records, in its own transaction, what a restart and a checkpoint need: the
/// applied instance, its value id, the log checksum before and after it, and its pinned time.
#[test]
fn an_apply_records_the_instance_its_checksums_and_its_time() {
    let mut master = master();
    let mut value = commit_batch(
        &mut master.database,
        TIME_MS,
        7,
        &[sql("CREATE TABLE t (a)")],
    );
    value.value_id = 0x0300_0000_0042;
    value.checksum_before = 0x1234;
    let mut follower = node();
    follower.database.apply(1, &value).expect("apply");
    let meta = follower.database.meta().expect("meta");
    assert_eq!(meta.applied_instance, Some(1));
    assert_eq!(meta.applied_value_id, Some(0x0300_0000_0042));
    assert_eq!(meta.applied_checksum_before, Some(0x1234));
    assert_eq!(
        meta.applied_checksum_after,
        Some(paxsql_replicator::paxos::chain_checksum(0x1234, &value))
    );
    assert_eq!(meta.time_unix_ms, Some(TIME_MS));
}
