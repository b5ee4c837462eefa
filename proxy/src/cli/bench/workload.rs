//! The workloads, the same for paxsql and for the SQLite baseline: which operation a client
//! runs next and the SQL of each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `CREATE TABLE` of the bench table (SQLite SQL; paxsql runs it as is).
pub const CREATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, \
     client INTEGER NOT NULL, counter INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL)";
/// The payload of every inserted row (64 bytes: a small, realistic row).
pub const PAYLOAD: &str = "paxsql-bench-payload-0123456789abcdefghijklmnopqrstuvwxyz-0123456";
/// Rows inserted per statement while seeding.
pub const SEED_ROWS_PER_STATEMENT: u64 = 200;
/// Percent of `mixed` operations that are point reads.
pub const MIXED_READ_PERCENT: u64 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Autocommit single-row INSERTs.
    Insert,
    /// UPDATEs of one and the same row (id 1): every write conflicts with every other.
    UpdateHot,
    /// SELECT of one row by primary key, among `--rows` seeded rows.
    PointRead,
    /// 80 % point reads, 20 % single-row UPDATEs of random seeded rows.
    Mixed,
}

/// One operation a client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Insert { client: u64 },
    UpdateHot,
    Read { id: u64 },
    Update { id: u64 },
}

impl Operation {
    /// The statement as SQL text with its values inlined (for the simple-query protocol).
    pub fn sql(self) -> String {
        match self {
            Operation::Insert { client } => format!(
                "INSERT INTO bench (client, counter, payload) VALUES ({client}, 0, '{PAYLOAD}')"
            ),
            Operation::UpdateHot => "UPDATE bench SET counter = counter + 1 WHERE id = 1".into(),
            Operation::Read { id } => {
                format!("SELECT id, counter, payload FROM bench WHERE id = {id}")
            }
            Operation::Update { id } => {
                format!("UPDATE bench SET counter = counter + 1 WHERE id = {id}")
            }
        }
    }
}

/// Picks each client's next operation (xorshift: cheap, seeded, no dependency).
pub struct Picker {
    workload: Workload,
    client: u64,
    rows: u64,
    state: u64,
}

impl Picker {
    pub fn new(workload: Workload, client: u64, rows: u64) -> Self {
        Picker {
            workload,
            client,
            rows: rows.max(1),
            state: (client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    pub fn next(&mut self) -> Operation {
        match self.workload {
            Workload::Insert => Operation::Insert {
                client: self.client,
            },
            Workload::UpdateHot => Operation::UpdateHot,
            Workload::PointRead => Operation::Read {
                id: 1 + self.next_random() % self.rows,
            },
            Workload::Mixed => {
                let id = 1 + self.next_random() % self.rows;
                if self.next_random() % 100 < MIXED_READ_PERCENT {
                    Operation::Read { id }
                } else {
                    Operation::Update { id }
                }
            }
        }
    }
}

/// The statements that seed rows `1..=rows` (existing ones are kept).
pub fn seed_statements(rows: u64) -> Vec<String> {
    let mut statements = Vec::new();
    let mut first = 1;
    while first <= rows {
        let last = (first + SEED_ROWS_PER_STATEMENT - 1).min(rows);
        let values: Vec<String> = (first..=last)
            .map(|id| format!("({id}, -1, 0, '{PAYLOAD}')"))
            .collect();
        statements.push(format!(
            "INSERT OR IGNORE INTO bench (id, client, counter, payload) VALUES {}",
            values.join(", ")
        ));
        first = last + 1;
    }
    statements
}

/// When a run ends (after a duration, or after a total count of operations), shared by its
/// clients, plus the live counters the progress line reads.
pub struct RunLimit {
    pub deadline: Option<Instant>,
    pub ops_max: Option<u64>,
    pub started: AtomicU64,
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

impl RunLimit {
    pub fn new(deadline: Option<Instant>, ops_max: Option<u64>) -> Arc<Self> {
        Arc::new(RunLimit {
            deadline,
            ops_max,
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    /// Claims the next operation; false once the run is over.
    pub fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return false;
        }
        match self.ops_max {
            Some(max) => self.started.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }

    pub fn finished(&self, ok: bool) {
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_mostly_reads_of_seeded_rows() {
        let mut picker = Picker::new(Workload::Mixed, 3, 100);
        let operations: Vec<Operation> = (0..10_000).map(|_| picker.next()).collect();
        let reads = operations
            .iter()
            .filter(|op| matches!(op, Operation::Read { .. }))
            .count();
        assert!((7_500..8_500).contains(&reads), "{reads} reads of 10,000");
        assert!(operations.iter().all(|op| match op {
            Operation::Read { id } | Operation::Update { id } => (1..=100).contains(id),
            _ => false,
        }));
    }

    #[test]
    fn seeding_covers_every_row_once() {
        let statements = seed_statements(450);
        assert_eq!(statements.len(), 3);
        assert!(statements[0].contains("(1, -1, 0,"));
        assert!(statements[2].contains("(450, -1, 0,"));
        assert!(!statements[2].contains("(451,"));
    }

    #[test]
    fn an_operation_count_limits_claims() {
        let limit = RunLimit::new(None, Some(3));
        assert!((0..3).all(|_| limit.claim()));
        assert!(!limit.claim());
    }
}
