//! Length-delimited protobuf frames: a u32 big-endian length, then the message.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::FORWARD_FRAME_BYTES_MAX;

/// Writes one frame.
pub async fn write_frame<M: Message>(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &M,
) -> std::io::Result<()> {
    let length = message.encoded_len();
    if length > FORWARD_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("forward frame of {length} bytes exceeds {FORWARD_FRAME_BYTES_MAX}"),
        ));
    }
    let mut buffer = Vec::with_capacity(4 + length);
    buffer.extend_from_slice(&(length as u32).to_be_bytes());
    message.encode(&mut buffer).expect("a Vec grows as needed");
    stream.write_all(&buffer).await?;
    stream.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<M: Message + Default>(
    stream: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<M>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FORWARD_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("forward frame of {length} bytes exceeds {FORWARD_FRAME_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    M::decode(body.as_slice())
        .map(Some)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}
