//! The transfer's correctness properties over real loopback TCP: a corrupted chunk is fetched
//! again and never written (whether the wire or the serving disk damaged it), a resumed fetch
//! produces the same file, a damaged partial file is never installed, a damaged checkpoint is
//! never served, and peers of another wire version are refused with the reason.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::service::checkpoint_chunks::{sidecar_path, ChunkTable};

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
    // As a checkpoint is written: the file, then its chunk table beside it.
    let table = ChunkTable::build(path).expect("index the source");
    table.store(&sidecar_path(path)).expect("store the table");
    let info = table.bare_info(7);
    (bytes, info)
}

/// What the test server does with one connection.
#[derive(Clone, Copy, PartialEq)]
enum Serving {
    /// The real [`serve`].
    Real,
    /// The first chunk intact, the second with a flipped byte under its true CRC, then hang up.
    CorruptOnTheWire,
    /// The real [`serve`] while the source's second chunk is damaged on disk (its chunk table
    /// predates the damage); the file is repaired afterwards.
    CorruptOnDisk,
    /// A 200 without the version header, as a server of an older release answers.
    OldRelease,
}

/// Serves `source` on loopback; records each request's offset. Connection `n` is served as
/// `plan[n]`, later ones as [`Serving::Real`].
async fn start_server(
    source: PathBuf,
    info: CheckpointInfo,
    plan: Vec<Serving>,
) -> (String, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let offsets = Arc::new(Mutex::new(Vec::new()));
    let recorded = offsets.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let request = read_request(&mut stream).await;
            let offset: u64 = query_value(&request, "offset").expect("the request names an offset");
            let version = query_value(&request, "version");
            recorded.lock().expect("offsets").push(offset);
            match plan.get(connection).copied().unwrap_or(Serving::Real) {
                // A fetcher that hangs up mid-stream fails the send: not the test's concern.
                Serving::Real => drop(serve(&mut stream, &source, &info, offset, version).await),
                Serving::CorruptOnTheWire => {
                    serve_corrupt(&mut stream, &source, &info, offset).await;
                }
                Serving::CorruptOnDisk => {
                    flip_byte(&source, STREAM_CHUNK_BYTES as u64 + 777);
                    drop(serve(&mut stream, &source, &info, offset, version).await);
                    flip_byte(&source, STREAM_CHUNK_BYTES as u64 + 777);
                }
                Serving::OldRelease => {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        .await
                        .expect("head");
                    let _ = stream.shutdown().await;
                }
            }
        }
    });
    (address, offsets)
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = vec![0u8; 4096];
    let read = stream.read(&mut head).await.expect("read the request");
    String::from_utf8_lossy(&head[..read]).to_string()
}

