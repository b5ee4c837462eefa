//! Workloads over the PostgreSQL wire that record what they saw, for the checkers.
//!
//! - **register**: read / write / compare-and-set (`UPDATE … WHERE k = … AND v = old`;
//!   rows changed tells success) on a few keys; checked for linearizability per key.
//! - **bank**: interactive transfers (`BEGIN … COMMIT`) between accounts; every read (lease,
//!   linearizable and local) must see the same total and no negative balance.
//! - **set**: inserts of unique values, retried after an unknown outcome with an idempotent
//!   insert; at the end every acknowledged value is present exactly once.
//!
//! An error with SQLSTATE 40003, a broken connection or a client timeout is an unknown outcome
//! ("maybe"); any other SQLSTATE means the statement did not take effect (DESIGN.md, "Routing
//! and retries").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::checker::{RegisterOp, RegisterOpKind};
use crate::sql::connect;

/// Keys of the register workload.
pub const REGISTER_KEYS: i64 = 3;
/// Accounts of the bank workload, and each one's opening balance.
pub const BANK_ACCOUNTS: i64 = 5;
pub const BANK_OPENING_BALANCE: i64 = 100;
/// A client gives up on one statement after this long (outcome unknown).
pub const OPERATION_TIMEOUT_MS: u64 = 6_000;
/// Pause between a client's operations, so two cores can carry several clients and a cluster.
pub const OPERATION_PAUSE_MS: u64 = 5;

/// How an operation ended.
#[derive(Debug)]
pub enum Failure {
    /// It did not take effect (a SQLSTATE other than 40003).
    Definite(String),
    /// It may or may not have taken effect.
    Maybe(String),
}

fn classify(error: &tokio_postgres::Error) -> Failure {
    match error.code() {
        Some(code) if code.code() == "40003" => Failure::Maybe(error.to_string()),
        Some(code) => Failure::Definite(format!("{}: {error}", code.code())),
        None => Failure::Maybe(format!("{error:?}")),
    }
}

/// Runs one statement with the client timeout.
async fn bounded<T>(
    future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(Failure::Maybe("client timeout".into())),
    }
}

/// Everything the workloads recorded, shared by their clients.
pub struct Recorder {
    started: Instant,
    pub stop: AtomicBool,
    /// Completion times (µs) of successful writes, for the unavailability figure (reads with
    /// `local` consistency succeed through any fault, so they would hide it).
    successes: Mutex<Vec<u64>>,
    pub operations: AtomicU64,
    pub maybes: AtomicU64,
    pub register: Mutex<Vec<(i64, RegisterOp)>>,
    pub anomalies: Mutex<Vec<String>>,
    pub set_acked: Mutex<BTreeSet<i64>>,
    pub set_attempted: Mutex<BTreeSet<i64>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            stop: AtomicBool::new(false),
            successes: Mutex::new(Vec::new()),
            operations: AtomicU64::new(0),
            maybes: AtomicU64::new(0),
            register: Mutex::new(Vec::new()),
            anomalies: Mutex::new(Vec::new()),
            set_acked: Mutex::new(BTreeSet::new()),
            set_attempted: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, result: &Result<(), Failure>, is_write: bool) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) if !is_write => {}
            Ok(()) => self
                .successes
                .lock()
                .expect("recorder lock")
                .push(self.now_us()),
            Err(Failure::Maybe(_)) => {
                self.maybes.fetch_add(1, Ordering::Relaxed);
            }
            Err(Failure::Definite(_)) => {}
        }
    }

    pub fn anomaly(&self, message: String) {
        eprintln!("ANOMALY: {message}");
        self.anomalies.lock().expect("recorder lock").push(message);
    }

    /// The longest time (ms) between two successful writes in `[from_us, to_us]`.
    pub fn max_gap_ms(&self, from_us: u64, to_us: u64) -> u64 {
        let mut times: Vec<u64> = self
            .successes
            .lock()
            .expect("recorder lock")
            .iter()
            .copied()
            .filter(|time| (from_us..=to_us).contains(time))
            .collect();
        times.sort_unstable();
        let mut previous = from_us;
        let mut gap = 0;
        for time in times.into_iter().chain([to_us]) {
            gap = gap.max(time - previous);
            previous = time;
        }
        gap / 1000
    }
}

/// A client that reconnects to the next node after a broken connection.
pub struct Session {
    addrs: Vec<String>,
    next: usize,
    consistency: &'static str,
    client: Option<Client>,
}

impl Session {
    pub fn new(addrs: Vec<String>, first: usize, consistency: &'static str) -> Session {
        Session {
            next: first % addrs.len(),
            addrs,
            consistency,
            client: None,
        }
    }

    /// The connected client, connecting first if needed.
    async fn client(&mut self) -> Option<&Client> {
        if self.client.is_none() {
            let addr = self.addrs[self.next].clone();
            self.next = (self.next + 1) % self.addrs.len();
            let client = tokio::time::timeout(Duration::from_secs(3), connect(&addr, "main"))
                .await
                .ok()?
                .ok()?;
            let set = format!("SET paxsql.consistency = '{}'", self.consistency);
            bounded(client.batch_execute(&set)).await.ok()?;
            self.client = Some(client);
        }
        self.client.as_ref()
    }

