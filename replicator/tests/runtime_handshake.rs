//! The peer handshake: compatible nodes connect and learn each other's addresses; a mismatch
//! or a wrong secret is refused, naming both values.

use std::sync::Arc;

use paxsql_replicator::runtime::frame::FrameCodec;
use paxsql_replicator::runtime::handshake::{self, HandshakeError, LocalIdentity, PeerInfo};
use tokio_util::codec::Framed;

fn identity(node_id: u32) -> LocalIdentity {
    LocalIdentity {
        cluster_name: "prod".into(),
        node_id,
        incarnation: 7,
        log_format_version: 1,
        sqlite_version: "3.54.1".into(),
        sql_addr: format!("10.0.0.{node_id}:5433"),
        http_addr: format!("10.0.0.{node_id}:5633"),
        secret: None,
    }
}

type Outcome = Result<PeerInfo, HandshakeError>;

/// Runs node `acceptor` (gid `acceptor_gid`) against node `connector` over an in-memory pipe.
/// Each side drops its end when it finishes, as a real connection task does.
async fn run(
    acceptor: LocalIdentity,
    acceptor_gid: u64,
    connector: LocalIdentity,
    connector_gid: u64,
) -> (Outcome, Outcome) {
    let (left, right) = tokio::io::duplex(64 * 1024);
    let expected = acceptor.node_id;
    let connector_id = connector.node_id;
    let accept = async move {
        let mut framed = Framed::new(left, FrameCodec::new());
        let is_peer = move |node_id: u32| node_id == connector_id;
        handshake::accept(&mut framed, &acceptor, acceptor_gid, &is_peer).await
    };
    let connect = async move {
        let mut framed = Framed::new(right, FrameCodec::new());
        handshake::connect(&mut framed, &connector, connector_gid, expected).await
    };
    tokio::join!(accept, connect)
}

#[tokio::test]
async fn compatible_nodes_connect_and_learn_each_others_addresses() {
    let (accepted, connected) = run(identity(1), 99, identity(2), 99).await;
    let seen_by_acceptor = accepted.expect("acceptor accepts");
    let seen_by_connector = connected.expect("connector accepts");
    assert_eq!(seen_by_acceptor.node_id, 2);
    assert_eq!(seen_by_acceptor.sql_addr, "10.0.0.2:5433");
    assert_eq!(seen_by_acceptor.incarnation, 7);
    assert_eq!(seen_by_connector.node_id, 1);
    assert_eq!(seen_by_connector.sql_addr, "10.0.0.1:5433");
    assert_eq!(seen_by_connector.http_addr, "10.0.0.1:5633");
    assert_eq!(seen_by_connector.cluster_gid, 99);
}

#[tokio::test]
async fn an_unknown_gid_is_accepted_on_either_side() {
    let (accepted, connected) = run(identity(1), 0, identity(2), 99).await;
    assert!(accepted.is_ok() && connected.is_ok());
    let (accepted, connected) = run(identity(1), 99, identity(2), 0).await;
    assert!(accepted.is_ok() && connected.is_ok());
}

#[tokio::test]
async fn another_cluster_name_is_refused_naming_both() {
    let mut other = identity(2);
    other.cluster_name = "staging".into();
    let (accepted, connected) = run(identity(1), 0, other, 0).await;
    let refusal = connected.expect_err("connector sees the acceptor's name first");
    assert!(
        matches!(&refusal, HandshakeError::ClusterName { local, remote } if local == "staging" && remote == "prod")
    );
    let message = refusal.to_string();
    assert!(
        message.contains("staging") && message.contains("prod"),
        "{message}"
    );
    assert!(
        accepted.is_err(),
        "the acceptor never completes: {accepted:?}"
    );
}

#[tokio::test]
async fn another_cluster_gid_is_refused_by_both_sides() {
    let (accepted, connected) = run(identity(1), 5, identity(2), 6).await;
    assert!(
        matches!(
            connected,
            Err(HandshakeError::ClusterGid {
                local: 6,
                remote: 5
            })
        ),
        "{connected:?}"
    );
    assert!(accepted.is_err());

    // The acceptor runs the same check on what the connector sends.
    let connector_says = paxsql_schema::Handshake {
        cluster_name: "prod".into(),
        cluster_gid: 6,
        node_id: 2,
        wire_version: paxsql_schema::WIRE_VERSION,
        log_format_version: 1,
        sqlite_version: "3.54.1".into(),
        nonce: vec![0u8; 16].into(),
        ..Default::default()
    };
    let refused = handshake::check_compatible(&identity(1), 5, &connector_says);
    assert!(
        matches!(
            refused,
            Err(HandshakeError::ClusterGid {
                local: 5,
                remote: 6
            })
        ),
        "{refused:?}"
    );
    assert!(handshake::check_compatible(&identity(1), 6, &connector_says).is_ok());
}

