//! One running node: the replicator's groups, the SQL front end and the HTTP endpoint.
//!
//! Start-up order matters:
//! 1. Each group's log is opened (a torn tail is cut; corruption stops the node) and its
//!    SQLite replica is brought up to the log's chosen values *before* the core starts, so the
//!    core's view ("everything in my log is delivered") holds. If instead the replica is
//!    *ahead* of the log (Chosen records are appended without their own fsync and a crash lost
//!    the tail), the replica is synced and its meta written to the log as a `Meta` record:
//!    the core stands on it like on a checkpoint (`stand_on_replica`).
//! 2. The Paxos runtime starts (transport + one driver per group), then one SQL service per
//!    group consumes chosen values.
//! 3. Only then do the SQL and HTTP ports open.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use paxsql_binlog::{FileLog, FileLogOptions, LogStore, Record, RecordKind};
use paxsql_replicator::paxos::{recovery, CheckpointMeta, Core};
use paxsql_replicator::runtime::log_writer::abort_process;
use paxsql_replicator::runtime::node::{GroupParts, Node, NodeConfig as RuntimeConfig};
use paxsql_replicator::service::SqlService;
use paxsql_replicator::sqlite::{Database, DatabaseOptions};
use paxsql_schema::{ChosenValue, Message};
use tokio::net::TcpListener;

use crate::admin_routes::NodeAdmin;
use crate::backend::Backend;
use crate::config::NodeConfig;
use crate::forward::auth::ForwardCredentials;
use crate::forward::server::ForwardServer;
use crate::membership::Membership;
use crate::node_backend::NodeBackend;
use crate::routing::{RoutingBackend, Topology};
use crate::status::NodeStatus;
use paxsql_replicator::service::checkpoint_stream::PeerIdentity;
use paxsql_replicator::service::checkpoints::{
    CheckpointOptions, Checkpoints, CHECKPOINTS_KEPT_DEFAULT,
};

