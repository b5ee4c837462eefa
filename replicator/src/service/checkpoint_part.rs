//! The fetcher's disk side: the part file `incoming.part`, its verification and its writes.
//!
//! Chunks arrive from the socket (the parent module) in file order. One blocking thread, the
//! verifier, checks each chunk's CRC32C and feeds the whole-file xxh3-128, both in one pass
//! over cache-sized slices; a chunk that fails its CRC stops the verifier before anything of it
//! is handed on, so it is never written. Verified chunks go round-robin to
//! [`DIRECT_WRITES_IN_FLIGHT`] writer threads: aligned chunks are written with `O_DIRECT`
//! (no page-cache copy), and more than one write in flight keeps the disk's queue busy, which a
//! single synchronous direct write cannot. Writers finish in any order; every chunk before a
//! verifier stop has been handed on, and the verifier joins the writers before it returns, so
//! after a clean stop the part file holds exactly the verified prefix. (After a failed write it
//! may hold a hole; a resumed fetch rehashes the file and the whole-file hash rejects it.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

use super::{SharedProgress, DIRECT_ALIGN_BYTES, STREAM_CHUNK_BYTES, WRITEBACK_BYTES};

/// Direct writes of the part file running at once (one writer thread each).
pub const DIRECT_WRITES_IN_FLIGHT: usize = 2;
/// The CRC and the hash run over slices of this size in turn, so the second pass finds the
/// slice in the CPU cache.
const HASH_SLICE_BYTES: usize = 256 * 1024;
/// Alignment of a chunk buffer: a transparent huge page (see [`advise_huge_pages`]).
const HUGE_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// How often the verifier logs progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(1);

const _: () = assert!(STREAM_CHUNK_BYTES.is_multiple_of(HASH_SLICE_BYTES));
const _: () = assert!(STREAM_CHUNK_BYTES.is_multiple_of(HUGE_PAGE_BYTES));
const _: () = assert!(HUGE_PAGE_BYTES.is_multiple_of(DIRECT_ALIGN_BYTES));

/// A chunk as received: its buffer (see [`chunk_area`]), its length and the CRC32C the server
/// sent for it.
pub(super) struct Received {
    pub buffer: Vec<u8>,
    pub length: usize,
    pub crc: u32,
}

/// Why the verifier stopped early.
pub(super) enum VerifyError {
    /// The chunk at this offset failed its CRC (nothing of it was written).
    BadChunk(u64),
    /// A write or writeback failed.
    Write(String),
}

/// What a verifier left: the file, the hash of all of it, its length.
pub(super) type Verified = (File, Xxh3, u64);

/// The verifier (see the module docs).
pub(super) struct Verifier {
    pub file: File,
    pub path: PathBuf,
    pub check: Check,
}

/// The verifier's running state.
pub(super) struct Check {
    pub hasher: Xxh3,
    /// Length of the verified prefix so far (where the next chunk goes).
    pub written: u64,
    pub instance_id: u64,
    pub bytes_total: u64,
    pub progress: SharedProgress,
}

impl Verifier {
    /// Verifies and hands on chunks until the queue closes or a chunk is bad; returns once
    /// every handed-on chunk is written.
    pub fn run(
        self,
        mut received: mpsc::Receiver<Received>,
        free: mpsc::Sender<Vec<u8>>,
    ) -> Result<Verified, VerifyError> {
        let Verifier {
            file,
            path,
            mut check,
        } = self;
        let direct = open_direct(&path);
        let (stopped, write_error) = std::thread::scope(|scope| {
            let mut writers = Vec::new();
            let mut queues = Vec::new();
            for index in 0..DIRECT_WRITES_IN_FLIGHT {
                // One chunk waiting per writer; the chunk buffers bound the rest.
                let (queue, inbox) = sync_channel::<(Vec<u8>, usize, u64)>(1);
                let writer = PartWriter {
                    file: &file,
                    direct: direct.as_ref(),
                    path: &path,
                };
                let free = free.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("ckpt-write-{index}"))
                    .spawn_scoped(scope, move || writer.run(inbox, free))
                    .expect("a checkpoint writer thread starts");
                writers.push(spawned);
                queues.push(queue);
            }
            let target = (&file, path.as_path(), direct.is_some());
            let stopped = check.verify_all(&mut received, &queues, target);
            // Closing the queues ends the writers after the chunks already handed on.
            drop(queues);
            let write_error = writers
                .into_iter()
                .filter_map(|writer| {
                    writer
                        .join()
                        .expect("a checkpoint writer does not panic")
                        .err()
                })
                .next();
            (stopped, write_error)
        });
        if let Some(error) = write_error {
            return Err(VerifyError::Write(error));
        }
        stopped?;
        Ok((file, check.hasher, check.written))
    }
}

