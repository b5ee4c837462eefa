//! [`FileLog`]: the durable [`LogStore`] on disk, as numbered segment files in one directory.
//!
//! - Segments are preallocated: created at their full size, header then real zeros, synced,
//!   and only then renamed into place (see [`crate::segment`]). The next segment is prepared on
//!   a background thread once the active one is half full, so a rollover normally costs a
//!   `rename`, not the zero-filling.
//! - `append` writes the record (header and payload in one `write`) over the zeros after the
//!   last record of the active segment, without syncing.
//! - `sync` runs `fdatasync` on the active segment (a pure data flush: the file size does not
//!   change), then `fsync` on the directory if a segment was installed since the last sync. Only
//!   then is anything promised durable.
//! - When the active segment would pass [`FileLogOptions::segment_bytes_max`], it is sealed
//!   before the next one is installed: trimmed to its records and synced, so only the last
//!   segment can hold a torn write or a zero-filled tail.
//! - `truncate_prefix` deletes whole sealed segments, oldest first, then fsyncs the directory.
//! - An in-memory index (instance id -> locations) serves `read_range`; reads use `pread` and
//!   check every record's CRC again.
//! - Any failed fsync or write poisons the log: every later call fails, nothing is retried.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::fault::FaultHooks;
use crate::record::{
    check_record, encode_record, RecordHeader, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX,
};
use crate::segment::{
    is_preparing_file_name, parse_segment_file_name, prepare_segment, scan_segment,
    segment_file_name, Location, PreparedSegment, Segment, TornTail,
};
use crate::{LogError, LogStore, Record};

/// Default size at which the active segment is sealed and a new one started; every segment is
/// zero-filled to this size when created. The node's default (8 MiB, `log_segment_bytes()`):
/// 64 MiB made every new log write and sync 64 MiB of zeros (about 50 ms; the binlog recovery
/// fuzz test of `integration-tests` took 33 s with it, 4 s with 8 MiB).
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;

/// How a [`FileLog`] is laid out.
#[derive(Clone, Debug)]
pub struct FileLogOptions {
    /// A new segment starts when the next record would make the active one larger than this.
    /// A record larger than this gets a segment of its own. Also the size every segment is
    /// preallocated (zero-filled) to.
    pub segment_bytes_max: u64,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }
}

/// What [`FileLog::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found (before any was created for an empty log).
    pub segments: usize,
    /// Valid records found.
    pub records: usize,
    /// The torn write cut from the end of the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// The durable Paxos log in a directory of segment files. See the module docs.
#[derive(Debug)]
pub struct FileLog {
    dir: PathBuf,
    dir_file: File,
    options: FileLogOptions,
    /// Oldest first; sequence numbers without gaps. The last one is the active segment.
    segments: VecDeque<Segment>,
    /// Where every record of an instance lives, in append order.
    index: BTreeMap<u64, Vec<Location>>,
    /// Reused for encoding, so `append` allocates nothing once warmed up.
    write_buffer: Vec<u8>,
    /// The active segment has writes not yet synced.
    active_dirty: bool,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    /// Why the log refuses all work, after a failed fsync or write.
    poisoned: Option<String>,
    /// Test hooks from the environment (see [`crate::fault`]); inert when unset.
    faults: FaultHooks,
    /// The next segment, being zero-filled on a background thread.
    preparing: Option<Preparing>,
    #[cfg(test)]
    fail_next_sync: bool,
    #[cfg(test)]
    fail_next_preparation: bool,
}

/// A segment being prepared in the background; joined at the rollover that installs it.
#[derive(Debug)]
struct Preparing {
    sequence: u64,
    thread: JoinHandle<Result<PreparedSegment, LogError>>,
}

