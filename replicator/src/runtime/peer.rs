//! The outbound side of one peer: connect, handshake, write queued frames, reconnect.
//!
//! Reconnects wait with exponential backoff, from
//! [`PEER_RECONNECT_BACKOFF_MIN_MS`] doubling to [`PEER_RECONNECT_BACKOFF_MAX_MS`], each wait
//! jittered to a random point in its upper half so restarted nodes do not reconnect in step.
//! Queued frames wait while the peer is away (the queue is bounded; overflow is dropped by
//! the sender). The frame being written when a connection breaks is lost: Paxos retries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::limits::{
    PEER_CONNECT_TIMEOUT_MS, PEER_HANDSHAKE_TIMEOUT_MS, PEER_RECONNECT_BACKOFF_MAX_MS,
    PEER_RECONNECT_BACKOFF_MIN_MS, PEER_WRITE_BATCH_FRAMES_MAX,
};
use crate::paxos::NodeId;
use crate::runtime::frame::{FrameCodec, FrameError};
use crate::runtime::handshake::{self, HandshakeError};
use crate::runtime::transport::Shared;

/// Exponential backoff with jitter, bounded by the limits above.
#[derive(Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            next_ms: PEER_RECONNECT_BACKOFF_MIN_MS,
        }
    }

    /// The wait before the next attempt: a random point in `[next/2, next]`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling_ms = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(PEER_RECONNECT_BACKOFF_MAX_MS);
        Duration::from_millis(rand::rng().random_range(ceiling_ms / 2..=ceiling_ms))
    }

    pub fn reset(&mut self) {
        self.next_ms = PEER_RECONNECT_BACKOFF_MIN_MS;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an outbound connection ended.
enum Ended {
    Cancelled,
    Broken,
}

/// Keeps one connection to `peer` at `address` alive until `cancel` fires, writing the frames
/// that arrive on `queue`.
pub(crate) async fn run_outbound(
    shared: Arc<Shared>,
    peer: NodeId,
    address: String,
    mut queue: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut last_failure = String::new();
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            attempt = connect(&shared, peer, &address) => attempt,
        };
        match attempt {
            Ok(framed) => {
                backoff.reset();
                last_failure.clear();
                if let Ended::Cancelled = pump(&shared, peer, framed, &mut queue, &cancel).await {
                    return;
                }
                tracing::info!(peer, %address, "connection to peer lost; reconnecting");
            }
            Err(failure) => {
                // Say each distinct failure once, not every backoff period.
                if failure.to_string() != last_failure {
                    last_failure = failure.to_string();
                    if let ConnectError::Handshake(error) = &failure {
                        shared.report_handshake_failure(&address, error);
                    } else {
                        tracing::debug!(peer, %address, error = %failure, "cannot reach peer");
                    }
                } else if let ConnectError::Handshake(error) = &failure {
                    if error.is_refusal() {
                        shared
                            .metrics
                            .handshakes_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error(transparent)]
    Handshake(HandshakeError),
}

async fn connect(
    shared: &Shared,
    peer: NodeId,
    address: &str,
) -> Result<Framed<TcpStream, FrameCodec>, ConnectError> {
    let stream = tokio::time::timeout(
        Duration::from_millis(PEER_CONNECT_TIMEOUT_MS),
        TcpStream::connect(address),
    )
    .await
    .map_err(|_| ConnectError::ConnectTimeout)?
    .map_err(ConnectError::Connect)?;
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new());
    let cluster_gid = shared.cluster_gid.load(Ordering::Relaxed);
    let info = tokio::time::timeout(
        Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS),
        handshake::connect(&mut framed, &shared.identity, cluster_gid, peer),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimeout)?
    .map_err(ConnectError::Handshake)?;
    tracing::info!(peer, %address, sql_addr = %info.sql_addr, "connected to peer");
    shared.remember_peer(info);
    shared
        .metrics
        .peer_connections_established
        .fetch_add(1, Ordering::Relaxed);
    Ok(framed)
}

/// Writes queued frames until the connection breaks or `cancel` fires. The read half only
/// watches for the peer closing the connection: nothing is expected on it.
async fn pump(
    shared: &Shared,
    peer: NodeId,
    framed: Framed<TcpStream, FrameCodec>,
    queue: &mut mpsc::Receiver<Bytes>,
    cancel: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = framed.split();
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            incoming = stream.next() => match incoming {
                // The peer closed or reset the connection.
                None | Some(Err(_)) => return Ended::Broken,
                Some(Ok(_)) => {
                    tracing::debug!(peer, "ignoring a frame on an outbound connection");
                    continue;
                }
            },
            body = queue.recv() => match body {
                Some(body) => body,
                // The transport handle is gone: nothing more will be sent.
                None => return Ended::Cancelled,
            },
        };
        let written = write_batch(&mut sink, first, queue).await;
        match written {
            Ok(frames) => {
                shared
                    .metrics
                    .frames_sent
                    .fetch_add(frames, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::debug!(peer, %error, "writing to peer failed");
                return Ended::Broken;
            }
        }
    }
}

/// Feeds `first` and whatever else is queued (up to the batch bound), then flushes once.
async fn write_batch<S>(
    sink: &mut S,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
) -> Result<u64, FrameError>
where
    S: futures::Sink<Bytes, Error = FrameError> + Unpin,
{
    sink.feed(first).await?;
    let mut frames = 1;
    while frames < PEER_WRITE_BATCH_FRAMES_MAX as u64 {
        match queue.try_recv() {
            Ok(body) => {
                sink.feed(body).await?;
                frames += 1;
            }
            Err(_) => break,
        }
    }
    sink.flush().await?;
    Ok(frames)
}
