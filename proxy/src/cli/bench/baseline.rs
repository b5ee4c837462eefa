//! The anchors: the same workload on a plain local SQLite file (WAL, `synchronous=FULL`, one
//! connection per client), the physical floor of one commit (one fsync + one loopback RTT) and
//! the ceiling of round trips over loopback (see `ceiling.rs`), all measured by this program on
//! the same machine and disk.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{params, Connection};

use super::stats::{latency_of, ClientStats, Latency};
use super::workload::{
    seed_statements, Operation, Picker, RunLimit, Workload, CREATE_TABLE_SQL, PAYLOAD,
};

/// How long a baseline connection waits for SQLite's write lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each probe measures.
const PROBE_DURATION: Duration = Duration::from_secs(1);
/// Most round trips one probe makes (it stops earlier when its duration is up).
const PROBE_ROUNDS_MAX: usize = 20_000;

/// The physical floor of one replicated commit, measured here.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Floor {
    /// `pwrite` of 100 bytes over zeros + `fdatasync` on a preallocated file in the baseline
    /// directory (the way paxsql's log writes).
    pub fsync_us: Latency,
    /// A 64-byte TCP ping-pong over 127.0.0.1.
    pub rtt_us: Latency,
    /// fsync p50 + RTT p50.
    pub floor_p50_us: u32,
    /// Round trips per second of a 64-byte echo over as many loopback connections as the run
    /// has clients (no SQL, no replication, no disk): the ceiling of any networked server here.
    pub echo_ops_per_second: f64,
}

/// The SQLite file of a baseline run, removed (with its `-wal`/`-shm`) when dropped.
pub struct BaselineFile {
    pub path: PathBuf,
}

impl BaselineFile {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --baseline-dir {}", dir.display()))?;
        let path = dir.join(format!(
            "paxsql-bench-baseline-{}.sqlite",
            std::process::id()
        ));
        let file = BaselineFile { path };
        file.remove();
        Ok(file)
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

impl Drop for BaselineFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Opens one baseline connection: WAL, `synchronous=FULL`, a busy timeout.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let connection =
        Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

/// Creates the table and seeds rows `1..=rows`, as `--setup` does on paxsql.
pub fn setup(path: &Path, rows: u64) -> anyhow::Result<()> {
    let connection = open(path)?;
    connection.execute_batch(CREATE_TABLE_SQL)?;
    for statement in seed_statements(rows) {
        connection.execute_batch(&statement)?;
    }
    Ok(())
}

/// One baseline client on its own thread and connection.
pub fn run_client(
    index: u64,
    path: &Path,
    workload: Workload,
    rows: u64,
    limit: Arc<RunLimit>,
) -> anyhow::Result<ClientStats> {
    let connection = open(path)?;
    let mut statements = Statements::prepare(&connection)?;
    let mut stats = ClientStats::new(index + 1);
    let mut picker = Picker::new(workload, index, rows);
    while limit.claim() {
        let operation = picker.next();
        let started = Instant::now();
        match statements.execute(operation) {
            Ok(()) => {
                stats.record_ok(started.elapsed());
                limit.finished(true);
            }
            Err(error) => {
                let code = match error.sqlite_error_code() {
                    Some(code) => format!("sqlite-{code:?}"),
                    None => "sqlite".to_string(),
                };
                stats.record_error(&code);
                limit.finished(false);
            }
        }
    }
    Ok(stats)
}

/// One client's prepared statements (the fastest way to use SQLite).
struct Statements<'c> {
    insert: rusqlite::Statement<'c>,
    update_hot: rusqlite::Statement<'c>,
    update: rusqlite::Statement<'c>,
    read: rusqlite::Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(connection: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
            insert: connection
                .prepare("INSERT INTO bench (client, counter, payload) VALUES (?1, 0, ?2)")?,
            update_hot: connection
                .prepare("UPDATE bench SET counter = counter + 1 WHERE id = 1")?,
            update: connection.prepare("UPDATE bench SET counter = counter + 1 WHERE id = ?1")?,
            read: connection.prepare("SELECT id, counter, payload FROM bench WHERE id = ?1")?,
        })
    }

    fn execute(&mut self, operation: Operation) -> rusqlite::Result<()> {
        match operation {
            Operation::Insert { client } => {
                self.insert.execute(params![client as i64, PAYLOAD])?;
            }
            Operation::UpdateHot => {
                self.update_hot.execute([])?;
            }
            Operation::Update { id } => {
                self.update.execute(params![id as i64])?;
            }
            Operation::Read { id } => {
                let mut rows = self.read.query(params![id as i64])?;
                while let Some(row) = rows.next()? {
                    let _: String = row.get(2)?;
                }
            }
        }
        Ok(())
    }
}

