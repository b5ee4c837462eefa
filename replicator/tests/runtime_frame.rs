//! Peer frames: round trip, limits, and arbitrary bytes never panic the decoder.

mod runtime_support;

use bytes::{BufMut, Bytes, BytesMut};
use paxsql_replicator::runtime::frame::{decode_body, encode_body, FrameCodec, FrameError};
use paxsql_schema::Envelope;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use runtime_support::{heartbeat, marker};

#[test]
fn an_envelope_survives_encode_and_decode_through_the_codec() {
    let envelope = heartbeat("main", 1, 2, 42);
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    codec
        .encode(encode_body(&envelope).expect("small"), &mut wire)
        .expect("encodes");
    assert_eq!(&wire[..4], &(wire.len() as u32 - 4).to_be_bytes());

    let body = codec.decode(&mut wire).expect("valid").expect("complete");
    let decoded: Envelope = decode_body(body).expect("decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(marker(&decoded), Some(42));
    assert!(wire.is_empty());
}

#[test]
fn a_frame_split_anywhere_is_reassembled() {
    let mut codec = FrameCodec::new();
    let mut wire = BytesMut::new();
    for index in 0..3 {
        codec
            .encode(
                encode_body(&heartbeat("main", 1, 2, index)).expect("small"),
                &mut wire,
            )
            .expect("encodes");
    }
    let mut buffer = BytesMut::new();
    let mut markers = Vec::new();
    for byte in wire.iter() {
        buffer.put_u8(*byte);
        while let Some(body) = codec.decode(&mut buffer).expect("valid") {
            markers
                .push(marker(&decode_body::<Envelope>(body).expect("decodes")).expect("heartbeat"));
        }
    }
    assert_eq!(markers, vec![0, 1, 2]);
}

#[test]
fn an_oversized_length_is_refused_before_its_bytes_arrive() {
    let mut codec = FrameCodec::with_max_bytes(1024);
    let mut wire = BytesMut::new();
    wire.put_u32(1025);
    match codec.decode(&mut wire) {
        Err(FrameError::TooLarge {
            bytes: 1025,
            limit: 1024,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut wire = BytesMut::new();
    wire.put_u32(1024);
    assert!(
        codec
            .decode(&mut wire)
            .expect("at the limit is fine")
            .is_none(),
        "waits for the body"
    );
}

#[test]
fn an_oversized_body_is_refused_by_the_encoder() {
    let mut codec = FrameCodec::with_max_bytes(8);
    let mut wire = BytesMut::new();
    let refused = codec.encode(Bytes::from(vec![0u8; 9]), &mut wire);
    assert!(matches!(
        refused,
        Err(FrameError::TooLarge { bytes: 9, limit: 8 })
    ));
    assert!(wire.is_empty());
}

#[test]
fn bytes_that_are_not_an_envelope_are_malformed() {
    // Field 1 with wire type 7 does not exist in protobuf.
    let refused = decode_body::<Envelope>(Bytes::from_static(&[0x0f, 0x01]));
    assert!(
        matches!(refused, Err(FrameError::Malformed { .. })),
        "{refused:?}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 0usize..2048) {
        let mut codec = FrameCodec::with_max_bytes(max);
        let mut buffer = BytesMut::from(bytes.as_slice());
        // Stops at the first error or incomplete frame; neither may panic.
        while let Ok(Some(body)) = codec.decode(&mut buffer) {
            prop_assert!(body.len() <= max);
            let _ = decode_body::<Envelope>(body);
        }
    }

    #[test]
    fn arbitrary_envelope_bodies_round_trip(group in "[a-z]{0,20}", from in any::<u32>(), to in any::<u32>(), mark in any::<u64>()) {
        let envelope = heartbeat(&group, from, to, mark);
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec.encode(encode_body(&envelope).expect("small"), &mut wire).expect("encodes");
        let body = codec.decode(&mut wire).expect("valid").expect("complete");
        prop_assert_eq!(decode_body::<Envelope>(body).expect("decodes"), envelope);
    }
}
