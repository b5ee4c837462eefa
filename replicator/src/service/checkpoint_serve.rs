//! The serving side of the checkpoint transfer (the wire format is in the parent module).
//!
//! The file's bytes never pass through user space: each chunk's CRC32C comes from the
//! checkpoint's [`ChunkTable`] (computed when the checkpoint was written) and the chunk itself
//! goes from the page cache into the socket with `sendfile(2)`. The body is written by one
//! blocking thread on a duplicate of the socket's descriptor (waiting with `poll(2)` when the
//! socket is full), so a chunk that is not in the page cache blocks that thread on the disk
//! read, never an async worker; and the duplicate keeps the socket open for that thread even
//! if the async side drops its stream.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{frame_head, STREAM_CHUNK_BYTES, STREAM_VERSION, VERSION_HEADER};
use crate::service::checkpoint_chunks::ChunkTable;
use crate::service::checkpoints::CheckpointInfo;

/// How long the fetcher may leave the socket full before the serve gives up on it.
pub const SERVE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `file` (described by `info`) from `offset` on to a fetcher that asked for wire
/// format `version`: the whole HTTP response. A fetcher of another version, or an offset that
/// is not a chunk boundary, gets `400` with the reason; a checkpoint file whose bytes no longer
/// match its info gets `500` (it is never sent).
pub async fn serve(
    stream: &mut TcpStream,
    file: &Path,
    info: &CheckpointInfo,
    offset: u64,
    version: Option<u32>,
) -> std::io::Result<()> {
    if version != Some(STREAM_VERSION) {
        let asked =
            version.map_or_else(|| "none (an older release)".to_string(), |v| v.to_string());
        let reason = format!(
            "this node serves checkpoint stream version {STREAM_VERSION}, the fetcher asked for version {asked}: run the same paxsql release on every node"
        );
        return refuse(stream, 400, &reason).await;
    }
    if !offset.is_multiple_of(STREAM_CHUNK_BYTES as u64) || offset > info.file_bytes {
        let reason = format!(
            "offset {offset} is not a chunk boundary ({STREAM_CHUNK_BYTES} bytes) within the {}-byte checkpoint",
            info.file_bytes
        );
        return refuse(stream, 400, &reason).await;
    }
    let opened = {
        let file = file.to_path_buf();
        let info = info.clone();
        tokio::task::spawn_blocking(move || -> Result<(File, ChunkTable), String> {
            let table =
                ChunkTable::load_or_build(&file, &info).map_err(|error| error.to_string())?;
            let source = File::open(&file)
                .map_err(|error| format!("opening {}: {error}", file.display()))?;
            Ok((source, table))
        })
        .await
        .expect("loading a chunk table does not panic")
    };
    let (source, table) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            tracing::error!(instance_id = info.instance_id, %reason, "a checkpoint cannot be served");
            return refuse(stream, 500, &reason).await;
        }
    };
    let socket = stream.as_fd().try_clone_to_owned()?;
    let info_json = serde_json::to_vec(info).expect("checkpoint info serializes");
    tokio::task::spawn_blocking(move || send_body(&socket, &source, &table, offset, &info_json))
        .await
        .expect("the checkpoint sender does not panic")
}

/// An error response: `status` and `{"error": reason}`.
async fn refuse(stream: &mut TcpStream, status: u16, reason: &str) -> std::io::Result<()> {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": reason }))
        .expect("a JSON value serializes");
    body.push(b'\n');
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n{VERSION_HEADER}: {STREAM_VERSION}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 400 { "Bad Request" } else { "Error" },
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// Blocking: the response head, the info frame, every chunk from `offset` on (head from the
/// table, bytes by `sendfile`), the end frame.
fn send_body(
    socket: &OwnedFd,
    source: &File,
    table: &ChunkTable,
    mut offset: u64,
    info_json: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{VERSION_HEADER}: {STREAM_VERSION}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&frame_head(info_json.len(), crc32c::crc32c(info_json)));
    head.extend_from_slice(info_json);
    send_all(socket, &head, true)?;
    while offset < table.file_bytes {
        let length = (table.file_bytes - offset).min(STREAM_CHUNK_BYTES as u64);
        let chunk_head = frame_head(length as usize, table.crc_at(offset));
        send_all(socket, &chunk_head, true)?;
        send_file(socket, source, offset, length)?;
        offset += length;
    }
    send_all(socket, &frame_head(0, crc32c::crc32c(&[])), false)
}

/// `send` flags: no SIGPIPE on a closed peer; with `more`, hold a short piece (a frame head)
/// to go out with the bytes that follow it.
#[cfg(target_os = "linux")]
fn send_flags(more: bool) -> libc::c_int {
    libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 }
}

#[cfg(not(target_os = "linux"))]
fn send_flags(_more: bool) -> libc::c_int {
    0
}

/// Sends all of `bytes`, waiting while the socket is full.
fn send_all(socket: &OwnedFd, mut bytes: &[u8], more: bool) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for its length; the descriptor is owned for the call.
        let sent = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                send_flags(more),
            )
        };
        if sent >= 0 {
            bytes = &bytes[sent as usize..];
        } else {
            wait_after(socket, std::io::Error::last_os_error())?;
        }
    }
    Ok(())
}

/// Sends `length` bytes of `source` from `offset` with `sendfile` (page cache to socket).
#[cfg(target_os = "linux")]
fn send_file(socket: &OwnedFd, source: &File, offset: u64, length: u64) -> std::io::Result<()> {
    let end = offset + length;
    let mut position = libc::off_t::try_from(offset).expect("a checkpoint is below 2^63 bytes");
    while (position as u64) < end {
        let remaining = (end - position as u64) as usize;
        // SAFETY: both descriptors are open for the call; the kernel advances `position`.
        let sent = unsafe {
            libc::sendfile(
                socket.as_raw_fd(),
                source.as_raw_fd(),
                &mut position,
                remaining,
            )
        };
        if sent == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the checkpoint file ended at {position}, before {end}"),
            ));
        }
        if sent < 0 {
            wait_after(socket, std::io::Error::last_os_error())?;
        }
    }
    Ok(())
}

/// Without `sendfile`: read the chunk, then send it.
#[cfg(not(target_os = "linux"))]
fn send_file(socket: &OwnedFd, source: &File, offset: u64, length: u64) -> std::io::Result<()> {
    let mut bytes = vec![0u8; length as usize];
    std::os::unix::fs::FileExt::read_exact_at(source, &mut bytes, offset)?;
    send_all(socket, &bytes, false)
}

/// After a failed send: waits for room when the socket was full, returns at once when
/// interrupted, and fails on any other error or when the fetcher read nothing for
/// [`SERVE_STALL_TIMEOUT`].
fn wait_after(socket: &OwnedFd, error: std::io::Error) -> std::io::Result<()> {
    match error.kind() {
        std::io::ErrorKind::Interrupted => Ok(()),
        std::io::ErrorKind::WouldBlock => {
            let mut waiting = libc::pollfd {
                fd: socket.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let timeout_ms = SERVE_STALL_TIMEOUT.as_millis() as libc::c_int;
            // SAFETY: one valid pollfd for the call.
            let ready = unsafe { libc::poll(&mut waiting, 1, timeout_ms) };
            match ready {
                0 => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the fetcher read nothing for {SERVE_STALL_TIMEOUT:?}"),
                )),
                1.. => Ok(()),
                _ => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() == std::io::ErrorKind::Interrupted {
                        Ok(())
                    } else {
                        Err(error)
                    }
                }
            }
        }
        _ => Err(error),
    }
}
