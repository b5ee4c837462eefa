//! FileLog throughput beside the raw fsync rate of the same disk.
//!
//! `cargo bench -p paxsql-binlog` prints a table. Runs in `PAXSQL_BENCH_DIR` (default: the
//! system temp dir; make sure it is on a real disk, not tmpfs). Each measurement runs for about
//! `PAXSQL_BENCH_SECONDS` (default 1.5) and is repeated in interleaved rounds; the table shows
//! the median, so a noisy neighbour hurts raw fsync and FileLog alike.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paxsql_binlog::{FileLog, FileLogOptions, LogStore, Record, RecordKind};

const ROUNDS: usize = 3;

struct Case {
    name: &'static str,
    payload_bytes: usize,
    /// Records per sync; 0 = the raw fsync baseline (write 100 B + fdatasync on a plain file).
    records_per_sync: usize,
}

const CASES: [Case; 5] = [
    Case {
        name: "raw write 100 B + fdatasync",
        payload_bytes: 100,
        records_per_sync: 0,
    },
    Case {
        name: "FileLog 100 B, sync every record",
        payload_bytes: 100,
        records_per_sync: 1,
    },
    Case {
        name: "FileLog 4 KB, sync every record",
        payload_bytes: 4096,
        records_per_sync: 1,
    },
    Case {
        name: "FileLog 100 B, sync every 64 records",
        payload_bytes: 100,
        records_per_sync: 64,
    },
    Case {
        name: "FileLog 4 KB, sync every 64 records",
        payload_bytes: 4096,
        records_per_sync: 64,
    },
];

fn run_raw(dir: &Path, budget: Duration) -> f64 {
    let path = dir.join("raw-fsync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("open raw file");
    let payload = [0x5au8; 100];
    let started = Instant::now();
    let mut operations = 0u64;
    while started.elapsed() < budget {
        file.write_all(&payload).expect("write");
        file.sync_data().expect("fdatasync");
        operations += 1;
    }
    let rate = operations as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).expect("remove raw file");
    rate
}

fn run_file_log(dir: &Path, case: &Case, budget: Duration) -> f64 {
    let log_dir: PathBuf = dir.join("log");
    let (mut log, _) = FileLog::open(&log_dir, FileLogOptions::default()).expect("open log");
    let payload = bytes::Bytes::from(vec![0xa5u8; case.payload_bytes]);
    let started = Instant::now();
    let mut instance_id = 0u64;
    while started.elapsed() < budget {
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
    }
    let rate = instance_id as f64 / started.elapsed().as_secs_f64();
    drop(log);
    std::fs::remove_dir_all(&log_dir).expect("remove log");
    rate
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    println!(
        "binlog bench in {} ({ROUNDS} rounds of {seconds} s, median)",
        dir.path().display()
    );

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for _ in 0..ROUNDS {
        for (case, case_rates) in CASES.iter().zip(rates.iter_mut()) {
            let rate = if case.records_per_sync == 0 {
                run_raw(dir.path(), budget)
            } else {
                run_file_log(dir.path(), case, budget)
            };
            case_rates.push(rate);
        }
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    let raw_syncs_per_second = medians[0];
    println!();
    println!("| case | records/s | syncs/s | µs per sync | sync cost vs raw fsync |");
    println!("|---|---:|---:|---:|---:|");
    for (case, &records_per_second) in CASES.iter().zip(&medians) {
        let syncs_per_second = records_per_second / case.records_per_sync.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.2}× |",
            case.name,
            records_per_second,
            syncs_per_second,
            1e6 / syncs_per_second,
            raw_syncs_per_second / syncs_per_second
        );
    }
}