/// The identity a data dir belongs to (`DIR/node.toml`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Identity {
    node_id: u32,
    cluster_name: String,
    incarnation: u64,
    /// Every group this data dir has opened a log for. `None` in a `node.toml` written before
    /// the list existed (then every group counts as seen). A group listed here whose log
    /// directory is missing lost its log; a group not listed is new (added to `--groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<String>>,
}

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::env::set_var("TZ", "UTC");
    let cluster_secret = read_cluster_secret(&config)?;
    let http_guard = Arc::new(http_guard(&config, cluster_secret.clone())?);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;
    let (mut identity, ran_before) = load_identity(&config)?;
    // A node.toml from before the group list: every group it serves counts as seen.
    let groups_unlisted = identity.groups.is_none();
    let fatal = abort_process();

    let mut parts = Vec::new();
    let mut databases = BTreeMap::new();
    // Groups whose startup stood on the replica over instances the log lost.
    let mut stood_on_replica = BTreeSet::new();
    for group in &config.groups {
        // Before opening: opening creates a missing log directory.
        let log_existed = config.data_dir.join(group).join("log").is_dir();
        let seen_before = ran_before
            && (groups_unlisted
                || identity
                    .groups
                    .as_ref()
                    .is_some_and(|groups| groups.contains(group)));
        let (mut log, database) = open_group(&config, group)?;
        remember_group(&config, &mut identity, group)?;
        let seed = process_seed(config.node_id);
        let runtime_config = runtime_config(&config, &identity);
        let mut records = all_records(&log)?;
        let mut core_config = runtime_config.core_config(group, seed);
        let log_state = LogState {
            existed: log_existed,
            records: &records,
        };
        core_config.may_vote = may_vote(&config, seen_before, log_state, &database, group)?;
        if recovery::state_machine_ahead(&core_config, &records, database.applied_instance()) {
            records.push(stand_on_replica(&mut log, &database, group)?);
            stood_on_replica.insert(group.clone());
        }
        let core = Core::new(core_config, &records);
        parts.push(GroupParts {
            name: group.clone(),
            engine: Box::new(core),
            log: Box::new(log),
        });
        databases.insert(group.clone(), database);
    }

    let peer_listener = TcpListener::bind(config.peer_addr).await.with_context(|| {
        format!(
            "cannot listen on --peer {}: is another node using it?",
            config.peer_addr
        )
    })?;
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    };
    let mut peer_runtime_config = runtime_config(&config, &identity);
    peer_runtime_config.cluster_secret = cluster_secret.as_deref().map(<[u8]>::to_vec);
    let mut node = Node::start(
        peer_runtime_config,
        peer_listener,
        parts,
        fatal.clone(),
        shutdown,
    )
    .context("cannot start the Paxos runtime")?;

    let mut services = BTreeMap::new();
    let mut checkpoints = BTreeMap::new();
    for (group, database) in databases {
        let channels = node
            .groups
            .remove(&group)
            .expect("every configured group has channels");
        let group_index = config.groups.iter().position(|name| *name == group);
        paxsql_replicator::runtime::placement::spawn_master_preference(
            channels.handle.clone(),
            config.node_id,
            group_index.expect("the group is configured"),
        );
        let service = SqlService::start(
            config.node_id,
            database,
            channels.handle,
            channels.deliveries,
            fatal.clone(),
        )
        .with_context(|| format!("cannot start the writer of group {group}"))?;
        let checkpoint_options = CheckpointOptions {
            interval_instances: config.checkpoint_interval_instances,
            hold_instances: config.log_hold_instances,
            keep_max: CHECKPOINTS_KEPT_DEFAULT,
            // Bootstraps prove the cluster secret to the peer they fetch from.
            peer_identity: cluster_secret.clone().map(|secret| PeerIdentity {
                node_id: config.node_id,
                secret,
            }),
        };
        let group_checkpoints = Checkpoints::start(
            &group,
            config.data_dir.join(&group).join("checkpoints"),
            checkpoint_options,
            service.clone(),
        )
        .with_context(|| format!("cannot create the checkpoints folder of group {group}"))?;
        let transport = node.transport.clone();
        let peer_http: Arc<dyn Fn(u32) -> Option<String> + Send + Sync> =
            Arc::new(move |peer| transport.peer_info(peer).map(|info| info.http_addr));
        tokio::spawn(
            group_checkpoints
                .clone()
                .serve_notices(channels.checkpoints_needed, peer_http),
        );
        if stood_on_replica.contains(&group) {
            tokio::spawn(checkpoint_past_the_gap(
                group.clone(),
                group_checkpoints.clone(),
            ));
        }
        checkpoints.insert(group.clone(), group_checkpoints);
        services.insert(group, service);
    }
    let local = Arc::new(NodeBackend::new(services));
    let topology = Arc::new(NodeTopology {
        node_id: config.node_id,
        local: local.clone(),
        transport: node.transport.clone(),
        own_http: advertised(&config, config.http_addr),
        master_wait: Duration::from_millis(config.lease_ms * 2 + 1_000),
    });
    // Forwarding connections prove the same cluster secret as peer connections.
    let forward_credentials = ForwardCredentials {
        node_id: config.node_id,
        secret: cluster_secret,
    };
    let routing: Arc<dyn Backend> = Arc::new(RoutingBackend::new(
        local.clone(),
        topology,
        forward_credentials.clone(),
    ));
    let status = Arc::new(NodeStatus::new(
        config.clone(),
        local.clone(),
        node.metrics.clone(),
    ));
    let status = Arc::new(NodeAdmin {
        guard: http_guard,
        status,
        checkpoints,
        membership: Arc::new(Membership {
            node_id: config.node_id,
            backend: local.clone(),
        }),
    });

    let sql_listener = TcpListener::bind(config.sql_addr).await.with_context(|| {
        format!(
            "cannot listen on --sql {}: is another node using it?",
            config.sql_addr
        )
    })?;
    let http_listener = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "cannot listen on --http {}: is another node using it?",
            config.http_addr
        )
    })?;
    tracing::info!(
        node_id = config.node_id,
        sql = %config.sql_addr,
        peer = %config.peer_addr,
        http = %config.http_addr,
        groups = ?config.groups,
        "paxsql node started"
    );
    let sql_task = tokio::spawn(crate::pg::serve(
        sql_listener,
        routing,
        crate::pg::ServerOptions::from_config(&config.sql_server)?,
        wait_stop(stop_receiver.clone()),
    ));
    let forward = Arc::new(ForwardServer {
        backend: local,
        credentials: forward_credentials,
    });
    let http_task = tokio::spawn(crate::http::serve(
        http_listener,
        status,
        Some(forward),
        wait_stop(stop_receiver.clone()),
    ));

    wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_sender.send(true);
    node.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = sql_task.await;
        let _ = http_task.await;
    })
    .await;
    Ok(())
}