impl FileLog {
    /// Opens (or creates) the log in `dir`, recovering it: a torn write at the end of the last
    /// segment is cut (and reported); damage anywhere else is [`LogError::Corrupt`].
    pub fn open(
        dir: impl AsRef<Path>,
        options: FileLogOptions,
    ) -> Result<(FileLog, RecoveryReport), LogError> {
        let dir = dir.as_ref().to_path_buf();
        assert!(
            options.segment_bytes_max > 0,
            "segment_bytes_max must be positive"
        );
        if !dir.exists() {
            create_dir_durably(&dir)?;
        }
        let dir_file = File::open(&dir).map_err(|source| LogError::Io {
            path: dir.clone(),
            source,
        })?;
        let sequences = list_segments(&dir)?;
        let mut log = FileLog {
            dir,
            dir_file,
            options,
            segments: VecDeque::new(),
            index: BTreeMap::new(),
            write_buffer: Vec::new(),
            active_dirty: false,
            dir_dirty: false,
            poisoned: None,
            faults: FaultHooks::from_env(),
            preparing: None,
            #[cfg(test)]
            fail_next_sync: false,
            #[cfg(test)]
            fail_next_preparation: false,
        };
        let mut report = RecoveryReport {
            segments: sequences.len(),
            ..RecoveryReport::default()
        };
        for (position, &sequence) in sequences.iter().enumerate() {
            let scanned = scan_segment(&log.dir, sequence, position + 1 == sequences.len())?;
            report.records += scanned.records.len();
            for (instance_id, location) in scanned.records {
                log.index.entry(instance_id).or_default().push(location);
            }
            if let Some(torn) = scanned.torn_tail {
                tracing::warn!(
                    path = %torn.path.display(), offset = torn.offset, bytes_cut = torn.bytes_cut, reason = %torn.reason,
                    "cut a torn write from the end of the Paxos log (the last write before a crash)"
                );
                report.torn_tail = Some(torn);
            }
            log.segments.push_back(scanned.segment);
        }
        let preallocated_bytes = log.preallocated_bytes();
        match log.segments.back_mut() {
            // A segment written before preallocation, or trimmed by a seal just before a crash.
            Some(last) => last.preallocate_to(preallocated_bytes)?,
            None => {
                let prepared = prepare_segment(&log.dir, 0, preallocated_bytes)?;
                log.segments
                    .push_back(Segment::install(&log.dir, prepared)?);
                log.dir_dirty = true;
                log.sync()?;
            }
        }
        Ok((log, report))
    }

