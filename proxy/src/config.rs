//! The configuration of one `paxsql node`: from flags, or from a TOML file with the same keys.
//!
//! Everything is validated here, before anything starts, so a typo is one clear error at startup
//! instead of a node that half works.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use paxsql_replicator::limits::{STATEMENT_TIME_MAX_MS, STATEMENT_TIME_MAX_MS_LIMIT};
use serde::Deserialize;

/// Largest node id (ids are small positive integers: 1, 2, 3…).
pub const NODE_ID_MAX: u32 = 1_000;
/// Most groups one node serves.
pub const GROUPS_MAX: usize = 64;
/// Bounds on `--lease-ms`: shorter leases flap under load, longer ones slow failover.
pub const LEASE_MS_MIN: u64 = 500;
pub const LEASE_MS_MAX: u64 = 60_000;
/// Default lease (DESIGN: 3,000 ms; failover goal is lease + 1 s).
pub const LEASE_MS_DEFAULT: u64 = 3_000;
pub const CHECKPOINT_INTERVAL_INSTANCES_DEFAULT: u64 = 10_000;
pub const LOG_HOLD_INSTANCES_DEFAULT: u64 = 1_000;
/// Most async worker threads a node may ask for.
pub const WORKER_THREADS_MAX: usize = 256;

/// A validated node configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub node_id: u32,
    pub data_dir: PathBuf,
    pub sql_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Every member's peer address, this node included, by node id.
    pub peers: BTreeMap<u32, String>,
    pub groups: Vec<String>,
    pub cluster_name: String,
    pub lease_ms: u64,
    pub checkpoint_interval_instances: u64,
    pub log_hold_instances: u64,
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding the admin token the HTTP port's admin and data routes require.
    pub admin_token_file: Option<PathBuf>,
    /// Join an existing cluster as a new member (bootstrap from a checkpoint).
    pub join: bool,
    /// Async worker threads (client sessions, Paxos drivers, peer links). `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// How long one client statement may run on the master's writer.
    pub statement_time_max_ms: u64,
    /// The SQL (PostgreSQL-wire) server's own settings.
    pub sql_server: SqlServerConfig,
}

/// Settings of the PostgreSQL-wire server (`crate::pg`); see docs/CLIENTS.md.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SqlServerConfig {
    /// Client sessions at once; more get 53300. `None`: the server's default.
    pub max_connections: Option<usize>,
    /// TOML file of `name = "password"` lines; with it, SCRAM-SHA-256 is required.
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain and private key; both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Close sessions idle (outside a transaction) this long.
    pub idle_session_timeout_ms: Option<u64>,
}

/// The raw keys, shared by the TOML file and the command line.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNodeConfig {
    pub id: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub sql: Option<String>,
    pub peer: Option<String>,
    pub http: Option<String>,
    pub peers: Option<String>,
    pub groups: Option<String>,
    pub cluster_name: Option<String>,
    pub lease_ms: Option<u64>,
    pub checkpoint_interval_instances: Option<u64>,
    pub log_hold_instances: Option<u64>,
    pub cluster_secret_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    pub join: Option<bool>,
    pub max_connections: Option<usize>,
    pub users_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub idle_session_timeout_ms: Option<u64>,
    pub worker_threads: Option<usize>,
    pub statement_time_max_ms: Option<u64>,
}