async fn wait_stop(mut receiver: tokio::sync::watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// What the node found of a group's log at startup.
struct LogState<'a> {
    /// The log directory was there before this start (opening creates a missing one).
    existed: bool,
    records: &'a [Record],
}

/// DESIGN "Rules": a node whose group log is gone although it ran that group before (`node.toml`
/// lists it; a group newly added to `--groups` starts fresh and votes) lost its promises. It must not vote; it only learns until an operator replaces
/// it (`paxsql admin replace-member`, then a fresh data dir with `--join`). A node started with
/// `--join` is a new incarnation that never promised anything.
///
/// Two shapes of "gone": the log directory is missing although the replica holds data (someone
/// moved the log alone aside: the replica must not let the node vote with a blank acceptor), or
/// log and replica are both empty. A log directory that exists but holds no record, next to a
/// replica with data, is a crash before the log's first sync: nothing it held was promised
/// (every promise is synced before it leaves), so the node may vote once it stands on its
/// replica.
fn may_vote(
    config: &NodeConfig,
    seen_before: bool,
    log: LogState<'_>,
    database: &Database,
    group: &str,
) -> anyhow::Result<bool> {
    // Remembered across restarts: once the log has records again (learned, or the replica's
    // meta) the loss no longer shows, but the promises stay forgotten.
    let marker = config.data_dir.join(group).join(NO_VOTE_MARKER);
    if marker.exists() {
        tracing::error!(
            group,
            marker = %marker.display(),
            "this node forgot its Paxos promises earlier and only learns, never votes; replace it \
             (`paxsql admin replace-member`, then a fresh data dir with --join)"
        );
        return Ok(false);
    }
    let replica_empty = database.applied_instance().is_none();
    let log_lost = !log.existed && !replica_empty;
    let forgot =
        seen_before && !config.join && log.records.is_empty() && (replica_empty || log_lost);
    if forgot {
        write_durably(
            &marker,
            b"this node forgot its Paxos promises; replace it\n",
        )?;
        tracing::error!(
            group,
            data_dir = %config.data_dir.display(),
            "this data dir ran before but its Paxos log is gone: the node forgot its promises \
             and will only learn, never vote. Replace it: `paxsql admin replace-member --old N \
             --node M --peer HOST:PORT`, then start the new node on an empty data dir with --join"
        );
    }
    Ok(!forgot)
}

/// File in a group's directory that keeps a node that forgot its promises from voting.
const NO_VOTE_MARKER: &str = "forgot-promises";

