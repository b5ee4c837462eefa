//! The checkpoint transfer: a peer's checkpoint file streamed over its HTTP port in chunks.
//!
//! Request: `GET /checkpoint/stream?group=G&instance=I&offset=O HTTP/1.1` (`instance=0`: the
//! newest). Response: `200` and a body of frames, each `u32 length | u32 crc32c | bytes`
//! (big-endian): first the [`CheckpointInfo`] as JSON, then the file from `offset` on in chunks
//! of at most [`CHECKPOINT_CHUNK_BYTES`], then an empty frame. `404` when the checkpoint is gone.
//!
//! The fetcher keeps `incoming.part` and `incoming.json` in the checkpoints folder, so a broken
//! transfer resumes from the bytes it has. A chunk whose CRC does not match is never written:
//! the fetcher reconnects and asks again from the same offset. The whole file's xxh3-128 is
//! checked before the file is handed over. Memory stays bounded by one chunk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use xxhash_rust::xxh3::Xxh3;

use super::checkpoints::CheckpointInfo;
use crate::limits::CHECKPOINT_CHUNK_BYTES;

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

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    let length = u32::try_from(bytes.len()).expect("a frame is at most one chunk");
    head[..4].copy_from_slice(&length.to_be_bytes());
    head[4..].copy_from_slice(&crc32c::crc32c(bytes).to_be_bytes());
    writer.write_all(&head).await?;
    writer.write_all(bytes).await
}

/// Serves `file` (described by `info`) from `offset` on, after the HTTP response head.
pub async fn serve<W: AsyncWrite + Unpin>(
    writer: &mut W,
    file: &Path,
    info: &CheckpointInfo,
    offset: u64,
) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    // Plain reads of at most one chunk: page-cache copies, cheaper than a thread hop per chunk
    // (the node runs a multi-threaded runtime).
    let mut source = std::fs::File::open(file)?;
    source.seek(std::io::SeekFrom::Start(offset))?;
    writer
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        .await?;
    let info_json = serde_json::to_vec(info).expect("checkpoint info serializes");
    write_frame(writer, &info_json).await?;
    let mut buffer = vec![0u8; CHECKPOINT_CHUNK_BYTES];
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = tokio::task::block_in_place(|| source.read(&mut buffer[filled..]))?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        write_frame(writer, &buffer[..filled]).await?;
    }
    write_frame(writer, &[]).await?;
    writer.flush().await
}

