//! Client helpers: connect with tokio-postgres, hash table contents.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Connects to `addr` (HOST:PORT), database `db`; the connection task runs in the background.
pub async fn connect(addr: &str, db: &str) -> anyhow::Result<Client> {
    let (host, port) = addr.split_once(':').context("addr is HOST:PORT")?;
    let config = format!("host={host} port={port} user=paxsql dbname={db} connect_timeout=5");
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(&config, NoTls),
    )
    .await
    .with_context(|| format!("timed out connecting to {addr}"))?
    .with_context(|| format!("connect to {addr}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects and sets `paxsql.consistency = 'local'`, to read this node's own replica.
pub async fn connect_local(addr: &str, db: &str) -> anyhow::Result<Client> {
    let client = connect(addr, db).await?;
    client
        .batch_execute("SET paxsql.consistency = 'local'")
        .await?;
    Ok(client)
}

/// Every row of `table` in rowid order, as text, through the simple protocol.
pub async fn table_rows(client: &Client, table: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let messages = client
        .simple_query(&format!("SELECT * FROM {table} ORDER BY rowid"))
        .await
        .with_context(|| format!("read {table}"))?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|index| row.get(index).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// An xxh3 hash of every row of `table` (in rowid order) and the row count.
pub async fn table_hash(client: &Client, table: &str) -> anyhow::Result<(u64, usize)> {
    let rows = table_rows(client, table).await?;
    let text = format!("{rows:?}");
    Ok((xxhash_rust::xxh3::xxh3_64(text.as_bytes()), rows.len()))
}