    /// The size every segment is zero-filled to when it is created.
    fn preallocated_bytes(&self) -> u64 {
        self.options.segment_bytes_max
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|segment| segment.path.clone())
            .collect()
    }

    /// True once a failed fsync or write has stopped the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Makes the next sync fail as if `fsync` had returned EIO.
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// Makes the next segment preparation fail as if the disk were full.
    #[cfg(test)]
    pub(crate) fn fail_next_preparation(&mut self) {
        self.fail_next_preparation = true;
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            None => Ok(()),
            Some(reason) => Err(LogError::SyncFailed {
                path: self.dir.clone(),
                source: std::io::Error::other(format!("the log stopped earlier: {reason}")),
            }),
        }
    }

    fn poison(&mut self, error: LogError) -> LogError {
        tracing::error!(%error, "the Paxos log is stopped: no further appends, syncs or reads");
        self.poisoned = Some(error.to_string());
        error
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("a FileLog always has an active segment")
    }

    fn sync_active(&mut self) -> Result<(), LogError> {
        self.sync_active_file(false)
    }

    /// Syncs the active segment: its data only, or (`all`) its metadata too, after its size
    /// changed. Both go through the fault hooks.
    fn sync_active_file(&mut self, all: bool) -> Result<(), LogError> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            let path = self.active().path.clone();
            let error = LogError::SyncFailed {
                path,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            };
            return Err(self.poison(error));
        }
        if let Err(source) = self.faults.before_sync() {
            let error = LogError::SyncFailed {
                path: self.active().path.clone(),
                source,
            };
            return Err(self.poison(error));
        }
        let active = self.active();
        let synced = if all {
            active.file.sync_all()
        } else {
            active.file.sync_data()
        };
        if let Err(source) = synced {
            let error = LogError::SyncFailed {
                path: active.path.clone(),
                source,
            };
            return Err(self.poison(error));
        }
        self.active_dirty = false;
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), LogError> {
        if let Err(source) = self.dir_file.sync_all() {
            let error = LogError::SyncFailed {
                path: self.dir.clone(),
                source,
            };
            return Err(self.poison(error));
        }
        self.dir_dirty = false;
        Ok(())
    }

    /// Seals the active segment and installs the next one.
    ///
    /// Order matters: the sealed segment is trimmed to its records and synced (data and size)
    /// **before** the next segment gets its name, so a crash never leaves a segment that is not
    /// the last one with a torn write or a zero-filled tail.
    fn roll_over(&mut self) -> Result<(), LogError> {
        self.seal_active()?;
        let next = self.active().sequence + 1;
        let prepared = match self.preparing.take() {
            Some(preparing) => {
                assert_eq!(
                    preparing.sequence, next,
                    "the prepared segment is the next one"
                );
                preparing
                    .thread
                    .join()
                    .expect("the segment preparation thread does not panic")
            }
            None => self.prepare_now(next),
        };
        let segment = prepared
            .and_then(|prepared| Segment::install(&self.dir, prepared))
            .map_err(|error| self.poison(error))?;
        self.segments.push_back(segment);
        self.dir_dirty = true;
        Ok(())
    }

    fn seal_active(&mut self) -> Result<(), LogError> {
        let active = self.active();
        if active.file_bytes == active.len_bytes {
            return if self.active_dirty {
                self.sync_active()
            } else {
                Ok(())
            };
        }
        let len_bytes = active.len_bytes;
        if let Err(source) = active.file.set_len(len_bytes) {
            let error = LogError::Io {
                path: active.path.clone(),
                source,
            };
            return Err(self.poison(error));
        }
        active.file_bytes = len_bytes;
        self.sync_active_file(true)
    }

    /// Prepares segment `sequence` on this thread (no background preparation was started).
    fn prepare_now(&mut self, sequence: u64) -> Result<PreparedSegment, LogError> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_preparation) {
            return Err(LogError::Io {
                path: self.dir.join(segment_file_name(sequence)),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        prepare_segment(&self.dir, sequence, self.preallocated_bytes())
    }

    /// Starts zero-filling the next segment in the background once the active one is half
    /// full, so the rollover does not wait for it. If no thread can be started, the rollover
    /// prepares the segment itself.
    fn prepare_next_in_background(&mut self) {
        let active = self
            .segments
            .back()
            .expect("a FileLog always has an active segment");
        if self.preparing.is_some() || active.len_bytes * 2 < self.options.segment_bytes_max {
            return;
        }
        #[cfg(test)]
        if self.fail_next_preparation {
            return; // the rollover fails it
        }
        let sequence = active.sequence + 1;
        let dir = self.dir.clone();
        let file_bytes = self.preallocated_bytes();
        let spawned = std::thread::Builder::new()
            .name("binlog-prealloc".to_string())
            .spawn(move || prepare_segment(&dir, sequence, file_bytes));
        match spawned {
            Ok(thread) => self.preparing = Some(Preparing { sequence, thread }),
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to preallocate the next log segment; the rollover will do it")
            }
        }
    }

    fn segment(&self, sequence: u64) -> &Segment {
        let front = self
            .segments
            .front()
            .expect("a FileLog always has an active segment")
            .sequence;
        let segment =
            &self.segments[usize::try_from(sequence - front).expect("segment count fits usize")];
        assert_eq!(
            segment.sequence, sequence,
            "segments are numbered without gaps"
        );
        segment
    }

    fn read_record(&self, instance_id: u64, location: Location) -> Result<Record, LogError> {
        let segment = self.segment(location.segment);
        let mut bytes = vec![0u8; location.bytes as usize];
        segment
            .file
            .read_exact_at(&mut bytes, location.offset)
            .map_err(|source| LogError::Io {
                path: segment.path.clone(),
                source,
            })?;
        let corrupt = |reason: String| LogError::Corrupt {
            path: segment.path.clone(),
            offset: location.offset,
            reason,
        };
        let header_bytes = bytes
            .first_chunk::<RECORD_HEADER_BYTES>()
            .expect("a record is longer than its header");
        let header = RecordHeader::parse(header_bytes)
            .ok_or_else(|| corrupt("bad record magic on read".to_string()))?;
        if header.record_bytes() != bytes.len() || header.instance_id != instance_id {
            return Err(corrupt(
                "record header changed since the log was opened".to_string(),
            ));
        }
        let kind = check_record(
            &header,
            &bytes[8..RECORD_HEADER_BYTES],
            &bytes[RECORD_HEADER_BYTES..],
        )
        .map_err(corrupt)?;
        let payload = Bytes::from(bytes).slice(RECORD_HEADER_BYTES..);
        Ok(Record {
            instance_id,
            kind,
            payload,
        })
    }

    fn delete_oldest_segment(&mut self) -> Result<(), LogError> {
        let segment = self
            .segments
            .pop_front()
            .expect("only called with a sealed segment in front");
        if let Some(instance_max) = segment.instance_max {
            let mut emptied = Vec::new();
            for (&instance_id, locations) in self.index.range_mut(..=instance_max) {
                locations.retain(|location| location.segment != segment.sequence);
                if locations.is_empty() {
                    emptied.push(instance_id);
                }
            }
            for instance_id in emptied {
                self.index.remove(&instance_id);
            }
        }
        std::fs::remove_file(&segment.path).map_err(|source| LogError::Io {
            path: segment.path.clone(),
            source,
        })?;
        self.dir_dirty = true;
        Ok(())
    }
}

