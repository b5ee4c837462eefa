//! Model check: random sequences of append / sync / truncate_prefix / crash-and-reopen against a
//! plain list of records. Both logs must agree with the model:
//! - reads return exactly the model's records, in append order;
//! - truncation drops only a prefix of records below the bound;
//! - after a crash the survivors are a prefix of what was appended that holds every synced record
//!   (`synced ⊆ survivors ⊆ appended`).

use paxsql_binlog::{FileLog, FileLogOptions, LogStore, MemLog, Record, RecordKind};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        instance_id: u64,
        kind: RecordKind,
        payload: Vec<u8>,
    },
    Sync,
    TruncatePrefix {
        below: u64,
    },
    /// Process crash: for a FileLog, drop the handle without syncing and reopen the directory.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(RecordKind::Acceptor),
        Just(RecordKind::Chosen),
        Just(RecordKind::Meta)
    ];
    prop_oneof![
        6 => (0..40u64, kind, proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(instance_id, kind, payload)| Op::Append { instance_id, kind, payload }),
        2 => Just(Op::Sync),
        1 => (0..45u64).prop_map(|below| Op::TruncatePrefix { below }),
        1 => Just(Op::Crash),
    ]
}

/// The log under test.
enum Subject {
    Mem(MemLog),
    File {
        log: Option<Box<FileLog>>,
        dir: tempfile::TempDir,
    },
}

const SEGMENT_BYTES_MAX: u64 = 512;

fn open_file_log(dir: &std::path::Path) -> Box<FileLog> {
    let log = FileLog::open(
        dir,
        FileLogOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX,
        },
    )
    .expect("reopen")
    .0;
    Box::new(log)
}

impl Subject {
    fn log(&mut self) -> &mut dyn LogStore {
        match self {
            Subject::Mem(log) => log,
            Subject::File { log, .. } => log.as_deref_mut().expect("open"),
        }
    }

    fn crash(&mut self) {
        match self {
            Subject::Mem(log) => log.crash(),
            Subject::File { log, dir } => {
                drop(log.take());
                *log = Some(open_file_log(dir.path()));
            }
        }
    }
}

struct Model {
    records: Vec<Record>,
    /// `records[..synced]` are durable.
    synced: usize,
}

fn all(log: &mut dyn LogStore) -> Vec<Record> {
    log.read_range(0, u64::MAX).expect("read everything")
}

fn check_agrees(subject: &mut Subject, model: &Model) -> Result<(), TestCaseError> {
    let log = subject.log();
    prop_assert_eq!(all(log), model.records.clone());
    prop_assert_eq!(
        log.first_instance(),
        model.records.iter().map(|record| record.instance_id).min()
    );
    prop_assert_eq!(
        log.last_instance(),
        model.records.iter().map(|record| record.instance_id).max()
    );
    Ok(())
}

fn run(mut subject: Subject, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model {
        records: Vec::new(),
        synced: 0,
    };
    for op in ops {
        match op {
            Op::Append {
                instance_id,
                kind,
                payload,
            } => {
                let record = Record::new(instance_id, kind, payload);
                subject.log().append(&record).expect("append");
                model.records.push(record);
            }
            Op::Sync => {
                subject.log().sync().expect("sync");
                model.synced = model.records.len();
            }
            Op::TruncatePrefix { below } => {
                subject.log().truncate_prefix(below).expect("truncate");
                let survivors = all(subject.log());
                let dropped = model.records.len() - survivors.len();
                prop_assert_eq!(
                    &survivors[..],
                    &model.records[dropped..],
                    "truncation keeps a suffix"
                );
                // A FileLog may drop records the caller never synced: a sealed segment was synced
                // when it was sealed. The contract only asks that they are below the bound.
                prop_assert!(
                    model.records[..dropped]
                        .iter()
                        .all(|record| record.instance_id < below),
                    "only records below {} are dropped",
                    below
                );
                model.records.drain(..dropped);
                model.synced = model.synced.saturating_sub(dropped);
            }
            Op::Crash => {
                subject.crash();
                let survivors = all(subject.log());
                prop_assert!(survivors.len() >= model.synced, "a synced record was lost");
                prop_assert!(
                    survivors.len() <= model.records.len(),
                    "records appeared from nowhere"
                );
                prop_assert_eq!(
                    &survivors[..],
                    &model.records[..survivors.len()],
                    "survivors are a prefix"
                );
                model.records.truncate(survivors.len());
                model.synced = survivors.len();
            }
        }
        check_agrees(&mut subject, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn file_log_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_file_log(dir.path());
        run(Subject::File { log: Some(log), dir }, ops)?;
    }

    #[test]
    fn mem_log_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(Subject::Mem(MemLog::new()), ops)?;
    }
}
