//! FileLog on disk: recovery (torn tail versus corruption), segment rollover, truncation by whole
//! segments, and reopening.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use paxsql_binlog::record::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use paxsql_binlog::{FileLog, FileLogOptions, LogError, LogStore, Record, RecordKind};

const SEGMENT_BYTES_MAX: u64 = 1024;
/// Each test record is this many bytes on disk, so offsets are easy to compute.
const PAYLOAD_BYTES: usize = 100;
const RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + PAYLOAD_BYTES) as u64;

fn options() -> FileLogOptions {
    FileLogOptions {
        segment_bytes_max: SEGMENT_BYTES_MAX,
    }
}

fn record(instance_id: u64) -> Record {
    Record::new(
        instance_id,
        RecordKind::Chosen,
        vec![(instance_id % 256) as u8; PAYLOAD_BYTES],
    )
}

/// Writes records `0..count`, syncs, closes, and returns the segment paths.
fn write_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let (mut log, _) = FileLog::open(dir, options()).expect("open");
    for instance in 0..count {
        log.append(&record(instance)).expect("append");
    }
    log.sync().expect("sync");
    log.segment_paths()
}

fn reopen(dir: &Path) -> (FileLog, paxsql_binlog::RecoveryReport) {
    FileLog::open(dir, options()).expect("reopen")
}

fn instances(log: &FileLog) -> Vec<u64> {
    log.read_range(0, u64::MAX)
        .expect("read")
        .iter()
        .map(|record| record.instance_id)
        .collect()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment")
        .write_all(bytes)
        .expect("write");
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write segment");
}

fn expect_corrupt(dir: &Path, path: &Path, offset: u64) {
    match FileLog::open(dir, options()) {
        Err(LogError::Corrupt {
            path: reported,
            offset: reported_offset,
            reason,
        }) => {
            assert_eq!(reported, path, "names the damaged file ({reason})");
            assert_eq!(
                reported_offset, offset,
                "names the damaged record ({reason})"
            );
        }
        other => panic!(
            "expected Corrupt at {} offset {offset}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn records_survive_reopen_across_segment_rollover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    assert!(
        paths.len() >= 4,
        "30 records of {RECORD_BYTES} bytes fill several {SEGMENT_BYTES_MAX}-byte segments"
    );
    let (log, report) = reopen(dir.path());
    assert_eq!(report.records, 30);
    assert_eq!(report.torn_tail, None);
    assert_eq!(
        log.read_range(0, 30).expect("read"),
        (0..30).map(record).collect::<Vec<_>>()
    );
    for path in &paths {
        assert!(std::fs::metadata(path).expect("segment").len() <= SEGMENT_BYTES_MAX);
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = FileLog::open(dir.path(), options()).expect("open");
    let big = Record::new(
        1,
        RecordKind::Chosen,
        vec![7u8; 3 * SEGMENT_BYTES_MAX as usize],
    );
    log.append(&record(0)).expect("append");
    log.append(&big).expect("append big");
    log.append(&record(2)).expect("append");
    log.sync().expect("sync");
    assert_eq!(log.segment_paths().len(), 3);
    drop(log);
    let (log, _) = reopen(dir.path());
    assert_eq!(
        log.read_range(0, 3).expect("read"),
        vec![record(0), big, record(2)]
    );
}

#[test]
fn a_record_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = FileLog::open(dir.path(), options()).expect("open");
    let too_big = Record::new(
        1,
        RecordKind::Chosen,
        vec![0u8; RECORD_PAYLOAD_BYTES_MAX + 1],
    );
    match log.append(&too_big) {
        Err(LogError::RecordTooLarge { bytes, limit }) => assert_eq!(
            (bytes, limit),
            (RECORD_PAYLOAD_BYTES_MAX + 1, RECORD_PAYLOAD_BYTES_MAX)
        ),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    log.append(&record(1)).expect("the log still works");
    assert_eq!(instances(&log), vec![1]);
}

#[test]
fn a_torn_last_record_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 20);
    let last = paths.last().expect("a segment");
    let len = std::fs::metadata(last).expect("segment").len();
    // Cut the last record in the middle of its payload, as a crash during write() would.
    OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open")
        .set_len(len - 30)
        .expect("truncate");
    let (log, report) = reopen(dir.path());
    let torn = report.torn_tail.expect("the torn write is reported");
    assert_eq!(torn.path, *last);
    assert_eq!(torn.offset, len - RECORD_BYTES);
    assert_eq!(torn.bytes_cut, RECORD_BYTES - 30);
    assert_eq!(instances(&log), (0..19).collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(last).expect("segment").len(),
        len - RECORD_BYTES,
        "the file was cut"
    );
}

#[test]
fn a_short_header_at_the_tail_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    append_bytes(paths.last().expect("segment"), &b"PXR1\x01\x02"[..]);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail.expect("reported").bytes_cut, 6);
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    append_bytes(paths.last().expect("segment"), &[0u8; 300]);
    let (mut log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail.expect("reported").bytes_cut, 300);
    // New appends land right after the last good record and survive the next reopen.
    log.append(&record(5)).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(instances(&log), (0..6).collect::<Vec<_>>());
}