/// Checks (or creates) `DIR/node.toml`: a data dir belongs to one node id for its whole life.
/// Answers the identity and whether the file existed already (the data dir ran before).
fn load_identity(config: &NodeConfig) -> anyhow::Result<(Identity, bool)> {
    let path = config.data_dir.join("node.toml");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let identity: Identity =
            toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
        if identity.node_id != config.node_id {
            bail!(
                "{} belongs to node {}, not node {}: use that node's --id, or another --data-dir",
                config.data_dir.display(),
                identity.node_id,
                config.node_id
            );
        }
        if identity.cluster_name != config.cluster_name {
            bail!(
                "{} belongs to cluster {:?}, not {:?}",
                config.data_dir.display(),
                identity.cluster_name,
                config.cluster_name
            );
        }
        return Ok((identity, true));
    }
    let identity = Identity {
        node_id: config.node_id,
        cluster_name: config.cluster_name.clone(),
        incarnation: process_seed(config.node_id) >> 1,
        groups: Some(Vec::new()),
    };
    let text = toml::to_string(&identity).expect("identity serializes");
    write_durably(&path, text.as_bytes())?;
    Ok((identity, false))
}

/// Adds `group` to the groups `node.toml` lists (written durably, after the group's log
/// exists), so a later start can tell a lost log from a new group.
fn remember_group(config: &NodeConfig, identity: &mut Identity, group: &str) -> anyhow::Result<()> {
    let groups = identity.groups.get_or_insert_with(Vec::new);
    if groups.iter().any(|known| known == group) {
        return Ok(());
    }
    groups.push(group.to_string());
    let text = toml::to_string(&*identity).expect("identity serializes");
    write_durably(&config.data_dir.join("node.toml"), text.as_bytes())
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()
        .with_context(|| format!("fsync {}", temporary.display()))?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?
            .sync_all()
            .with_context(|| format!("fsync {}", parent.display()))?;
    }
    Ok(())
}

/// Opens a group's log and replica, and replays the log's chosen values the replica lacks.
fn open_group(config: &NodeConfig, group: &str) -> anyhow::Result<(FileLog, Database)> {
    let group_dir = config.data_dir.join(group);
    let log_options = FileLogOptions {
        segment_bytes_max: log_segment_bytes(),
    };
    let (log, report) = FileLog::open(group_dir.join("log"), log_options)
        .with_context(|| format!("cannot open the Paxos log of group {group}"))?;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            group,
            ?torn,
            "cut a torn record at the end of the log (a crash mid-write); peers fill in the rest"
        );
    }
    let options = DatabaseOptions {
        statement_time_max: Duration::from_millis(config.statement_time_max_ms),
        ..DatabaseOptions::default()
    };
    let mut database = Database::open(group_dir.join("db.sqlite"), options)
        .with_context(|| format!("cannot open the database of group {group}"))?;
    catch_up_from_log(&log, &mut database, group)?;
    Ok((log, database))
}

/// After standing on the replica, the instances the log lost exist nowhere in this node's log:
/// a peer that lacks them (a whole-cluster power cut can leave every log without its last
/// Chosen records) can only get them from a checkpoint that covers them. Take one at once
/// rather than leave that peer stuck until the next periodic checkpoint.
async fn checkpoint_past_the_gap(group: String, checkpoints: Arc<Checkpoints>) {
    match checkpoints.take_now().await {
        Ok(info) => tracing::info!(
            group,
            instance_id = info.instance_id,
            "took a checkpoint past the instances this node stood over"
        ),
        Err(error) => tracing::warn!(
            group,
            %error,
            "could not take a checkpoint past the instances this node stood over; a peer that lacks them waits for the next periodic one (or run `paxsql admin checkpoint`)"
        ),
    }
}

