//! [`Transport`]: TCP between nodes.
//!
//! - Outbound: one connection per configured peer, owned by a task in [`crate::runtime::peer`],
//!   fed by a bounded queue of encoded envelopes. A full queue drops the envelope and counts it
//!   (Paxos retries; blocking a group driver on a slow peer would stall every peer).
//! - Inbound: every accepted connection gets a task that runs the handshake, then reads
//!   envelopes and routes them by `group` to that group's driver inbox.
//!
//! - Members added at run time: [`Transport::add_peers`] starts an outbound task for each new
//!   node (fed by the chosen member list, see `runtime::node`); from then on its inbound
//!   handshakes are accepted too. Peers are never dropped while the node runs: a removed
//!   member's votes are refused by the core, and it may still serve learners.
//!
//! Outbound connections only write and inbound ones only read (after the handshake), so two
//! nodes talk over two connections, one per direction.
//!
//! An inbound frame is dropped and counted when its envelope's `from` is not the node the
//! handshake proved, when its `to` is not this node, or when its group is unknown. An oversized
//! or malformed frame closes the connection (and is counted).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use paxsql_schema::Envelope;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::limits::{
    GROUP_INBOX_MAX, PEER_HANDSHAKE_TIMEOUT_MS, PEER_INBOUND_CONNECTIONS_MAX, PEER_SEND_QUEUE_MAX,
};
use crate::paxos::NodeId;
use crate::runtime::error::RuntimeError;
use crate::runtime::frame::{decode_body, encode_body, FrameCodec, FrameError};
use crate::runtime::group::Outbox;
use crate::runtime::handshake::{self, HandshakeError, LocalIdentity, PeerInfo};
use crate::runtime::metrics::{DropReason, RuntimeMetrics};
use crate::runtime::peer;

/// What the transport needs to start.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub identity: LocalIdentity,
    /// Every other node: id → peer address (`host:port`).
    pub peers: BTreeMap<NodeId, String>,
    /// The cluster gid if already known (0 until instance 0 is chosen or learned).
    pub cluster_gid: u64,
}

/// A cloneable handle to the node's transport.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// State shared by the transport's tasks.
pub(crate) struct Shared {
    pub(crate) identity: LocalIdentity,
    pub(crate) cluster_gid: AtomicU64,
    pub(crate) metrics: Arc<RuntimeMetrics>,
    peer_queues: Mutex<HashMap<NodeId, mpsc::Sender<Bytes>>>,
    /// Stops the outbound tasks of peers added at run time.
    cancel: CancellationToken,
    routes: Mutex<HashMap<String, mpsc::Sender<Envelope>>>,
    peer_info: Mutex<HashMap<NodeId, PeerInfo>>,
}

