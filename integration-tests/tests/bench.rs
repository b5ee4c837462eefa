//! `paxsql bench` runs against a real cluster and reports: CI checks that it measures and that
//! its operations succeed, never how fast they are.

use std::process::Command;
use std::time::Duration;

use paxsql_integration_tests::{paxsql_bin, Cluster};

/// Runs `paxsql bench ARGS --json` and returns its JSON document.
fn bench_json(args: &[String]) -> serde_json::Value {
    let output = Command::new(paxsql_bin())
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run paxsql bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "paxsql bench failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn assert_measured_without_errors(report: &serde_json::Value, side: &str) {
    let summary = &report[side];
    let ops_per_second = summary["ops_per_second"].as_f64().expect("ops_per_second");
    assert!(
        ops_per_second > 0.0,
        "{side}: no operation succeeded: {report}"
    );
    assert!(summary["ops"].as_u64().expect("ops") > 0, "{report}");
    assert!(
        summary["latency_us"]["p50"].as_u64().expect("p50") > 0,
        "{report}"
    );
    let errors = summary["errors"].as_object().expect("errors object");
    assert!(errors.is_empty(), "{side}: errors by SQLSTATE: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_inserts_and_reads_on_a_cluster_with_its_sqlite_baseline() {
    // Phase 1: a three-node cluster with a master.
    let cluster = Cluster::start(3, &[]).await.expect("cluster starts");
    cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let hosts: Vec<String> = cluster.nodes.iter().map(|node| node.sql_addr()).collect();
    let hosts = hosts.join(",");
    let baseline_dir = cluster.dir.path().join("baseline");

    // Phase 2: inserts through every node (followers forward), beside the SQLite baseline.
    let insert = tokio::task::spawn_blocking({
        let args: Vec<String> = [
            "--hosts",
            &hosts,
            "--setup",
            "--rows",
            "100",
            "--workload",
            "insert",
            "--clients",
            "4",
            "--duration",
            "2",
            "--baseline",
            "sqlite",
            "--baseline-dir",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .chain([baseline_dir.display().to_string()])
        .collect();
        move || bench_json(&args)
    })
    .await
    .expect("bench task");
    assert_measured_without_errors(&insert, "paxsql");
    assert_measured_without_errors(&insert, "baseline");
    assert!(
        insert["throughput_ratio"].as_f64().expect("ratio") > 0.0,
        "{insert}"
    );
    assert!(
        insert["floor"]["fsync_us"]["p50"]
            .as_u64()
            .expect("fsync p50")
            > 0,
        "{insert}"
    );
    assert!(
        insert["floor"]["rtt_us"]["p50"].as_u64().expect("rtt p50") > 0,
        "{insert}"
    );
    assert!(
        insert["floor"]["echo_ops_per_second"]
            .as_f64()
            .expect("echo ceiling")
            > 0.0,
        "{insert}"
    );
    assert!(
        insert["throughput_over_echo"]
            .as_f64()
            .expect("paxsql over the echo ceiling")
            > 0.0,
        "{insert}"
    );

    // Phase 3: local point reads of the seeded rows, counted by operations.
    let read = tokio::task::spawn_blocking({
        let args: Vec<String> = [
            "--hosts",
            &hosts,
            "--rows",
            "100",
            "--workload",
            "point-read",
            "--consistency",
            "local",
            "--clients",
            "2",
            "--ops",
            "200",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        move || bench_json(&args)
    })
    .await
    .expect("bench task");
    assert_measured_without_errors(&read, "paxsql");
    assert_eq!(read["paxsql"]["ops"].as_u64(), Some(200), "{read}");
    assert!(
        read["baseline"].is_null(),
        "no baseline was asked for: {read}"
    );
}