impl Check {
    /// `target`: the part file, its path, whether chunks are written directly.
    fn verify_all(
        &mut self,
        received: &mut mpsc::Receiver<Received>,
        writers: &[SyncSender<(Vec<u8>, usize, u64)>],
        (file, path, direct): (&File, &Path, bool),
    ) -> Result<(), VerifyError> {
        let started = Instant::now();
        let first = self.written;
        let mut writeback_from = self.written;
        let mut last_log = Instant::now();
        let mut next_writer = 0;
        while let Some(Received {
            mut buffer,
            length,
            crc,
        }) = received.blocking_recv()
        {
            let bytes = &chunk_area(&mut buffer)[..length];
            // The hash may take a bad chunk's bytes: an attempt that stops here is discarded,
            // and the next one rehashes the part file.
            let mut actual = 0;
            for slice in bytes.chunks(HASH_SLICE_BYTES) {
                actual = crc32c::crc32c_append(actual, slice);
                self.hasher.update(slice);
            }
            if actual != crc {
                return Err(VerifyError::BadChunk(self.written));
            }
            let sent = writers[next_writer].send((buffer, length, self.written));
            if sent.is_err() {
                // That writer failed; its error is reported by `run`.
                return Ok(());
            }
            next_writer = (next_writer + 1) % writers.len();
            self.written += length as u64;
            if !direct && self.written - writeback_from >= WRITEBACK_BYTES {
                start_writeback(file, writeback_from, self.written).map_err(|error| {
                    VerifyError::Write(format!("writeback of {}: {error}", path.display()))
                })?;
                writeback_from = self.written;
            }
            let seconds = started.elapsed().as_secs_f64().max(1e-6);
            let mut progress = self.progress.lock().expect("progress lock");
            progress.bytes_done = self.written;
            progress.rate_mb_per_s = (self.written - first) as f64 / seconds / 1e6;
            if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
                last_log = Instant::now();
                tracing::info!(
                    instance_id = self.instance_id,
                    bytes_done = self.written,
                    bytes_total = self.bytes_total,
                    rate_mb_per_s = format!("{:.1}", progress.rate_mb_per_s),
                    "checkpoint transfer progress"
                );
            }
        }
        Ok(())
    }
}

/// One writer thread: writes verified chunks at their offsets and frees their buffers.
struct PartWriter<'a> {
    file: &'a File,
    /// The same file opened with `O_DIRECT` when the file system allows it: whole aligned
    /// chunks skip the page cache.
    direct: Option<&'a File>,
    path: &'a Path,
}

impl PartWriter<'_> {
    fn run(
        self,
        inbox: Receiver<(Vec<u8>, usize, u64)>,
        free: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), String> {
        for (mut buffer, length, offset) in inbox {
            let bytes = &chunk_area(&mut buffer)[..length];
            let aligned = offset.is_multiple_of(DIRECT_ALIGN_BYTES as u64)
                && length.is_multiple_of(DIRECT_ALIGN_BYTES);
            let handle = match self.direct {
                Some(direct) if aligned => direct,
                _ => self.file,
            };
            std::os::unix::fs::FileExt::write_all_at(handle, bytes, offset)
                .map_err(|error| format!("writing {}: {error}", self.path.display()))?;
            // The receiver may have stopped (an error): a refused buffer is simply dropped.
            let _ = free.try_send(buffer);
        }
        Ok(())
    }
}

/// A pipeline buffer: room for a chunk at a [`HUGE_PAGE_BYTES`]-aligned address, advised to
/// the kernel as huge-page memory before its first touch.
pub(super) fn chunk_buffer() -> Vec<u8> {
    let mut buffer = vec![0u8; STREAM_CHUNK_BYTES + HUGE_PAGE_BYTES];
    advise_huge_pages(chunk_area(&mut buffer));
    buffer
}

/// The chunk area of a pipeline buffer: [`STREAM_CHUNK_BYTES`] starting at an address aligned
/// for direct I/O and huge pages (buffers are allocated [`HUGE_PAGE_BYTES`] larger and never
/// reallocated).
pub(super) fn chunk_area(buffer: &mut [u8]) -> &mut [u8] {
    let start = buffer.as_ptr().align_offset(HUGE_PAGE_BYTES);
    &mut buffer[start..start + STREAM_CHUNK_BYTES]
}

/// Asks for transparent huge pages under `area` (a hint; ignored where refused). A direct
/// write from 4 KiB pages is split into many small device requests (a segment per page);
/// from 2 MiB pages a chunk is a few large ones: 4 MiB direct writes went from ~1.5 to ~2.8
/// GB/s on the dev VM's disk, and the socket copy into the buffer misses the TLB less.
#[cfg(target_os = "linux")]
fn advise_huge_pages(area: &mut [u8]) {
    // SAFETY: `area` is memory this process owns; the advice changes no contents.
    let _ = unsafe { libc::madvise(area.as_mut_ptr().cast(), area.len(), libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_area: &mut [u8]) {}

/// `part` opened for direct writes, or `None` where `O_DIRECT` is refused (tmpfs, …).
#[cfg(target_os = "linux")]
fn open_direct(part: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(part)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_part: &Path) -> Option<File> {
    None
}

/// Without direct writes, bounds dirty memory: waits for the writeback of the range before
/// `from` and starts the writeback of `from..to`, so the fsync at the end finds little left.
fn start_writeback(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let previous = from.saturating_sub(WRITEBACK_BYTES);
    sync_range(file, previous, from - previous, true)?;
    sync_range(file, from, to - from, false)
}

/// `sync_file_range` over `length` bytes at `offset`: starts their writeback, and with `wait`
/// also waits for it. A hint only: the fsync at the end is what makes the file durable.
#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, length: u64, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if length == 0 {
        return Ok(());
    }
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let offset = i64::try_from(offset).expect("a part file is below 2^63 bytes");
    let length = i64::try_from(length).expect("a range is below 2^63 bytes");
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is passed.
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, length, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_range(_file: &File, _offset: u64, _length: u64, _wait: bool) -> std::io::Result<()> {
    Ok(())
}

/// Opens the partial file at `offset` (cutting anything past it) and hashes what it holds.
pub(super) fn open_part(part: &Path, offset: u64) -> Result<(File, Xxh3), String> {
    use std::io::Read;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(|error| format!("opening {}: {error}", part.display()))?;
    file.set_len(offset)
        .map_err(|error| format!("cutting {}: {error}", part.display()))?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; STREAM_CHUNK_BYTES];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|error| format!("reading {}: {error}", part.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok((file, hasher))
}