#[tokio::test]
async fn other_versions_are_refused() {
    let mut older_sqlite = identity(2);
    older_sqlite.sqlite_version = "3.45.0".into();
    let (_, connected) = run(identity(1), 0, older_sqlite, 0).await;
    assert!(
        matches!(connected, Err(HandshakeError::SqliteVersion { .. })),
        "{connected:?}"
    );

    let mut other_log = identity(2);
    other_log.log_format_version = 2;
    let (_, connected) = run(identity(1), 0, other_log, 0).await;
    assert!(
        matches!(
            connected,
            Err(HandshakeError::LogFormatVersion {
                local: 2,
                remote: 1
            })
        ),
        "{connected:?}"
    );
}

#[tokio::test]
async fn the_connector_refuses_a_node_it_did_not_dial() {
    let (left, right) = tokio::io::duplex(64 * 1024);
    let accept = async move {
        let mut framed = Framed::new(left, FrameCodec::new());
        handshake::accept(&mut framed, &identity(3), 0, &|_| true).await
    };
    let connect = async move {
        let mut framed = Framed::new(right, FrameCodec::new());
        handshake::connect(&mut framed, &identity(2), 0, 1).await
    };
    let (_, connected) = tokio::join!(accept, connect);
    assert!(
        matches!(
            connected,
            Err(HandshakeError::UnexpectedNode {
                expected: 1,
                remote: 3
            })
        ),
        "{connected:?}"
    );
}

#[tokio::test]
async fn the_acceptor_refuses_a_node_that_is_not_a_peer() {
    let (left, right) = tokio::io::duplex(64 * 1024);
    let accept = async move {
        let mut framed = Framed::new(left, FrameCodec::new());
        handshake::accept(&mut framed, &identity(1), 0, &|node_id| node_id == 2).await
    };
    let connect = async move {
        let mut framed = Framed::new(right, FrameCodec::new());
        handshake::connect(&mut framed, &identity(9), 0, 1).await
    };
    let (accepted, connected) = tokio::join!(accept, connect);
    assert!(
        matches!(accepted, Err(HandshakeError::UnknownNode { remote: 9 })),
        "{accepted:?}"
    );
    assert!(
        matches!(connected, Err(HandshakeError::Closed)),
        "{connected:?}"
    );
}

fn with_secret(node_id: u32, secret: &[u8]) -> LocalIdentity {
    LocalIdentity {
        secret: Some(Arc::from(secret)),
        ..identity(node_id)
    }
}

#[tokio::test]
async fn nodes_with_the_same_secret_connect() {
    let (accepted, connected) =
        run(with_secret(1, b"s3cret"), 0, with_secret(2, b"s3cret"), 0).await;
    assert!(accepted.is_ok(), "{accepted:?}");
    assert!(connected.is_ok(), "{connected:?}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let (accepted, connected) =
        run(with_secret(1, b"s3cret"), 0, with_secret(2, b"guess"), 0).await;
    assert!(
        matches!(accepted, Err(HandshakeError::AuthFailed)),
        "{accepted:?}"
    );
    assert!(
        matches!(connected, Err(HandshakeError::Closed)),
        "{connected:?}"
    );
}

#[tokio::test]
async fn a_missing_secret_is_refused_on_both_sides() {
    let (accepted, _) = run(with_secret(1, b"s3cret"), 0, identity(2), 0).await;
    assert!(
        matches!(accepted, Err(HandshakeError::SecretPresence { .. })),
        "{accepted:?}"
    );
    let (_, connected) = run(identity(1), 0, with_secret(2, b"s3cret"), 0).await;
    // The connector proves itself first, so the acceptor without a secret refuses it.
    assert!(connected.is_err(), "{connected:?}");
}