fn query_value<T: std::str::FromStr>(request: &str, name: &str) -> Option<T> {
    request
        .split(&format!("{name}="))
        .nth(1)?
        .split(['&', ' '])
        .next()?
        .parse()
        .ok()
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the source");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read a byte");
    byte[0] ^= 0x5A;
    file.write_all_at(&byte, offset).expect("write a byte");
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
        .write_all(
            format!("HTTP/1.1 200 OK\r\n{VERSION_HEADER}: {STREAM_VERSION}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
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
    let (address, offsets) =
        start_server(source, info.clone(), vec![Serving::CorruptOnTheWire]).await;
    let progress = fresh_progress();
    let into = folder.path().join("fetched");
    let (file, fetched_info) = fetch(&address, "main", &into, &progress, None)
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
    // An earlier transfer stopped mid-chunk, past some whole blocks of it.
    let kept = STREAM_CHUNK_BYTES + 3 * DIRECT_ALIGN_BYTES + 1000;
    std::fs::write(
        into.join("incoming.json"),
        serde_json::to_vec(&info).expect("json"),
    )
    .expect("write the info");
    std::fs::write(into.join("incoming.part"), &bytes[..kept]).expect("write the part");
    let (address, offsets) = start_server(source, info, Vec::new()).await;
    let (file, _) = fetch(&address, "main", &into, &fresh_progress(), None)
        .await
        .expect("fetch");
    // The fetch resumes at the last chunk boundary it holds (the CRCs are per whole chunk).
    assert_eq!(
        *offsets.lock().expect("offsets"),
        vec![STREAM_CHUNK_BYTES as u64]
    );
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
    let (address, offsets) = start_server(source, info, Vec::new()).await;
    let (file, _) = fetch(&address, "main", &into, &fresh_progress(), None)
        .await
        .expect("fetch");
    // The resumed transfer failed the whole-file hash and started over from zero.
    assert_eq!(
        *offsets.lock().expect("offsets"),
        vec![STREAM_CHUNK_BYTES as u64, 0]
    );
    assert_eq!(std::fs::read(&file).expect("read the fetched file"), bytes);
}

#[tokio::test]
async fn chunk_damaged_on_the_serving_disk_fails_its_crc_and_is_fetched_again() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (bytes, info) = write_source(&source);
    let (address, offsets) = start_server(source, info, vec![Serving::CorruptOnDisk]).await;
    let progress = fresh_progress();
    let into = folder.path().join("fetched");
    let (file, _) = fetch(&address, "main", &into, &progress, None)
        .await
        .expect("fetch");
    assert_eq!(std::fs::read(&file).expect("read the fetched file"), bytes);
    assert_eq!(progress.lock().expect("progress").chunks_refetched, 1);
    // The damaged second chunk was not appended: the retry asked for it again.
    assert_eq!(
        *offsets.lock().expect("offsets"),
        vec![0, STREAM_CHUNK_BYTES as u64]
    );
}

#[tokio::test]
async fn server_of_an_older_release_is_refused_at_once() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (_, info) = write_source(&source);
    let (address, offsets) = start_server(source, info, vec![Serving::OldRelease]).await;
    let into = folder.path().join("fetched");
    let error = fetch(&address, "main", &into, &fresh_progress(), None)
        .await
        .expect_err("an older server is refused");
    let FetchError::Refused { reason, .. } = &error else {
        panic!("expected a refusal, got {error}");
    };
    assert!(reason.contains("version none"), "{reason}");
    // No retries: one connection.
    assert_eq!(*offsets.lock().expect("offsets"), vec![0]);
}

/// Sends `request_target` to `address` and returns the whole response.
async fn raw_get(address: &str, request_target: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {request_target} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    String::from_utf8_lossy(&response).to_string()
}

#[tokio::test]
async fn fetcher_of_another_version_or_offset_is_refused_with_the_reason() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (_, info) = write_source(&source);
    let (address, _) = start_server(source, info, Vec::new()).await;
    let old = raw_get(&address, "/checkpoint/stream?offset=0").await;
    assert!(old.starts_with("HTTP/1.1 400"), "{old}");
    assert!(old.contains("fetcher asked for version none"), "{old}");
    let other = raw_get(&address, "/checkpoint/stream?offset=0&version=3").await;
    assert!(other.contains("asked for version 3"), "{other}");
    let unaligned = raw_get(&address, "/checkpoint/stream?offset=4096&version=2").await;
    assert!(unaligned.starts_with("HTTP/1.1 400"), "{unaligned}");
    assert!(unaligned.contains("not a chunk boundary"), "{unaligned}");
}

#[tokio::test]
async fn checkpoint_changed_since_it_was_written_is_never_served() {
    let folder = tempfile::tempdir().expect("tempdir");
    let source = folder.path().join("source.sqlite");
    let (_, info) = write_source(&source);
    // The file changed after its info was written, and its chunk table is lost: the rebuilt
    // table disagrees with the info.
    flip_byte(&source, 99);
    std::fs::remove_file(sidecar_path(&source)).expect("remove the table");
    let (address, _) = start_server(source.clone(), info, Vec::new()).await;
    let response = raw_get(&address, "/checkpoint/stream?offset=0&version=2").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(
        response.contains("changed since it was written"),
        "{response}"
    );
    assert!(
        !sidecar_path(&source).exists(),
        "no table is stored for a changed file"
    );
}
