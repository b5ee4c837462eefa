//! FileLog on disk: recovery (torn tail versus corruption), segment rollover, truncation by whole
//! segments, and reopening. Segments are preallocated (zero-filled to the segment size), so a
//! torn write is made by writing over the zeros after the last record, not by cutting the file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use paxsql_binlog::record::{
    encode_record, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use paxsql_binlog::segment::records_end;
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

/// Writes `bytes` at `offset` of a segment file, as a crash mid-write (or damage) would.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment")
        .write_all_at(bytes, offset)
        .expect("write");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("segment").len()
}

fn end_of_records(path: &Path) -> u64 {
    records_end(path).expect("read segment")
}

/// Turns every segment into the format written before preallocation: the file ends with its
/// last record.
fn trim_to_old_format(paths: &[PathBuf]) {
    for path in paths {
        let end = end_of_records(path);
        OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open")
            .set_len(end)
            .expect("trim");
    }
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
    let end = end_of_records(last);
    // The last record's final 30 bytes never reached the disk: zeros, as preallocated.
    write_at(last, end - 30, &[0u8; 30]);
    let (mut log, report) = reopen(dir.path());
    let torn = report.torn_tail.expect("the torn write is reported");
    assert_eq!(torn.path, *last);
    assert_eq!(torn.offset, end - RECORD_BYTES);
    assert_eq!(torn.bytes_cut, RECORD_BYTES - 30);
    assert_eq!(instances(&log), (0..19).collect::<Vec<_>>());
    let bytes = std::fs::read(last).expect("read");
    assert!(
        bytes[(end - RECORD_BYTES) as usize..]
            .iter()
            .all(|&byte| byte == 0),
        "the torn bytes were zeroed"
    );
    assert_eq!(file_len(last), SEGMENT_BYTES_MAX, "the preallocation stays");
    // The next record takes the torn one's place and survives a reopen.
    log.append(&record(19)).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(instances(&log), (0..20).collect::<Vec<_>>());
    assert_eq!(end_of_records(last), end);
}

#[test]
fn a_short_header_at_the_tail_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let end = end_of_records(last);
    write_at(last, end, &b"PXR1\x01\x02"[..]);
    let (log, report) = reopen(dir.path());
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.offset, torn.bytes_cut), (end, 6));
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_short_header_at_the_end_of_an_old_format_segment_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    trim_to_old_format(&paths);
    append_bytes(paths.last().expect("segment"), &b"PXR1\x01\x02"[..]);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail.expect("reported").bytes_cut, 6);
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
}

#[test]
fn a_zero_filled_tail_is_the_clean_end_and_appends_continue_after_the_last_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    assert_eq!(file_len(last), SEGMENT_BYTES_MAX, "preallocated");
    let end = SEGMENT_HEADER_BYTES as u64 + 5 * RECORD_BYTES;
    assert_eq!(end_of_records(last), end);
    let (mut log, report) = reopen(dir.path());
    assert_eq!((report.records, report.torn_tail), (5, None));
    log.append(&record(5)).expect("append");
    log.sync().expect("sync");
    drop(log);
    assert_eq!(
        end_of_records(last),
        end + RECORD_BYTES,
        "right after record 4"
    );
    assert_eq!(file_len(last), SEGMENT_BYTES_MAX, "appends overwrite zeros");
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail, None);
    assert_eq!(instances(&log), (0..6).collect::<Vec<_>>());
}

#[test]
fn garbage_at_the_tail_with_nothing_valid_after_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let end = end_of_records(last);
    let garbage: Vec<u8> = (0..500u32)
        .map(|index| (index * 37 % 256) as u8 | 1)
        .collect();
    write_at(last, end, &garbage);
    let (log, report) = reopen(dir.path());
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.offset, torn.bytes_cut), (end, 500));
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
}

