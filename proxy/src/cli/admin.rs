//! `paxsql admin …`: membership changes, checkpoints on demand, and the checkpoint streaming
//! benchmark. Every action is an HTTP call to a node's `--http` address, carrying the admin
//! token when one is given (`--admin-token-file`, or `PAXSQL_ADMIN_TOKEN`): a node started with
//! `--admin-token-file` refuses admin calls without it.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub action: AdminAction,
    #[command(flatten)]
    pub token: AdminTokenArgs,
}

/// The admin token a client command sends (nodes started with `--admin-token-file` require it).
#[derive(Clone, Debug, Default, Args)]
pub struct AdminTokenArgs {
    /// File holding the node's admin token (the file given to `paxsql node --admin-token-file`).
    /// Without it, the token is read from the PAXSQL_ADMIN_TOKEN environment variable, if set.
    #[arg(long, global = true, value_name = "PATH")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl AdminTokenArgs {
    /// The token to send, if any (see [`crate::http::client_admin_token`]).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        crate::http::client_admin_token(self.admin_token_file.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Add a node to every group's member list (send it to the master), then start the new
    /// node on an empty data dir with `--join`.
    AddMember {
        #[arg(long)]
        http: String,
        #[arg(long, alias = "id")]
        node: u32,
        /// The new node's peer address (its `--peer`), HOST:PORT.
        #[arg(long)]
        peer: String,
    },
    /// Remove a node from every group's member list (send it to the master).
    RemoveMember {
        #[arg(long)]
        http: String,
        #[arg(long, alias = "id")]
        node: u32,
    },
    /// Replace node `old` by node `node` in one change.
    ReplaceMember {
        #[arg(long)]
        http: String,
        #[arg(long)]
        old: u32,
        #[arg(long, alias = "id")]
        node: u32,
        /// The new node's peer address (its `--peer`), HOST:PORT.
        #[arg(long)]
        peer: String,
    },
    /// Take a checkpoint now (every group, or `--group`).
    Checkpoint {
        #[arg(long)]
        http: String,
        #[arg(long)]
        group: Option<String>,
    },
    /// Benchmark: stream a checkpoint file of `--size-mb` over loopback TCP with the checkpoint
    /// protocol, beside a plain file copy on the same disk.
    BenchCheckpointStream {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 1024)]
        size_mb: u64,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = args.token.token()?;
    let (http, target) = match args.action {
        AdminAction::AddMember { http, node, peer } => (
            http,
            format!("/admin/members?op=add&node={node}&peer={peer}"),
        ),
        AdminAction::RemoveMember { http, node } => {
            (http, format!("/admin/members?op=remove&node={node}"))
        }
        AdminAction::ReplaceMember {
            http,
            old,
            node,
            peer,
        } => (
            http,
            format!("/admin/members?op=replace&node={node}&old={old}&peer={peer}"),
        ),
        AdminAction::Checkpoint { http, group } => {
            let query = group
                .map(|group| format!("?group={group}"))
                .unwrap_or_default();
            (http, format!("/admin/checkpoint{query}"))
        }
        AdminAction::BenchCheckpointStream { dir, size_mb } => {
            return crate::checkpoint_bench::run(&dir, size_mb).await
        }
    };
    let (status, body) = post(&http, &target, token.as_deref()).await?;
    print!("{body}");
    if status == 401 || status == 403 {
        bail!(
            "the node refused the admin call (HTTP {status}): {}",
            body.trim()
        );
    }
    if status != 200 {
        bail!("the node answered HTTP {status}");
    }
    Ok(())
}

/// A minimal HTTP POST (no body), with the admin `token` if any: (status code, body).
pub async fn post(addr: &str, target: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}: is this the node's --http address?"))?;
    let authorization = crate::http::authorization_line(token);
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response after {:?}", started.elapsed()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((status, body.to_string()))
}
