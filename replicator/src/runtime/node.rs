//! [`Node`]: the transport plus one driver per configured group.
//!
//! The caller opens each group's log and builds its engine (`Core::new(config, &records)`),
//! then hands them over as [`GroupParts`]; the node wires them to the transport and returns a
//! [`GroupChannels`] per group for the SQLite side and the proxy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use paxsql_binlog::LogStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::paxos::{Config, NodeId};
use crate::runtime::engine::Engine;
use crate::runtime::error::RuntimeError;
use crate::runtime::group::{spawn_group, GroupChannels, GroupHandle, GroupSetup};
use crate::runtime::handshake::LocalIdentity;
use crate::runtime::log_writer::FatalHandler;
use crate::runtime::metrics::RuntimeMetrics;
use crate::runtime::transport::{Transport, TransportConfig};

/// The log format version this build presents in handshakes (until the binlog crate exports
/// its own constant, which should replace this one). A peer presenting another is refused
/// ("upgrade the older node"): its replicas could not replay this build's values.
/// - 2: a value may hold a client's SAVEPOINT, RELEASE or ROLLBACK TO (interactive
///   transactions); a version-1 replica refuses to replay them and would halt.
pub const LOG_FORMAT_VERSION: u32 = 2;

/// How one node is set up (the runtime's part of the command line). `Debug` never shows the
/// cluster secret.
#[derive(Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub incarnation: u64,
    pub cluster_name: String,
    /// The cluster gid if known from the data dir (0 until instance 0 is chosen or learned).
    pub cluster_gid: u64,
    /// The shared cluster secret (`--cluster-secret-file`), if any.
    pub cluster_secret: Option<Vec<u8>>,
    /// Every other node: id → peer address.
    pub peers: BTreeMap<NodeId, String>,
    /// This node's proxy and HTTP addresses, told to peers in the handshake.
    pub sql_addr: String,
    pub http_addr: String,
    pub lease_ms: u64,
    /// `--join`: this node is being added to a running cluster. It never proposes instance 0
    /// and has no member list until it learns one; it votes once a chosen list names it.
    pub join: bool,
    /// False for a node that forgot its promises (see [`Config::may_vote`]).
    pub may_vote: bool,
    pub log_format_version: u32,
    pub sqlite_version: String,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("incarnation", &self.incarnation)
            .field("cluster_name", &self.cluster_name)
            .field("cluster_gid", &self.cluster_gid)
            .field(
                "cluster_secret",
                &self.cluster_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("peers", &self.peers)
            .field("sql_addr", &self.sql_addr)
            .field("http_addr", &self.http_addr)
            .field("lease_ms", &self.lease_ms)
            .field("join", &self.join)
            .field("may_vote", &self.may_vote)
            .field("log_format_version", &self.log_format_version)
            .field("sqlite_version", &self.sqlite_version)
            .finish()
    }
}

impl NodeConfig {
    /// A configuration with the defaults (cluster "paxsql", lease 3,000 ms, no secret).
    pub fn new(node_id: NodeId, peers: BTreeMap<NodeId, String>) -> Self {
        NodeConfig {
            node_id,
            incarnation: 0,
            cluster_name: "paxsql".to_string(),
            cluster_gid: 0,
            cluster_secret: None,
            peers,
            sql_addr: String::new(),
            http_addr: String::new(),
            lease_ms: 3_000,
            join: false,
            may_vote: true,
            log_format_version: LOG_FORMAT_VERSION,
            sqlite_version: rusqlite::version().to_string(),
        }
    }

    /// This node and its peers, sorted: the members that choose instance 0.
    pub fn members(&self) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.peers.keys().copied().collect();
        members.push(self.node_id);
        members.sort_unstable();
        members
    }

    /// The core configuration of `group` on this node.
    pub fn core_config(&self, group: &str, seed: u64) -> Config {
        // A joining node learns its member list from the log: it must not found a cluster.
        let initial_members = if self.join {
            Vec::new()
        } else {
            self.members()
        };
        let mut config = Config::new(self.node_id, group, initial_members, seed);
        config.may_vote = self.may_vote;
        config.cluster_name = self.cluster_name.clone();
        config.cluster_gid = self.cluster_gid;
        config.lease_ms = self.lease_ms;
        config
    }

    fn identity(&self) -> LocalIdentity {
        LocalIdentity {
            cluster_name: self.cluster_name.clone(),
            node_id: self.node_id,
            incarnation: self.incarnation,
            log_format_version: self.log_format_version,
            sqlite_version: self.sqlite_version.clone(),
            sql_addr: self.sql_addr.clone(),
            http_addr: self.http_addr.clone(),
            secret: self.cluster_secret.as_deref().map(Arc::from),
        }
    }
}