/// The replica applied instances whose Chosen records the log lost in a crash (they are
/// appended without a sync of their own; see `paxos::recovery::state_machine_ahead`). Makes the
/// replica durable, then appends and syncs its meta as a `Meta` record: the core stands on it
/// like on a checkpoint. Answers the record (for the core's recovery).
fn stand_on_replica(log: &mut FileLog, database: &Database, group: &str) -> anyhow::Result<Record> {
    let snapshot = database
        .meta()
        .with_context(|| format!("group {group}: reading the replica's meta"))?;
    let (Some(instance_id), Some(checksum_after)) =
        (snapshot.applied_instance, snapshot.applied_checksum_after)
    else {
        bail!(
            "group {group}: the replica is ahead of the Paxos log but does not record its running \
             checksum (written by an older paxsql); restore this node from a peer's checkpoint"
        );
    };
    let meta = CheckpointMeta {
        instance_id,
        checksum_after,
        cluster_gid: snapshot.cluster_gid.unwrap_or(0),
        members: snapshot.members,
        members_version: snapshot.members_version.unwrap_or(0),
        master_id: snapshot.master_id,
        lease_ms: snapshot.lease_ms.unwrap_or(0),
        lease_version: snapshot.lease_version.unwrap_or(0),
    };
    // SQLite runs with synchronous=NORMAL: its newest commits may still be only in the page
    // cache. The log is about to say "instance N is applied here"; N must survive a power cut.
    sync_replica_files(database.path())
        .with_context(|| format!("group {group}: syncing the replica before standing on it"))?;
    let record = meta.record();
    let log_chosen = log.last_instance();
    log.append(&record)
        .and_then(|()| log.sync())
        .with_context(|| format!("group {group}: writing the replica's meta to the log"))?;
    tracing::warn!(
        group,
        applied = instance_id,
        log_last_instance = ?log_chosen,
        "the replica is ahead of the Paxos log (Chosen records lost in a crash): stood on the replica"
    );
    Ok(record)
}