/// Measures the floor: fsync latency in `dir`, the loopback round trip, and the echo ceiling
/// with `clients` connections.
pub fn measure_floor(dir: &Path, clients: usize) -> anyhow::Result<Floor> {
    let fsync_us = measure_fsync(dir)?;
    let rtt_us = measure_rtt()?;
    let echo_ops_per_second = super::ceiling::measure(clients, PROBE_DURATION)?;
    Ok(Floor {
        floor_p50_us: fsync_us.p50 + rtt_us.p50,
        fsync_us,
        rtt_us,
        echo_ops_per_second,
    })
}

fn measure_fsync(dir: &Path) -> anyhow::Result<Latency> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("paxsql-bench-fsync-{}", std::process::id()));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let record = [0x5a_u8; 100];
    // Zero-filled and synced first, as paxsql's log segments are: each probe write then
    // overwrites zeros and `fdatasync` flushes data only (no file size to journal), the
    // cheapest fsync this disk offers and so the honest floor.
    let probe_bytes = (PROBE_ROUNDS_MAX * record.len()) as u64;
    let zeros = vec![0_u8; 1 << 20];
    let mut filled = 0;
    while filled < probe_bytes {
        let chunk = (probe_bytes - filled).min(zeros.len() as u64);
        file.write_all_at(&zeros[..chunk as usize], filled)?;
        filled += chunk;
    }
    file.sync_all()
        .context("fsync failed while preparing the fsync probe")?;
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut offset = 0;
    while started.elapsed() < PROBE_DURATION && samples.len() < PROBE_ROUNDS_MAX {
        let begin = Instant::now();
        file.write_all_at(&record, offset)?;
        file.sync_data()
            .context("fdatasync failed in the fsync probe")?;
        samples.push(u32::try_from(begin.elapsed().as_micros()).unwrap_or(u32::MAX));
        offset += record.len() as u64; // in order, like a log
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(latency_of(&mut samples))
}

fn measure_rtt() -> anyhow::Result<Latency> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind the RTT probe")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0_u8; 64];
        loop {
            if stream.read_exact(&mut buffer).is_err() {
                return Ok(()); // the prober hung up
            }
            stream.write_all(&buffer)?;
        }
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut buffer = [7_u8; 64];
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < PROBE_DURATION && samples.len() < PROBE_ROUNDS_MAX {
        let begin = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        samples.push(u32::try_from(begin.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    drop(stream);
    let _ = echo.join();
    Ok(latency_of(&mut samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_runs_every_workload_on_a_seeded_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = BaselineFile::create(dir.path()).expect("baseline file");
        setup(&file.path, 50).expect("setup");
        for workload in [
            Workload::Insert,
            Workload::UpdateHot,
            Workload::PointRead,
            Workload::Mixed,
        ] {
            let limit = RunLimit::new(None, Some(20));
            let stats = run_client(0, &file.path, workload, 50, limit).expect("client");
            assert_eq!(stats.ops, 20, "{workload:?}");
            assert!(stats.errors.is_empty(), "{workload:?}: {:?}", stats.errors);
        }
        let connection = open(&file.path).expect("open");
        let rows: i64 = connection
            .query_row("SELECT count(*) FROM bench", [], |row| row.get(0))
            .expect("count");
        assert_eq!(rows, 70, "50 seeded rows plus 20 inserts");
    }

    #[test]
    fn the_floor_is_the_sum_of_both_medians() {
        let dir = tempfile::tempdir().expect("temp dir");
        let floor = measure_floor(dir.path(), 2).expect("floor");
        assert!(floor.fsync_us.p50 > 0 && floor.rtt_us.p50 > 0);
        assert_eq!(floor.floor_p50_us, floor.fsync_us.p50 + floor.rtt_us.p50);
    }
}
