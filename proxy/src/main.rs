//! `paxsql`: run a node, a local dev cluster, or talk to one.

use clap::{Parser, Subcommand};

use paxsql_proxy::cli;

/// paxsql: SQLite as a strongly consistent, automatically failing-over cluster.
///
/// Clients connect to any node with a PostgreSQL client (psql, psycopg, JDBC…) and write
/// SQLite SQL. Start with `paxsql dev-cluster`, then `psql -h 127.0.0.1 -p 5433 main`.
#[derive(Debug, Parser)]
#[command(name = "paxsql", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Node(Box<cli::node::NodeArgs>),
    /// Start N nodes on loopback as separate processes; Ctrl-C stops them all.
    DevCluster(cli::dev_cluster::DevClusterArgs),
    /// Show a node's role, master, and how far it has chosen and applied.
    Status(cli::status::StatusArgs),
    /// Membership changes, checkpoints on demand, the checkpoint streaming benchmark.
    Admin(cli::admin::AdminArgs),
    /// Drive load over N connections; report ops/s, latency percentiles, errors.
    Bench(Box<cli::bench::BenchArgs>),
    /// A sqlite3-style shell over the PostgreSQL wire, to any node.
    Shell(cli::shell::ShellArgs),
    /// Copy a group, online and consistent, into a plain SQLite file.
    Backup(cli::backup::BackupArgs),
    /// Load a plain SQLite file into a (fresh) group through the cluster.
    Restore(cli::restore::RestoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAXSQL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        // The node sizes its own runtime (--worker-threads).
        Command::Node(args) => cli::node::run(*args),
        Command::Admin(args) => block_on(cli::admin::run(args)),
        Command::DevCluster(args) => block_on(cli::dev_cluster::run(args)),
        Command::Status(args) => block_on(cli::status::run(args)),
        Command::Bench(args) => block_on(cli::bench::run(*args)),
        Command::Shell(args) => block_on(cli::shell::run(args)),
        Command::Backup(args) => block_on(cli::backup::run(args)),
        Command::Restore(args) => block_on(cli::restore::run(args)),
    }
}

/// Runs a command's future on a default runtime (one worker per CPU).
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(command)
}
