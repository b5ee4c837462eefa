//! Peer frames: a u32 big-endian length, then that many bytes of one prost message.
//!
//! A frame longer than [`PEER_FRAME_BYTES_MAX`](crate::limits::PEER_FRAME_BYTES_MAX) or bytes
//! that do not decode are errors of the connection: the reader closes it and counts why. They
//! never panic, whatever the bytes (a proptest feeds arbitrary input).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::limits::PEER_FRAME_BYTES_MAX;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("frame does not decode as {message}: {source}")]
    Malformed {
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("peer connection I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The codec of peer connections, for `tokio_util::codec::Framed`.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_bytes: usize,
}

impl FrameCodec {
    pub fn new() -> Self {
        FrameCodec {
            max_bytes: PEER_FRAME_BYTES_MAX,
        }
    }

    /// A codec with a smaller bound (tests).
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        assert!(
            max_bytes <= u32::MAX as usize,
            "a frame length must fit in u32"
        );
        FrameCodec { max_bytes }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if source.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&source[..FRAME_HEADER_BYTES]);
        let length = u32::from_be_bytes(header) as usize;
        if length > self.max_bytes {
            return Err(FrameError::TooLarge {
                bytes: length,
                limit: self.max_bytes,
            });
        }
        let needed = FRAME_HEADER_BYTES + length;
        if source.len() < needed {
            source.reserve(needed - source.len());
            return Ok(None);
        }
        source.advance(FRAME_HEADER_BYTES);
        Ok(Some(source.split_to(length).freeze()))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, destination: &mut BytesMut) -> Result<(), FrameError> {
        if body.len() > self.max_bytes {
            return Err(FrameError::TooLarge {
                bytes: body.len(),
                limit: self.max_bytes,
            });
        }
        destination.reserve(FRAME_HEADER_BYTES + body.len());
        destination.put_u32(u32::try_from(body.len()).expect("bounded by max_bytes <= u32::MAX"));
        destination.extend_from_slice(&body);
        Ok(())
    }
}

/// Encodes a message as a frame body, refusing one larger than the frame limit.
pub fn encode_body<M: Message>(message: &M) -> Result<Bytes, FrameError> {
    let bytes = message.encoded_len();
    if bytes > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            bytes,
            limit: PEER_FRAME_BYTES_MAX,
        });
    }
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Decodes a frame body as `M`.
pub fn decode_body<M: Message + Default>(body: Bytes) -> Result<M, FrameError> {
    M::decode(body).map_err(|source| FrameError::Malformed {
        message: std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("message"),
        source,
    })
}