/// One group's engine and log, built by the caller.
pub struct GroupParts {
    pub name: String,
    pub engine: Box<dyn Engine>,
    pub log: Box<dyn LogStore>,
}

/// A running node.
pub struct Node {
    pub transport: Transport,
    /// Per group: its handle and the receivers for the state machine and checkpoint side.
    /// Take the receivers out with `BTreeMap::remove`; [`Node::handle`] keeps working.
    pub groups: BTreeMap<String, GroupChannels>,
    pub metrics: Arc<RuntimeMetrics>,
    handles: BTreeMap<String, GroupHandle>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts the transport on `listener` and one driver per group. Everything stops when
    /// `shutdown` completes (or [`Node::shutdown`] is called). `fatal` is called on a log
    /// error (the node passes [`crate::runtime::log_writer::abort_process`]).
    pub fn start(
        config: NodeConfig,
        listener: TcpListener,
        groups: Vec<GroupParts>,
        fatal: FatalHandler,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Node, RuntimeError> {
        let metrics = Arc::new(RuntimeMetrics::new());
        let cancel = CancellationToken::new();
        let transport_config = TransportConfig {
            identity: config.identity(),
            peers: config.peers.clone(),
            cluster_gid: config.cluster_gid,
        };
        let (transport, transport_task) =
            Transport::start(transport_config, listener, metrics.clone(), cancel.clone())?;
        let mut tasks = vec![transport_task];
        let mut channels = BTreeMap::new();
        for parts in groups {
            let inbox = transport.register_group(&parts.name)?;
            let (group, task) = spawn_group(GroupSetup {
                name: parts.name.clone(),
                engine: parts.engine,
                log: parts.log,
                outbox: Arc::new(transport.clone()),
                inbox,
                metrics: metrics.clone(),
                fatal: fatal.clone(),
                cancel: cancel.clone(),
            })?;
            tasks.push(task);
            channels.insert(parts.name, group);
        }
        let handles: BTreeMap<String, GroupHandle> = channels
            .iter()
            .map(|(name, group)| (name.clone(), group.handle.clone()))
            .collect();
        if let Some(gid_source) = handles.get("main").or_else(|| handles.values().next()) {
            tasks.push(tokio::spawn(follow_cluster_gid(
                gid_source.clone(),
                transport.clone(),
                cancel.clone(),
            )));
        }
        for handle in handles.values() {
            tasks.push(tokio::spawn(follow_member_addrs(
                handle.clone(),
                transport.clone(),
                cancel.clone(),
            )));
        }
        let shutdown_cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => shutdown_cancel.cancel(),
                _ = shutdown_cancel.cancelled() => {}
            }
        });
        Ok(Node {
            transport,
            groups: channels,
            metrics,
            handles,
            cancel,
            tasks,
        })
    }

    /// The handle of a group, if it is configured.
    pub fn handle(&self, group: &str) -> Option<&GroupHandle> {
        self.handles.get(group)
    }

    pub fn handles(&self) -> &BTreeMap<String, GroupHandle> {
        &self.handles
    }

    /// Asks every task to stop.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until every task has stopped (after shutdown).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Keeps the gid presented in handshakes equal to the one the group learned in instance 0.
async fn follow_cluster_gid(group: GroupHandle, transport: Transport, cancel: CancellationToken) {
    let mut status = group.status_watch();
    loop {
        let cluster_gid = status.borrow_and_update().cluster_gid;
        if cluster_gid != 0 && cluster_gid != transport.cluster_gid() {
            transport.set_cluster_gid(cluster_gid);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// Connects to members added through Paxos: the chosen `Membership` values carry their peer
/// addresses, and the transport starts talking to each new one.
async fn follow_member_addrs(group: GroupHandle, transport: Transport, cancel: CancellationToken) {
    let mut status = group.status_watch();
    loop {
        let member_addrs = status.borrow_and_update().member_addrs.clone();
        transport.add_peers(&member_addrs);
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}
