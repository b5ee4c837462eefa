//! What `paxsql bench` prints: one JSON document (`--json`) or a small table for humans.

use serde::Serialize;

use super::baseline::Floor;
use super::failover::FailoverReport;
use super::stats::Summary;
use super::{BenchArgs, Workload};

/// Everything one run measured (the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub clients: u64,
    pub hosts: Vec<String>,
    pub groups: Vec<String>,
    pub consistency: String,
    pub paxsql: Summary,
    /// The same workload on a plain local SQLite file (`--baseline sqlite`).
    pub baseline: Option<Summary>,
    /// paxsql ops/s divided by the baseline's.
    pub throughput_ratio: Option<f64>,
    pub floor: Option<Floor>,
    /// paxsql p50 latency divided by (fsync p50 + RTT p50).
    pub p50_over_floor: Option<f64>,
    /// paxsql ops/s divided by the loopback echo ceiling with as many clients.
    pub throughput_over_echo: Option<f64>,
}

impl BenchReport {
    pub fn new(
        args: &BenchArgs,
        paxsql: Summary,
        baseline: Option<Summary>,
        floor: Option<Floor>,
    ) -> Self {
        let throughput_ratio = baseline
            .as_ref()
            .filter(|baseline| baseline.ops_per_second > 0.0)
            .map(|baseline| paxsql.ops_per_second / baseline.ops_per_second);
        let p50_over_floor = floor
            .as_ref()
            .filter(|floor| floor.floor_p50_us > 0)
            .map(|floor| f64::from(paxsql.latency_us.p50) / f64::from(floor.floor_p50_us));
        let throughput_over_echo = floor
            .as_ref()
            .filter(|floor| floor.echo_ops_per_second > 0.0)
            .map(|floor| paxsql.ops_per_second / floor.echo_ops_per_second);
        BenchReport {
            workload: args.workload,
            clients: args.clients,
            hosts: args.hosts(),
            groups: args.groups.clone(),
            consistency: args.consistency.clone(),
            paxsql,
            baseline,
            throughput_ratio,
            floor,
            p50_over_floor,
            throughput_over_echo,
        }
    }
}

pub fn print(report: &BenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

pub fn print_failover(report: &FailoverReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "group {}: killed node {} (pid {}) with SIGKILL; first acknowledged write after {} ms \
         (lease {} ms, goal ≤ lease + 1000 ms = {} ms); new master: {}",
        report.group,
        report.killed_node,
        report.killed_pid,
        report.failover_ms,
        report.lease_ms,
        report.lease_ms + 1000,
        report
            .new_master
            .map_or("unknown".to_string(), |id| format!("node {id}"))
    );
    if !report.errors.is_empty() {
        println!("failed attempts meanwhile: {:?}", report.errors);
    }
    Ok(())
}

fn row(name: &str, summary: &Summary) -> String {
    let errors = if summary.errors.is_empty() {
        "none".to_string()
    } else {
        summary
            .errors
            .iter()
            .map(|(code, count)| format!("{code}×{count}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{name:<8} {:>10.0} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {errors}\n",
        summary.ops_per_second,
        summary.ops,
        f64::from(summary.latency_us.p50) / 1000.0,
        f64::from(summary.latency_us.p99) / 1000.0,
        f64::from(summary.latency_us.p999) / 1000.0,
        f64::from(summary.latency_us.max) / 1000.0,
    )
}

/// The human-readable table.
pub fn render(report: &BenchReport) -> String {
    let mut out = format!(
        "workload {:?}, {} clients, groups {}, hosts {}, consistency {}\n",
        report.workload,
        report.clients,
        report.groups.join(","),
        report.hosts.join(","),
        report.consistency
    );
    out.push_str(&format!(
        "{:<8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  errors\n",
        "", "ops/s", "ops", "p50 ms", "p99 ms", "p999 ms", "max ms"
    ));
    out.push_str(&row("paxsql", &report.paxsql));
    if let Some(baseline) = &report.baseline {
        out.push_str(&row("sqlite", baseline));
    }
    if let Some(ratio) = report.throughput_ratio {
        out.push_str(&format!("throughput paxsql / sqlite: {ratio:.2}×\n"));
    }
    if let Some(floor) = &report.floor {
        out.push_str(&format!(
            "floor: fsync p50 {:.3} ms + loopback RTT p50 {:.3} ms = {:.3} ms",
            f64::from(floor.fsync_us.p50) / 1000.0,
            f64::from(floor.rtt_us.p50) / 1000.0,
            f64::from(floor.floor_p50_us) / 1000.0
        ));
        if let Some(ratio) = report.p50_over_floor {
            out.push_str(&format!("; paxsql p50 / floor: {ratio:.2}×"));
        }
        out.push('\n');
        out.push_str(&format!(
            "ceiling: a 64-byte loopback echo with {} clients makes {:.0} round trips/s",
            report.clients, floor.echo_ops_per_second
        ));
        if let Some(ratio) = report.throughput_over_echo {
            out.push_str(&format!("; paxsql / ceiling: {ratio:.2}×"));
        }
        out.push('\n');
    }
    out
}
