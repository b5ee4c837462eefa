//! Hostile input, in process: arbitrary bytes through every decoder that faces the network or
//! the disk must give a value or a typed error, never a panic. Bounded proptest runs (CI).
//!
//! - the peer frame codec, the envelope decoder and both sides of the peer handshake;
//! - the forwarding frame reader (followers → master over the HTTP port);
//! - the SQL splitter and classifier;
//! - binlog recovery (`FileLog::open`) over arbitrary segment contents.

use std::sync::Arc;

use bytes::BytesMut;
use paxsql_binlog::{FileLog, FileLogOptions, LogError, LogStore};
use paxsql_proxy::sql::{classify, command_verb, split_statements};
use paxsql_replicator::runtime::frame::{decode_body, FrameCodec};
use paxsql_replicator::runtime::handshake::{self, LocalIdentity};
use paxsql_schema::Envelope;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Framed};

fn identity() -> LocalIdentity {
    LocalIdentity {
        cluster_name: "paxsql".into(),
        node_id: 1,
        incarnation: 1,
        log_format_version: 1,
        sqlite_version: "3".into(),
        sql_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        secret: Some(Arc::from(&b"secret"[..])),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Feeds `bytes` to a handshake side over an in-memory pipe; it must end in Ok or Err.
fn handshake_with(bytes: Vec<u8>, acceptor: bool) {
    runtime().block_on(async move {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let _ = theirs.write_all(&bytes).await;
            let _ = theirs.shutdown().await;
            // Keep reading what the handshake sends so it never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut sink).await;
        });
        let mut framed = Framed::new(ours, FrameCodec::new());
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            if acceptor {
                handshake::accept(&mut framed, &identity(), 0, &|id| id == 2)
                    .await
                    .map(|_| ())
            } else {
                handshake::connect(&mut framed, &identity(), 0, 2)
                    .await
                    .map(|_| ())
            }
        })
        .await;
        // Random bytes carry no valid proof of the secret.
        assert!(
            matches!(result, Ok(Err(_))),
            "the handshake must refuse garbage"
        );
        drop(framed);
        let _ = writer.await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn peer_frames_and_envelopes_from_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut codec = FrameCodec::with_max_bytes(1024);
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(body)) = codec.decode(&mut buffer) {
            let _ = decode_body::<Envelope>(body);
        }
        // The body alone, as if a frame had carried it.
        let _ = decode_body::<Envelope>(bytes::Bytes::from(bytes));
    }

    #[test]
    fn the_handshake_refuses_arbitrary_bytes_on_both_sides(bytes in proptest::collection::vec(any::<u8>(), 0..512), acceptor in any::<bool>()) {
        handshake_with(bytes, acceptor);
    }

    #[test]
    fn a_handshake_frame_with_arbitrary_contents_is_refused(body in proptest::collection::vec(any::<u8>(), 0..256), acceptor in any::<bool>()) {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        handshake_with(framed, acceptor);
    }

    #[test]
    fn forwarding_frames_from_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        runtime().block_on(async move {
            let mut reader = &bytes[..];
            for _ in 0..8 {
                match paxsql_proxy::forward::frame::read_frame::<paxsql_schema::Envelope>(&mut reader).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }

    #[test]
    fn sql_splitter_and_classifier_take_arbitrary_text(text in "\\PC{0,200}") {
        for statement in split_statements(&text) {
            let _ = classify(&statement);
            let _ = command_verb(&statement);
        }
        let _ = classify(&text);
    }

    #[test]
    fn sql_splitter_and_classifier_take_sql_like_noise(parts in proptest::collection::vec(prop_oneof![
        Just("SELECT"), Just("INSERT"), Just("BEGIN"), Just("COMMIT"), Just(";"), Just("'"), Just("\""),
        Just("--"), Just("/*"), Just("*/"), Just("$1"), Just("("), Just(")"), Just("WITH"), Just("PRAGMA"),
        Just("x"), Just(" "), Just("\n"), Just("$$"), Just("`"), Just("["), Just("]"), Just("\\"), Just("\u{0}"),
    ], 0..40)) {
        let text: String = parts.concat();
        for statement in split_statements(&text) {
            let _ = classify(&statement);
            let _ = command_verb(&statement);
        }
    }

    #[test]
    fn binlog_recovery_over_arbitrary_segments_is_ok_or_a_typed_error(
        segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 1..3),
        keep_valid_prefix in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_dir = dir.path().join("log");
        if keep_valid_prefix {
            // A real log first, so the garbage lands after valid records too.
            let (mut log, _) = FileLog::open(&log_dir, FileLogOptions::default()).expect("open");
            for instance in 0..5u64 {
                log.append(&paxsql_binlog::Record {
                    instance_id: instance,
                    kind: paxsql_binlog::RecordKind::Chosen,
                    payload: bytes::Bytes::from(vec![instance as u8; 40]),
                }).expect("append");
            }
            log.sync().expect("sync");
        } else {
            std::fs::create_dir_all(&log_dir).expect("mkdir");
        }
        let mut paths: Vec<_> = std::fs::read_dir(&log_dir).expect("ls").map(|entry| entry.expect("entry").path()).collect();
        paths.sort();
        let first_sequence = paths.len();
        for (index, segment) in segments.iter().enumerate() {
            let path = log_dir.join(format!("segment-{:020}.binlog", first_sequence + index));
            std::fs::write(path, segment).expect("write");
        }
        if keep_valid_prefix {
            // Garbage appended to the valid segment too.
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(&paths[0]).expect("open");
            file.write_all(&segments[0]).expect("append garbage");
        }
        match FileLog::open(&log_dir, FileLogOptions::default()) {
            Ok((log, _)) => {
                if let (Some(first), Some(last)) = (log.first_instance(), log.last_instance()) {
                    let _ = log.read_range(first, last + 1);
                }
            }
            Err(LogError::Corrupt { .. } | LogError::Io { .. }) => {}
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
}
