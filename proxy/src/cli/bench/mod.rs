//! `paxsql bench`: drives load over N PostgreSQL connections and reports ops/s, latency
//! percentiles and errors by SQLSTATE; optionally beside a plain SQLite baseline on the same
//! disk and the physical floor of one commit (fsync + loopback RTT); or times a failover.
//!
//! Clients are spread round-robin over `--hosts` and, independently, over `--groups`
//! (client i uses host i mod H and group i mod G).

mod baseline;
mod ceiling;
mod failover;
mod paxsql;
mod report;
mod stats;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use report::BenchReport;
pub use workload::Workload;

use paxsql::Target;
use stats::{summarize, ClientStats, Summary};
use workload::RunLimit;

/// Most clients one run opens (each is a connection, and a thread for the baseline).
pub const CLIENTS_MAX: u64 = 1024;
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// A local SQLite file: WAL, synchronous=FULL, one connection per client.
    Sqlite,
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// What each client runs.
    #[arg(long, value_enum, default_value = "insert")]
    pub workload: Workload,
    /// Nodes to connect to, HOST:PORT, comma-separated (clients are spread over them).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Node host when --hosts is not given.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Node SQL port when --hosts is not given.
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// Databases (Paxos groups) to spread the clients over, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "main")]
    pub groups: Vec<String>,
    /// User name sent in the startup message.
    #[arg(long, default_value = "paxsql")]
    pub user: String,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 1)]
    pub clients: u64,
    /// Seconds to run (ignored when --ops is given).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Total operations over all clients, instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Read consistency of every session: local, lease or linearizable.
    #[arg(long, default_value = "lease", value_parser = ["local", "lease", "linearizable"])]
    pub consistency: String,
    /// Create the bench table and seed --rows rows in every group first.
    #[arg(long)]
    pub setup: bool,
    /// Rows that point reads and mixed updates choose from (seeded by --setup).
    #[arg(long, default_value_t = 1000)]
    pub rows: u64,
    /// Also run the same workload on a plain local SQLite file and print the ratio, plus the
    /// disk's fsync latency and the loopback round trip.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Directory for the baseline file and the fsync probe: put it on the cluster's disk.
    #[arg(long, default_value = ".")]
    pub baseline_dir: PathBuf,
    /// Instead of a workload: kill -9 the master of the first group and time the first
    /// acknowledged write through another node (needs --hosts and --http, same order).
    #[arg(long)]
    pub failover: bool,
    /// Connect every client to its group's master (found through --http) instead of
    /// spreading clients over --hosts: measures the groups without the forwarding hop.
    #[arg(long)]
    pub to_master: bool,
    /// The nodes' HTTP addresses, in the order of --hosts (for --failover and --to-master).
    #[arg(long, value_delimiter = ',')]
    pub http: Vec<String>,
    /// The cluster's --lease-ms, reported beside the failover time.
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// Print one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    fn hosts(&self) -> Vec<String> {
        if self.hosts.is_empty() {
            vec![format!("{}:{}", self.host, self.port)]
        } else {
            self.hosts.clone()
        }
    }

    async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let mut masters = std::collections::HashMap::new();
        if self.to_master {
            for group in &self.groups {
                let master = failover::master_sql_address(&self.hosts(), &self.http, group).await?;
                masters.insert(group.clone(), master);
            }
        }
        let hosts = self.hosts();
        (0..self.clients as usize)
            .map(|index| {
                let group = &self.groups[index % self.groups.len()];
                Target::new(
                    masters.get(group).unwrap_or(&hosts[index % hosts.len()]),
                    group,
                    &self.user,
                    &self.consistency,
                )
            })
            .collect()
    }

    fn limit(&self) -> Arc<RunLimit> {
        match self.ops {
            Some(ops) => RunLimit::new(None, Some(ops)),
            None => RunLimit::new(
                Some(Instant::now() + Duration::from_secs_f64(self.duration)),
                None,
            ),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            bail!(
                "--clients {} is out of range: use 1..={CLIENTS_MAX}",
                self.clients
            );
        }
        if self.ops.is_none() && !(self.duration > 0.0 && self.duration.is_finite()) {
            bail!("--duration must be a positive number of seconds");
        }
        if self.groups.is_empty() || self.groups.len() as u64 > self.clients {
            bail!("--groups needs at least one database name, and no more than --clients");
        }
        Ok(())
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.check()?;
    if args.failover {
        let report = failover::run(
            &args.hosts(),
            &args.http,
            &args.groups[0],
            &args.user,
            args.lease_ms,
        )
        .await?;
        report::print_failover(&report, args.json)?;
        return Ok(());
    }
    let report = bench(&args).await?;
    report::print(&report, args.json)
}

