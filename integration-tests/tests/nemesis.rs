//! Nemesis runs over real `paxsql node` processes: kills, pauses, restarts and network faults
//! on relayed peer links while register (linearizability), bank (invariant) and set (no loss,
//! no duplicate) workloads run over the PostgreSQL wire. Every run prints its figures and must
//! show 0 anomalies and 0 acknowledged writes lost.
//!
//! The CI set is short; `PAXSQL_NEMESIS_SOAK=<minutes>` makes `nemesis_soak` run mixed faults
//! on 3 and 5 nodes for that long.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use paxsql_integration_tests::nemesis::{run_nemesis, Fault, NemesisConfig, NemesisReport};

/// Runs share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const LEASE_MS: u64 = 1_000;

fn config(nodes: u32, faults: Vec<Fault>, seed: u64) -> NemesisConfig {
    NemesisConfig {
        nodes,
        lease_ms: LEASE_MS,
        faults_total: faults.len(),
        faults,
        hold_ms: 2_500,
        recover_ms: 1_500,
        seed,
    }
}

fn assert_clean(report: &NemesisReport) {
    println!("{}", report.line());
    assert!(
        report.anomalies.is_empty(),
        "{}\nanomalies:\n{}",
        report.line(),
        report.anomalies.join("\n")
    );
    assert_eq!(report.acked_writes_lost, 0, "{}", report.line());
    assert!(report.operations > 200, "too little load: {}", report.line());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_three_nodes_crashes_and_pauses_keep_histories_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let report = run_nemesis(&config(
        3,
        vec![
            Fault::KillMaster,
            Fault::PauseMaster,
            Fault::KillRandom,
            Fault::PauseRandom,
            Fault::RestartAll,
        ],
        1,
    ))
    .await
    .expect("nemesis run");
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_three_nodes_partitions_keep_histories_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let report = run_nemesis(&config(
        3,
        vec![
            Fault::IsolateMaster,
            Fault::MasterCannotSend,
            Fault::PartitionHalves,
            Fault::MasterCannotHear,
            Fault::SlowNetwork,
        ],
        2,
    ))
    .await
    .expect("nemesis run");
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_five_nodes_mixed_faults_keep_histories_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let report = run_nemesis(&config(
        5,
        vec![
            Fault::PartitionHalves,
            Fault::KillMaster,
            Fault::IsolateMaster,
            Fault::PauseMaster,
            Fault::MasterCannotHear,
            Fault::KillRandom,
        ],
        3,
    ))
    .await
    .expect("nemesis run");
    assert_clean(&report);
}

/// `PAXSQL_NEMESIS_SOAK=<minutes>`: mixed faults on 3 and 5 nodes, run after run, for that
/// long. Without the variable it runs one short mixed run, so it always proves something.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let minutes: u64 = std::env::var("PAXSQL_NEMESIS_SOAK")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let mut total = NemesisReport::default();
    let mut seed = 100;
    loop {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let faults_total = if minutes == 0 { 4 } else { 12 };
        let mut run = config(nodes, Fault::ALL.to_vec(), seed);
        run.faults_total = faults_total;
        // Rotate where the schedule starts so every fault meets every state.
        run.faults.rotate_left(seed as usize % Fault::ALL.len());
        let report = run_nemesis(&run).await.expect("nemesis run");
        println!("run {seed}: {}", report.line());
        total.merge(report);
        assert!(total.anomalies.is_empty(), "{}\n{}", total.line(), total.anomalies.join("\n"));
        assert_eq!(total.acked_writes_lost, 0, "{}", total.line());
        seed += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    assert_clean(&total);
}
