//! Nemesis runs over real `paxsql node` processes: kills, pauses, restarts and network faults
//! on relayed peer links while register (linearizability), bank (invariant) and set (no loss,
//! no duplicate) workloads run over the PostgreSQL wire. Every run prints its figures and must
//! show 0 anomalies and 0 acknowledged writes lost.
//!
//! The CI set is short; `PAXSQL_NEMESIS_SOAK=<minutes>` makes `nemesis_soak` run mixed faults
//! on 3 and 5 nodes for that long.

use std::time::{Duration, Instant};

use paxsql_integration_tests::checker::{check_register, CheckOutcome, RegisterOp, RegisterOpKind};
use paxsql_integration_tests::nemesis::{
    run_nemesis, Fault, LinkMode, NemesisConfig, NemesisReport, Network,
};
use paxsql_integration_tests::sql::{connect, connect_local};
use paxsql_integration_tests::Cluster;

/// Runs share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    assert!(
        report.operations > 200,
        "too little load: {}",
        report.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_three_nodes_crashes_and_pauses_keep_histories_linearizable() {
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
        assert!(
            total.anomalies.is_empty(),
            "{}\n{}",
            total.line(),
            total.anomalies.join("\n")
        );
        assert_eq!(total.acked_writes_lost, 0, "{}", total.line());
        seed += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    assert_clean(&total);
}

/// The harness can fail: `local` reads on a node cut off by the relays are stale, and the
/// linearizability checker says so on a history recorded from real processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nemesis_checker_catches_stale_local_reads_on_an_isolated_node() {
    let _serial = SERIAL.lock().await;
    // Phase 1: a register at 0 on every node.
    let network = Network::new();
    let cluster = Cluster::start_with(3, &["--lease-ms", "1000"], network.cluster_options())
        .await
        .expect("cluster starts");
    let master = cluster
        .wait_for_master(Duration::from_secs(30))
        .await
        .expect("master");
    let writer = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");
    writer
        .batch_execute(
            "CREATE TABLE reg (k INTEGER PRIMARY KEY, v INTEGER); INSERT INTO reg VALUES (0, 0)",
        )
        .await
        .expect("setup");
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(30))
        .await
        .expect("settle");

    // Phase 2: one follower is cut off both ways; a write succeeds on the majority, then a
    // local read on the isolated follower still sees the old value.
    let isolated = (1..=3).find(|id| *id != master).expect("a follower");
    let others: Vec<u32> = (1..=3).filter(|id| *id != isolated).collect();
    network.split(&[isolated], &others, LinkMode::Cut);
    let started = Instant::now();
    let now_us = || started.elapsed().as_micros() as u64;
    let write_invoke = now_us();
    writer
        .execute("UPDATE reg SET v = 1 WHERE k = 0", &[])
        .await
        .expect("the majority side takes the write");
    let write_complete = now_us();
    let local = connect_local(&cluster.nodes[(isolated - 1) as usize].sql_addr(), "main")
        .await
        .expect("connect");
    let read_invoke = now_us();
    let stale: i64 = local
        .query_one("SELECT v FROM reg WHERE k = 0", &[])
        .await
        .expect("local read")
        .get(0);
    let read_complete = now_us();
    assert_eq!(
        stale, 0,
        "the isolated node must not have learned the write"
    );
    let history = [
        RegisterOp {
            client: 1,
            kind: RegisterOpKind::Write(1),
            invoke_us: write_invoke,
            complete_us: Some(write_complete),
        },
        RegisterOp {
            client: 2,
            kind: RegisterOpKind::Read(stale),
            invoke_us: read_invoke,
            complete_us: Some(read_complete),
        },
    ];
    assert!(
        matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ),
        "the checker must flag the stale read"
    );

    // Phase 3: healed, the follower learns the write.
    network.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value: i64 = local
            .query_one("SELECT v FROM reg WHERE k = 0", &[])
            .await
            .expect("local read")
            .get(0);
        if value == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed follower never learned the write"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