/// Runs the workload (and its baseline if asked) and returns what it measured.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let targets = args.targets().await?;
    if args.setup {
        for group in &args.groups {
            let target = Target::new(&args.hosts()[0], group, &args.user, &args.consistency)?;
            paxsql::setup(&target, args.rows).await?;
        }
    }
    let paxsql = run_paxsql(args, targets).await?;
    let (baseline, floor) = match args.baseline {
        Some(Baseline::Sqlite) => {
            let dir = args.baseline_dir.clone();
            let clients = args.clients as usize;
            let floor = tokio::task::spawn_blocking(move || baseline::measure_floor(&dir, clients))
                .await
                .context("the floor probe panicked")??;
            (Some(run_baseline(args).await?), Some(floor))
        }
        None => (None, None),
    };
    Ok(BenchReport::new(args, paxsql, baseline, floor))
}

async fn run_paxsql(args: &BenchArgs, targets: Vec<Target>) -> anyhow::Result<Summary> {
    let limit = args.limit();
    let progress = spawn_progress("paxsql", limit.clone(), args.quiet);
    let (workload, rows) = (args.workload, args.rows);
    let clients_limit = limit.clone();
    let (done, outcome) = tokio::sync::oneshot::channel();
    // The clients run on one thread of their own (a current-thread runtime): each query then
    // crosses no thread inside the bench, so the load generator takes less of the CPU it
    // shares with the nodes on one machine, and none of its wake-ups land in the figures.
    std::thread::Builder::new()
        .name("bench-clients".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the bench clients' runtime")
                .and_then(|runtime| {
                    runtime.block_on(drive_clients(targets, workload, rows, clients_limit))
                });
            let _ = done.send(result);
        })
        .context("cannot start the bench clients' thread")?;
    let outcome = outcome.await.context("the bench clients' thread panicked");
    limit.stop.store(true, Ordering::Relaxed);
    progress.abort();
    let (results, elapsed) = outcome??;
    Ok(summarize(results, elapsed))
}

/// Connects every client (setup is not measured), runs them all until the limit says stop and
/// answers their measurements with the time the run took.
async fn drive_clients(
    targets: Vec<Target>,
    workload: Workload,
    rows: u64,
    limit: Arc<RunLimit>,
) -> anyhow::Result<(Vec<ClientStats>, Duration)> {
    let mut clients = Vec::with_capacity(targets.len());
    for target in &targets {
        clients.push(paxsql::connect(target).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(targets.len());
    for (index, (target, client)) in targets.into_iter().zip(clients).enumerate() {
        tasks.push(tokio::spawn(paxsql::run_client(
            index as u64,
            target,
            client,
            workload,
            rows,
            limit.clone(),
        )));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.context("a bench client panicked")?);
    }
    Ok((results, started.elapsed()))
}

async fn run_baseline(args: &BenchArgs) -> anyhow::Result<Summary> {
    let file = baseline::BaselineFile::create(&args.baseline_dir)?;
    let path = file.path.clone();
    let rows = args.rows;
    tokio::task::spawn_blocking(move || baseline::setup(&path, rows))
        .await
        .context("the baseline setup panicked")??;
    let limit = args.limit();
    let started = Instant::now();
    let progress = spawn_progress("sqlite", limit.clone(), args.quiet);
    let mut threads = Vec::new();
    for index in 0..args.clients {
        let path = file.path.clone();
        let limit = limit.clone();
        let workload = args.workload;
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-sqlite-{index}"))
                .spawn(move || baseline::run_client(index, &path, workload, rows, limit))
                .context("cannot start a baseline client thread")?,
        );
    }
    let results = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a baseline client panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("the baseline join panicked")??;
    let elapsed = started.elapsed();
    progress.abort();
    drop(file);
    Ok(summarize(results, elapsed))
}

/// Prints `[label 3.0s] 1234 ops/s, 5678 ops, 0 errors` on stderr every second.
fn spawn_progress(
    label: &'static str,
    limit: Arc<RunLimit>,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let started = Instant::now();
        let mut last_done = 0;
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let done = limit.done.load(Ordering::Relaxed);
            eprintln!(
                "[{label} {:5.1}s] {:>8} ops/s  {:>9} ops  {} errors",
                started.elapsed().as_secs_f64(),
                done - last_done,
                done,
                limit.errors.load(Ordering::Relaxed)
            );
            last_done = done;
        }
    })
}