impl RawNodeConfig {
    /// Reads a TOML file with the same keys as the flags (`id = 1`, `data-dir = "…"`, …).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!("config file {} is not valid: keys are the flag names (id, data-dir, sql, peer, http, peers, groups, lease-ms…)", path.display())
        })
    }

    /// Flags win over the file: `other`'s set keys replace `self`'s.
    pub fn overlay(mut self, other: RawNodeConfig) -> Self {
        macro_rules! take {
            ($($field:ident),*) => { $( if other.$field.is_some() { self.$field = other.$field; } )* };
        }
        take!(
            id,
            data_dir,
            sql,
            peer,
            http,
            peers,
            groups,
            cluster_name,
            lease_ms,
            checkpoint_interval_instances,
            log_hold_instances,
            cluster_secret_file,
            admin_token_file,
            join,
            max_connections,
            users_file,
            tls_cert,
            tls_key,
            idle_session_timeout_ms,
            worker_threads,
            statement_time_max_ms
        );
        self
    }

    /// Checks every key and fills defaults.
    pub fn validate(self) -> anyhow::Result<NodeConfig> {
        let node_id = self
            .id
            .context("missing --id: every node needs a unique id from 1 up")?;
        if node_id == 0 || node_id > NODE_ID_MAX {
            bail!("--id {node_id} is out of range: use 1..={NODE_ID_MAX}");
        }
        let data_dir = self
            .data_dir
            .context("missing --data-dir: where this node keeps its log and database")?;
        let sql_addr = parse_addr("--sql", self.sql.as_deref().unwrap_or("127.0.0.1:5433"))?;
        let peer_addr = parse_addr("--peer", self.peer.as_deref().unwrap_or("127.0.0.1:5533"))?;
        let http_addr = parse_addr("--http", self.http.as_deref().unwrap_or("127.0.0.1:5633"))?;
        let peers = match self.peers.as_deref() {
            Some(text) => parse_peers(text)?,
            None => BTreeMap::from([(node_id, peer_addr.to_string())]),
        };
        if !peers.contains_key(&node_id) {
            bail!("--peers does not list this node's own id {node_id}: list every member, e.g. 1=127.0.0.1:5533,2=127.0.0.1:5534,3=127.0.0.1:5535");
        }
        let groups = parse_groups(self.groups.as_deref().unwrap_or("main"))?;
        let lease_ms = self.lease_ms.unwrap_or(LEASE_MS_DEFAULT);
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&lease_ms) {
            bail!("--lease-ms {lease_ms} is out of range: use {LEASE_MS_MIN}..={LEASE_MS_MAX} (default {LEASE_MS_DEFAULT})");
        }
        let checkpoint_interval_instances = self
            .checkpoint_interval_instances
            .unwrap_or(CHECKPOINT_INTERVAL_INSTANCES_DEFAULT);
        if checkpoint_interval_instances == 0 {
            bail!("--checkpoint-interval-instances must be at least 1");
        }
        let cluster_name = self.cluster_name.unwrap_or_else(|| "paxsql".to_string());
        if cluster_name.is_empty() || cluster_name.len() > 63 {
            bail!("--cluster-name must be 1 to 63 characters");
        }
        let worker_threads = match self.worker_threads {
            Some(count) if count == 0 || count > WORKER_THREADS_MAX => {
                bail!("--worker-threads {count} is out of range: use 1..={WORKER_THREADS_MAX} (default: one per CPU)")
            }
            other => other,
        };
        let statement_time_max_ms = match self.statement_time_max_ms {
            None => STATEMENT_TIME_MAX_MS,
            Some(ms) if (1..=STATEMENT_TIME_MAX_MS_LIMIT).contains(&ms) => ms,
            Some(ms) => bail!(
                "--statement-time-max-ms {ms} is out of range: use 1..={STATEMENT_TIME_MAX_MS_LIMIT} (default {STATEMENT_TIME_MAX_MS})"
            ),
        };
        let sql_server = SqlServerConfig {
            max_connections: match self.max_connections {
                Some(0) => bail!("--max-connections must be at least 1"),
                other => other,
            },
            users_file: self.users_file,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => bail!("--tls-cert and --tls-key go together: give both PEM files, or neither"),
            },
            idle_session_timeout_ms: self.idle_session_timeout_ms,
        };
        Ok(NodeConfig {
            node_id,
            data_dir,
            sql_addr,
            peer_addr,
            http_addr,
            peers,
            groups,
            cluster_name,
            lease_ms,
            checkpoint_interval_instances,
            log_hold_instances: self
                .log_hold_instances
                .unwrap_or(LOG_HOLD_INSTANCES_DEFAULT),
            cluster_secret_file: self.cluster_secret_file,
            admin_token_file: self.admin_token_file,
            join: self.join.unwrap_or(false),
            worker_threads,
            statement_time_max_ms,
            sql_server,
        })
    }
}

fn parse_addr(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().with_context(|| {
        format!("{flag} {text:?} is not an address: use HOST:PORT, e.g. 127.0.0.1:5433")
    })
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut peers = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, addr) = entry
            .split_once('=')
            .with_context(|| format!("--peers entry {entry:?} must look like ID=HOST:PORT"))?;
        let id: u32 = id
            .trim()
            .parse()
            .with_context(|| format!("--peers entry {entry:?}: {id:?} is not a node id"))?;
        if id == 0 || id > NODE_ID_MAX {
            bail!("--peers entry {entry:?}: node ids run from 1 to {NODE_ID_MAX}");
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            bail!("--peers entry {entry:?}: {addr:?} needs a port (HOST:PORT)");
        }
        if peers.insert(id, addr.to_string()).is_some() {
            bail!("--peers lists node {id} twice");
        }
    }
    if peers.is_empty() {
        bail!("--peers is empty: list every member as ID=HOST:PORT");
    }
    Ok(peers)
}

