//! The storage conformance suite: every check runs against [`MemLog`] and [`FileLog`] (with
//! small segments, so rollover happens inside the checks). A new `LogStore` gets the same suite
//! by adding one line to `conformance!`.

use paxsql_binlog::{FileLog, FileLogOptions, LogStore, MemLog, Record, RecordKind};

/// A log under test, with whatever it needs kept alive (the temp dir of a `FileLog`).
struct Subject {
    log: Box<dyn LogStore>,
    _dir: Option<tempfile::TempDir>,
}

fn mem_log() -> Subject {
    Subject {
        log: Box::new(MemLog::new()),
        _dir: None,
    }
}

fn file_log() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, report) = FileLog::open(
        dir.path(),
        FileLogOptions {
            segment_bytes_max: 512,
        },
    )
    .expect("open a new log");
    assert_eq!(report.records, 0);
    Subject {
        log: Box::new(log),
        _dir: Some(dir),
    }
}

fn record(instance_id: u64, kind: RecordKind, text: &str) -> Record {
    Record::new(instance_id, kind, text.as_bytes().to_vec())
}

fn all(log: &dyn LogStore) -> Vec<Record> {
    log.read_range(0, u64::MAX).expect("read everything")
}

fn empty_log_holds_nothing(log: &mut dyn LogStore) {
    assert_eq!(log.first_instance(), None);
    assert_eq!(log.last_instance(), None);
    assert!(all(log).is_empty());
    log.sync().expect("syncing an empty log is fine");
    log.sync().expect("and so is syncing twice");
    assert!(all(log).is_empty());
}

fn appended_records_read_back_byte_exact_in_order(log: &mut dyn LogStore) {
    let records: Vec<Record> = (0..40)
        .map(|instance| {
            record(
                instance,
                RecordKind::Chosen,
                &format!("value {instance} {}", "x".repeat(instance as usize)),
            )
        })
        .collect();
    for record in &records {
        log.append(record).expect("append");
    }
    assert_eq!(all(log), records, "unsynced records are readable");
    log.sync().expect("sync");
    assert_eq!(all(log), records, "synced records are readable");
}

fn read_range_is_half_open(log: &mut dyn LogStore) {
    for instance in 0..10 {
        log.append(&record(instance, RecordKind::Chosen, "v"))
            .expect("append");
    }
    let ids = |records: Vec<Record>| {
        records
            .iter()
            .map(|record| record.instance_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(log.read_range(3, 6).expect("read")), vec![3, 4, 5]);
    assert_eq!(ids(log.read_range(9, 100).expect("read")), vec![9]);
    assert!(log.read_range(6, 6).expect("read").is_empty());
    assert!(log.read_range(7, 2).expect("read").is_empty());
    assert!(log.read_range(10, u64::MAX).expect("read").is_empty());
}

fn later_records_of_an_instance_come_back_in_append_order(log: &mut dyn LogStore) {
    let appended = vec![
        record(5, RecordKind::Acceptor, "promise b1"),
        record(6, RecordKind::Acceptor, "other instance"),
        record(5, RecordKind::Acceptor, "accept b1 v"),
        record(5, RecordKind::Chosen, "v"),
        record(4, RecordKind::Meta, "late meta"),
        record(5, RecordKind::Acceptor, "promise b2"),
    ];
    for record in &appended {
        log.append(record).expect("append");
    }
    log.sync().expect("sync");
    let five: Vec<Record> = appended
        .iter()
        .filter(|record| record.instance_id == 5)
        .cloned()
        .collect();
    assert_eq!(log.read_range(5, 6).expect("read"), five);
    assert_eq!(
        all(log),
        appended,
        "the whole log reads in append order, not instance order"
    );
}

fn first_and_last_track_the_lowest_and_highest_instance(log: &mut dyn LogStore) {
    for instance in [10, 3, 7] {
        log.append(&record(instance, RecordKind::Acceptor, "a"))
            .expect("append");
    }
    assert_eq!(log.first_instance(), Some(3));
    assert_eq!(log.last_instance(), Some(10));
}

fn empty_and_large_payloads_round_trip(log: &mut dyn LogStore) {
    let records = vec![
        Record::new(1, RecordKind::Meta, Vec::new()),
        Record::new(
            2,
            RecordKind::Chosen,
            (0..5000u32)
                .map(|index| (index % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
        Record::new(3, RecordKind::Acceptor, Vec::new()),
    ];
    for record in &records {
        log.append(record).expect("append");
    }
    log.sync().expect("sync");
    assert_eq!(all(log), records);
}

fn truncate_prefix_keeps_every_record_at_or_above_the_bound(log: &mut dyn LogStore) {
    let appended: Vec<Record> = (0..200)
        .map(|instance| record(instance, RecordKind::Chosen, &format!("value {instance}")))
        .collect();
    for record in &appended {
        log.append(record).expect("append");
    }
    log.sync().expect("sync");
    log.truncate_prefix(120).expect("truncate");
    let kept = all(log);
    let first = log.first_instance().expect("records remain");
    assert!(first <= 120, "kept too little: first instance {first}");
    assert_eq!(
        kept.as_slice(),
        &appended[first as usize..],
        "what remains is a suffix of the log"
    );
    assert_eq!(log.last_instance(), Some(199));
    log.truncate_prefix(50)
        .expect("truncating below an older bound is harmless");
    assert_eq!(all(log), kept);
}

fn appends_after_truncate_prefix_are_kept(log: &mut dyn LogStore) {
    for instance in 0..100 {
        log.append(&record(instance, RecordKind::Chosen, "before"))
            .expect("append");
    }
    log.sync().expect("sync");
    log.truncate_prefix(100)
        .expect("truncate everything sealed");
    log.append(&record(100, RecordKind::Chosen, "after"))
        .expect("append");
    log.sync().expect("sync");
    let kept = all(log);
    assert_eq!(kept.last(), Some(&record(100, RecordKind::Chosen, "after")));
    assert_eq!(log.last_instance(), Some(100));
    assert!(
        kept.windows(2)
            .all(|pair| pair[1].instance_id == pair[0].instance_id + 1),
        "no holes"
    );
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[test]
                fn mem_log() {
                    let mut subject = super::mem_log();
                    super::$check(subject.log.as_mut());
                }

                #[test]
                fn file_log() {
                    let mut subject = super::file_log();
                    super::$check(subject.log.as_mut());
                }
            }
        )*
    };
}

conformance!(
    empty_log_holds_nothing,
    appended_records_read_back_byte_exact_in_order,
    read_range_is_half_open,
    later_records_of_an_instance_come_back_in_append_order,
    first_and_last_track_the_lowest_and_highest_instance,
    empty_and_large_payloads_round_trip,
    truncate_prefix_keeps_every_record_at_or_above_the_bound,
    appends_after_truncate_prefix_are_kept,
);