/// Creates `dir` (and missing parents) and fsyncs its parent, so the new directory entry
/// survives a power cut before the first segment in it is promised durable.
fn create_dir_durably(dir: &Path) -> Result<(), LogError> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        let parent_file = File::open(parent).map_err(|source| LogError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        parent_file
            .sync_all()
            .map_err(|source| LogError::SyncFailed {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// The segment sequence numbers in `dir`, ascending, checked to have no gaps. Deletes segments
/// left half-prepared by a crash (they never had a segment name, so nothing in them was ever
/// promised).
fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let io_error = |source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut sequences = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_preparing_file_name) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "deleting a log segment left half-prepared by a crash");
            std::fs::remove_file(&path).map_err(|source| LogError::Io { path, source })?;
            continue;
        }
        match name.to_str().and_then(parse_segment_file_name) {
            Some(sequence) => sequences.push(sequence),
            None => {
                tracing::warn!(file = ?name, dir = %dir.display(), "ignoring a file that is not a log segment")
            }
        }
    }
    sequences.sort_unstable();
    for pair in sequences.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(LogError::Corrupt {
                path: dir.join(segment_file_name(pair[0] + 1)),
                offset: 0,
                reason: format!(
                    "segment {} is missing between {} and {}",
                    pair[0] + 1,
                    pair[0],
                    pair[1]
                ),
            });
        }
    }
    Ok(sequences)
}

impl Drop for FileLog {
    /// Waits for a background preparation and deletes its unused file, so no thread of a closed
    /// log still writes in the directory when it is opened again.
    fn drop(&mut self) {
        if let Some(preparing) = self.preparing.take() {
            if let Ok(Ok(prepared)) = preparing.thread.join() {
                if let Err(error) = std::fs::remove_file(&prepared.path) {
                    tracing::warn!(%error, path = %prepared.path.display(), "cannot delete an unused preallocated log segment; the next open deletes it");
                }
            }
        }
    }
}

