//! One segment file of a [`crate::FileLog`]: naming, creation, and the recovery scan that tells
//! a torn tail from corruption.
//!
//! Rules the scan relies on (kept by `FileLog`):
//! - Segments are numbered without gaps; only the oldest are ever deleted, oldest first.
//! - A segment is synced before the next one is created, so only the **last** segment can end
//!   in a torn write. Damage anywhere in an earlier segment is corruption.
//!
//! # Preallocation
//! A new segment is written in full before it gets its name: the header, then zeros up to the
//! segment size, synced, under a temporary name ([`prepare_segment`]), then renamed into place
//! ([`Segment::install`]). Records then overwrite zeros, so the file size never changes on the
//! commit path and `fdatasync` is a pure data flush (no inode size to journal). Because the
//! rename comes after the sync, a segment name never points at a half-zeroed file; a crash
//! before the rename leaves only a temporary file, which the next open deletes.
//!
//! The scan treats an all-zero record header as the clean end of the records **when every
//! byte after it is zero too**. Cases:
//! - Zeros to the end of the file: the clean end (nothing is cut, the zeros stay for appends).
//! - Bytes at the end that are not a valid record and do not start with a zero header (a write
//!   torn by a crash: its first part reached the disk, the rest is still zeros), with no valid
//!   record after them, in the last segment: a torn tail. They are overwritten with zeros up to
//!   the last non-zero byte and synced ("cut"); `TornTail::bytes_cut` counts them.
//! - A zero header followed by non-zero bytes, in the last segment, with no valid record
//!   anywhere after it: a torn tail too, cut the same way. Records overwrite zeros, so unsynced
//!   pages reach the disk in any order: the page holding a record's header may be lost while
//!   the page holding its payload survives. Nothing past the last sync was ever promised.
//! - Damage followed by a valid record (in the last segment), or any damage in an earlier one:
//!   [`LogError::Corrupt`] at the damage. A power cut that persisted a later *valid record*
//!   but not the one before it looks the same as damage to synced data; it was reported as
//!   corruption before preallocation too. The node refuses to start; docs/RELIABILITY.md has
//!   the procedure (move the whole group directory aside, never the log alone).
//! - A segment that is not the last one is trimmed to its records when it is sealed, so any
//!   zero tail or damage in it is corruption, as it always was.
//! - Segments written before preallocation (file size = records) still open: their end is the
//!   end of the file; the last one is zero-filled up to the segment size once, at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{
    decode_record_at, segment_header, valid_record_after, Decoded, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::LogError;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".binlog";
/// Suffix of a segment being zero-filled under a temporary name (never read as a segment).
const PREPARING_SUFFIX: &str = ".binlog.preparing";
/// Zeros are written in chunks of this size when a segment is preallocated.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

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

/// The temporary name of segment `sequence` while it is being zero-filled.
pub fn preparing_file_name(sequence: u64) -> String {
    format!("{SEGMENT_PREFIX}{sequence:020}{PREPARING_SUFFIX}")
}

/// True for a leftover temporary segment file (a crash during preallocation): never promised,
/// safe to delete.
pub fn is_preparing_file_name(name: &str) -> bool {
    name.starts_with(SEGMENT_PREFIX) && name.ends_with(PREPARING_SUFFIX)
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
    /// The size of the file: `len_bytes` plus the zero-filled tail not yet written over.
    pub file_bytes: u64,
    /// The highest instance id of any record in this segment.
    pub instance_max: Option<u64>,
}

/// A segment file written in full (header, then zeros) and synced under its temporary name,
/// ready to be renamed into place by [`Segment::install`].
#[derive(Debug)]
pub struct PreparedSegment {
    pub sequence: u64,
    /// The temporary path.
    pub path: PathBuf,
    pub file: File,
    pub file_bytes: u64,
}