impl Transport {
    /// Starts the accept loop on `listener` and one outbound task per peer. Every task stops when
    /// `cancel` fires; the returned join handle completes once they all have (and the listener
    /// is closed).
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
        metrics: Arc<RuntimeMetrics>,
        cancel: CancellationToken,
    ) -> Result<(Transport, tokio::task::JoinHandle<()>), RuntimeError> {
        assert!(
            !config.peers.contains_key(&config.identity.node_id),
            "the peer list must not contain this node ({})",
            config.identity.node_id
        );
        let mut peer_queues = HashMap::new();
        let mut peer_receivers = Vec::new();
        for (&node_id, address) in &config.peers {
            if address.is_empty() {
                return Err(RuntimeError::BadPeerAddress {
                    node_id,
                    address: address.clone(),
                    reason: "empty address".into(),
                });
            }
            let (sender, receiver) = mpsc::channel(PEER_SEND_QUEUE_MAX);
            peer_queues.insert(node_id, sender);
            peer_receivers.push((node_id, address.clone(), receiver));
        }
        let shared = Arc::new(Shared {
            identity: config.identity,
            cluster_gid: AtomicU64::new(config.cluster_gid),
            metrics,
            peer_queues: Mutex::new(peer_queues),
            cancel: cancel.clone(),
            routes: Mutex::new(HashMap::new()),
            peer_info: Mutex::new(HashMap::new()),
        });
        let mut tasks = JoinSet::new();
        for (node_id, address, receiver) in peer_receivers {
            tasks.spawn(peer::run_outbound(
                shared.clone(),
                node_id,
                address,
                receiver,
                cancel.clone(),
            ));
        }
        tasks.spawn(accept_loop(shared.clone(), listener, cancel.clone()));
        let supervisor = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
        Ok((Transport { shared }, supervisor))
    }

    /// Starts talking to every node of `peers` not known yet (members added through Paxos).
    /// Known nodes keep their address; this node and empty addresses are skipped. Answers the
    /// nodes added.
    pub fn add_peers(&self, peers: &BTreeMap<NodeId, String>) -> Vec<NodeId> {
        let mut added = Vec::new();
        let mut queues = self
            .shared
            .peer_queues
            .lock()
            .expect("peer queue lock is never poisoned");
        for (&node_id, address) in peers {
            if node_id == self.node_id() || address.is_empty() || queues.contains_key(&node_id) {
                continue;
            }
            let (sender, receiver) = mpsc::channel(PEER_SEND_QUEUE_MAX);
            queues.insert(node_id, sender);
            tracing::info!(peer = node_id, %address, "added a peer from the chosen member list");
            tokio::spawn(peer::run_outbound(
                self.shared.clone(),
                node_id,
                address.clone(),
                receiver,
                self.shared.cancel.clone(),
            ));
            added.push(node_id);
        }
        added
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.identity.node_id
    }

    /// Registers a group and returns the inbox its driver reads envelopes from.
    pub fn register_group(&self, group: &str) -> Result<mpsc::Receiver<Envelope>, RuntimeError> {
        let mut routes = self
            .shared
            .routes
            .lock()
            .expect("route table lock is never poisoned");
        if routes.contains_key(group) {
            return Err(RuntimeError::DuplicateGroup {
                group: group.to_string(),
            });
        }
        let (sender, receiver) = mpsc::channel(GROUP_INBOX_MAX);
        routes.insert(group.to_string(), sender);
        Ok(receiver)
    }

    /// Queues an envelope toward `envelope.to` without waiting. Dropped and counted when the
    /// peer is unknown, the envelope too large, or the peer's queue full. An envelope to this
    /// node itself is routed to the local group.
    pub fn send(&self, envelope: Envelope) {
        self.shared.send(envelope);
    }

    /// What the handshake told us about a peer (SQL and HTTP addresses), once connected.
    pub fn peer_info(&self, node_id: NodeId) -> Option<PeerInfo> {
        self.shared
            .peer_info
            .lock()
            .expect("peer info lock is never poisoned")
            .get(&node_id)
            .cloned()
    }

    /// The cluster gid this node presents in handshakes.
    pub fn cluster_gid(&self) -> u64 {
        self.shared.cluster_gid.load(Ordering::Relaxed)
    }

    /// Sets the cluster gid once instance 0 is known; later handshakes check it.
    pub fn set_cluster_gid(&self, cluster_gid: u64) {
        self.shared
            .cluster_gid
            .store(cluster_gid, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> &Arc<RuntimeMetrics> {
        &self.shared.metrics
    }
}

impl Outbox for Transport {
    fn send(&self, envelope: Envelope) {
        self.shared.send(envelope);
    }
}

impl Shared {
    fn send(&self, envelope: Envelope) {
        if envelope.to == self.identity.node_id {
            self.route_local(envelope);
            return;
        }
        let queue = self
            .peer_queues
            .lock()
            .expect("peer queue lock is never poisoned")
            .get(&envelope.to)
            .cloned();
        let Some(queue) = queue else {
            self.metrics.count_drop(DropReason::UnknownPeer);
            return;
        };
        let body = match encode_body(&envelope) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(to = envelope.to, group = %envelope.group, %error, "envelope not sent");
                self.metrics.count_drop(DropReason::Oversized);
                return;
            }
        };
        match queue.try_send(body) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.count_drop(DropReason::SendQueueFull)
            }
            // The transport is stopping; nothing will be sent any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Routes an envelope that arrived on a connection whose handshake proved `proven_from`.
    pub(crate) fn route_inbound(&self, envelope: Envelope, proven_from: NodeId) {
        if envelope.from != proven_from {
            self.metrics.count_drop(DropReason::FromMismatch);
            return;
        }
        if envelope.to != self.identity.node_id {
            self.metrics.count_drop(DropReason::Misaddressed);
            return;
        }
        self.route_local(envelope);
    }

    fn route_local(&self, envelope: Envelope) {
        let routes = self
            .routes
            .lock()
            .expect("route table lock is never poisoned");
        let Some(inbox) = routes.get(&envelope.group) else {
            self.metrics.count_drop(DropReason::UnknownGroup);
            return;
        };
        match inbox.try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.count_drop(DropReason::GroupInboxFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    pub(crate) fn remember_peer(&self, info: PeerInfo) {
        self.peer_info
            .lock()
            .expect("peer info lock is never poisoned")
            .insert(info.node_id, info);
    }

    pub(crate) fn is_peer(&self, node_id: NodeId) -> bool {
        self.peer_queues
            .lock()
            .expect("peer queue lock is never poisoned")
            .contains_key(&node_id)
    }

    /// Logs and counts a failed handshake with `peer` (an address or a node id).
    pub(crate) fn report_handshake_failure(&self, peer: &str, error: &HandshakeError) {
        if !error.is_refusal() {
            tracing::debug!(peer, %error, "peer handshake did not complete");
            return;
        }
        self.metrics
            .handshakes_refused
            .fetch_add(1, Ordering::Relaxed);
        if matches!(error, HandshakeError::ClusterGid { .. }) {
            self.metrics
                .handshakes_refused_foreign_gid
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(peer, %error, "peer handshake refused");
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(PEER_INBOUND_CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE; wait a little instead of spinning.
                tracing::warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%address, limit = PEER_INBOUND_CONNECTIONS_MAX, "too many inbound peer connections; refusing one");
            continue;
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            serve_inbound(shared, stream, address.to_string(), cancel).await;
            drop(slot);
        });
    }
    // Dropping the listener and `connections` closes every inbound connection.
    connections.shutdown().await;
}

