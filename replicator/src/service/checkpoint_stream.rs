//! The checkpoint transfer: a peer's checkpoint file streamed over its HTTP port in chunks.
//!
//! Request: `GET /checkpoint/stream?group=G&instance=I&offset=O&version=V HTTP/1.1`
//! (`instance=0`: the newest; `O` a multiple of [`STREAM_CHUNK_BYTES`]; `V` is
//! [`STREAM_VERSION`]). Response: `200` with the header [`VERSION_HEADER`]`: V` and a body of
//! frames, each `u32 length | u32 crc32c | bytes` (big-endian): first the [`CheckpointInfo`]
//! as JSON, then the file from `offset` on in chunks of [`STREAM_CHUNK_BYTES`] (the last may be
//! short), then an empty frame. `404` when the checkpoint is gone; `400` with a JSON reason
//! when the versions differ or the offset is not a chunk boundary (the fetcher stops: peers of
//! different releases cannot stream); `500` when the checkpoint file is damaged.
//!
//! The server ([`serve`], in `checkpoint_serve.rs`) takes each chunk's CRC from the chunk table
//! written with the checkpoint ([`super::checkpoint_chunks`]) and sends the bytes with
//! `sendfile`, so they never enter its user space.
//!
//! Authentication: when the fetcher has a cluster secret it sends the [`PEER_PROOF_HEADER`]
//! (`checkpoint_proof.rs`); a node with a secret (or an admin token) refuses the request
//! without a proof or its token with `401`/`403` and a reason, and the fetcher stops.
//!
//! The fetcher keeps `incoming.part` and `incoming.json` in the checkpoints folder, so a broken
//! transfer resumes from the whole chunks it has. A chunk whose CRC does not match is never
//! written: the fetcher reconnects and asks again from the same offset. The whole file's
//! xxh3-128 is checked before the file is handed over.
//!
//! Speed: the fetcher is a pipeline over [`STREAM_CHUNKS_IN_FLIGHT`] reused buffers (memory
//! bound: that many chunks): the async side reads each chunk from the socket straight into an
//! aligned buffer (the only copy of the bytes); a blocking thread checks its CRC and hashes
//! it; [`DIRECT_WRITES_IN_FLIGHT`] writer threads write it with `O_DIRECT`
//! (`checkpoint_part.rs`). The part file is fsync'd once, at the end. Durability of the part
//! file before that is not needed for correctness: a resumed fetch rehashes whatever it holds
//! and the whole-file hash rejects a damaged prefix.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::checkpoints::CheckpointInfo;

/// Attempts (reconnects) one fetch may make without a byte of progress before it gives up.
pub const FETCH_ATTEMPTS_WITHOUT_PROGRESS_MAX: u32 = 10;
/// Pause between two attempts.
pub const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Connecting, or waiting for the next frame, may take this long before the attempt is retried.
pub const FETCH_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head accepted from the peer.
const RESPONSE_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest header frame (the JSON info).
const INFO_FRAME_BYTES_MAX: u32 = 64 * 1024;
/// Bytes in one streamed chunk (and the largest frame the fetcher accepts). Large enough that
/// per-chunk costs (frame head, channel hop, syscalls) vanish beside the byte copies.
pub const STREAM_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Chunk buffers of a fetch (memory: this many chunks, plus 2 MiB each for alignment): one
/// being received, one being verified, [`DIRECT_WRITES_IN_FLIGHT`] being written, and spare so
/// the network side runs ahead while the disk is slow.
pub const STREAM_CHUNKS_IN_FLIGHT: usize = 6;
/// Where `O_DIRECT` is refused, the fetcher starts writeback of the part file every this many
/// bytes, bounding dirty memory (`checkpoint_part.rs`).
pub const WRITEBACK_BYTES: u64 = 64 * 1024 * 1024;
/// Alignment (buffer address, file offset, length) of a direct (`O_DIRECT`) write.
const DIRECT_ALIGN_BYTES: usize = 4096;
/// Read buffer in front of the socket (response head, frame heads; chunks bypass it). Small:
/// the bytes of a chunk that land in it are copied once more.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024;
/// The wire format's version, sent by the fetcher and echoed by the server in
/// [`VERSION_HEADER`]. Version 2: chunk-aligned offsets, CRCs from the checkpoint's chunk table.
pub const STREAM_VERSION: u32 = 2;
/// The response header that carries [`STREAM_VERSION`].
pub const VERSION_HEADER: &str = "X-Paxsql-Checkpoint-Stream";
/// Largest error body read from a peer that refused a transfer.
const ERROR_BODY_BYTES_MAX: u64 = 4 * 1024;

