//! The README's quick start, run as written: `paxsql dev-cluster` with its defaults, then the
//! commands of the "Quick start" block, then the failover it describes, then Ctrl-C.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paxsql_integration_tests::cluster::http_get_json;
use paxsql_integration_tests::paxsql_bin;

/// The shell lines of the README's "## Quick start" code block.
fn quick_start_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md is readable");
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let block = section
        .split("```sh")
        .nth(1)
        .expect("Quick start has a sh block");
    let block = block.split("```").next().expect("the block ends");
    block
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

async fn wait_for_master(http: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = http_get_json(http, "/status").await {
            if let Some(master) = status["master_id"].as_u64() {
                let master_http = format!("127.0.0.1:{}", 5633 + master - 1);
                if let Ok(master_status) = http_get_json(&master_http, "/status").await {
                    if master_status["role"] == "master" {
                        return (master, master_status["pid"].as_u64().expect("pid"));
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the dev cluster elected no master in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_shell(line: &str) -> String {
    let bin = paxsql_bin();
    let line = line.replace("./target/release/paxsql", &bin.display().to_string());
    let output = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "README command failed: {line}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_works_as_written() {
    // Phase 1: `dev-cluster` with its defaults, in a fresh directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Command::new(paxsql_bin())
        .arg("dev-cluster")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dev-cluster starts");
    let (master, master_pid) = wait_for_master("127.0.0.1:5633").await;

    // Phase 2: every line of the quick start succeeds; the SELECT sees both rows.
    let commands = quick_start_commands();
    assert!(
        commands.len() >= 4,
        "the quick start has its commands: {commands:?}"
    );
    let mut outputs = String::new();
    for line in &commands {
        outputs.push_str(&run_shell(line));
    }
    assert!(
        outputs.contains("hello") && outputs.contains("world"),
        "SELECT output: {outputs}"
    );
    assert!(outputs.contains("role"), "status output: {outputs}");

    // Phase 3: the failover the README describes: kill -9 the master, write through another node.
    // SAFETY: kill(2) on a process this test started (through dev-cluster).
    unsafe { libc::kill(master_pid as libc::pid_t, libc::SIGKILL) };
    let other_port = 5433 + (master % 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &other_port.to_string(),
                "-U",
                "paxsql",
                "main",
                "-c",
            ])
            .arg("INSERT INTO notes (body) VALUES ('after failover')")
            .output()
            .expect("psql runs");
        if status.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write accepted within 10 s of killing the master"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Phase 4: Ctrl-C stops every node.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(cluster.id() as libc::pid_t, libc::SIGINT) };
    let status = cluster.wait().expect("dev-cluster exits");
    assert!(status.success(), "dev-cluster exited with {status}");
    for port in [5633, 5634, 5635] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a node still listens on {port} after Ctrl-C"
        );
    }
}