#[test]
fn garbage_inside_the_zero_filled_tail_with_nothing_valid_after_is_cut() {
    // A torn write whose header page was lost while a later page of it survived.
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let end = end_of_records(last);
    write_at(last, end + 100, &[0x5a]);
    let (mut log, report) = reopen(dir.path());
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.offset, torn.bytes_cut), (end, 101));
    assert_eq!(instances(&log), (0..5).collect::<Vec<_>>());
    log.append(&record(5)).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (log, report) = reopen(dir.path());
    assert_eq!(report.torn_tail, None, "the cut bytes were zeroed for good");
    assert_eq!(instances(&log), (0..6).collect::<Vec<_>>());
}

#[test]
fn garbage_after_zeros_followed_by_a_valid_record_is_corruption() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let end = end_of_records(last);
    write_at(last, end + 100, &[0x5a]);
    let mut bytes = Vec::new();
    encode_record(&record(6), &mut bytes);
    write_at(last, end + 4 * RECORD_BYTES, &bytes);
    expect_corrupt(dir.path(), last, end + 100);
}

#[test]
fn a_valid_record_after_zeros_is_corruption_not_a_clean_end() {
    // A power cut that persisted a later write but not the one before it.
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let later = end_of_records(last) + RECORD_BYTES;
    let mut bytes = Vec::new();
    encode_record(&record(6), &mut bytes);
    write_at(last, later, &bytes);
    expect_corrupt(dir.path(), last, later);
}

#[test]
fn a_flipped_byte_in_the_last_record_is_treated_as_torn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let last = paths.last().expect("segment");
    let end = end_of_records(last);
    flip_byte(last, end - 10);
    let (log, report) = reopen(dir.path());
    assert_eq!(
        report.torn_tail.expect("reported").offset,
        end - RECORD_BYTES
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
    // Only a log written before preallocation can have one: segments now get their name only
    // once their header and zeros are synced.
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    trim_to_old_format(&paths);
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
fn an_old_format_log_opens_and_its_last_segment_is_preallocated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    trim_to_old_format(&paths);
    let last = paths.last().expect("segment");
    let end = file_len(last);
    let (mut log, report) = reopen(dir.path());
    assert_eq!(
        (report.segments, report.records, report.torn_tail),
        (paths.len(), 30, None)
    );
    assert_eq!(file_len(last), SEGMENT_BYTES_MAX, "zero-filled at open");
    log.append(&record(30)).expect("append");
    log.sync().expect("sync");
    drop(log);
    assert_eq!(end_of_records(last), end + RECORD_BYTES);
    assert_eq!(
        instances(&reopen(dir.path()).0),
        (0..31).collect::<Vec<_>>()
    );
}

#[test]
fn rollover_seals_segments_trimmed_to_their_records_and_preallocates_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 30);
    assert!(paths.len() >= 4);
    let (sealed, active) = paths.split_at(paths.len() - 1);
    for path in sealed {
        assert_eq!(file_len(path), end_of_records(path), "{}", path.display());
    }
    assert_eq!(file_len(&active[0]), SEGMENT_BYTES_MAX);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names.len(),
        paths.len(),
        "no preallocated file is left behind once the log is closed: {names:?}"
    );
}

#[test]
fn a_half_prepared_segment_left_by_a_crash_is_deleted_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = write_log(dir.path(), 5);
    let leftover = dir.path().join(paxsql_binlog::segment::preparing_file_name(
        paths.len() as u64
    ));
    std::fs::write(&leftover, [0u8; 300]).expect("write a half-zeroed segment");
    let (mut log, report) = reopen(dir.path());
    assert_eq!((report.segments, report.torn_tail), (1, None));
    assert!(!leftover.exists());
    for instance in 5..30 {
        log.append(&record(instance)).expect("append");
    }
    log.sync().expect("sync");
    drop(log);
    assert_eq!(
        instances(&reopen(dir.path()).0),
        (0..30).collect::<Vec<_>>()
    );
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
