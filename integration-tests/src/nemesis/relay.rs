//! A fault-injecting TCP relay for one direction of one peer link.
//!
//! Peer connections are one-way (node i writes on its outbound connection to j and reads only
//! on inbound ones), so one relay per ordered pair (i → j) controls exactly the messages i sends
//! to j: node i's `--peers` names the relay as j's address, and the relay forwards to j's real
//! peer port. The handshake bytes j sends back on that connection travel through the same relay.
//!
//! Modes:
//! - [`LinkMode::Pass`]: bytes flow.
//! - [`LinkMode::Delay`]: every chunk is delivered that long after it was read, in order.
//! - [`LinkMode::Drop`]: a black hole. Open connections are closed (a byte stream cannot lose a
//!   message in the middle without corrupting the framing); new connections are accepted but
//!   nothing is forwarded and nothing answers, as when packets vanish: the sender only learns
//!   from its own timeouts.
//! - [`LinkMode::Cut`]: open connections are closed and new ones are closed at once (a reset).
//!
//! Leaving `Drop` closes the black-holed connections so the sender reconnects.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes read per chunk.
const RELAY_CHUNK_BYTES: usize = 64 * 1024;
/// How long the relay waits to connect to the real peer port.
const RELAY_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// What a link does to the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    Delay(Duration),
    Drop,
    Cut,
}

struct RelayState {
    mode: Mutex<LinkMode>,
    /// Bumped whenever open connections must close; each connection watches it.
    epoch: watch::Sender<u64>,
}

/// One relay: a loopback listener forwarding to `target`.
pub struct Relay {
    port: u16,
    state: Arc<RelayState>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Binds a loopback port now (so the address can go into `--peers` before any node
    /// starts) and forwards every connection to `target`. Must run inside a tokio runtime.
    pub fn start(target: String) -> anyhow::Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let listener = TcpListener::from_std(listener)?;
        let (epoch, _) = watch::channel(0);
        let state = Arc::new(RelayState {
            mode: Mutex::new(LinkMode::Pass),
            epoch,
        });
        let accept_task = tokio::spawn(accept_loop(listener, target, state.clone()));
        Ok(Relay {
            port,
            state,
            accept_task,
        })
    }

    /// The address nodes should dial.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn mode(&self) -> LinkMode {
        *self.state.mode.lock().expect("relay mode lock")
    }

    /// Switches the link's mode; closes open connections when the new mode requires it.
    pub fn set_mode(&self, mode: LinkMode) {
        let mut current = self.state.mode.lock().expect("relay mode lock");
        let old = *current;
        *current = mode;
        drop(current);
        let closes = matches!(mode, LinkMode::Drop | LinkMode::Cut) || old == LinkMode::Drop;
        if closes && old != mode {
            self.state.epoch.send_modify(|epoch| *epoch += 1);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.state.epoch.send_modify(|epoch| *epoch += 1);
    }
}

async fn accept_loop(listener: TcpListener, target: String, state: Arc<RelayState>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let mode = *state.mode.lock().expect("relay mode lock");
        let epoch = state.epoch.subscribe();
        match mode {
            LinkMode::Cut => drop(inbound),
            LinkMode::Drop => {
                tokio::spawn(black_hole(inbound, epoch));
            }
            LinkMode::Pass | LinkMode::Delay(_) => {
                tokio::spawn(forward(inbound, target.clone(), state.clone(), epoch));
            }
        }
    }
}

/// Reads and discards until the epoch changes, then closes.
async fn black_hole(mut inbound: TcpStream, mut epoch: watch::Receiver<u64>) {
    let mut buffer = vec![0u8; RELAY_CHUNK_BYTES];
    loop {
        tokio::select! {
            _ = epoch.changed() => return,
            read = inbound.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

async fn forward(
    inbound: TcpStream,
    target: String,
    state: Arc<RelayState>,
    epoch: watch::Receiver<u64>,
) {
    let connect = tokio::time::timeout(
        Duration::from_millis(RELAY_CONNECT_TIMEOUT_MS),
        TcpStream::connect(&target),
    )
    .await;
    let Ok(Ok(outbound)) = connect else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let forward = pump(inbound_read, outbound_write, state.clone(), epoch.clone());
    let backward = pump(outbound_read, inbound_write, state, epoch);
    // When either direction ends, both sockets close (dropping the halves).
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
    }
}

/// Copies `from` to `to`, delaying each chunk by the link's current delay, until either side
/// closes or the epoch changes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<RelayState>,
    mut epoch: watch::Receiver<u64>,
) {
    let mut buffer = vec![0u8; RELAY_CHUNK_BYTES];
    let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let next_due = pending.front().map(|(due, _)| *due);
        tokio::select! {
            _ = epoch.changed() => return,
            _ = sleep_until_or_forever(next_due) => {
                let (_, chunk) = pending.pop_front().expect("a chunk is due");
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            read = from.read(&mut buffer) => {
                let bytes = match read {
                    Ok(0) | Err(_) => return,
                    Ok(bytes) => bytes,
                };
                let mode = *state.mode.lock().expect("relay mode lock");
                match mode {
                    LinkMode::Delay(delay) => {
                        pending.push_back((Instant::now() + delay, buffer[..bytes].to_vec()));
                    }
                    _ if pending.is_empty() => {
                        if to.write_all(&buffer[..bytes]).await.is_err() {
                            return;
                        }
                    }
                    // Delay just ended: keep order behind the chunks still held.
                    _ => pending.push_back((Instant::now(), buffer[..bytes].to_vec())),
                }
            }
        }
    }
}

async fn sleep_until_or_forever(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
