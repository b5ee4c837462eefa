//! Crash test: `kill -9` a process that appends and syncs in a loop, at random moments, many
//! times; after each kill, reopen the log and check that every record the child reported as
//! synced survived byte-exact, in order, with no holes.
//!
//! The test binary is its own child: run with `PAXSQL_CRASH_CHILD_DIR` set, `main` becomes the
//! writer. The writer prints the sequence number of the last record after every `sync` returns.
//!
//! Knobs: `PAXSQL_CRASH_CYCLES` (default 200), `PAXSQL_CRASH_SEED` (printed, replays delays).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paxsql_binlog::{FileLog, FileLogOptions, LogStore, Record, RecordKind};
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "PAXSQL_CRASH_CHILD_DIR";
const CYCLES_DEFAULT: usize = 200;
/// Small segments, so the children roll over and truncate often.
const SEGMENT_BYTES_MAX: u64 = 16 * 1024;
/// The writer keeps about this many records below the last one when it truncates.
const KEEP_RECORDS: u64 = 300;

fn options() -> FileLogOptions {
    FileLogOptions {
        segment_bytes_max: SEGMENT_BYTES_MAX,
    }
}

/// The payload of record `sequence`: its length and bytes both follow from the number, so the
/// parent can check survivors byte-exact without being told them.
fn payload_of(sequence: u64) -> Vec<u8> {
    let len = (sequence.wrapping_mul(2_654_435_761) % 700) as usize + 8;
    let mut payload = sequence.to_le_bytes().to_vec();
    payload.extend((0..len - 8).map(|index| (sequence as usize * 31 + index * 7) as u8));
    payload
}

fn kind_of(sequence: u64) -> RecordKind {
    if sequence.is_multiple_of(2) {
        RecordKind::Acceptor
    } else {
        RecordKind::Chosen
    }
}

fn run_child(dir: &Path) {
    let (mut log, _) = FileLog::open(dir, options()).expect("child opens the log");
    let mut next = log.last_instance().map_or(0, |last| last + 1);
    let mut round: u64 = 0;
    loop {
        // Group commits of 1..=4 records, like a Paxos acceptor under load.
        let batch = round % 4 + 1;
        for _ in 0..batch {
            log.append(&Record::new(next, kind_of(next), payload_of(next)))
                .expect("append");
            next += 1;
        }
        log.sync().expect("sync");
        println!("{}", next - 1);
        if round.is_multiple_of(50) && next > KEEP_RECORDS {
            log.truncate_prefix(next - KEEP_RECORDS).expect("truncate");
        }
        round += 1;
    }
}

/// Checks the reopened log and returns the highest surviving sequence number.
fn verify(dir: &Path, synced_max: Option<u64>, cycle: usize) -> Option<u64> {
    let (log, report) = FileLog::open(dir, options())
        .unwrap_or_else(|error| panic!("cycle {cycle}: reopen failed: {error}"));
    let records = log.read_range(0, u64::MAX).expect("read everything");
    for pair in records.windows(2) {
        assert_eq!(
            pair[1].instance_id,
            pair[0].instance_id + 1,
            "cycle {cycle}: hole or disorder after {}",
            pair[0].instance_id
        );
    }
    for record in &records {
        let sequence = record.instance_id;
        assert_eq!(
            record.kind,
            kind_of(sequence),
            "cycle {cycle}: kind of record {sequence}"
        );
        assert_eq!(
            record.payload.as_ref(),
            payload_of(sequence).as_slice(),
            "cycle {cycle}: payload of record {sequence}"
        );
    }
    let last = records.last().map(|record| record.instance_id);
    if let Some(synced_max) = synced_max {
        assert!(last.is_some_and(|last| last >= synced_max), "cycle {cycle}: synced record {synced_max} lost; last survivor {last:?}, report {report:?}");
        // The writer truncates below (its last synced record + 1 - KEEP_RECORDS), so every record
        // from there on must still be here.
        let first = records.first().expect("not empty").instance_id;
        let must_keep_from = (synced_max + 1).saturating_sub(KEEP_RECORDS);
        assert!(
            first <= must_keep_from,
            "cycle {cycle}: truncation dropped records from {must_keep_from} up to {first}"
        );
    }
    last
}

fn kill_nine_during_sync_loop_never_loses_a_synced_record() {
    let cycles: usize = std::env::var("PAXSQL_CRASH_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    let seed: u64 = std::env::var("PAXSQL_CRASH_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        });
    println!("crash test: {cycles} cycles, PAXSQL_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let mut synced_max: Option<u64> = None;
    let mut torn_cycles = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let sequence: u64 = line.trim().parse().expect("the child prints numbers");
                if sender.send(sequence).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has synced something new, then kill it a little later.
        let first_report = receiver
            .recv_timeout(Duration::from_secs(20))
            .expect("child reports a sync");
        std::thread::sleep(Duration::from_micros(rng.random_range(0..8_000)));
        child.kill().expect("kill -9 the writer");
        child.wait().expect("reap the writer");
        reader.join().expect("reader thread");
        let reported = std::iter::once(first_report)
            .chain(receiver.try_iter())
            .max();
        synced_max = synced_max.max(reported);
        let before = verify(dir.path(), synced_max, cycle);
        if before > synced_max {
            torn_cycles += 1;
        }
    }
    println!(
        "crash test passed: {cycles} kills in {:.1} s, last synced record {synced_max:?}, {torn_cycles} cycles kept unreported records",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        run_child(Path::new(&dir));
        return;
    }
    // `cargo test` passes harness flags such as `--list` or a name filter; honour a filter that
    // does not match, so `cargo test -p paxsql-binlog some_other_test` stays fast.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--list") {
        println!("kill_nine_during_sync_loop_never_loses_a_synced_record: test");
        return;
    }
    let name = "kill_nine_during_sync_loop_never_loses_a_synced_record";
    if let Some(filter) = args.iter().find(|arg| !arg.starts_with('-')) {
        if !name.contains(filter.as_str()) {
            return;
        }
    }
    kill_nine_during_sync_loop_never_loses_a_synced_record();
}
