//! `paxsql backup --http ADDR FILE [--group G]`: a consistent online copy of a group as a
//! plain SQLite file.
//!
//! The node takes the snapshot (`GET /backup`, see [`crate::backup_export`]) and streams it;
//! this side writes it to `FILE.partial`, checks its length, fsyncs it, renames it into place,
//! then opens it and runs `PRAGMA integrity_check` before saying it worked. It prints the
//! instance the copy holds: every write acknowledged at or before that instance is in it,
//! none after it.
//!
//! Before asking, it reads the master's applied instance with a linearizable read over the
//! node's SQL port (a read-index round) and passes it as `min_instance`: the node waits until
//! it has applied that much, so a backup taken on a lagging follower still holds every write
//! acknowledged before the command started.
//!
//! A node started with `--admin-token-file` serves backups only to callers with its token:
//! pass `--admin-token-file` or set `PAXSQL_ADMIN_TOKEN`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backup_export::{GROUP_HEADER, INSTANCE_HEADER};

/// Largest response head accepted from the node.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Longest error body read from the node.
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The node prepares the snapshot before it answers: allow for a big database.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest silence while the file streams.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, clap::Args)]
pub struct BackupArgs {
    /// The node's HTTP address (its --http flag); any node of the group will do.
    #[arg(long, default_value = "127.0.0.1:5633")]
    pub http: String,
    /// The group (database) to back up.
    #[arg(long, default_value = "main")]
    pub group: String,
    /// Where to write the SQLite file (replaced if it exists).
    pub file: PathBuf,
    #[command(flatten)]
    pub token: super::admin::AdminTokenArgs,
}

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub group: String,
    pub instance: u64,
    pub bytes: u64,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let token = args.token.token()?;
    let barrier = linearizable_instance(&args.http, &args.group).await?;
    let summary = backup_with_token(
        &args.http,
        &args.group,
        barrier,
        &args.file,
        token.as_deref(),
    )
    .await?;
    println!(
        "backup of group {} at instance {}: {} ({} bytes, {:.1} s), integrity_check ok",
        summary.group,
        summary.instance,
        args.file.display(),
        summary.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The master's applied instance of `group`, read linearizably through the SQL port of the
/// node at `http` (followers forward such reads to the master).
pub async fn linearizable_instance(http: &str, group: &str) -> anyhow::Result<u64> {
    let (code, body) = crate::http::get(http, "/status").await?;
    if code != 200 {
        bail!("{http} answered HTTP {code}: {body}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{http} sent invalid JSON"))?;
    let sql_addr = status["sql_addr"]
        .as_str()
        .context("the node's /status has no sql_addr")?;
    let (host, port) = sql_addr.rsplit_once(':').context("malformed sql_addr")?;
    let port: u16 = port.parse().context("malformed sql_addr port")?;
    let client = super::shell::connect(host, port, group, "paxsql").await?;
    let messages = client
        .simple_query(
            "SET paxsql.consistency = 'linearizable'; \
             SELECT value FROM _paxsql_meta WHERE key = 'applied_instance'",
        )
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot read the master's applied instance: {}",
                super::shell::describe_error(&error)
            )
        })?;
    messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .context("the group has applied nothing yet: there is nothing to back up")
}

/// Fetches a backup of `group` from the node at `http` into `file`, once that node has
/// applied `min_instance`.
pub async fn backup(
    http: &str,
    group: &str,
    min_instance: u64,
    file: &Path,
) -> anyhow::Result<BackupSummary> {
    backup_with_token(http, group, min_instance, file, None).await
}

/// [`backup`] sending the admin `token` (required by a node with `--admin-token-file`).
pub async fn backup_with_token(
    http: &str,
    group: &str,
    min_instance: u64,
    file: &Path,
    token: Option<&str>,
) -> anyhow::Result<BackupSummary> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(http))
        .await
        .with_context(|| format!("timed out connecting to {http}"))?
        .with_context(|| format!("cannot connect to {http}: is this a node's --http address?"))?;
    let request = format!(
        "GET /backup?group={group}&min_instance={min_instance} HTTP/1.1\r\nHost: {http}\r\n{}Connection: close\r\n\r\n",
        crate::http::authorization_line(token)
    );
    stream.write_all(request.as_bytes()).await?;
    let (head, mut body_start) = tokio::time::timeout(FIRST_BYTE_TIMEOUT, read_head(&mut stream))
        .await
        .with_context(|| format!("{http} took too long to prepare the backup"))??;
    let (status, headers) = parse_head(&head)?;
    if status != 200 {
        body_start.truncate(ERROR_BODY_BYTES_MAX);
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            READ_IDLE_TIMEOUT,
            (&mut stream)
                .take(ERROR_BODY_BYTES_MAX as u64)
                .read_to_end(&mut rest),
        )
        .await;
        body_start.extend_from_slice(&rest);
        bail!(
            "{http} refused the backup (HTTP {status}): {}",
            String::from_utf8_lossy(&body_start).trim()
        );
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let length: u64 = header("Content-Length")
        .and_then(|value| value.parse().ok())
        .context("the node sent no Content-Length")?;
    let instance: u64 = header(INSTANCE_HEADER)
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("the node sent no {INSTANCE_HEADER} header"))?;
    let served_group = header(GROUP_HEADER).unwrap_or(group).to_string();
    let partial = partial_path(file);
    write_body(&mut stream, &body_start, length, &partial).await?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    sync_parent(file)?;
    verify(file)?;
    Ok(BackupSummary {
        group: served_group,
        instance,
        bytes: length,
    })
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

async fn read_head(stream: &mut TcpStream) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let body = buffer.split_off(end + 4);
            return Ok((buffer, body));
        }
        if buffer.len() > RESPONSE_HEAD_BYTES_MAX {
            bail!("the node's response head is larger than {RESPONSE_HEAD_BYTES_MAX} bytes");
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the node closed the connection before answering");
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn parse_head(head: &[u8]) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).context("the node's response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Writes exactly `length` body bytes to `partial` and fsyncs it.
async fn write_body(
    stream: &mut TcpStream,
    body_start: &[u8],
    length: u64,
    partial: &Path,
) -> anyhow::Result<()> {
    let mut out = tokio::fs::File::create(partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut written = body_start.len() as u64;
    if written > length {
        bail!("the node sent more bytes than its Content-Length");
    }
    out.write_all(body_start).await?;
    let mut chunk = vec![0u8; 256 * 1024];
    while written < length {
        let read = tokio::time::timeout(READ_IDLE_TIMEOUT, stream.read(&mut chunk))
            .await
            .context("the node stopped sending the backup")??;
        if read == 0 {
            let _ = tokio::fs::remove_file(partial).await;
            bail!("the backup stream ended after {written} of {length} bytes; nothing was written");
        }
        let take = read.min((length - written) as usize);
        out.write_all(&chunk[..take]).await?;
        written += take as u64;
    }
    out.flush().await?;
    // fsync failures are not retried: the file is not known to be on disk.
    out.sync_all()
        .await
        .with_context(|| format!("fsync {} failed", partial.display()))?;
    Ok(())
}

fn sync_parent(file: &Path) -> anyhow::Result<()> {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .with_context(|| format!("fsync {} failed", parent.display()))
}

/// Opens the copy and runs `PRAGMA integrity_check`.
pub fn verify(file: &Path) -> anyhow::Result<()> {
    let connection =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", file.display()))?;
    let result: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .with_context(|| format!("{} is not a readable SQLite database", file.display()))?;
    if result != "ok" {
        bail!("{} failed PRAGMA integrity_check: {result}", file.display());
    }
    Ok(())
}
