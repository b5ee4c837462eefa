//! Length-delimited protobuf frames: a u32 big-endian length, then the message.
//!
//! A frame's body is read into a buffer that grows only as its bytes arrive (see
//! [`read_body`]): a header is four bytes anyone can send, and it must not cost the node the
//! length it declares.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{FORWARD_FRAME_BYTES_MAX, FORWARD_FRAME_READ_STEP_BYTES};

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

/// Reads one frame of at most [`FORWARD_FRAME_BYTES_MAX`]; `Ok(None)` on a clean end of stream
/// before a frame starts.
pub async fn read_frame<M: Message + Default>(
    stream: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<M>> {
    read_frame_bounded(stream, FORWARD_FRAME_BYTES_MAX).await
}

/// [`read_frame`] with a tighter bound (frames before authentication are small).
pub async fn read_frame_bounded<M: Message + Default>(
    stream: &mut (impl AsyncRead + Unpin),
    bytes_max: usize,
) -> std::io::Result<Option<M>> {
    assert!(
        bytes_max <= FORWARD_FRAME_BYTES_MAX,
        "frame bound above the cap"
    );
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("forward frame of {length} bytes exceeds {bytes_max}"),
        ));
    }
    let mut body = Vec::new();
    read_body(stream, length, &mut body).await?;
    M::decode(body.as_slice())
        .map(Some)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Appends exactly `length` bytes from `stream` to the empty `body`, growing it only as bytes
/// arrive: its capacity stays within `max(FORWARD_FRAME_READ_STEP_BYTES, 2 × bytes received)`
/// and never passes `length`, so a header that declares 64 MiB and then stalls or ends costs
/// one step, not 64 MiB. (Doubling, not a fixed step, keeps a real 64 MiB frame to a few
/// reallocations.) An end of stream before `length` bytes is `UnexpectedEof`.
pub async fn read_body(
    stream: &mut (impl AsyncRead + Unpin),
    length: usize,
    body: &mut Vec<u8>,
) -> std::io::Result<()> {
    assert!(body.is_empty(), "read_body fills an empty buffer");
    while body.len() < length {
        let remaining = length - body.len();
        if body.len() == body.capacity() {
            let growth = body.len().max(FORWARD_FRAME_READ_STEP_BYTES).min(remaining);
            body.reserve_exact(growth);
        }
        let room = (body.capacity() - body.len()).min(remaining);
        let read = (&mut *stream).take(room as u64).read_buf(body).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the stream ended {} bytes into a forward frame of {length}",
                    body.len()
                ),
            ));
        }
    }
    Ok(())
}
