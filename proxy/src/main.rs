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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => cli::node::run(*args).await,
            Command::Admin(args) => cli::admin::run(args).await,
            Command::DevCluster(args) => cli::dev_cluster::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::Bench(args) => cli::bench::run(*args).await,
            Command::Shell(args) => cli::shell::run(args).await,
            Command::Backup(args) => cli::backup::run(args).await,
            Command::Restore(args) => cli::restore::run(args).await,
        }
    })
}