/// Fetches the newest checkpoint of `group` from `peer_http` into `dir`; returns the verified
/// file (fsync'd, `dir/incoming.sqlite`) and its info. Resumes a partial fetch of the same
/// checkpoint.
pub async fn fetch(
    peer_http: &str,
    group: &str,
    dir: &Path,
    progress: &SharedProgress,
) -> Result<(PathBuf, CheckpointInfo), FetchError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_error(format!("creating {}", dir.display())))?;
    let mut attempts_without_progress = 0;
    let mut last_problem = String::new();
    while attempts_without_progress < FETCH_ATTEMPTS_WITHOUT_PROGRESS_MAX {
        let before = progress.lock().expect("progress lock").bytes_done;
        match fetch_once(peer_http, group, dir, progress).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => last_problem = "the transfer restarts".into(),
            Err(problem) => {
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
    Some((info, length))
}

/// One connection. `Ok(Some)` done; `Ok(None)` start again; `Err` a retryable problem.
async fn fetch_once(
    peer_http: &str,
    group: &str,
    dir: &Path,
    progress: &SharedProgress,
) -> Result<Option<(PathBuf, CheckpointInfo)>, String> {
    let resume = partial(dir);
    let (want_instance, offset) = resume
        .as_ref()
        .map_or((0, 0), |(info, length)| (info.instance_id, *length));
    let stream = tokio::time::timeout(FETCH_IO_TIMEOUT, TcpStream::connect(peer_http))
        .await
        .map_err(|_| format!("connecting to {peer_http} timed out"))?
        .map_err(|error| format!("connecting to {peer_http}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::with_capacity(2 * CHECKPOINT_CHUNK_BYTES, stream);
    let request = format!(
        "GET /checkpoint/stream?group={group}&instance={want_instance}&offset={offset} HTTP/1.1\r\nHost: {peer_http}\r\nConnection: close\r\n\r\n"
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("sending the request: {error}"))?;
    let status = read_status(&mut stream).await?;
    if status == 404 && want_instance != 0 {
        // The peer dropped the checkpoint we were resuming: start over with its newest.
        forget_partial(dir);
        return Ok(None);
    }
    if status != 200 {
        return Err(format!("the peer answered HTTP {status}"));
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

async fn read_status(stream: &mut BufReader<TcpStream>) -> Result<u16, String> {
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
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed response head {:?}", text.lines().next()))
}

/// Reads one frame: `Ok(Some(bytes))`, `Ok(None)` when its CRC does not match.
async fn read_frame(
    stream: &mut BufReader<TcpStream>,
    limit: u32,
) -> Result<Option<Vec<u8>>, String> {
    let mut head = [0u8; 8];
    tokio::time::timeout(FETCH_IO_TIMEOUT, stream.read_exact(&mut head))
        .await
        .map_err(|_| "the peer stalled".to_string())?
        .map_err(|error| format!("reading a frame head: {error}"))?;
    let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    if length > limit {
        return Err(format!(
            "a frame of {length} bytes is over the limit of {limit}"
        ));
    }
    let mut bytes = Vec::with_capacity(length as usize);
    let read = tokio::time::timeout(
        FETCH_IO_TIMEOUT,
        (&mut *stream)
            .take(u64::from(length))
            .read_to_end(&mut bytes),
    )
    .await
    .map_err(|_| "the peer stalled".to_string())?
    .map_err(|error| format!("reading a chunk: {error}"))?;
    if read != length as usize {
        return Err("the peer closed the connection mid-chunk".into());
    }
    Ok((crc32c::crc32c(&bytes) == crc).then_some(bytes))
}

/// Appends verified chunks to `incoming.part` from `offset`; on the end frame checks the size
/// and hash and renames the file to `incoming.sqlite`.
async fn receive_file(
    stream: &mut BufReader<TcpStream>,
    dir: &Path,
    info: &CheckpointInfo,
    offset: u64,
    progress: &SharedProgress,
) -> Result<Option<(PathBuf, CheckpointInfo)>, String> {
    let part = part_path(dir);
    let mut hasher = Xxh3::new();
    let mut file = open_part(&part, offset, &mut hasher)
        .await?
        .into_std()
        .await;
    let started = Instant::now();
    let mut received: u64 = 0;
    let mut done = offset;
    {
        let mut progress = progress.lock().expect("progress lock");
        progress.instance_id = info.instance_id;
        progress.bytes_total = info.file_bytes;
        progress.bytes_done = done;
        progress.state = "streaming".into();
    }
    let mut last_log = Instant::now();
    loop {
        let Some(chunk) = read_frame(stream, CHECKPOINT_CHUNK_BYTES as u32).await? else {
            progress.lock().expect("progress lock").chunks_refetched += 1;
            // Nothing of a bad chunk is written; the next attempt asks from `done` again.
            return Err(format!(
                "chunk at offset {done} failed its CRC; fetching it again"
            ));
        };
        if chunk.is_empty() {
            break;
        }
        if done + chunk.len() as u64 > info.file_bytes {
            forget_partial(dir);
            return Err("the peer sent more bytes than the checkpoint holds".into());
        }
        hasher.update(&chunk);
        tokio::task::block_in_place(|| std::io::Write::write_all(&mut file, &chunk))
            .map_err(|error| format!("writing {}: {error}", part.display()))?;
        done += chunk.len() as u64;
        received += chunk.len() as u64;
        let seconds = started.elapsed().as_secs_f64().max(1e-6);
        let mut progress = progress.lock().expect("progress lock");
        progress.bytes_done = done;
        progress.rate_mb_per_s = received as f64 / seconds / 1e6;
        if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            tracing::info!(
                instance_id = info.instance_id,
                bytes_done = done,
                bytes_total = info.file_bytes,
                rate_mb_per_s = format!("{:.1}", progress.rate_mb_per_s),
                "checkpoint transfer progress"
            );
        }
    }
    if done != info.file_bytes {
        return Err(format!(
            "the stream ended at {done} of {} bytes",
            info.file_bytes
        ));
    }
    let hash = format!("{:032x}", hasher.digest128());
    if hash != info.file_hash {
        forget_partial(dir);
        return Err(format!(
            "the whole-file hash {hash} differs from the peer's {}; starting over",
            info.file_hash
        ));
    }
    // fsync failures are fatal for the install, never retried: the caller stops on Err here.
    file.sync_all()
        .map_err(|error| format!("fsync {}: {error}", part.display()))?;
    let complete = dir.join("incoming.sqlite");
    std::fs::rename(&part, &complete).map_err(|error| error.to_string())?;
    let _ = std::fs::remove_file(info_path(dir));
    progress.lock().expect("progress lock").state = "verified".into();
    Ok(Some((complete, info.clone())))
}

/// Opens the partial file at `offset` (cutting anything past it) and hashes what it holds.
async fn open_part(part: &Path, offset: u64, hasher: &mut Xxh3) -> Result<tokio::fs::File, String> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .await
        .map_err(|error| format!("opening {}: {error}", part.display()))?;
    file.set_len(offset)
        .await
        .map_err(|error| format!("cutting {}: {error}", part.display()))?;
    let mut buffer = vec![0u8; CHECKPOINT_CHUNK_BYTES];
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|error| error.to_string())?;
    Ok(file)
}