impl LogStore for FileLog {
    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.check_poisoned()?;
        if record.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(LogError::RecordTooLarge {
                bytes: record.payload.len(),
                limit: RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let record_bytes = (RECORD_HEADER_BYTES + record.payload.len()) as u64;
        let active = self.active();
        let has_records = active.instance_max.is_some();
        if has_records && active.len_bytes + record_bytes > self.options.segment_bytes_max {
            self.roll_over()?;
        }
        let mut buffer = std::mem::take(&mut self.write_buffer);
        buffer.clear();
        encode_record(record, &mut buffer);
        let active = self
            .segments
            .back_mut()
            .expect("a FileLog always has an active segment");
        let offset = active.len_bytes;
        let written = self
            .faults
            .before_append(record_bytes)
            .and_then(|()| active.file.write_all_at(&buffer, offset));
        self.write_buffer = buffer;
        if let Err(source) = written {
            // A partial write may have left garbage that later records would sit behind.
            let error = LogError::Io {
                path: self.active().path.clone(),
                source,
            };
            return Err(self.poison(error));
        }
        let active = self.active();
        active.len_bytes += record_bytes;
        active.file_bytes = active.file_bytes.max(active.len_bytes);
        active.note_record(record.instance_id);
        let location = Location {
            segment: active.sequence,
            offset,
            bytes: record_bytes as u32,
        };
        self.index
            .entry(record.instance_id)
            .or_default()
            .push(location);
        self.active_dirty = true;
        self.prepare_next_in_background();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if self.active_dirty {
            self.sync_active()?;
        }
        if self.dir_dirty {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>, LogError> {
        self.check_poisoned()?;
        if from >= to {
            return Ok(Vec::new());
        }
        let mut wanted: Vec<(Location, u64)> = self
            .index
            .range(from..to)
            .flat_map(|(&instance_id, locations)| {
                locations
                    .iter()
                    .map(move |&location| (location, instance_id))
            })
            .collect();
        // Locations order like appends: segment sequence first, then offset.
        wanted.sort_unstable();
        wanted
            .into_iter()
            .map(|(location, instance_id)| self.read_record(instance_id, location))
            .collect()
    }

    fn truncate_prefix(&mut self, below: u64) -> Result<(), LogError> {
        self.check_poisoned()?;
        // Sealed segments were synced when sealed, so deleting them never loses an unsynced
        // record. Oldest first, so a crash midway still leaves segments without gaps.
        while self.segments.len() > 1 {
            let front = self.segments.front().expect("len > 1");
            if front
                .instance_max
                .is_some_and(|instance_max| instance_max >= below)
            {
                break;
            }
            self.delete_oldest_segment()
                .map_err(|error| self.poison(error))?;
        }
        if self.dir_dirty {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn first_instance(&self) -> Option<u64> {
        self.index
            .first_key_value()
            .map(|(&instance_id, _)| instance_id)
    }

    fn last_instance(&self) -> Option<u64> {
        self.index
            .last_key_value()
            .map(|(&instance_id, _)| instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordKind;

    #[test]
    fn a_failed_sync_poisons_the_log_for_every_later_call() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut log, _) = FileLog::open(dir.path(), FileLogOptions::default()).expect("open");
        let record = Record::new(1, RecordKind::Chosen, &b"v"[..]);
        log.append(&record).expect("append");
        log.fail_next_sync();
        assert!(matches!(log.sync(), Err(LogError::SyncFailed { .. })));
        assert!(log.is_poisoned());
        // Never retried: the next sync fails without touching the file, and so does the rest.
        assert!(matches!(log.sync(), Err(LogError::SyncFailed { .. })));
        assert!(log.append(&record).is_err());
        assert!(log.read_range(0, 10).is_err());
        assert!(log.truncate_prefix(1).is_err());
    }

    #[test]
    fn sync_after_rollover_syncs_the_new_segment_and_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = FileLogOptions {
            segment_bytes_max: 64,
        };
        let (mut log, _) = FileLog::open(dir.path(), options).expect("open");
        log.append(&Record::new(1, RecordKind::Chosen, vec![1u8; 30]))
            .expect("append");
        log.append(&Record::new(2, RecordKind::Chosen, vec![2u8; 30]))
            .expect("append");
        assert_eq!(log.segments.len(), 2);
        assert!(
            log.active_dirty && log.dir_dirty,
            "the new segment and its directory entry are pending"
        );
        log.sync().expect("sync");
        assert!(!log.active_dirty && !log.dir_dirty);
    }

    #[test]
    fn a_failed_preallocation_poisons_the_log_like_a_failed_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = FileLogOptions {
            segment_bytes_max: 64,
        };
        let (mut log, _) = FileLog::open(dir.path(), options).expect("open");
        log.fail_next_preparation();
        log.append(&Record::new(1, RecordKind::Chosen, vec![1u8; 30]))
            .expect("append");
        // The rollover needs the next segment; the disk is full.
        match log.append(&Record::new(2, RecordKind::Chosen, vec![2u8; 30])) {
            Err(LogError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC))
            }
            other => panic!("expected ENOSPC, got {other:?}"),
        }
        assert!(log.is_poisoned());
        assert!(log.sync().is_err());
        drop(log);
        // Record 1 was synced when its segment was sealed; nothing half-made is left.
        let options = FileLogOptions {
            segment_bytes_max: 64,
        };
        let (log, report) = FileLog::open(dir.path(), options).expect("reopen");
        assert_eq!((report.segments, report.records), (1, 1));
        assert_eq!(log.last_instance(), Some(1));
    }

    #[test]
    fn the_next_segment_is_prepared_in_the_background_once_the_active_one_is_half_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = FileLogOptions {
            segment_bytes_max: 200,
        };
        let (mut log, _) = FileLog::open(dir.path(), options).expect("open");
        log.append(&Record::new(1, RecordKind::Chosen, vec![1u8; 40]))
            .expect("append");
        assert!(log.preparing.is_none(), "80 of 200 bytes: not yet");
        log.append(&Record::new(2, RecordKind::Chosen, vec![2u8; 40]))
            .expect("append");
        assert_eq!(
            log.preparing.as_ref().map(|preparing| preparing.sequence),
            Some(1)
        );
        log.append(&Record::new(3, RecordKind::Chosen, vec![3u8; 40]))
            .expect("append");
        assert!(log.preparing.is_none(), "the rollover installed it");
        assert_eq!(log.segments.len(), 2);
        assert_eq!(
            std::fs::metadata(&log.segments[1].path)
                .expect("stat")
                .len(),
            200,
            "installed at its full size"
        );
        log.sync().expect("sync");
    }
}
