//! One segment file of a [`crate::FileLog`]: naming, creation, and the recovery scan that tells
//! a torn tail from corruption.
//!
//! Rules the scan relies on (kept by `FileLog`):
//! - Segments are numbered without gaps; only the oldest are ever deleted, oldest first.
//! - A segment is synced before the next one is created, so only the **last** segment can end
//!   in a torn write. Damage anywhere in an earlier segment is corruption.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{
    decode_record_at, segment_header, valid_record_after, Decoded, SEGMENT_HEADER_BYTES,
};
use crate::LogError;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".binlog";

/// The file name of segment `sequence`: zero-padded so names sort like numbers.
pub fn segment_file_name(sequence: u64) -> String {
    format!("{SEGMENT_PREFIX}{sequence:020}{SEGMENT_SUFFIX}")
}

/// The sequence number of a segment file name, or `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where a record lives, and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u32,
}

/// An open segment file.
#[derive(Debug)]
pub struct Segment {
    pub sequence: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes written so far (the segment header included); the next record goes here.
    pub len_bytes: u64,
    /// The highest instance id of any record in this segment.
    pub instance_max: Option<u64>,
}

impl Segment {
    /// Creates segment `sequence` in `dir` and writes its header. Neither the file nor the
    /// directory entry is synced: the caller must sync both before promising durability.
    pub fn create(dir: &Path, sequence: u64) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(sequence));
        let io_error = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error)?;
        file.write_all(&segment_header()).map_err(io_error)?;
        Ok(Segment {
            sequence,
            path,
            file,
            len_bytes: SEGMENT_HEADER_BYTES as u64,
            instance_max: None,
        })
    }

    pub fn note_record(&mut self, instance_id: u64) {
        self.instance_max = Some(
            self.instance_max
                .map_or(instance_id, |max| max.max(instance_id)),
        );
    }
}

/// A torn write cut from the end of the last segment during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the last good record ended: the file was truncated to this length.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
    pub reason: String,
}

/// What scanning one segment found.
#[derive(Debug)]
pub struct ScannedSegment {
    pub segment: Segment,
    /// `(instance id, location)` of every valid record, in file order.
    pub records: Vec<(u64, Location)>,
    pub torn_tail: Option<TornTail>,
}

/// Opens and scans segment `sequence`. `is_last` says whether a damaged tail may be a torn
/// write (cut, after which the file is truncated and synced) or is corruption (an error).
pub fn scan_segment(dir: &Path, sequence: u64, is_last: bool) -> Result<ScannedSegment, LogError> {
    let path = dir.join(segment_file_name(sequence));
    let io_error = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(is_last)
        .open(&path)
        .map_err(io_error)?;
    let bytes = std::fs::read(&path).map_err(io_error)?;
    let corrupt = |offset: usize, reason: String| LogError::Corrupt {
        path: path.clone(),
        offset: offset as u64,
        reason,
    };

    let mut segment = Segment {
        sequence,
        path: path.clone(),
        file,
        len_bytes: bytes.len() as u64,
        instance_max: None,
    };
    let header = segment_header();
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes[..SEGMENT_HEADER_BYTES] != header {
        // A crash right after creating the last segment can leave its header short or unwritten.
        let header_torn = bytes.len() <= SEGMENT_HEADER_BYTES
            && (header.starts_with(&bytes) || bytes.iter().all(|&byte| byte == 0));
        if !(is_last && header_torn) {
            return Err(corrupt(
                0,
                "bad segment header (magic or format version)".to_string(),
            ));
        }
        let torn = TornTail {
            path: path.clone(),
            offset: 0,
            bytes_cut: bytes.len() as u64,
            reason: "torn segment header".to_string(),
        };
        rewrite_header(&mut segment)?;
        return Ok(ScannedSegment {
            segment,
            records: Vec::new(),
            torn_tail: Some(torn),
        });
    }

    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut damage = None;
    while offset < bytes.len() {
        match decode_record_at(&bytes, offset) {
            Decoded::Record {
                record,
                bytes: record_bytes,
            } => {
                let bytes_u32 = u32::try_from(record_bytes)
                    .expect("record length is bounded by the payload limit");
                records.push((
                    record.instance_id,
                    Location {
                        segment: sequence,
                        offset: offset as u64,
                        bytes: bytes_u32,
                    },
                ));
                segment.note_record(record.instance_id);
                offset += record_bytes;
            }
            Decoded::Zeros => {
                damage = Some("zero-filled tail".to_string());
                break;
            }
            // A length that points past the end is a torn write only if nothing valid follows:
            // a flipped length bit must not hide the records after it.
            Decoded::Truncated { reason } | Decoded::Invalid { reason } => {
                if is_last && !valid_record_after(&bytes, offset) {
                    damage = Some(reason);
                    break;
                }
                return Err(corrupt(
                    offset,
                    format!("{reason}; valid records follow it, so this is not a torn write"),
                ));
            }
        }
    }
    let Some(reason) = damage else {
        return Ok(ScannedSegment {
            segment,
            records,
            torn_tail: None,
        });
    };
    if !is_last {
        return Err(corrupt(
            offset,
            format!("{reason} in a segment that is not the last one"),
        ));
    }
    let torn = TornTail {
        path: path.clone(),
        offset: offset as u64,
        bytes_cut: (bytes.len() - offset) as u64,
        reason,
    };
    cut_tail(&mut segment, offset as u64)?;
    Ok(ScannedSegment {
        segment,
        records,
        torn_tail: Some(torn),
    })
}

/// Truncates the last segment to its last good record and syncs the cut, so that records
/// appended later can never be followed by the old torn bytes.
fn cut_tail(segment: &mut Segment, len_bytes: u64) -> Result<(), LogError> {
    segment
        .file
        .set_len(len_bytes)
        .map_err(|source| LogError::Io {
            path: segment.path.clone(),
            source,
        })?;
    segment
        .file
        .sync_all()
        .map_err(|source| LogError::SyncFailed {
            path: segment.path.clone(),
            source,
        })?;
    segment.len_bytes = len_bytes;
    Ok(())
}

fn rewrite_header(segment: &mut Segment) -> Result<(), LogError> {
    cut_tail(segment, 0)?;
    segment
        .file
        .write_all_at(&segment_header(), 0)
        .map_err(|source| LogError::Io {
            path: segment.path.clone(),
            source,
        })?;
    segment
        .file
        .sync_all()
        .map_err(|source| LogError::SyncFailed {
            path: segment.path.clone(),
            source,
        })?;
    segment.len_bytes = SEGMENT_HEADER_BYTES as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_like_numbers() {
        assert_eq!(parse_segment_file_name(&segment_file_name(12)), Some(12));
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_file_name("segment-12.binlog"), None);
        assert_eq!(parse_segment_file_name("notes.txt"), None);
    }
}