/// fsyncs the replica's database file and its write-ahead log.
fn sync_replica_files(path: &Path) -> std::io::Result<()> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for file in [path, Path::new(&wal)] {
        match std::fs::File::open(file) {
            Ok(opened) => opened.sync_all()?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn all_records(log: &FileLog) -> anyhow::Result<Vec<Record>> {
    match (log.first_instance(), log.last_instance()) {
        (Some(first), Some(last)) => Ok(log.read_range(first, last + 1)?),
        _ => Ok(Vec::new()),
    }
}

/// Applies chosen values from the log, in order, that the replica has not applied yet.
fn catch_up_from_log(log: &FileLog, database: &mut Database, group: &str) -> anyhow::Result<()> {
    let from = database.applied_instance().map_or(0, |applied| applied + 1);
    let Some(last) = log.last_instance() else {
        return Ok(());
    };
    if last < from {
        return Ok(());
    }
    let mut chosen = BTreeMap::new();
    for record in log.read_range(from, last + 1)? {
        if record.kind == RecordKind::Chosen {
            let value = ChosenValue::decode(record.payload.clone()).with_context(|| {
                format!(
                    "chosen record of instance {} is malformed",
                    record.instance_id
                )
            })?;
            chosen.insert(record.instance_id, value);
        }
    }
    let mut next = from;
    let mut replayed = 0;
    while let Some(value) = chosen.remove(&next) {
        let paxos_value = value.value.context("a chosen record without a value")?;
        database.apply(next, &paxos_value).with_context(|| {
            format!("group {group}: replaying chosen instance {next} from the log")
        })?;
        next += 1;
        replayed += 1;
    }
    if replayed > 0 {
        tracing::info!(
            group,
            replayed,
            applied = next - 1,
            "replayed chosen values from the log"
        );
    }
    Ok(())
}

fn runtime_config(config: &NodeConfig, identity: &Identity) -> RuntimeConfig {
    let peers = config
        .peers
        .iter()
        .filter(|(id, _)| **id != config.node_id)
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    let mut runtime = RuntimeConfig::new(config.node_id, peers);
    runtime.incarnation = identity.incarnation;
    runtime.cluster_name = config.cluster_name.clone();
    runtime.lease_ms = config.lease_ms;
    runtime.join = config.join;
    runtime.sql_addr = advertised(config, config.sql_addr);
    runtime.http_addr = advertised(config, config.http_addr);
    runtime
}

/// The bytes of `--cluster-secret-file`, read once for peer and forwarding connections. A file
/// that cannot be read, or is empty, stops the node: falling back to no secret (or to an empty
/// one, which anyone can compute proofs with) would silently drop the authentication asked for.
fn read_cluster_secret(config: &NodeConfig) -> anyhow::Result<Option<Arc<[u8]>>> {
    let Some(path) = &config.cluster_secret_file else {
        return Ok(None);
    };
    let secret = std::fs::read(path)
        .with_context(|| format!("cannot read --cluster-secret-file {}", path.display()))?;
    if secret.is_empty() {
        bail!(
            "--cluster-secret-file {} is empty: put the same random secret in it on every node \
             (e.g. `openssl rand -hex 32 > FILE`)",
            path.display()
        );
    }
    Ok(Some(Arc::from(secret)))
}

/// The guard of the HTTP port, from `--admin-token-file` (read once, before the data dir is
/// touched: an unreadable or empty file stops the node, as for the cluster secret) and the
/// cluster secret (checkpoint fetches prove it).
fn http_guard(
    config: &NodeConfig,
    cluster_secret: Option<Arc<[u8]>>,
) -> anyhow::Result<crate::http::HttpGuard> {
    let token = match &config.admin_token_file {
        Some(path) => Some(crate::http::read_admin_token_file(path)?),
        None => None,
    };
    if token.is_some() && cluster_secret.is_none() {
        // Forwarding and checkpoint streams share the HTTP port and prove the cluster secret,
        // not the token: a token alone would leave every write and the whole database open
        // on the port it seems to protect.
        bail!(
            "--admin-token-file needs --cluster-secret-file too: forwarded SQL and checkpoint \
             streams on the same HTTP port are protected by the cluster secret, not the token; \
             give every node the same --cluster-secret-file (see docs/OPERATIONS.md, Security)"
        );
    }
    Ok(crate::http::HttpGuard::new(
        token.as_deref(),
        cluster_secret,
    ))
}

/// The address peers should use for `bound`: a wildcard bind is replaced with the host this
/// node has in `--peers`.
fn advertised(config: &NodeConfig, bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let own = &config.peers[&config.node_id];
    let host = own.rsplit_once(':').map_or(own.as_str(), |(host, _)| host);
    format!("{host}:{}", bound.port())
}

/// A seed that differs on every process start (value ids and incarnations derive from it).
fn process_seed(node_id: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ (u64::from(node_id) << 56)
}

/// Log segment size: the log is truncated in whole segments, so this bounds how much more
/// than `--log-hold-instances` a node keeps. `PAXSQL_LOG_SEGMENT_BYTES` overrides it (tests use
/// small segments to truncate after a few thousand instances).
fn log_segment_bytes() -> u64 {
    std::env::var("PAXSQL_LOG_SEGMENT_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|bytes| *bytes > 0)
        .unwrap_or(LOG_SEGMENT_BYTES_DEFAULT)
}

/// Default log segment size (8 MiB).
const LOG_SEGMENT_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;

/// Who is master, and where peers' proxies listen.
struct NodeTopology {
    node_id: u32,
    local: Arc<NodeBackend>,
    transport: paxsql_replicator::runtime::transport::Transport,
    own_http: String,
    master_wait: Duration,
}

impl Topology for NodeTopology {
    fn self_id(&self) -> u32 {
        self.node_id
    }

    fn master_of(&self, group: &str) -> Option<u32> {
        self.local.service(group).ok()?.group().status().master_id
    }

    fn forward_addr(&self, node_id: u32) -> Option<String> {
        if node_id == self.node_id {
            return Some(self.own_http.clone());
        }
        self.transport.peer_info(node_id).map(|info| info.http_addr)
    }

    fn master_wait(&self) -> Duration {
        self.master_wait
    }
}