/// Parses `main,orders`: names match `[a-z0-9_]{1,63}`.
pub fn parse_groups(text: &str) -> anyhow::Result<Vec<String>> {
    let mut groups: Vec<String> = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        if !is_valid_group_name(name) {
            bail!("--groups: {name:?} is not a valid group name: use 1 to 63 of a-z, 0-9 and _");
        }
        if groups.iter().any(|group| group == name) {
            bail!("--groups lists {name:?} twice");
        }
        groups.push(name.to_string());
    }
    if groups.is_empty() {
        bail!("--groups is empty: name at least one database, e.g. main");
    }
    if groups.len() > GROUPS_MAX {
        bail!(
            "--groups lists {} groups; at most {GROUPS_MAX} are supported",
            groups.len()
        );
    }
    Ok(groups)
}

/// Group (database) names: `[a-z0-9_]{1,63}`.
pub fn is_valid_group_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: u32) -> RawNodeConfig {
        RawNodeConfig {
            id: Some(id),
            data_dir: Some(PathBuf::from("/tmp/x")),
            peers: Some("1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn valid_config_gets_defaults() {
        let config = raw(2).validate().expect("valid");
        assert_eq!(config.groups, vec!["main".to_string()]);
        assert_eq!(config.lease_ms, LEASE_MS_DEFAULT);
        assert_eq!(config.peers.len(), 3);
    }

    #[test]
    fn peers_must_include_self_and_be_well_formed() {
        assert!(raw(4).validate().is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=nohost").is_err());
        assert!(parse_peers("").is_err());
    }

    #[test]
    fn group_names_are_checked() {
        assert!(parse_groups("main,orders_2").is_ok());
        assert!(parse_groups("Main").is_err());
        assert!(parse_groups("a-b").is_err());
        assert!(parse_groups(&"a".repeat(64)).is_err());
        assert!(parse_groups("main,main").is_err());
    }

    #[test]
    fn the_statement_time_limit_is_bounded_and_read_from_the_file() {
        let default = raw(1).validate().expect("valid");
        assert_eq!(default.statement_time_max_ms, STATEMENT_TIME_MAX_MS);
        for refused in [0, STATEMENT_TIME_MAX_MS_LIMIT + 1] {
            let mut config = raw(1);
            config.statement_time_max_ms = Some(refused);
            let error = config.validate().expect_err("out of range").to_string();
            assert!(error.contains("--statement-time-max-ms"), "{error}");
        }
        let file: RawNodeConfig = toml::from_str("statement-time-max-ms = 2500").expect("parses");
        let config = raw(1).overlay(file).validate().expect("valid");
        assert_eq!(config.statement_time_max_ms, 2_500);
    }

    #[test]
    fn lease_bounds_are_enforced() {
        let mut config = raw(1);
        config.lease_ms = Some(10);
        assert!(config.validate().is_err());
    }

    #[test]
    fn worker_threads_are_bounded_and_read_from_the_file() {
        assert_eq!(raw(1).validate().expect("valid").worker_threads, None);
        for refused in [0, WORKER_THREADS_MAX + 1] {
            let mut config = raw(1);
            config.worker_threads = Some(refused);
            let error = config.validate().expect_err("out of range").to_string();
            assert!(error.contains("--worker-threads"), "{error}");
        }
        let file: RawNodeConfig = toml::from_str("worker-threads = 2").expect("parses");
        let config = raw(1).overlay(file).validate().expect("valid");
        assert_eq!(config.worker_threads, Some(2));
    }

    #[test]
    fn toml_keys_match_flags_and_flags_win() {
        let file: RawNodeConfig =
            toml::from_str("id = 1\ndata-dir = \"/d\"\nlease-ms = 2000\ngroups = \"main,orders\"")
                .expect("parses");
        let merged = file.overlay(RawNodeConfig {
            lease_ms: Some(4000),
            ..Default::default()
        });
        let config = merged.validate().expect("valid");
        assert_eq!(config.lease_ms, 4000);
        assert_eq!(config.groups.len(), 2);
        assert!(toml::from_str::<RawNodeConfig>("bogus = 1").is_err());
    }
}