const _: () = assert!(STREAM_CHUNK_BYTES <= u32::MAX as usize);
const _: () = assert!(INFO_FRAME_BYTES_MAX as usize <= STREAM_CHUNK_BYTES);
const _: () = assert!(STREAM_CHUNKS_IN_FLIGHT >= DIRECT_WRITES_IN_FLIGHT + 2);
const _: () = assert!(STREAM_CHUNK_BYTES.is_multiple_of(DIRECT_ALIGN_BYTES));
const _: () = assert!(WRITEBACK_BYTES.is_multiple_of(STREAM_CHUNK_BYTES as u64));

/// Where a fetch stands, for the log and `/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchProgress {
    pub peer: u32,
    pub peer_http: String,
    pub instance_id: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate_mb_per_s: f64,
    pub chunks_refetched: u64,
    pub state: String,
}

pub type SharedProgress = Arc<Mutex<FetchProgress>>;

/// Why a fetch failed for good.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer at {peer_http} cannot stream to this node: {reason}")]
    Refused { peer_http: String, reason: String },
    #[error("the peer at {peer_http} sent no usable checkpoint after {attempts} attempts: {last}")]
    GaveUp {
        peer_http: String,
        attempts: u32,
        last: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// The 8-byte head of a frame of `length` bytes whose CRC32C is `crc`.
pub(crate) fn frame_head(length: usize, crc: u32) -> [u8; 8] {
    let length = u32::try_from(length).expect("a frame is at most one chunk");
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&length.to_be_bytes());
    head[4..].copy_from_slice(&crc.to_be_bytes());
    head
}

/// Writes one frame whose CRC32C is `crc`.
async fn write_frame_with_crc<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    crc: u32,
) -> std::io::Result<()> {
    writer.write_all(&frame_head(bytes.len(), crc)).await?;
    writer.write_all(bytes).await
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    write_frame_with_crc(writer, bytes, crc32c::crc32c(bytes)).await
}

#[path = "checkpoint_proof.rs"]
mod proof;
pub use proof::{
    check_peer_proof, peer_proof_header, unix_ms_now, PeerIdentity, PeerProof, PeerProofError,
    PEER_PROOF_HEADER, PEER_PROOF_SKEW_MAX,
};

#[path = "checkpoint_serve.rs"]
mod serving;
pub use serving::{serve, SERVE_STALL_TIMEOUT};

#[path = "checkpoint_part.rs"]
mod part;
pub use part::DIRECT_WRITES_IN_FLIGHT;
use part::{chunk_area, chunk_buffer, open_part, Check, Received, Verifier, VerifyError};

/// Why one connection of a fetch ended early.
enum AttemptError {
    /// Worth another attempt (a broken connection, a bad chunk, …).
    Retry(String),
    /// The peer will never serve this node (another wire format): stop.
    Refused(String),
    /// This node's disk failed in a way a retry could hide (a failed fsync: the kernel may have
    /// dropped the dirty pages and a second fsync would report success): stop.
    Fatal {
        context: String,
        source: std::io::Error,
    },
}

impl From<String> for AttemptError {
    fn from(problem: String) -> Self {
        AttemptError::Retry(problem)
    }
}

impl From<&str> for AttemptError {
    fn from(problem: &str) -> Self {
        AttemptError::Retry(problem.to_string())
    }
}

