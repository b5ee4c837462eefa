//! `paxsql admin bench-checkpoint-stream`: the checkpoint transfer's throughput beside a plain
//! file copy on the same disk (not a test: it prints figures).
//!
//! A file of the given size is written (random-looking pages, so nothing compresses) with its
//! chunk table (as a checkpoint is: CRC per chunk and whole-file hash, not timed), then
//! [`BENCH_ROUNDS`] times, alternately:
//! 1. copied with `std::fs::copy` + fsync;
//! 2. streamed over loopback TCP with the real protocol (`checkpoint_stream::serve` on one
//!    side: `sendfile` with the table's CRCs; `checkpoint_stream::fetch` on the other: CRC per
//!    chunk, whole-file hash, fsync).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use paxsql_replicator::service::checkpoint_chunks::{sidecar_path, ChunkTable};
use paxsql_replicator::service::checkpoint_stream::{self, FetchProgress, STREAM_VERSION};
use paxsql_replicator::service::checkpoints::CheckpointInfo;
use tokio::io::AsyncReadExt;

pub async fn run(dir: &Path, size_mb: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let source = dir.join("bench-source.sqlite");
    write_source(&source, size_mb)?;
    let table = ChunkTable::build(&source)?;
    table.store(&sidecar_path(&source))?;
    let file_bytes = table.file_bytes;
    let info = table.bare_info(1);

    let megabytes = file_bytes as f64 / 1e6;
    println!(
        "checkpoint file: {megabytes:.0} MB; {BENCH_ROUNDS} rounds, copy and stream interleaved"
    );
    println!("| round | plain copy + fsync | checkpoint stream + fsync | stream / copy |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=BENCH_ROUNDS {
        let copy_seconds = time_copy(dir, &source)?;
        let stream_seconds = time_stream(dir, &source, &info).await?;
        let copy_rate = megabytes / copy_seconds;
        let stream_rate = megabytes / stream_seconds;
        println!(
            "| {round} | {copy_rate:.0} MB/s ({copy_seconds:.2} s) | {stream_rate:.0} MB/s ({stream_seconds:.2} s) | {:.0} % |",
            100.0 * stream_rate / copy_rate
        );
        ratios.push(stream_rate / copy_rate);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median stream / copy: {:.0} % (goal >= 80 %)",
        100.0 * ratios[ratios.len() / 2]
    );
    std::fs::remove_file(&source)?;
    std::fs::remove_file(sidecar_path(&source))?;
    Ok(())
}

/// Rounds per run: copy and stream alternate, so load from other processes hits both.
const BENCH_ROUNDS: u32 = 3;

/// Seconds for `std::fs::copy` + fsync of `source`.
fn time_copy(dir: &Path, source: &Path) -> anyhow::Result<f64> {
    let copy = dir.join("bench-copy.sqlite");
    let started = Instant::now();
    std::fs::copy(source, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&copy)?;
    Ok(seconds)
}

/// Seconds for the checkpoint protocol over loopback: fetch, verify, fsync.
async fn time_stream(dir: &Path, source: &Path, info: &CheckpointInfo) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let served = source.to_path_buf();
    let served_info = info.clone();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head).await?;
        checkpoint_stream::serve(&mut stream, &served, &served_info, 0, Some(STREAM_VERSION)).await
    });
    let receive_dir = dir.join("bench-receive");
    let _ = std::fs::remove_dir_all(&receive_dir);
    let progress = Arc::new(Mutex::new(FetchProgress::default()));
    let started = Instant::now();
    checkpoint_stream::fetch(&address, "main", &receive_dir, &progress, None)
        .await
        .context("streaming the checkpoint")?;
    let seconds = started.elapsed().as_secs_f64();
    server.await??;
    std::fs::remove_dir_all(&receive_dir)?;
    Ok(seconds)
}

/// Writes `size_mb` MiB of pseudo-random bytes (xorshift), fsync'd.
fn write_source(path: &Path, size_mb: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    let file = file.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    Ok(())
}
