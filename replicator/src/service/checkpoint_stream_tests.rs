//! The transfer's correctness properties over real loopback TCP: a corrupted chunk is fetched
//! again and never written, a resumed fetch produces the same file, a damaged partial file is
//! never installed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::service::checkpoints::hash_file;

/// Two and a half chunks, so a transfer has full chunks and a short last one.
const SOURCE_BYTES: usize = 2 * STREAM_CHUNK_BYTES + STREAM_CHUNK_BYTES / 2;

fn write_source(path: &Path) -> (Vec<u8>, CheckpointInfo) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..SOURCE_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path, &bytes).expect("write the source");
    let (file_bytes, file_hash) = hash_file(path).expect("hash the source");
    let info = CheckpointInfo {
        instance_id: 7,
        file_bytes,
        file_hash,
        checksum_after: 0,
        cluster_gid: 0,
        members: Vec::new(),
        members_version: 0,
        master_id: None,
        lease_ms: 0,
        lease_version: 0,
    };
    (bytes, info)
}

/// Serves `source` on loopback; records each request's offset. The first `corrupt_first`
/// connections send the first chunk intact and the second with a flipped byte, then hang up.
async fn start_server(
    source: PathBuf,
    info: CheckpointInfo,
    corrupt_first: usize,
) -> (String, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let offsets = Arc::new(Mutex::new(Vec::new()));
    let recorded = offsets.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = vec![0u8; 4096];
            let read = stream.read(&mut head).await.expect("read the request");
            let request = String::from_utf8_lossy(&head[..read]).to_string();
            let offset: u64 = request
                .split("offset=")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|number| number.parse().ok())
                .expect("the request names an offset");
            recorded.lock().expect("offsets").push(offset);
            if connection < corrupt_first {
                serve_corrupt(&mut stream, &source, &info, offset).await;
            } else {
                serve(&mut stream, &source, &info, offset)
                    .await
                    .expect("serve");
            }
        }
    });
    (address, offsets)
}

async fn serve_corrupt(
    stream: &mut tokio::net::TcpStream,
    source: &Path,
    info: &CheckpointInfo,
    offset: u64,
) {
    let bytes = std::fs::read(source).expect("read the source");
    let from = offset as usize;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    write_frame(stream, &serde_json::to_vec(info).expect("json"))
        .await
        .expect("info frame");
    let good = &bytes[from..from + STREAM_CHUNK_BYTES];
    write_frame(stream, good).await.expect("good chunk");
    let mut bad = bytes[from + STREAM_CHUNK_BYTES..from + 2 * STREAM_CHUNK_BYTES].to_vec();
    let crc = crc32c::crc32c(&bad);
    bad[12345] ^= 0x55;
    write_frame_with_crc(stream, &bad, crc)
        .await
        .expect("bad chunk");
    let _ = stream.shutdown().await;
}

fn fresh_progress() -> SharedProgress {
    Arc::new(Mutex::new(FetchProgress::default()))
}

#[tokio::test]
async fn corrupted_chunk_is_fetched_again_and_never_written() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (bytes, info) = write_source(&source);
    let (address, offsets) = start_server(source, info.clone(), 1).await;
    let progress = fresh_progress();
    let into = folder.path().join("fetched");
    let (file, fetched_info) = fetch(&address, "main", &into, &progress)
        .await
        .expect("fetch");
    assert_eq!(std::fs::read(&file).expect("read the fetched file"), bytes);
    assert_eq!(fetched_info.file_hash, info.file_hash);
    assert_eq!(progress.lock().expect("progress").chunks_refetched, 1);
    // The retry resumed right after the good chunk: the bad one was not appended.
    assert_eq!(
        *offsets.lock().expect("offsets"),
        vec![0, STREAM_CHUNK_BYTES as u64]
    );
}

#[tokio::test]
async fn resumed_fetch_produces_the_same_file() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (bytes, info) = write_source(&source);
    let into = folder.path().join("fetched");
    std::fs::create_dir_all(&into).expect("mkdir");
    // An earlier transfer stopped mid-chunk.
    let kept = STREAM_CHUNK_BYTES + 1000;
    std::fs::write(
        into.join("incoming.json"),
        serde_json::to_vec(&info).expect("json"),
    )
    .expect("write the info");
    std::fs::write(into.join("incoming.part"), &bytes[..kept]).expect("write the part");
    let (address, offsets) = start_server(source, info, 0).await;
    let (file, _) = fetch(&address, "main", &into, &fresh_progress())
        .await
        .expect("fetch");
    // The fetch resumes at the last block boundary it holds.
    let resumed = (kept - kept % DIRECT_ALIGN_BYTES) as u64;
    assert_eq!(*offsets.lock().expect("offsets"), vec![resumed]);
    assert_eq!(std::fs::read(&file).expect("read the fetched file"), bytes);
    assert!(!into.join("incoming.part").exists());
}

#[tokio::test]
async fn damaged_partial_file_is_never_installed() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (bytes, info) = write_source(&source);
    let into = folder.path().join("fetched");
    std::fs::create_dir_all(&into).expect("mkdir");
    // A partial file whose prefix was damaged (say, lost writes after a crash).
    let mut prefix = bytes[..STREAM_CHUNK_BYTES].to_vec();
    prefix[100] ^= 0xFF;
    std::fs::write(
        into.join("incoming.json"),
        serde_json::to_vec(&info).expect("json"),
    )
    .expect("write the info");
    std::fs::write(into.join("incoming.part"), &prefix).expect("write the part");
    let (address, offsets) = start_server(source, info, 0).await;
    let (file, _) = fetch(&address, "main", &into, &fresh_progress())
        .await
        .expect("fetch");
    // The resumed transfer failed the whole-file hash and started over from zero.
    assert_eq!(
        *offsets.lock().expect("offsets"),
        vec![STREAM_CHUNK_BYTES as u64, 0]
    );
    assert_eq!(std::fs::read(&file).expect("read the fetched file"), bytes);
}