    /// Drops the connection after an unknown outcome (its state is not trusted any more).
    fn reset_after(&mut self, result: &Result<(), Failure>) {
        if matches!(result, Err(Failure::Maybe(_)))
            || self.client.as_ref().is_some_and(Client::is_closed)
        {
            self.client = None;
        }
    }
}

async fn pause(rng: &mut rand::rngs::StdRng) {
    let jitter = rng.random_range(0..=OPERATION_PAUSE_MS);
    tokio::time::sleep(Duration::from_millis(OPERATION_PAUSE_MS + jitter)).await;
}

// ---------------------------------------------------------------------------------------------
// register

pub const REGISTER_SCHEMA: &str = "CREATE TABLE reg (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)";

pub fn register_setup() -> String {
    (0..REGISTER_KEYS)
        .map(|key| format!("INSERT INTO reg VALUES ({key}, 0);"))
        .collect()
}

/// One register client: random reads, writes of unique values and CAS from the last value seen.
pub async fn register_client(recorder: Arc<Recorder>, mut session: Session, client_id: u32) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(client_id) * 7919);
    let mut counter = 0i64;
    let mut last_seen: BTreeMap<i64, i64> = BTreeMap::new();
    while !recorder.stopped() {
        pause(&mut rng).await;
        let Some(client) = session.client().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let key = rng.random_range(0..REGISTER_KEYS);
        counter += 1;
        let unique = i64::from(client_id) * 1_000_000 + counter;
        let choice = rng.random_range(0..10);
        let invoke_us = recorder.now_us();
        let (kind, result) = if choice < 4 {
            let read =
                bounded(client.query_one(&format!("SELECT v FROM reg WHERE k = {key}"), &[])).await;
            match read {
                Ok(row) => {
                    let value: i64 = row.get(0);
                    last_seen.insert(key, value);
                    (RegisterOpKind::Read(value), Ok(()))
                }
                Err(failure) => (RegisterOpKind::Read(0), Err(failure)),
            }
        } else if choice < 7 {
            let write = bounded(
                client.execute(&format!("UPDATE reg SET v = {unique} WHERE k = {key}"), &[]),
            )
            .await;
            (RegisterOpKind::Write(unique), write.map(|_| ()))
        } else {
            let expected = last_seen.get(&key).copied().unwrap_or(0);
            let cas = bounded(client.execute(
                &format!("UPDATE reg SET v = {unique} WHERE k = {key} AND v = {expected}"),
                &[],
            ))
            .await;
            let succeeded = matches!(cas, Ok(1));
            if let Ok(changed) = cas {
                if changed > 1 {
                    recorder.anomaly(format!("CAS on key {key} changed {changed} rows"));
                }
            }
            (
                RegisterOpKind::Cas {
                    expected,
                    new: unique,
                    succeeded,
                },
                cas.map(|_| ()),
            )
        };
        let complete_us = recorder.now_us();
        recorder.count(&result, !matches!(kind, RegisterOpKind::Read(_)));
        let complete_us = match &result {
            Ok(()) => Some(complete_us),
            Err(Failure::Maybe(_)) => None,
            Err(Failure::Definite(_)) => {
                session.reset_after(&result);
                continue;
            }
        };
        if matches!(kind, RegisterOpKind::Read(_)) && complete_us.is_none() {
            session.reset_after(&result);
            continue;
        }
        recorder.register.lock().expect("recorder lock").push((
            key,
            RegisterOp {
                client: client_id,
                kind,
                invoke_us,
                complete_us,
            },
        ));
        session.reset_after(&result);
    }
}

