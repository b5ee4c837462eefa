//! The ceiling of request/response over loopback on this machine: a 64-byte echo served by a
//! tokio runtime like a node's, driven the way `paxsql bench` drives paxsql (all clients on one
//! current-thread runtime). No SQL, no replication, no disk: the most round trips per second any
//! networked server could answer here with the same number of connections. It bounds what
//! paxsql can reach, and it moves with the machine's load as paxsql does.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes each way per round trip (a short statement and its command tag are of this order).
const MESSAGE_BYTES: usize = 64;

/// Round trips per second of `clients` connections ping-ponging for `duration`.
pub fn measure(clients: usize, duration: Duration) -> anyhow::Result<f64> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("echo-server")
        .build()
        .context("cannot start the echo server's runtime")?;
    // Bound here and handed to the server's runtime: no `block_on`, which is not allowed on a
    // thread inside another runtime (the bench measures its anchors on such a thread).
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the echo probe")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    server.spawn(async move {
        let Ok(listener) = TcpListener::from_std(listener) else {
            return; // the clients' connects fail and say so
        };
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    // The clients run on a thread of their own, like the bench's.
    let round_trips = std::thread::Builder::new()
        .name("echo-clients".into())
        .spawn(move || -> anyhow::Result<u64> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the echo clients' runtime")?;
            runtime.block_on(drive(address, clients, duration))
        })
        .context("cannot start the echo clients' thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the echo clients panicked"))??;
    server.shutdown_background();
    Ok(round_trips as f64 / duration.as_secs_f64())
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = [0_u8; MESSAGE_BYTES];
    loop {
        stream.read_exact(&mut buffer).await?;
        stream.write_all(&buffer).await?;
    }
}

/// Connects every client first, then ping-pongs until `duration` is up; returns the round trips.
async fn drive(
    address: std::net::SocketAddr,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<u64> {
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = TcpStream::connect(address)
            .await
            .context("cannot connect to the echo probe")?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buffer = [7_u8; MESSAGE_BYTES];
                let mut round_trips = 0_u64;
                while Instant::now() < deadline {
                    stream.write_all(&buffer).await?;
                    stream.read_exact(&mut buffer).await?;
                    round_trips += 1;
                }
                Ok::<u64, std::io::Error>(round_trips)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task
            .await
            .context("an echo client panicked")?
            .context("an echo round trip failed")?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_ceiling_counts_round_trips_of_every_client() {
        let ops_per_second = measure(4, Duration::from_millis(200)).expect("echo probe");
        // Four loopback ping-pongs on any machine make far more than 100 round trips a second;
        // zero would mean the clients never talked to the server.
        assert!(ops_per_second > 100.0, "{ops_per_second}");
    }
}
