//! FileLog throughput beside the raw fsync rate of the same disk.
//!
//! `cargo bench -p paxsql-binlog` prints a table. Runs in `PAXSQL_BENCH_DIR` (default: the
//! system temp dir; make sure it is on a real disk, not tmpfs). Each measurement runs for about
//! `PAXSQL_BENCH_SECONDS` (default 1.5) and is repeated in interleaved rounds; the table shows
//! the median, so a noisy neighbour hurts raw fsync and FileLog alike.
//!
//! `PAXSQL_BENCH_PROCESSES=3` runs that many copies of the measurements at once, each in its
//! own directory on the same disk (as 3 nodes on one disk do), and prints the mean per process.
//! The last lines time opening a new log, which creates (and preallocates) its first segment:
//! the cost of a segment rollover when the next segment was not prepared in the background.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paxsql_binlog::{FileLog, FileLogOptions, LogStore, Record, RecordKind};

const ROUNDS: usize = 3;
const PROCESSES_VAR: &str = "PAXSQL_BENCH_PROCESSES";
/// Set in the children of a parallel run: print raw results only.
const CHILD_VAR: &str = "PAXSQL_BENCH_CHILD";
/// Segment sizes whose creation is timed: the node's default and `FileLogOptions::default()`.
const NEW_SEGMENT_BYTES: [u64; 2] = [8 * 1024 * 1024, 64 * 1024 * 1024];

struct Case {
    name: &'static str,
    payload_bytes: usize,
    /// Records per sync; 0 = a raw fsync baseline (100 B + fdatasync on a plain file).
    records_per_sync: usize,
    /// For a raw baseline: overwrite a pre-zeroed file instead of appending to an empty one.
    raw_overwrite: bool,
}

/// The segment size of the FileLog cases: the node's default (`log_segment_bytes()`).
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

const CASES: [Case; 6] = [
    Case {
        name: "raw append 100 B + fdatasync",
        payload_bytes: 100,
        records_per_sync: 0,
        raw_overwrite: false,
    },
    Case {
        name: "raw overwrite 100 B in a zeroed file + fdatasync",
        payload_bytes: 100,
        records_per_sync: 0,
        raw_overwrite: true,
    },
    Case {
        name: "FileLog 100 B, sync every record",
        payload_bytes: 100,
        records_per_sync: 1,
        raw_overwrite: false,
    },
    Case {
        name: "FileLog 4 KB, sync every record",
        payload_bytes: 4096,
        records_per_sync: 1,
        raw_overwrite: false,
    },
    Case {
        name: "FileLog 100 B, sync every 64 records",
        payload_bytes: 100,
        records_per_sync: 64,
        raw_overwrite: false,
    },
    Case {
        name: "FileLog 4 KB, sync every 64 records",
        payload_bytes: 4096,
        records_per_sync: 64,
        raw_overwrite: false,
    },
];

/// Records per second, and the median latency of one sync (with its writes) in µs.
type Measured = (f64, f64);

fn run_raw(dir: &Path, overwrite: bool, budget: Duration) -> Measured {
    let path = dir.join("raw-fsync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("open raw file");
    if overwrite {
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..SEGMENT_BYTES / zeros.len() as u64 {
            file.write_all(&zeros).expect("write zeros");
        }
        file.sync_all().expect("fsync zeros");
        file.seek(SeekFrom::Start(0)).expect("seek");
    }
    let payload = [0x5au8; 100];
    let started = Instant::now();
    let mut operations = 0u64;
    let mut latencies = Vec::new();
    while started.elapsed() < budget {
        let sync_started = Instant::now();
        let position = file.stream_position().expect("position");
        if overwrite && position + payload.len() as u64 > SEGMENT_BYTES {
            file.seek(SeekFrom::Start(0)).expect("seek");
        }
        file.write_all(&payload).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(sync_started.elapsed().as_secs_f64() * 1e6);
        operations += 1;
    }
    let rate = operations as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).expect("remove raw file");
    (rate, median(latencies))
}