async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    address: String,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new());
    let cluster_gid = shared.cluster_gid.load(Ordering::Relaxed);
    let is_peer = |node_id: NodeId| shared.is_peer(node_id);
    let handshake = handshake::accept(&mut framed, &shared.identity, cluster_gid, &is_peer);
    let peer = tokio::select! {
        _ = cancel.cancelled() => return,
        result = tokio::time::timeout(Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS), handshake) => match result {
            Ok(Ok(peer)) => peer,
            Ok(Err(error)) => return shared.report_handshake_failure(&address, &error),
            Err(_) => return tracing::debug!(%address, "inbound peer handshake timed out"),
        },
    };
    let from = peer.node_id;
    tracing::debug!(%address, from, "inbound peer connection established");
    shared.remember_peer(peer);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            frame = framed.next() => frame,
        };
        let body = match frame {
            None => return,
            Some(Ok(body)) => body,
            Some(Err(error)) => return report_bad_frame(&shared, from, &error),
        };
        shared
            .metrics
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
        match decode_body::<Envelope>(body) {
            Ok(envelope) => shared.route_inbound(envelope, from),
            Err(error) => return report_bad_frame(&shared, from, &error),
        }
    }
}

fn report_bad_frame(shared: &Shared, from: NodeId, error: &FrameError) {
    let reason = match error {
        FrameError::TooLarge { .. } => DropReason::Oversized,
        FrameError::Malformed { .. } => DropReason::Malformed,
        FrameError::Io(_) => return tracing::debug!(from, %error, "inbound peer connection broke"),
    };
    shared.metrics.count_drop(reason);
    tracing::warn!(from, %error, "closing the connection from a peer that sent a bad frame");
}
