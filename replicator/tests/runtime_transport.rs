//! The TCP transport: two nodes exchange envelopes, learn each other's addresses, reconnect
//! after a restart; full queues and bad frames are dropped and counted, never block or panic.

mod runtime_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use paxsql_replicator::limits::PEER_SEND_QUEUE_MAX;
use paxsql_replicator::runtime::frame::{encode_body, FrameCodec};
use paxsql_replicator::runtime::handshake::{self, LocalIdentity};
use paxsql_replicator::runtime::metrics::DropReason;
use paxsql_replicator::runtime::transport::TransportConfig;
use paxsql_replicator::runtime::{RuntimeMetrics, Transport};
use paxsql_schema::Envelope;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use runtime_support::{heartbeat, marker};

fn identity(node_id: u32, cluster_name: &str) -> LocalIdentity {
    LocalIdentity {
        cluster_name: cluster_name.into(),
        node_id,
        incarnation: 1,
        log_format_version: 1,
        sqlite_version: "3.54.1".into(),
        sql_addr: format!("127.0.0.1:{}", 5000 + node_id),
        http_addr: format!("127.0.0.1:{}", 6000 + node_id),
        secret: Some(Arc::from(&b"shared"[..])),
    }
}

struct Running {
    transport: Transport,
    inbox: mpsc::Receiver<Envelope>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(identity: LocalIdentity, listener: TcpListener, peers: BTreeMap<u32, String>) -> Running {
    let cancel = CancellationToken::new();
    let config = TransportConfig {
        identity,
        peers,
        cluster_gid: 0,
    };
    let (transport, task) = Transport::start(
        config,
        listener,
        Arc::new(RuntimeMetrics::new()),
        cancel.clone(),
    )
    .expect("starts");
    let inbox = transport.register_group("main").expect("registers");
    Running {
        transport,
        inbox,
        cancel,
        task,
    }
}

async fn stop(running: Running) {
    running.cancel.cancel();
    running.task.await.expect("transport stops");
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    (listener, address)
}

/// Sends heartbeats from `from` until one arrives in `to`'s inbox; returns its marker.
async fn deliver_one(from: &Running, to: &mut Running, to_id: u32, marker_base: u64) -> u64 {
    for attempt in 0..200 {
        from.transport.send(heartbeat(
            "main",
            from.transport.node_id(),
            to_id,
            marker_base + attempt,
        ));
        if let Ok(Some(envelope)) =
            tokio::time::timeout(Duration::from_millis(50), to.inbox.recv()).await
        {
            assert_eq!(envelope.from, from.transport.node_id());
            return marker(&envelope).expect("heartbeat");
        }
    }
    panic!("no envelope arrived within 10 s");
}

#[tokio::test]
async fn two_nodes_exchange_envelopes_and_reconnect_after_a_restart() {
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let mut one = start(
        identity(1, "prod"),
        listener_one,
        BTreeMap::from([(2, address_two.to_string())]),
    );
    let mut two = start(
        identity(2, "prod"),
        listener_two,
        BTreeMap::from([(1, address_one.to_string())]),
    );

    // Phase 1: both directions work, and each side learned the other's SQL address.
    let first = deliver_one(&one, &mut two, 2, 1_000).await;
    assert!(first >= 1_000);
    deliver_one(&two, &mut one, 1, 2_000).await;
    assert_eq!(
        one.transport.peer_info(2).expect("known").sql_addr,
        "127.0.0.1:5002"
    );
    assert_eq!(
        two.transport.peer_info(1).expect("known").http_addr,
        "127.0.0.1:6001"
    );

    // Phase 2: node 2 stops; node 1 keeps sending (into its queue or a dead socket).
    stop(two).await;
    for index in 0..5 {
        one.transport.send(heartbeat("main", 1, 2, 3_000 + index));
    }

    // Phase 3: node 2 restarts on the same address; node 1 reconnects on its own.
    let listener_two = TcpListener::bind(address_two).await.expect("rebinds");
    let mut two = start(
        identity(2, "prod"),
        listener_two,
        BTreeMap::from([(1, address_one.to_string())]),
    );
    deliver_one(&one, &mut two, 2, 4_000).await;
    deliver_one(&two, &mut one, 1, 5_000).await;
    assert!(
        one.transport
            .metrics()
            .peer_connections_established
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    stop(one).await;
    stop(two).await;
}

#[tokio::test]
async fn a_full_send_queue_drops_and_counts_without_blocking() {
    // A peer address nobody listens on: the outbound task never drains the queue.
    let (unused, dead_address) = bind().await;
    drop(unused);
    let (listener, _) = bind().await;
    let one = start(
        identity(1, "prod"),
        listener,
        BTreeMap::from([(2, dead_address.to_string())]),
    );
    let extra = 25;
    let sending = tokio::time::timeout(Duration::from_secs(5), async {
        for index in 0..(PEER_SEND_QUEUE_MAX + extra) {
            one.transport.send(heartbeat("main", 1, 2, index as u64));
        }
    });
    sending.await.expect("send never blocks");
    assert_eq!(
        one.transport.metrics().dropped(DropReason::SendQueueFull),
        extra as u64
    );

    one.transport.send(heartbeat("main", 1, 9, 0));
    assert_eq!(one.transport.metrics().dropped(DropReason::UnknownPeer), 1);
    stop(one).await;
}

/// Connects to `address` as node 2 and completes the handshake by hand.
async fn raw_peer(address: SocketAddr) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(address).await.expect("connects");
    let mut framed = Framed::new(stream, FrameCodec::new());
    handshake::connect(&mut framed, &identity(2, "prod"), 0, 1)
        .await
        .expect("handshake");
    framed
}

async fn wait_for_count(transport: &Transport, reason: DropReason, expected: u64) {
    for _ in 0..500 {
        if transport.metrics().dropped(reason) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{reason:?} count is {}, expected {expected}",
        transport.metrics().dropped(reason)
    );
}

#[tokio::test]
async fn forged_misaddressed_and_bad_frames_are_dropped_and_counted() {
    let (listener, address) = bind().await;
    let mut one = start(
        identity(1, "prod"),
        listener,
        BTreeMap::from([(2, "127.0.0.1:1".to_string())]),
    );
    let mut peer = raw_peer(address).await;

    // A frame claiming to come from node 3 over node 2's connection is dropped.
    peer.send(encode_body(&heartbeat("main", 3, 1, 1)).expect("small"))
        .await
        .expect("sent");
    // One addressed to another node, and one for a group this node does not run.
    peer.send(encode_body(&heartbeat("main", 2, 7, 2)).expect("small"))
        .await
        .expect("sent");
    peer.send(encode_body(&heartbeat("orders", 2, 1, 3)).expect("small"))
        .await
        .expect("sent");
    // A good one arrives.
    peer.send(encode_body(&heartbeat("main", 2, 1, 4)).expect("small"))
        .await
        .expect("sent");
    let arrived = tokio::time::timeout(Duration::from_secs(5), one.inbox.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(marker(&arrived), Some(4));
    assert_eq!(one.transport.metrics().dropped(DropReason::FromMismatch), 1);
    assert_eq!(one.transport.metrics().dropped(DropReason::Misaddressed), 1);
    assert_eq!(one.transport.metrics().dropped(DropReason::UnknownGroup), 1);

    // Malformed bytes close the connection and are counted.
    peer.send(Bytes::from_static(&[0x0f, 0x01]))
        .await
        .expect("sent");
    wait_for_count(&one.transport, DropReason::Malformed, 1).await;

    // An oversized length closes a fresh connection too.
    let mut stream = raw_peer(address).await.into_inner();
    let mut header = BytesMut::new();
    header.put_u32(u32::MAX);
    stream.write_all(&header).await.expect("sent");
    wait_for_count(&one.transport, DropReason::Oversized, 1).await;
    stop(one).await;
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_and_counted() {
    let (listener_one, address_one) = bind().await;
    let (listener_two, address_two) = bind().await;
    let one = start(
        identity(1, "prod"),
        listener_one,
        BTreeMap::from([(2, address_two.to_string())]),
    );
    let mut two = start(
        identity(2, "staging"),
        listener_two,
        BTreeMap::from([(1, address_one.to_string())]),
    );
    for index in 0..20 {
        one.transport.send(heartbeat("main", 1, 2, index));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        two.inbox.try_recv().is_err(),
        "an envelope crossed clusters"
    );
    assert!(
        one.transport
            .metrics()
            .handshakes_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(one.transport.peer_info(2).is_none());
    stop(one).await;
    stop(two).await;
}

#[tokio::test]
async fn a_peer_added_at_run_time_is_reached_and_its_handshake_accepted() {
    let (listener_one, address_one) = bind().await;
    let (listener_four, address_four) = bind().await;
    // Node 1 starts without node 4 (it was not a member yet); node 4 knows node 1.
    let mut one = start(identity(1, "prod"), listener_one, BTreeMap::new());
    let mut four = start(
        identity(4, "prod"),
        listener_four,
        BTreeMap::from([(1, address_one.to_string())]),
    );
    // Unknown to node 1: its envelopes to node 4 are dropped, node 4's handshakes refused.
    one.transport.send(heartbeat("main", 1, 4, 1));
    assert_eq!(one.transport.metrics().dropped(DropReason::UnknownPeer), 1);
    four.transport.send(heartbeat("main", 4, 1, 2));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), one.inbox.recv())
            .await
            .is_err(),
        "node 1 refuses a node it does not know"
    );

    // A chosen member list names node 4: node 1 adds it, both directions work.
    let added = one
        .transport
        .add_peers(&BTreeMap::from([(4, address_four.to_string())]));
    assert_eq!(added, vec![4]);
    assert!(one
        .transport
        .add_peers(&BTreeMap::from([(4, address_four.to_string())]))
        .is_empty());
    deliver_one(&one, &mut four, 4, 1_000).await;
    deliver_one(&four, &mut one, 1, 2_000).await;
    stop(one).await;
    stop(four).await;
}