#[test]
fn garbage_at_the_tail_with_nothing_valid_after_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let garbage: Vec<u8> = (0..500u32)
        .map(|index| (index * 37 % 256) as u8 | 1)
        .collect();
    append_bytes(paths.last().expect("segment"), &garbage);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail.expect("reported").bytes_cut, 500);
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_flipped_byte_in_the_last_record_is_treated_as_torn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let len = std::fs::metadata(last).expect("segment").len();
    flip_byte(last, len - 10);
    let (log, report) = reopen(dir.path());
    assert_eq!(
        report.torn_tail.expect("reported").offset,
        len - RECORD_BYTES
    );
    assert_eq!(instances(&log), (0..4).collect::<Vec<_>>());
}

#[test]
fn a_flipped_byte_followed_by_valid_records_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    // The second record of the last segment: a payload byte, then its length field.
    let offset = SEGMENT_HEADER_BYTES as u64 + RECORD_BYTES;
    flip_byte(last, offset + RECORD_HEADER_BYTES as u64 + 3);
    expect_corrupt(dir.path(), last, offset);
    flip_byte(last, offset + RECORD_HEADER_BYTES as u64 + 3);
    flip_byte(last, offset + 10); // payload length now points far past the end of the file
    expect_corrupt(dir.path(), last, offset);
}

#[test]
fn damage_in_a_middle_segment_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    let middle = &paths[1];
    let offset = SEGMENT_HEADER_BYTES as u64 + 2 * RECORD_BYTES;
    flip_byte(middle, offset + RECORD_HEADER_BYTES as u64 + 50);
    expect_corrupt(dir.path(), middle, offset);
    let error = FileLog::open(dir.path(), options()).expect_err("corrupt");
    let message = error.to_string();
    assert!(
        message.contains(&middle.display().to_string()) && message.contains(&offset.to_string()),
        "{message}"
    );
}

#[test]
fn a_cut_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    let middle = &paths[1];
    let len = std::fs::metadata(middle).expect("segment").len();
    OpenOptions::new()
        .write(true)
        .open(middle)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    expect_corrupt(dir.path(), middle, len - RECORD_BYTES);
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    std::fs::remove_file(&paths[1]).expect("remove");
    expect_corrupt(dir.path(), &paths[1], 0);
}

#[test]
fn a_torn_segment_header_of_the_last_segment_is_rewritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    let next = dir
        .path()
        .join(paxsql_binlog::segment::segment_file_name(paths.len() as u64));
    std::fs::write(&next, &b"PAXS"[..]).expect("write a torn header");
    let (mut log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail.expect("reported").path, next);
    log.append(&record(30)).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (log, _) = reopen(dir.path());
    assert_eq!(instances(&log), (0..31).collect::<Vec<_>>());
}

#[test]
fn damage_found_on_read_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = FileLog::open(dir.path(), options()).expect("open");
    for instance in 0..3 {
        log.append(&record(instance)).expect("append");
    }
    log.sync().expect("sync");
    let path = log.segment_paths()[0].clone();
    flip_byte(&path, SEGMENT_HEADER_BYTES as u64 + RECORD_BYTES + 40);
    assert!(
        matches!(log.read_range(1, 2), Err(LogError::Corrupt { offset, .. }) if offset == SEGMENT_HEADER_BYTES as u64 + RECORD_BYTES)
    );
    assert_eq!(
        log.read_range(0, 1).expect("undamaged records still read"),
        vec![record(0)]
    );
}

#[test]
fn truncate_prefix_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = FileLog::open(dir.path(), options()).expect("open");
    for instance in 0..40 {
        log.append(&record(instance)).expect("append");
    }
    log.sync().expect("sync");
    let before = log.segment_paths();
    let per_segment = (SEGMENT_BYTES_MAX - SEGMENT_HEADER_BYTES as u64) / RECORD_BYTES;
    log.truncate_prefix(20).expect("truncate");
    let after = log.segment_paths();
    // Segments holding only instances below 20 are gone; the one holding 20 stays whole.
    let first_kept = (20 / per_segment) * per_segment;
    assert_eq!(log.first_instance(), Some(first_kept));
    assert_eq!(after.len(), before.len() - (20 / per_segment) as usize);
    for path in &before[..before.len() - after.len()] {
        assert!(!path.exists(), "{} was deleted", path.display());
    }
    log.append(&record(40)).expect("append after truncate");
    log.sync().expect("sync");
    let segments_held = log.segment_paths().len();
    drop(log);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.segments, segments_held);
    assert_eq!(instances(&log), (first_kept..41).collect::<Vec<_>>());
}

#[test]
fn truncate_prefix_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = FileLog::open(dir.path(), options()).expect("open");
    for instance in 0..3 {
        log.append(&record(instance)).expect("append");
    }
    log.sync().expect("sync");
    log.truncate_prefix(u64::MAX).expect("truncate");
    assert_eq!(
        instances(&log),
        vec![0, 1, 2],
        "whole segments only: the active one stays"
    );
}

#[test]
fn files_that_are_not_segments_are_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 3);
    std::fs::write(dir.path().join("README"), b"operator notes").expect("write");
    let (log, _) = reopen(dir.path());
    assert_eq!(instances(&log), vec![0, 1, 2]);
    assert!(dir.path().join("README").exists());
}

#[test]
fn open_creates_a_missing_log_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nested = dir.path().join("main").join("log");
    let (mut log, report) = FileLog::open(&nested, options()).expect("open creates the directory");
    assert_eq!(report, paxsql_binlog::RecoveryReport::default());
    log.append(&record(0)).expect("append");
    log.sync().expect("sync");
    drop(log);
    assert_eq!(instances(&reopen(&nested).0), vec![0]);
}
