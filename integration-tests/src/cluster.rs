//! A cluster of real `paxsql node` processes on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The `paxsql` binary: `$PAXSQL_BIN`, or the one cargo built beside this test executable.
pub fn paxsql_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PAXSQL_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target/<profile>/paxsql
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join("paxsql");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p paxsql-proxy` (cargo test --workspace does) or set PAXSQL_BIN",
        bin.display()
    );
    bin
}

/// A free loopback port (bound and released; the tiny race is acceptable in tests).
///
/// Nodes bind their ports only after they start, so a port taken from the kernel's ephemeral
/// range (what binding port 0 gives) can be handed meanwhile to some other socket of a
/// parallel test (a relay, a client connection) and the node fails to start. Ports come from
/// below the ephemeral range instead (10000–32767), spread by process id, never handed out twice
/// by one process, and checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// One node process.
pub struct NodeProcess {
    pub id: u32,
    pub sql_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Extra environment for the process (fault-injection hooks); see [`NodeProcess::set_env`].
    env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
}

impl NodeProcess {
    pub fn sql_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sql_port)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sets (or, with `None`, removes) an environment variable for the next [`start`](Self::start).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(existing, _)| existing != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Sets `flag` to `value` for the next [`start`](Self::start): replaces the value that
    /// follows `flag` in the node's arguments, or appends both.
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|arg| arg == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value.to_string(),
            _ => self.args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// The node's log file (stdout and stderr of every start).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts (or restarts) the process on the same data dir and ports.
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        let child = Command::new(paxsql_bin())
            .args(&self.args)
            .env(
                "PAXSQL_LOG",
                std::env::var("PAXSQL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn paxsql node")?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: a crash, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (SIGSTOP/SIGCONT for pauses).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// The node's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Has the process exited on its own? Returns its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Chooses the address node `from` uses to reach node `to`, given `to`'s real peer address
/// (e.g. a fault-injecting relay in front of it). Called once per ordered pair at spawn time.
pub type PeerRoute = Arc<dyn Fn(u32, u32, &str) -> String + Send + Sync>;

/// Optional knobs of [`Cluster::spawn_with`]; the default is what [`Cluster::spawn`] does.
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// Per-node peer lists: when set, node `from`'s `--peers` names `route(from, to, real)` for
    /// every other node `to` (its own entry stays its real peer address).
    pub peer_route: Option<PeerRoute>,
    /// Extra environment variables per node id (fault-injection hooks in tests).
    pub node_env: Vec<(u32, String, String)>,
}

/// How many arguments [`node_args`] produces (the flags that follow are extras).
const NODE_ARGS_LEN: usize = 13;

/// `node --id … --data-dir … --sql … --peer … --http … --peers …` for one node on loopback.
fn node_args(
    id: u32,
    data_dir: &Path,
    (sql, peer, http): (u16, u16, u16),
    peers: &str,
) -> Vec<String> {
    let args: Vec<String> = vec![
        "node".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--sql".into(),
        format!("127.0.0.1:{sql}"),
        "--peer".into(),
        format!("127.0.0.1:{peer}"),
        "--http".into(),
        format!("127.0.0.1:{http}"),
        "--peers".into(),
        peers.to_string(),
    ];
    debug_assert_eq!(args.len(), NODE_ARGS_LEN);
    args
}

/// N node processes in a temporary directory.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` nodes with `extra` flags each, and waits until a master serves.
    pub async fn start(count: u32, extra: &[&str]) -> anyhow::Result<Cluster> {
        Ok(Self::start_elected(count, extra).await?.0)
    }

    /// [`Cluster::start`], also answering the master's node id.
    pub async fn start_elected(count: u32, extra: &[&str]) -> anyhow::Result<(Cluster, u32)> {
        let cluster = Self::spawn(count, extra)?;
        let master = cluster.wait_for_master(Duration::from_secs(30)).await?;
        Ok((cluster, master))
    }

    /// Starts `count` nodes with `options`, and waits until a master serves.
    pub async fn start_with(
        count: u32,
        extra: &[&str],
        options: ClusterOptions,
    ) -> anyhow::Result<Cluster> {
        let cluster = Self::spawn_with(count, extra, options)?;
        cluster.wait_for_master(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Starts `count` nodes without waiting for anything.
    pub fn spawn(count: u32, extra: &[&str]) -> anyhow::Result<Cluster> {
        Self::spawn_with(count, extra, ClusterOptions::default())
    }

    /// Starts `count` nodes with `options`, without waiting for anything.
    pub fn spawn_with(
        count: u32,
        extra: &[&str],
        options: ClusterOptions,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("paxsql-it-").tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (index, (sql, peer, http)) in ports.iter().copied().enumerate() {
            let id = index as u32 + 1;
            let peers: Vec<String> = ports
                .iter()
                .enumerate()
                .map(|(index, (_, peer, _))| {
                    let to = index as u32 + 1;
                    let real = format!("127.0.0.1:{peer}");
                    match &options.peer_route {
                        Some(route) if to != id => format!("{to}={}", route(id, to, &real)),
                        _ => format!("{to}={real}"),
                    }
                })
                .collect();
            let data_dir = dir.path().join(format!("node{id}"));
            let mut args = node_args(id, &data_dir, (sql, peer, http), &peers.join(","));
            args.extend(extra.iter().map(|flag| flag.to_string()));
            let mut node = NodeProcess {
                id,
                sql_port: sql,
                peer_port: peer,
                http_port: http,
                log_path: dir.path().join(format!("node{id}.log")),
                data_dir,
                args,
                env: options
                    .node_env
                    .iter()
                    .filter(|(node, _, _)| *node == id)
                    .map(|(_, key, value)| (key.clone(), value.clone()))
                    .collect(),
                child: None,
            };
            node.start()?;
            nodes.push(node);
        }
        Ok(Cluster { nodes, dir })
    }

    /// Prepares (does not start) one more node with a fresh data dir, whose `--peers` lists
    /// every existing node and itself, with the first node's flags plus `extra` (e.g. `--join`).
    pub fn add_node(&mut self, extra: &[&str]) -> &mut NodeProcess {
        let id = self.nodes.len() as u32 + 1;
        let (sql, peer, http) = (free_port(), free_port(), free_port());
        let mut peers: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}=127.0.0.1:{}", node.id, node.peer_port))
            .collect();
        peers.push(format!("{id}=127.0.0.1:{peer}"));
        let data_dir = self.dir.path().join(format!("node{id}"));
        // The first node's flags after its own addresses are the cluster-wide extras.
        let shared_extra: Vec<String> = self.nodes[0]
            .args
            .iter()
            .skip(NODE_ARGS_LEN)
            .cloned()
            .collect();
        let mut args = node_args(id, &data_dir, (sql, peer, http), &peers.join(","));
        args.extend(shared_extra);
        args.extend(extra.iter().map(|flag| flag.to_string()));
        self.nodes.push(NodeProcess {
            id,
            sql_port: sql,
            peer_port: peer,
            http_port: http,
            log_path: self.dir.path().join(format!("node{id}.log")),
            data_dir,
            args,
            env: Vec::new(),
            child: None,
        });
        self.nodes.last_mut().expect("just pushed")
    }

    pub fn node(&mut self, id: u32) -> &mut NodeProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    /// `/status` of node `id`, if it answers.
    pub async fn status(&self, id: u32) -> Option<serde_json::Value> {
        let node = &self.nodes[(id - 1) as usize];
        if !node.is_running() {
            return None;
        }
        http_get_json(&node.http_addr(), "/status").await.ok()
    }

    /// Waits until some running node reports itself master and every running node agrees.
    pub async fn wait_for_master(&self, timeout: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(master) = self.agreed_master().await {
                return Ok(master);
            }
            if Instant::now() > deadline {
                bail!("no master within {timeout:?}; logs:\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a master (see [`Self::wait_for_master`]) and returns a node that is not it.
    pub async fn wait_for_follower(&self, timeout: Duration) -> anyhow::Result<&NodeProcess> {
        let master = self.wait_for_master(timeout).await?;
        self.nodes
            .iter()
            .find(|node| node.id != master && node.is_running())
            .context("no running follower")
    }

    async fn agreed_master(&self) -> Option<u32> {
        let mut master = None;
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let status = http_get_json(&node.http_addr(), "/status").await.ok()?;
            let id = status["master_id"].as_u64()? as u32;
            if master.is_some_and(|known| known != id) {
                return None;
            }
            master = Some(id);
        }
        let id = master?;
        let status = self.status(id).await?;
        (status["role"] == "master").then_some(id)
    }

    /// Waits until every running node has applied at least `instance`.
    pub async fn wait_applied(&self, instance: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for node in self.nodes.iter().filter(|node| node.is_running()) {
                let applied = http_get_json(&node.http_addr(), "/status")
                    .await
                    .ok()
                    .and_then(|status| status["applied_instance"].as_u64());
                if applied.is_none_or(|applied| applied < instance) {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not every node applied instance {instance} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied what the cluster has chosen.
    pub async fn settle(&self) {
        let committed = self.committed_instance().await;
        self.wait_applied(committed, Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| {
                panic!("replicas did not catch up: {error}\n{}", self.logs_tail())
            });
    }

    /// The highest committed instance any running node reports.
    pub async fn committed_instance(&self) -> u64 {
        let mut highest = 0;
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            if let Ok(status) = http_get_json(&node.http_addr(), "/status").await {
                highest = highest.max(status["committed_instance"].as_u64().unwrap_or(0));
            }
        }
        highest
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            // A start-up error (and its backtrace) can push the reason out of the tail.
            if let Some(error) = lines
                .iter()
                .find(|line| line.starts_with("Error") || line.contains("panicked"))
            {
                out.push_str(&format!("---- node {} first error: {error}\n", node.id));
            }
            out.push_str(&format!(
                "---- node {} ----\n{}\n",
                node.id,
                tail.join("\n")
            ));
        }
        out
    }
}

/// GET a JSON document over HTTP/1.1.
pub async fn http_get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let body = http_get(addr, path).await?.1;
    serde_json::from_str(&body).with_context(|| format!("invalid JSON from {addr}{path}: {body}"))
}

/// GET over HTTP/1.1: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed status line")?;
    Ok((code, body.to_string()))
}