/// A final linearizable read of every key, added to the history.
pub async fn register_final_reads(recorder: &Recorder, client: &Client) -> anyhow::Result<()> {
    for key in 0..REGISTER_KEYS {
        let invoke_us = recorder.now_us();
        let row = client
            .query_one(&format!("SELECT v FROM reg WHERE k = {key}"), &[])
            .await?;
        let value: i64 = row.get(0);
        recorder.register.lock().expect("recorder lock").push((
            key,
            RegisterOp {
                client: u32::MAX,
                kind: RegisterOpKind::Read(value),
                invoke_us,
                complete_us: Some(recorder.now_us()),
            },
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bank

pub const BANK_SCHEMA: &str =
    "CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)";

pub fn bank_setup() -> String {
    (0..BANK_ACCOUNTS)
        .map(|id| format!("INSERT INTO acct VALUES ({id}, {BANK_OPENING_BALANCE});"))
        .collect()
}

/// Interactive transfers: read the source balance, move an amount it covers, commit.
pub async fn bank_transfer_client(recorder: Arc<Recorder>, mut session: Session, client_id: u32) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(client_id) * 104_729);
    while !recorder.stopped() {
        pause(&mut rng).await;
        let from = rng.random_range(0..BANK_ACCOUNTS);
        let to = (from + rng.random_range(1..BANK_ACCOUNTS)) % BANK_ACCOUNTS;
        let amount = rng.random_range(1..=20);
        let Some(client) = session.client().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let result = transfer(client, from, to, amount).await;
        if result.is_err() {
            // Leave no transaction open on a connection we keep.
            let _ = bounded(client.batch_execute("ROLLBACK")).await;
        }
        recorder.count(&result, true);
        session.reset_after(&result);
        if matches!(result, Err(Failure::Definite(_))) {
            session.client = None;
        }
    }
}

async fn transfer(client: &Client, from: i64, to: i64, amount: i64) -> Result<(), Failure> {
    bounded(client.batch_execute("BEGIN")).await?;
    let row =
        bounded(client.query_one(&format!("SELECT balance FROM acct WHERE id = {from}"), &[]))
            .await?;
    let balance: i64 = row.get(0);
    if balance >= amount {
        bounded(client.execute(
            &format!("UPDATE acct SET balance = balance - {amount} WHERE id = {from}"),
            &[],
        ))
        .await?;
        bounded(client.execute(
            &format!("UPDATE acct SET balance = balance + {amount} WHERE id = {to}"),
            &[],
        ))
        .await?;
    }
    bounded(client.batch_execute("COMMIT")).await
}

/// Reads every balance; the total and the account count never change, no balance is negative.
pub async fn bank_read_client(recorder: Arc<Recorder>, mut session: Session, client_id: u32) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(client_id) * 15_485_863);
    while !recorder.stopped() {
        pause(&mut rng).await;
        let Some(client) = session.client().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let read = bounded(client.simple_query("SELECT id, balance FROM acct ORDER BY id")).await;
        let result = read.map(|messages| {
            let balances: Vec<i64> = messages
                .iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => row.get(1).and_then(|text| text.parse().ok()),
                    _ => None,
                })
                .collect();
            check_bank(&recorder, &balances, session.consistency);
        });
        recorder.count(&result, false);
        session.reset_after(&result);
    }
}

/// Checks one bank read; records an anomaly if the invariant fails.
pub fn check_bank(recorder: &Recorder, balances: &[i64], consistency: &str) {
    let total: i64 = balances.iter().sum();
    if balances.len() as i64 != BANK_ACCOUNTS
        || total != BANK_ACCOUNTS * BANK_OPENING_BALANCE
        || balances.iter().any(|balance| *balance < 0)
    {
        recorder.anomaly(format!(
            "bank read ({consistency}) saw balances {balances:?}, total {total}"
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// set

pub const SET_SCHEMA: &str = "CREATE TABLE s (v INTEGER NOT NULL)";

/// Inserts unique values; after an unknown outcome retries the same value with an insert that
/// does nothing if the value is already there, so a retry never duplicates.
pub async fn set_client(recorder: Arc<Recorder>, mut session: Session, client_id: u32) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(client_id) * 32_452_843);
    let mut counter = 0i64;
    let mut retrying: Option<i64> = None;
    while !recorder.stopped() {
        pause(&mut rng).await;
        let Some(client) = session.client().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let value = retrying.unwrap_or_else(|| {
            counter += 1;
            i64::from(client_id) * 1_000_000 + counter
        });
        recorder
            .set_attempted
            .lock()
            .expect("recorder lock")
            .insert(value);
        let insert = bounded(client.execute(
            &format!("INSERT INTO s (v) SELECT {value} WHERE NOT EXISTS (SELECT 1 FROM s WHERE v = {value})"),
            &[],
        ))
        .await;
        let result = insert.map(|_| ());
        recorder.count(&result, true);
        match &result {
            Ok(()) => {
                recorder
                    .set_acked
                    .lock()
                    .expect("recorder lock")
                    .insert(value);
                retrying = None;
            }
            Err(_) => retrying = Some(value),
        }
        session.reset_after(&result);
    }
}

/// Checks the final set: returns (acknowledged values lost, anomalies).
pub fn check_set(recorder: &Recorder, present: &[i64]) -> (usize, Vec<String>) {
    let mut anomalies = Vec::new();
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for value in present {
        *counts.entry(*value).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    if !duplicated.is_empty() {
        anomalies.push(format!("set values present more than once: {duplicated:?}"));
    }
    let attempted = recorder.set_attempted.lock().expect("recorder lock");
    let unknown: Vec<_> = counts
        .keys()
        .filter(|value| !attempted.contains(value))
        .collect();
    if !unknown.is_empty() {
        anomalies.push(format!("set values nobody inserted: {unknown:?}"));
    }
    let acked = recorder.set_acked.lock().expect("recorder lock");
    let lost: Vec<_> = acked
        .iter()
        .filter(|value| !counts.contains_key(value))
        .collect();
    if !lost.is_empty() {
        anomalies.push(format!("acknowledged set values lost: {lost:?}"));
    }
    (lost.len(), anomalies)
}