/// Writes segment `sequence` of `file_bytes` bytes (its header, then real zeros, not
/// `fallocate`: unwritten extents would be converted on the first write, again a metadata
/// change on the commit path) under a temporary name in `dir`, and syncs it.
pub fn prepare_segment(
    dir: &Path,
    sequence: u64,
    file_bytes: u64,
) -> Result<PreparedSegment, LogError> {
    let path = dir.join(preparing_file_name(sequence));
    let io_error = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let file_bytes = file_bytes.max(SEGMENT_HEADER_BYTES as u64);
    // `truncate`, not `create_new`: a leftover of a crash under this name is never promised.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_error)?;
    file.write_all(&segment_header()).map_err(io_error)?;
    write_zeros(&file, SEGMENT_HEADER_BYTES as u64, file_bytes).map_err(io_error)?;
    file.sync_all().map_err(|source| LogError::SyncFailed {
        path: path.clone(),
        source,
    })?;
    Ok(PreparedSegment {
        sequence,
        path,
        file,
        file_bytes,
    })
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut offset = from;
    while offset < to {
        let chunk = (to - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    Ok(())
}

impl Segment {
    /// Renames a prepared segment into place. The directory is not synced: the caller must sync
    /// it before promising anything written to the new segment.
    pub fn install(dir: &Path, prepared: PreparedSegment) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(prepared.sequence));
        std::fs::rename(&prepared.path, &path).map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Segment {
            sequence: prepared.sequence,
            path,
            file: prepared.file,
            len_bytes: SEGMENT_HEADER_BYTES as u64,
            file_bytes: prepared.file_bytes,
            instance_max: None,
        })
    }

    /// Zero-fills the file up to `file_bytes` (a segment written before preallocation, or one
    /// trimmed when sealed) and syncs it, so appends to it overwrite zeros from now on.
    pub fn preallocate_to(&mut self, file_bytes: u64) -> Result<(), LogError> {
        if self.file_bytes >= file_bytes {
            return Ok(());
        }
        write_zeros(&self.file, self.file_bytes, file_bytes).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.file
            .sync_all()
            .map_err(|source| LogError::SyncFailed {
                path: self.path.clone(),
                source,
            })?;
        self.file_bytes = file_bytes;
        Ok(())
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
    /// Where the last good record ended: the next record goes here.
    pub offset: u64,
    /// How many bytes were cut: overwritten with zeros from `offset` up to the last non-zero
    /// byte of the file.
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
/// write (cut: overwritten with zeros and synced) or is corruption (an error). See the module
/// docs for how a zero-filled tail is read.
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
        file_bytes: bytes.len() as u64,
        instance_max: None,
    };
    let header = segment_header();
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes[..SEGMENT_HEADER_BYTES] != header {
        // A crash right after creating the last segment (before preallocation existed) can
        // leave its header short or unwritten.
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

    let (records, end) = scan_records(&bytes, sequence, is_last, &corrupt)?;
    for &(instance_id, _) in &records {
        segment.note_record(instance_id);
    }
    segment.len_bytes = end.offset as u64;
    let Some(reason) = end.damage else {
        return Ok(ScannedSegment {
            segment,
            records,
            torn_tail: None,
        });
    };
    // Everything after the damage is zero or garbage (nothing valid follows it): zero it.
    let damage_end = bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(end.offset, |last| last + 1);
    let torn = TornTail {
        path: path.clone(),
        offset: end.offset as u64,
        bytes_cut: (damage_end - end.offset) as u64,
        reason,
    };
    zero_tail(&segment, end.offset as u64, damage_end as u64)?;
    Ok(ScannedSegment {
        segment,
        records,
        torn_tail: Some(torn),
    })
}

/// Where the records of a segment end, and why.
struct RecordsEnd {
    /// The offset after the last valid record: the next record goes here.
    offset: usize,
    /// `Some(reason)` when a torn write (only possible in the last segment) starts at `offset`.
    damage: Option<String>,
}