/// Fetches the newest checkpoint of `group` from `peer_http` into `dir`; returns the verified
/// file (fsync'd, `dir/incoming.sqlite`) and its info. Resumes a partial fetch of the same
/// checkpoint. With `identity`, every request proves the cluster secret.
pub async fn fetch(
    peer_http: &str,
    group: &str,
    dir: &Path,
    progress: &SharedProgress,
    identity: Option<&PeerIdentity>,
) -> Result<(PathBuf, CheckpointInfo), FetchError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_error(format!("creating {}", dir.display())))?;
    let mut attempts_without_progress = 0;
    let mut last_problem = String::new();
    while attempts_without_progress < FETCH_ATTEMPTS_WITHOUT_PROGRESS_MAX {
        let before = progress.lock().expect("progress lock").bytes_done;
        match fetch_once(peer_http, group, dir, progress, identity).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => last_problem = "the transfer restarts".into(),
            Err(AttemptError::Refused(reason)) => {
                return Err(FetchError::Refused {
                    peer_http: peer_http.to_string(),
                    reason,
                })
            }
            Err(AttemptError::Fatal { context, source }) => {
                return Err(FetchError::Io { context, source })
            }
            Err(AttemptError::Retry(problem)) => {
                tracing::warn!(group, peer_http, %problem, "checkpoint transfer interrupted; resuming");
                last_problem = problem;
            }
        }
        let after = progress.lock().expect("progress lock").bytes_done;
        if after > before {
            attempts_without_progress = 0;
        } else {
            attempts_without_progress += 1;
        }
        tokio::time::sleep(FETCH_RETRY_PAUSE).await;
    }
    Err(FetchError::GaveUp {
        peer_http: peer_http.to_string(),
        attempts: FETCH_ATTEMPTS_WITHOUT_PROGRESS_MAX,
        last: last_problem,
    })
}

fn part_path(dir: &Path) -> PathBuf {
    dir.join("incoming.part")
}

fn info_path(dir: &Path) -> PathBuf {
    dir.join("incoming.json")
}

/// What an earlier, interrupted fetch left behind.
fn partial(dir: &Path) -> Option<(CheckpointInfo, u64)> {
    let info: CheckpointInfo = serde_json::from_slice(&std::fs::read(info_path(dir)).ok()?).ok()?;
    let length = std::fs::metadata(part_path(dir))
        .ok()?
        .len()
        .min(info.file_bytes);
    // Resume on a chunk boundary: the server's CRCs are per whole chunk (and the rest of the
    // file can go through the direct handle).
    Some((info, length - length % STREAM_CHUNK_BYTES as u64))
}

/// One connection. `Ok(Some)` done; `Ok(None)` start again; `Err` see [`AttemptError`].
async fn fetch_once(
    peer_http: &str,
    group: &str,
    dir: &Path,
    progress: &SharedProgress,
    identity: Option<&PeerIdentity>,
) -> Result<Option<(PathBuf, CheckpointInfo)>, AttemptError> {
    let resume = partial(dir);
    let (want_instance, offset) = resume
        .as_ref()
        .map_or((0, 0), |(info, length)| (info.instance_id, *length));
    let stream = tokio::time::timeout(FETCH_IO_TIMEOUT, TcpStream::connect(peer_http))
        .await
        .map_err(|_| format!("connecting to {peer_http} timed out"))?
        .map_err(|error| format!("connecting to {peer_http}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::with_capacity(SOCKET_BUFFER_BYTES, stream);
    let target = format!(
        "/checkpoint/stream?group={group}&instance={want_instance}&offset={offset}&version={STREAM_VERSION}"
    );
    // Made per request (fresh nonce, current time): a resumed attempt proves itself again.
    let proof_line = identity.map_or_else(String::new, |identity| {
        format!(
            "{PEER_PROOF_HEADER}: {}\r\n",
            peer_proof_header(identity, &target, unix_ms_now())
        )
    });
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {peer_http}\r\n{proof_line}Connection: close\r\n\r\n"
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("sending the request: {error}"))?;
    let (status, version) = read_response_head(&mut stream).await?;
    if status == 404 && want_instance != 0 {
        // The peer dropped the checkpoint we were resuming: start over with its newest.
        forget_partial(dir);
        return Ok(None);
    }
    if matches!(status, 400 | 401 | 403) {
        // Another wire format, or no (valid) proof of the cluster secret: retrying cannot help.
        let reason = read_error_body(&mut stream).await;
        return Err(AttemptError::Refused(format!("HTTP {status}: {reason}")));
    }
    if status != 200 {
        let reason = read_error_body(&mut stream).await;
        return Err(format!("the peer answered HTTP {status}: {reason}").into());
    }
    if version != Some(STREAM_VERSION) {
        let theirs =
            version.map_or_else(|| "none (an older release)".to_string(), |v| v.to_string());
        return Err(AttemptError::Refused(format!(
            "it streams checkpoint version {theirs}, this node fetches version {STREAM_VERSION}: run the same paxsql release on every node"
        )));
    }
    let info_bytes = read_frame(&mut stream, INFO_FRAME_BYTES_MAX)
        .await?
        .ok_or("the peer's checkpoint header failed its CRC")?;
    let info: CheckpointInfo = serde_json::from_slice(&info_bytes)
        .map_err(|error| format!("the checkpoint header is not valid: {error}"))?;
    let offset = if info.instance_id == want_instance {
        offset
    } else {
        start_partial(dir, &info).map_err(|error| error.to_string())?;
        0
    };
    receive_file(&mut stream, dir, &info, offset, progress).await
}

fn forget_partial(dir: &Path) {
    let _ = std::fs::remove_file(info_path(dir));
    let _ = std::fs::remove_file(part_path(dir));
}

fn start_partial(dir: &Path, info: &CheckpointInfo) -> std::io::Result<()> {
    forget_partial(dir);
    let path = info_path(dir);
    std::fs::write(
        &path,
        serde_json::to_vec(info).expect("checkpoint info serializes"),
    )?;
    std::fs::File::open(&path)?.sync_all()
}

/// Reads the response head: the status and the [`VERSION_HEADER`] value, if any.
async fn read_response_head(
    stream: &mut BufReader<TcpStream>,
) -> Result<(u16, Option<u32>), String> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(FETCH_IO_TIMEOUT, stream.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "the peer sent no response head in time".to_string())?
            .map_err(|error| format!("reading the response head: {error}"))?;
        if read == 0 {
            return Err("the peer closed the connection before answering".into());
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if head.len() > RESPONSE_HEAD_BYTES_MAX {
            return Err("the response head is too large".into());
        }
        if blank {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed response head {:?}", text.lines().next()))?;
    let version = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(VERSION_HEADER)
            .then(|| value.trim().parse().ok())?
    });
    Ok((status, version))
}

