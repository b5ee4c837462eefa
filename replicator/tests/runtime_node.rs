//! A node wires the transport to its group drivers: an engine's Send on one node reaches the
//! engine of the same group on the other, and the peer's SQL address becomes known.

mod runtime_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paxsql_binlog::MemLog;
use paxsql_replicator::paxos::{Action, Input, Role, Status};
use paxsql_replicator::runtime::{Engine, FatalHandler, GroupParts, Node, NodeConfig};
use tokio::net::TcpListener;

use runtime_support::{heartbeat, marker};

/// On Campaign, sends a heartbeat to `peer`; records the markers of heartbeats it receives.
struct PingEngine {
    node_id: u32,
    peer: u32,
    received: Arc<Mutex<Vec<u64>>>,
}

impl Engine for PingEngine {
    fn step(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Campaign => vec![Action::Send(heartbeat(
                "main",
                self.node_id,
                self.peer,
                40 + u64::from(self.node_id),
            ))],
            Input::Message(envelope) => {
                self.received
                    .lock()
                    .expect("received")
                    .extend(marker(&envelope));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn status(&self) -> Status {
        Status {
            node_id: self.node_id,
            role: Role::Follower,
            master_id: None,
            chosen_instance: None,
            applied_instance: None,
            members: vec![1, 2],
            member_addrs: Default::default(),
            members_version: 0,
            cluster_gid: 0,
            may_vote: true,
            serving_as_master: false,
            foreign_gid_dropped: 0,
            non_member_dropped: 0,
            halted: None,
        }
    }
}

fn start_node(
    node_id: u32,
    peer: u32,
    peer_address: String,
    listener: TcpListener,
) -> (Node, Arc<Mutex<Vec<u64>>>) {
    let mut config = NodeConfig::new(node_id, BTreeMap::from([(peer, peer_address)]));
    config.sql_addr = format!("127.0.0.1:{}", 7000 + node_id);
    config.cluster_secret = Some(b"secret".to_vec());
    let received = Arc::new(Mutex::new(Vec::new()));
    let parts = GroupParts {
        name: "main".into(),
        engine: Box::new(PingEngine {
            node_id,
            peer,
            received: received.clone(),
        }),
        log: Box::new(MemLog::new()),
    };
    let fatal: FatalHandler = Arc::new(|message: &str| panic!("unexpected fatal error: {message}"));
    let node =
        Node::start(config, listener, vec![parts], fatal, std::future::pending()).expect("starts");
    (node, received)
}

#[tokio::test]
async fn an_envelope_travels_from_one_group_driver_to_the_other() {
    let listener_one = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let listener_two = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address_one = listener_one.local_addr().expect("address").to_string();
    let address_two = listener_two.local_addr().expect("address").to_string();
    let (one, _) = start_node(1, 2, address_two, listener_one);
    let (two, received_by_two) = start_node(2, 1, address_one, listener_two);

    let mut arrived = false;
    for _ in 0..200 {
        one.handle("main")
            .expect("configured")
            .campaign()
            .expect("queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if received_by_two.lock().expect("received").contains(&41) {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "node 2's engine never received node 1's heartbeat");
    assert_eq!(
        one.transport.peer_info(2).expect("handshake done").sql_addr,
        "127.0.0.1:7002"
    );
    let metrics = one.metrics.render_prometheus();
    assert!(
        metrics.contains("paxsql_peer_frames_sent_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("paxsql_peer_frames_dropped_total{reason=\"send_queue_full\"}"),
        "{metrics}"
    );

    one.shutdown();
    two.shutdown();
    tokio::time::timeout(Duration::from_secs(5), async {
        one.stopped().await;
        two.stopped().await;
    })
    .await
    .expect("nodes stop");
}