/// Decodes the records after the segment header: `(instance id, location)` of each, in file
/// order, and where they end. Damage that is not a torn tail of the last segment is an error.
fn scan_records(
    bytes: &[u8],
    sequence: u64,
    is_last: bool,
    corrupt: &dyn Fn(usize, String) -> LogError,
) -> Result<(Vec<(u64, Location)>, RecordsEnd), LogError> {
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < bytes.len() {
        match decode_record_at(bytes, offset) {
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
                offset += record_bytes;
            }
            // The clean end of a preallocated segment. A sealed segment was trimmed to its
            // records, so zeros there mean lost data.
            Decoded::Zeros if is_last => break,
            Decoded::Zeros => {
                return Err(corrupt(
                    offset,
                    "zero-filled tail in a segment that is not the last one".to_string(),
                ))
            }
            Decoded::Truncated { reason } | Decoded::Invalid { reason } => {
                let header_end = bytes.len().min(offset + RECORD_HEADER_BYTES);
                if bytes[offset..header_end].iter().all(|&byte| byte == 0) {
                    let nonzero = bytes[offset..]
                        .iter()
                        .position(|&byte| byte != 0)
                        .expect("not all zeros, or the decoder had said Zeros")
                        + offset;
                    // Unsynced pages reach the disk in any order (module docs): with nothing
                    // valid after it, this is a torn tail, not lost data.
                    if is_last && !valid_record_after(bytes, offset) {
                        let reason = format!(
                            "non-zero bytes at offset {nonzero} after a zero record header, with \
                             no valid record after them (an unsynced write that reached the disk \
                             in pieces)"
                        );
                        let end = RecordsEnd {
                            offset,
                            damage: Some(reason),
                        };
                        return Ok((records, end));
                    }
                    return Err(corrupt(
                        nonzero,
                        "non-zero bytes after the zero-filled end of the records: damage in the \
                         preallocated area, or a power cut that persisted a later write but not \
                         an earlier one"
                            .to_string(),
                    ));
                }
                // A length that points past the end is a torn write only if nothing valid
                // follows: a flipped length bit must not hide the records after it.
                if is_last && !valid_record_after(bytes, offset) {
                    let end = RecordsEnd {
                        offset,
                        damage: Some(reason),
                    };
                    return Ok((records, end));
                }
                let reason = if is_last {
                    format!("{reason}; valid records follow it, so this is not a torn write")
                } else {
                    format!("{reason} in a segment that is not the last one")
                };
                return Err(corrupt(offset, reason));
            }
        }
    }
    let end = RecordsEnd {
        offset,
        damage: None,
    };
    Ok((records, end))
}

/// Overwrites the torn bytes `from..to` of the last segment with zeros and syncs, so records
/// appended later can never be followed by the old torn bytes.
fn zero_tail(segment: &Segment, from: u64, to: u64) -> Result<(), LogError> {
    write_zeros(&segment.file, from, to).map_err(|source| LogError::Io {
        path: segment.path.clone(),
        source,
    })?;
    segment
        .file
        .sync_data()
        .map_err(|source| LogError::SyncFailed {
            path: segment.path.clone(),
            source,
        })
}

/// Rewrites a torn segment header (a segment created before preallocation existed).
fn rewrite_header(segment: &mut Segment) -> Result<(), LogError> {
    let io_error = |source| LogError::Io {
        path: segment.path.clone(),
        source,
    };
    segment.file.set_len(0).map_err(io_error)?;
    segment
        .file
        .write_all_at(&segment_header(), 0)
        .map_err(io_error)?;
    segment
        .file
        .sync_all()
        .map_err(|source| LogError::SyncFailed {
            path: segment.path.clone(),
            source,
        })?;
    segment.len_bytes = SEGMENT_HEADER_BYTES as u64;
    segment.file_bytes = SEGMENT_HEADER_BYTES as u64;
    Ok(())
}

/// The offset just after the last valid record of a segment file (the segment header's end if
/// it holds none): where the next record would go. Reads only; no corruption checks beyond
/// stopping at the first bytes that are not a valid record. For tests and tools that need to
/// damage or inspect the records of a preallocated segment, whose file size says nothing.
pub fn records_end(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let mut offset = SEGMENT_HEADER_BYTES.min(bytes.len());
    while offset < bytes.len() {
        match decode_record_at(&bytes, offset) {
            Decoded::Record {
                bytes: record_bytes,
                ..
            } => offset += record_bytes,
            _ => break,
        }
    }
    Ok(offset as u64)
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