/// The body of an error response (its `error` field when it is JSON), bounded, best effort.
async fn read_error_body(stream: &mut BufReader<TcpStream>) -> String {
    let mut body = Vec::new();
    let mut limited = stream.take(ERROR_BODY_BYTES_MAX);
    let _ = tokio::time::timeout(FETCH_IO_TIMEOUT, limited.read_to_end(&mut body)).await;
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string())
}

/// Reads one frame of at most `limit` bytes: `Ok(Some(bytes))`, `Ok(None)` when its CRC does
/// not match.
async fn read_frame(
    stream: &mut BufReader<TcpStream>,
    limit: u32,
) -> Result<Option<Vec<u8>>, String> {
    let mut bytes = vec![0u8; limit as usize];
    let (length, crc) = read_frame_into(stream, &mut bytes).await?;
    bytes.truncate(length);
    Ok((crc32c::crc32c(&bytes) == crc).then_some(bytes))
}

/// Reads one frame of at most `buffer.len()` bytes into `buffer`: its length and the CRC32C
/// the peer sent for it (not checked here).
async fn read_frame_into(
    stream: &mut BufReader<TcpStream>,
    buffer: &mut [u8],
) -> Result<(usize, u32), String> {
    let mut head = [0u8; 8];
    tokio::time::timeout(FETCH_IO_TIMEOUT, stream.read_exact(&mut head))
        .await
        .map_err(|_| "the peer stalled".to_string())?
        .map_err(|error| format!("reading a frame head: {error}"))?;
    let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    if length > buffer.len() {
        return Err(format!(
            "a frame of {length} bytes is over the limit of {}",
            buffer.len()
        ));
    }
    // Large reads bypass the BufReader's buffer: the chunk is copied once, socket to buffer.
    tokio::time::timeout(FETCH_IO_TIMEOUT, stream.read_exact(&mut buffer[..length]))
        .await
        .map_err(|_| "the peer stalled".to_string())?
        .map_err(|error| format!("reading a chunk: {error}"))?;
    Ok((length, crc))
}

