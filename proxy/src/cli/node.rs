//! `paxsql node`: run one node of a cluster.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::RawNodeConfig;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// A TOML file with the same keys as these flags (`id = 1`, `data-dir = "…"`); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id: a unique small integer (1, 2, 3…).
    #[arg(long)]
    pub id: Option<u32>,
    /// Where this node keeps its logs, databases and checkpoints. Nothing outside it is written.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL-protocol address for clients [default: 127.0.0.1:5433].
    #[arg(long)]
    pub sql: Option<String>,
    /// Address other nodes connect to for Paxos traffic [default: 127.0.0.1:5533].
    #[arg(long)]
    pub peer: Option<String>,
    /// HTTP address for /status, /metrics and /ready [default: 127.0.0.1:5633].
    #[arg(long)]
    pub http: Option<String>,
    /// Every member's peer address, this node included: 1=HOST:PORT,2=HOST:PORT,…
    #[arg(long)]
    pub peers: Option<String>,
    /// Databases (Paxos groups) to serve, comma separated [default: main].
    #[arg(long)]
    pub groups: Option<String>,
    /// Cluster name; peers with another name are refused [default: paxsql].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Master lease in milliseconds; failover takes about this plus one second [default: 3000].
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// Take a checkpoint every N chosen instances [default: 10000].
    #[arg(long)]
    pub checkpoint_interval_instances: Option<u64>,
    /// Keep this many instances of log below the newest checkpoint [default: 1000].
    #[arg(long)]
    pub log_hold_instances: Option<u64>,
    /// File holding the shared cluster secret: peer and forwarding connections prove it.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding an admin token (e.g. `openssl rand -hex 32 > FILE`): the HTTP port's admin
    /// and data routes (/admin/*, /backup) then require `Authorization: Bearer TOKEN`, which
    /// `paxsql admin` and `paxsql backup` send with `--admin-token-file` or PAXSQL_ADMIN_TOKEN.
    /// /status, /metrics and /ready stay open. Without it those routes are open to anyone who
    /// reaches --http. Needs --cluster-secret-file as well (forwarding and checkpoint streams
    /// on the same port prove the secret).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Join an existing cluster as a new, empty member (bootstraps from a checkpoint).
    #[arg(long)]
    pub join: bool,
    /// Most client (SQL) sessions at once; more get SQLSTATE 53300 [default: 100].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// TOML file of `name = "password"` lines: SQL clients must log in with SCRAM-SHA-256.
    #[arg(long)]
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on the SQL port (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the SQL port (with --tls-cert).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Close SQL sessions idle (outside a transaction) this long, with a FATAL 57P05.
    #[arg(long)]
    pub idle_session_timeout_ms: Option<u64>,
    /// Async worker threads for client sessions, Paxos drivers and peer links [default: one
    /// per CPU]. Each group's SQLite writer and log writer have threads of their own besides.
    /// Several nodes on one machine: one worker each costs less CPU per write under load, but
    /// answers a lone client's reads later (see docs/OPERATIONS.md, "CPU: worker threads").
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Longest one client statement may run on the master's writer before it is stopped
    /// (SQLSTATE 54000; a stopped write is rolled back) [default: 10000, at most 15000: a
    /// client waits 20 s for a write's outcome]. While it runs no other write to its database
    /// can; replays on followers are never stopped, nor are CREATE INDEX, REINDEX, ANALYZE,
    /// DROP TABLE and DROP INDEX (they grow with the data and cannot be split).
    #[arg(long)]
    pub statement_time_max_ms: Option<u64>,
}

impl NodeArgs {
    /// The flags as raw config keys (unset flags stay unset so the file's values survive).
    pub fn to_raw(&self) -> RawNodeConfig {
        RawNodeConfig {
            id: self.id,
            data_dir: self.data_dir.clone(),
            sql: self.sql.clone(),
            peer: self.peer.clone(),
            http: self.http.clone(),
            peers: self.peers.clone(),
            groups: self.groups.clone(),
            cluster_name: self.cluster_name.clone(),
            lease_ms: self.lease_ms,
            checkpoint_interval_instances: self.checkpoint_interval_instances,
            log_hold_instances: self.log_hold_instances,
            cluster_secret_file: self.cluster_secret_file.clone(),
            admin_token_file: self.admin_token_file.clone(),
            join: self.join.then_some(true),
            max_connections: self.max_connections,
            users_file: self.users_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            idle_session_timeout_ms: self.idle_session_timeout_ms,
            worker_threads: self.worker_threads,
            statement_time_max_ms: self.statement_time_max_ms,
        }
    }

    /// File (if any) overlaid with flags, validated.
    pub fn resolve(&self) -> anyhow::Result<crate::config::NodeConfig> {
        let base = match &self.config {
            Some(path) => RawNodeConfig::from_file(path)?,
            None => RawNodeConfig::default(),
        };
        base.overlay(self.to_raw()).validate()
    }
}

/// Runs the node until SIGINT/SIGTERM, on a runtime of its configured size.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(count) = config.worker_threads {
        runtime.worker_threads(count);
    }
    let runtime = runtime
        .build()
        .context("cannot start the node's async runtime")?;
    runtime.block_on(crate::node::run(config))
}