fn run_file_log(dir: &Path, case: &Case, budget: Duration) -> Measured {
    let log_dir: PathBuf = dir.join("log");
    let options = FileLogOptions {
        segment_bytes_max: SEGMENT_BYTES,
    };
    let (mut log, _) = FileLog::open(&log_dir, options).expect("open log");
    let payload = bytes::Bytes::from(vec![0xa5u8; case.payload_bytes]);
    let started = Instant::now();
    let mut instance_id = 0u64;
    let mut latencies = Vec::new();
    while started.elapsed() < budget {
        let sync_started = Instant::now();
        for _ in 0..case.records_per_sync {
            log.append(&Record {
                instance_id,
                kind: RecordKind::Chosen,
                payload: payload.clone(),
            })
            .expect("append");
            instance_id += 1;
        }
        log.sync().expect("sync");
        latencies.push(sync_started.elapsed().as_secs_f64() * 1e6);
    }
    let rate = instance_id as f64 / started.elapsed().as_secs_f64();
    drop(log);
    std::fs::remove_dir_all(&log_dir).expect("remove log");
    (rate, median(latencies))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `FileLog::open` of an empty directory: it creates and syncs the first segment.
fn run_new_segment(dir: &Path, segment_bytes_max: u64) -> f64 {
    let log_dir = dir.join("new-segment");
    let started = Instant::now();
    let (log, _) = FileLog::open(&log_dir, FileLogOptions { segment_bytes_max }).expect("open log");
    let milliseconds = started.elapsed().as_secs_f64() * 1e3;
    drop(log);
    std::fs::remove_dir_all(&log_dir).expect("remove log");
    milliseconds
}

/// The number of results: records/s and p50 sync µs of every case, ms of every new segment.
const RESULTS: usize = 2 * CASES.len() + NEW_SEGMENT_BYTES.len();

/// Medians over the rounds: records/s of every case, then their p50 sync latencies (µs), then
/// the time of every new-segment size (ms).
fn measure(dir: &Path, budget: Duration) -> Vec<f64> {
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); RESULTS];
    for _ in 0..ROUNDS {
        for (index, case) in CASES.iter().enumerate() {
            let (rate, sync_p50_us) = if case.records_per_sync == 0 {
                run_raw(dir, case.raw_overwrite, budget)
            } else {
                run_file_log(dir, case, budget)
            };
            results[index].push(rate);
            results[CASES.len() + index].push(sync_p50_us);
        }
        for (&bytes, times) in NEW_SEGMENT_BYTES
            .iter()
            .zip(&mut results[2 * CASES.len()..])
        {
            times.push(run_new_segment(dir, bytes));
        }
    }
    results.into_iter().map(median).collect()
}

/// Runs `processes` copies of this bench at once and returns the mean of their medians.
fn measure_in_parallel(processes: usize) -> Vec<f64> {
    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD_VAR, "1")
                .env_remove(PROCESSES_VAR)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a bench process")
        })
        .collect();
    let mut sums = [0.0; RESULTS];
    for child in children {
        let output = child.wait_with_output().expect("bench process");
        assert!(output.status.success(), "a bench process failed");
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let line = text.lines().last().expect("the child prints its results");
        for (sum, value) in sums.iter_mut().zip(line.split_whitespace()) {
            *sum += value.parse::<f64>().expect("a number");
        }
    }
    sums.iter().map(|sum| sum / processes as f64).collect()
}

fn main() {
    let base = std::env::var_os("PAXSQL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let seconds: f64 = std::env::var("PAXSQL_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.5);
    let budget = Duration::from_secs_f64(seconds);
    let processes: usize = std::env::var(PROCESSES_VAR)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    let is_child = std::env::var_os(CHILD_VAR).is_some();
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    if is_child {
        let medians = measure(dir.path(), budget);
        let line: Vec<String> = medians.iter().map(|value| value.to_string()).collect();
        println!("{}", line.join(" "));
        return;
    }
    println!(
        "binlog bench in {} ({ROUNDS} rounds of {seconds} s, median; {processes} process(es) at once, mean per process)",
        dir.path().display()
    );
    let medians = if processes > 1 {
        measure_in_parallel(processes)
    } else {
        measure(dir.path(), budget)
    };
    let raw_syncs_per_second = medians[0];
    println!();
    println!(
        "| case | records/s | syncs/s | µs per sync | p50 µs per sync | sync cost vs raw fsync |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (index, case) in CASES.iter().enumerate() {
        let records_per_second = medians[index];
        let syncs_per_second = records_per_second / case.records_per_sync.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2}× |",
            case.name,
            records_per_second,
            syncs_per_second,
            1e6 / syncs_per_second,
            medians[CASES.len() + index],
            raw_syncs_per_second / syncs_per_second
        );
    }
    println!();
    for (&bytes, milliseconds) in NEW_SEGMENT_BYTES.iter().zip(&medians[2 * CASES.len()..]) {
        println!(
            "new log, first segment of {} MiB: {milliseconds:.1} ms",
            bytes / (1024 * 1024)
        );
    }
}