/// Appends verified chunks to `incoming.part` from `offset`; on the end frame checks the size
/// and hash and renames the file to `incoming.sqlite`.
async fn receive_file(
    stream: &mut BufReader<TcpStream>,
    dir: &Path,
    info: &CheckpointInfo,
    offset: u64,
    progress: &SharedProgress,
) -> Result<Option<(PathBuf, CheckpointInfo)>, AttemptError> {
    let part = part_path(dir);
    let opened_part = part.clone();
    let (file, hasher) = tokio::task::spawn_blocking(move || open_part(&opened_part, offset))
        .await
        .expect("opening the part file does not panic")?;
    {
        let mut progress = progress.lock().expect("progress lock");
        progress.instance_id = info.instance_id;
        progress.bytes_total = info.file_bytes;
        progress.bytes_done = offset;
        progress.state = "streaming".into();
    }
    let (to_verifier, verifier_inbox) = tokio::sync::mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
    let (free_sender, mut free) = tokio::sync::mpsc::channel::<Vec<u8>>(STREAM_CHUNKS_IN_FLIGHT);
    for _ in 0..STREAM_CHUNKS_IN_FLIGHT {
        free_sender
            .try_send(chunk_buffer())
            .expect("the free queue holds every buffer");
    }
    let verifier = Verifier {
        file,
        path: part.clone(),
        check: Check {
            hasher,
            written: offset,
            instance_id: info.instance_id,
            bytes_total: info.file_bytes,
            progress: progress.clone(),
        },
    };
    let verifying = tokio::task::spawn_blocking(move || verifier.run(verifier_inbox, free_sender));
    let received = receive_chunks(stream, dir, info, offset, &to_verifier, &mut free).await;
    // Closing the queue ends the verifier after the chunks already handed over.
    drop(to_verifier);
    // A verifier stop (a bad chunk, a failed write) explains a stopped receiver: it goes first.
    let (file, hasher, done) = match verifying.await.expect("the verifier does not panic") {
        Ok(verified) => verified,
        Err(VerifyError::BadChunk(at)) => {
            progress.lock().expect("progress lock").chunks_refetched += 1;
            // Nothing of a bad chunk is written; the next attempt asks from `at` again.
            return Err(format!("chunk at offset {at} failed its CRC; fetching it again").into());
        }
        Err(VerifyError::Write(error)) => return Err(error.into()),
    };
    let ended = received?;
    if ended != info.file_bytes || done != ended {
        return Err(format!(
            "the stream ended at {ended} of {} bytes ({done} written)",
            info.file_bytes
        )
        .into());
    }
    let hash = format!("{:032x}", hasher.digest128());
    if hash != info.file_hash {
        forget_partial(dir);
        return Err(format!(
            "the whole-file hash {hash} differs from the peer's {}; starting over",
            info.file_hash
        )
        .into());
    }
    // A failed fsync is fatal for this fetch, never retried: the kernel may have dropped the
    // dirty pages, so a second fsync could succeed over data that is not on disk. The part
    // file is forgotten; a later bootstrap starts from zero.
    let synced = tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .expect("fsync does not panic");
    if let Err(source) = synced {
        forget_partial(dir);
        return Err(AttemptError::Fatal {
            context: format!("fsync {}", part.display()),
            source,
        });
    }
    let complete = dir.join("incoming.sqlite");
    std::fs::rename(&part, &complete).map_err(|error| error.to_string())?;
    let _ = std::fs::remove_file(info_path(dir));
    progress.lock().expect("progress lock").state = "verified".into();
    Ok(Some((complete, info.clone())))
}

/// Reads chunk frames until the end frame, handing each to the verifier; returns the file
/// length the stream reached.
async fn receive_chunks(
    stream: &mut BufReader<TcpStream>,
    dir: &Path,
    info: &CheckpointInfo,
    offset: u64,
    to_verifier: &tokio::sync::mpsc::Sender<Received>,
    free: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64, String> {
    let mut done = offset;
    loop {
        let Some(mut buffer) = free.recv().await else {
            return Err("the part writer stopped".into());
        };
        let (length, crc) = read_frame_into(stream, chunk_area(&mut buffer)).await?;
        if length == 0 {
            return Ok(done);
        }
        if done + length as u64 > info.file_bytes {
            forget_partial(dir);
            return Err("the peer sent more bytes than the checkpoint holds".into());
        }
        let chunk = Received {
            buffer,
            length,
            crc,
        };
        if to_verifier.send(chunk).await.is_err() {
            return Err("the part writer stopped".into());
        }
        done += length as u64;
    }
}

#[cfg(test)]
#[path = "checkpoint_stream_tests.rs"]
mod tests;
