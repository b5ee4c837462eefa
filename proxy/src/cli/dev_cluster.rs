//! `paxsql dev-cluster`: N node processes on loopback, for trying paxsql and its failover.
//!
//! Node i listens for SQL on `P+i-1`, for peers on `P+100+i-1` and for HTTP on `P+200+i-1`.
//! The children are separate processes so that `kill -9 PID` of one is a real node failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// Most nodes one dev cluster starts (each needs three ports).
pub const DEV_CLUSTER_NODES_MAX: u32 = 9;
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, clap::Args)]
pub struct DevClusterArgs {
    /// How many node processes to start (1 to 9; 3 tolerates one failure, 5 two).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Parent directory; node i keeps its data in DIR/node<i>.
    #[arg(long, default_value = "./paxsql-data")]
    pub data_dir: PathBuf,
    /// First port: SQL on P.., peer on P+100.., HTTP on P+200..
    #[arg(long, default_value_t = 5433)]
    pub base_port: u16,
    /// Flags passed to every `paxsql node` after `--`, e.g. `-- --lease-ms 2000`.
    #[arg(last = true)]
    pub node_flags: Vec<String>,
}

/// The ports of node `index` (1-based).
pub fn node_ports(base_port: u16, index: u32) -> (u16, u16, u16) {
    let offset = (index - 1) as u16;
    (
        base_port + offset,
        base_port + 100 + offset,
        base_port + 200 + offset,
    )
}

/// The argument list that starts node `index` of the cluster.
pub fn node_command_args(args: &DevClusterArgs, index: u32) -> Vec<String> {
    let (sql, peer, http) = node_ports(args.base_port, index);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|id| format!("{id}=127.0.0.1:{}", node_ports(args.base_port, id).1))
        .collect();
    let mut command = vec![
        "node".to_string(),
        "--id".into(),
        index.to_string(),
        "--data-dir".into(),
        args.data_dir
            .join(format!("node{index}"))
            .display()
            .to_string(),
        "--sql".into(),
        format!("127.0.0.1:{sql}"),
        "--peer".into(),
        format!("127.0.0.1:{peer}"),
        "--http".into(),
        format!("127.0.0.1:{http}"),
        "--peers".into(),
        peers.join(","),
    ];
    command.extend(args.node_flags.iter().cloned());
    command
}

pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > DEV_CLUSTER_NODES_MAX {
        bail!(
            "--nodes {} is out of range: use 1..={DEV_CLUSTER_NODES_MAX}",
            args.nodes
        );
    }
    if u32::from(args.base_port) + 200 + args.nodes > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} nodes' ports",
            args.base_port,
            args.nodes
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let exe =
        std::env::current_exe().context("cannot find the paxsql executable to start nodes")?;
    let mut children = Vec::new();
    for index in 1..=args.nodes {
        let child = spawn_node(&exe, &node_command_args(&args, index))
            .with_context(|| format!("cannot start node {index}"))?;
        children.push((index, child));
    }
    print_banner(&args, &exe, &children);
    supervise(&args, &exe, children).await
}

fn spawn_node(exe: &PathBuf, node_args: &[String]) -> std::io::Result<Child> {
    let mut command = Command::new(exe);
    command
        .args(node_args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // A child must not outlive dev-cluster, even if dev-cluster itself is killed with SIGKILL.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

fn print_banner(args: &DevClusterArgs, exe: &std::path::Path, children: &[(u32, Child)]) {
    println!(
        "paxsql dev-cluster: {} nodes, data in {}",
        args.nodes,
        args.data_dir.display()
    );
    for (index, child) in children {
        let (sql, peer, http) = node_ports(args.base_port, *index);
        println!(
            "  node {index}: pid {:>7}  sql 127.0.0.1:{sql}  peer :{peer}  http http://127.0.0.1:{http}/status",
            child.id().unwrap_or(0)
        );
    }
    let (sql, _, http) = node_ports(args.base_port, 1);
    println!();
    println!("connect:   psql -h 127.0.0.1 -p {sql} -U paxsql main");
    println!(
        "status:    {} status --http 127.0.0.1:{http}",
        exe.display()
    );
    println!(
        "failover:  kill -9 the master's pid (see `status`), then keep writing through any node"
    );
    println!("stop:      Ctrl-C");
}

async fn supervise(
    args: &DevClusterArgs,
    exe: &std::path::Path,
    mut children: Vec<(u32, Child)>,
) -> anyhow::Result<()> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reported = vec![false; children.len()];
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (slot, (index, child)) in children.iter_mut().enumerate() {
            if reported[slot] {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                reported[slot] = true;
                println!(
                    "node {index} exited ({status}). The others keep serving; restart it with:\n  {} {}",
                    exe.display(),
                    node_command_args(args, *index).join(" ")
                );
            }
        }
    }
    println!("stopping {} nodes…", children.len());
    stop_all(&mut children).await;
    Ok(())
}

async fn stop_all(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on a child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for (index, child) in children.iter_mut() {
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            eprintln!("node {index} did not stop within {STOP_GRACE:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_documented_layout() {
        assert_eq!(node_ports(5433, 1), (5433, 5533, 5633));
        assert_eq!(node_ports(5433, 3), (5435, 5535, 5635));
    }

    #[test]
    fn node_flags_after_double_dash_reach_every_node() {
        let args = DevClusterArgs {
            nodes: 3,
            data_dir: PathBuf::from("d"),
            base_port: 7000,
            node_flags: vec!["--lease-ms".into(), "2000".into()],
        };
        let command = node_command_args(&args, 2);
        assert!(command.ends_with(&["--lease-ms".to_string(), "2000".to_string()]));
        assert!(command.contains(&"1=127.0.0.1:7100,2=127.0.0.1:7101,3=127.0.0.1:7102".to_string()));
        assert!(command.contains(&"127.0.0.1:7001".to_string()));
    }
}
