//! One nemesis run: start a cluster behind relays, run the workloads, inject faults one after
//! another (each held, then healed), heal everything, let the cluster settle, then check.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, SeedableRng};

use super::network::Network;
use super::relay::LinkMode;
use super::workload::{self, Recorder, Session};
use crate::checker::{check_register, CheckOutcome};
use crate::cluster::{http_get_json, Cluster};
use crate::sql::{connect, connect_local, table_hash, table_rows};

/// One fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the master, restart it after the hold.
    KillMaster,
    /// `kill -9` a random node, restart it after the hold.
    KillRandom,
    /// SIGSTOP the master for longer than the lease, then SIGCONT.
    PauseMaster,
    /// SIGSTOP a random node for longer than the lease, then SIGCONT.
    PauseRandom,
    /// Cut every link to and from the master (symmetric isolation).
    IsolateMaster,
    /// A random minority and majority black-holed from each other (symmetric).
    PartitionHalves,
    /// The master's outbound links cut: it hears the others, they do not hear it.
    MasterCannotSend,
    /// The master's inbound links cut: the others hear it, it hears nobody.
    MasterCannotHear,
    /// Every link delayed.
    SlowNetwork,
    /// SIGTERM then restart of every node at once.
    RestartAll,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::KillMaster,
        Fault::KillRandom,
        Fault::PauseMaster,
        Fault::PauseRandom,
        Fault::IsolateMaster,
        Fault::PartitionHalves,
        Fault::MasterCannotSend,
        Fault::MasterCannotHear,
        Fault::SlowNetwork,
        Fault::RestartAll,
    ];
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub nodes: u32,
    pub lease_ms: u64,
    /// Faults, applied in order (cycled until `faults_total` have run).
    pub faults: Vec<Fault>,
    pub faults_total: usize,
    /// How long each fault is held before healing.
    pub hold_ms: u64,
    /// How long the cluster runs healed between faults.
    pub recover_ms: u64,
    pub seed: u64,
}

/// The figures of a run.
#[derive(Clone, Debug, Default)]
pub struct NemesisReport {
    pub runs: usize,
    pub faults: usize,
    pub operations: u64,
    pub maybes: u64,
    pub anomalies: Vec<String>,
    pub acked_writes_lost: usize,
    pub max_unavailability_ms: u64,
}

impl NemesisReport {
    pub fn merge(&mut self, other: NemesisReport) {
        self.runs += other.runs;
        self.faults += other.faults;
        self.operations += other.operations;
        self.maybes += other.maybes;
        self.anomalies.extend(other.anomalies);
        self.acked_writes_lost += other.acked_writes_lost;
        self.max_unavailability_ms = self.max_unavailability_ms.max(other.max_unavailability_ms);
    }

    /// The one line every run prints.
    pub fn line(&self) -> String {
        format!(
            "nemesis: {} runs, {} faults, {} ops, {} anomalies, {} acked writes lost, max unavailability {} ms ({} unknown outcomes)",
            self.runs,
            self.faults,
            self.operations,
            self.anomalies.len(),
            self.acked_writes_lost,
            self.max_unavailability_ms,
            self.maybes
        )
    }
}

/// Register, bank transfer, bank read and set clients per run.
const REGISTER_CLIENTS: u32 = 4;
const BANK_TRANSFER_CLIENTS: u32 = 2;
const BANK_READ_CLIENTS: u32 = 3;
const SET_CLIENTS: u32 = 2;

/// Runs the whole scenario once.
pub async fn run_nemesis(config: &NemesisConfig) -> anyhow::Result<NemesisReport> {
    let network = Network::new();
    let lease = config.lease_ms.to_string();
    let mut cluster = Cluster::start_with(
        config.nodes,
        &["--lease-ms", &lease],
        network.cluster_options(),
    )
    .await?;
    let master = cluster.wait_for_master(Duration::from_secs(30)).await?;
    let setup = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main").await?;
    for statement in [
        workload::REGISTER_SCHEMA.to_string(),
        workload::register_setup(),
        workload::BANK_SCHEMA.to_string(),
        workload::bank_setup(),
        workload::SET_SCHEMA.to_string(),
    ] {
        setup
            .batch_execute(&statement)
            .await
            .with_context(|| format!("setup: {statement}"))?;
    }
    drop(setup);

    let recorder = Recorder::new();
    let addrs: Vec<String> = cluster.nodes.iter().map(|node| node.sql_addr()).collect();
    let mut clients = Vec::new();
    let mut client_id = 0u32;
    let mut next_id = || {
        client_id += 1;
        client_id
    };
    for index in 0..REGISTER_CLIENTS {
        let consistency = if index % 2 == 0 {
            "lease"
        } else {
            "linearizable"
        };
        let session = Session::new(addrs.clone(), index as usize, consistency);
        clients.push(tokio::spawn(workload::register_client(
            recorder.clone(),
            session,
            next_id(),
        )));
    }
    for index in 0..BANK_TRANSFER_CLIENTS {
        let session = Session::new(addrs.clone(), index as usize + 1, "lease");
        clients.push(tokio::spawn(workload::bank_transfer_client(
            recorder.clone(),
            session,
            next_id(),
        )));
    }
    for (index, consistency) in ["lease", "linearizable", "local"]
        .iter()
        .enumerate()
        .take(BANK_READ_CLIENTS as usize)
    {
        let session = Session::new(addrs.clone(), index + 2, consistency);
        clients.push(tokio::spawn(workload::bank_read_client(
            recorder.clone(),
            session,
            next_id(),
        )));
    }
    for index in 0..SET_CLIENTS {
        let session = Session::new(addrs.clone(), index as usize, "lease");
        clients.push(tokio::spawn(workload::set_client(
            recorder.clone(),
            session,
            next_id(),
        )));
    }

    // Faults, one at a time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    tokio::time::sleep(Duration::from_millis(config.recover_ms)).await;
    let faults_from_us = recorder.now_us();
    for index in 0..config.faults_total {
        let fault = config.faults[index % config.faults.len()];
        let master = current_master(&cluster).await;
        inject(&mut cluster, &network, fault, master, config, &mut rng).await?;
        tokio::time::sleep(Duration::from_millis(config.recover_ms)).await;
    }
    let faults_to_us = recorder.now_us();

    // Heal, settle, stop the clients.
    heal_all(&mut cluster, &network)?;
    let master = cluster
        .wait_for_master(Duration::from_secs(60))
        .await
        .context("no master after healing")?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    recorder.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.context("a workload client panicked")?;
    }
    let max_unavailability_ms = recorder.max_gap_ms(faults_from_us, faults_to_us);

    let (lost, mut anomalies) = final_checks(&cluster, &recorder, master).await?;
    anomalies.splice(
        0..0,
        recorder.anomalies.lock().expect("recorder lock").drain(..),
    );
    let report = NemesisReport {
        runs: 1,
        faults: config.faults_total,
        operations: recorder.operations.load(Ordering::Relaxed),
        maybes: recorder.maybes.load(Ordering::Relaxed),
        anomalies,
        acked_writes_lost: lost,
        max_unavailability_ms,
    };
    if !report.anomalies.is_empty() || report.acked_writes_lost > 0 {
        eprintln!("{}", cluster.logs_tail());
        let kept = cluster.dir.path().to_path_buf();
        eprintln!("node logs kept in {}", kept.display());
        std::mem::forget(cluster);
    }
    Ok(report)
}

/// The node that says it is master, if any.
async fn current_master(cluster: &Cluster) -> Option<u32> {
    for node in cluster.nodes.iter().filter(|node| node.is_running()) {
        if let Ok(status) = http_get_json(&node.http_addr(), "/status").await {
            if status["role"] == "master" {
                return Some(node.id);
            }
        }
    }
    None
}

async fn inject(
    cluster: &mut Cluster,
    network: &Network,
    fault: Fault,
    master: Option<u32>,
    config: &NemesisConfig,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let nodes: Vec<u32> = (1..=config.nodes).collect();
    let random = nodes[rng.random_range(0..nodes.len())];
    let target = match fault {
        Fault::KillRandom
        | Fault::PauseRandom
        | Fault::PartitionHalves
        | Fault::SlowNetwork
        | Fault::RestartAll => random,
        _ => master.unwrap_or(random),
    };
    let others: Vec<u32> = nodes.iter().copied().filter(|id| *id != target).collect();
    let hold = Duration::from_millis(config.hold_ms);
    println!("nemesis: {fault:?} on node {target} (master {master:?})");
    match fault {
        Fault::KillMaster | Fault::KillRandom => {
            cluster.node(target).kill9();
            tokio::time::sleep(hold).await;
            cluster.node(target).start()?;
        }
        Fault::PauseMaster | Fault::PauseRandom => {
            cluster.node(target).signal(libc::SIGSTOP);
            let pause = hold.max(Duration::from_millis(config.lease_ms + 1_000));
            tokio::time::sleep(pause).await;
            cluster.node(target).signal(libc::SIGCONT);
        }
        Fault::IsolateMaster => {
            network.split(&[target], &others, LinkMode::Cut);
            tokio::time::sleep(hold).await;
            network.heal();
        }
        Fault::PartitionHalves => {
            let mut shuffled = nodes.clone();
            for index in (1..shuffled.len()).rev() {
                shuffled.swap(index, rng.random_range(0..=index));
            }
            let minority = &shuffled[..(nodes.len() - 1) / 2];
            let majority = &shuffled[(nodes.len() - 1) / 2..];
            println!("nemesis: minority {minority:?} | majority {majority:?}");
            network.split(minority, majority, LinkMode::Drop);
            tokio::time::sleep(hold).await;
            network.heal();
        }
        Fault::MasterCannotSend => {
            network.one_way(&[target], &others, LinkMode::Cut);
            tokio::time::sleep(hold).await;
            network.heal();
        }
        Fault::MasterCannotHear => {
            network.one_way(&others, &[target], LinkMode::Drop);
            tokio::time::sleep(hold).await;
            network.heal();
        }
        Fault::SlowNetwork => {
            network.all(LinkMode::Delay(Duration::from_millis(config.lease_ms / 8)));
            tokio::time::sleep(hold).await;
            network.heal();
        }
        Fault::RestartAll => {
            for id in nodes.iter().copied() {
                cluster.node(id).stop();
            }
            for id in nodes.iter().copied() {
                cluster.node(id).start()?;
            }
        }
    }
    Ok(())
}

/// Every link passes, every paused node runs, every stopped node is started.
fn heal_all(cluster: &mut Cluster, network: &Network) -> anyhow::Result<()> {
    network.heal();
    for node in cluster.nodes.iter_mut() {
        node.signal(libc::SIGCONT);
        if let Some(status) = node.exited() {
            println!(
                "nemesis: node {} had exited ({status}); restarting",
                node.id
            );
        }
        if !node.is_running() {
            node.start()?;
        }
    }
    Ok(())
}

/// After healing: linearizability per key, the final bank total, the set, identical replicas.
async fn final_checks(
    cluster: &Cluster,
    recorder: &Arc<Recorder>,
    master: u32,
) -> anyhow::Result<(usize, Vec<String>)> {
    let mut anomalies = Vec::new();
    let client = connect(&cluster.nodes[(master - 1) as usize].sql_addr(), "main").await?;
    client
        .batch_execute("SET paxsql.consistency = 'linearizable'")
        .await?;
    workload::register_final_reads(recorder, &client).await?;
    let history = recorder.register.lock().expect("recorder lock").clone();
    for key in 0..workload::REGISTER_KEYS {
        let ops: Vec<_> = history
            .iter()
            .filter(|(op_key, _)| *op_key == key)
            .map(|(_, op)| *op)
            .collect();
        match check_register(0, &ops) {
            CheckOutcome::Linearizable => {}
            CheckOutcome::NotLinearizable(why) => anomalies.push(format!(
                "register key {key} ({} ops) is not linearizable: {why}",
                ops.len()
            )),
            CheckOutcome::Inconclusive(states) => anomalies.push(format!(
                "register key {key} ({} ops): the checker gave up after {states} states",
                ops.len()
            )),
        }
    }
    let balances: Vec<i64> = table_rows(&client, "acct")
        .await?
        .into_iter()
        .map(|row| row[1].as_deref().unwrap_or("x").parse().unwrap_or(i64::MIN))
        .collect();
    workload::check_bank(recorder, &balances, "final");
    let present: Vec<i64> = table_rows(&client, "s")
        .await?
        .into_iter()
        .map(|row| row[0].as_deref().unwrap_or("x").parse().unwrap_or(i64::MIN))
        .collect();
    let (lost, set_anomalies) = workload::check_set(recorder, &present);
    anomalies.extend(set_anomalies);

    // Every replica converges to the same tables.
    let committed = cluster.committed_instance().await;
    cluster
        .wait_applied(committed, Duration::from_secs(60))
        .await
        .context("replicas catch up after healing")?;
    let mut copies = Vec::new();
    for node in &cluster.nodes {
        let local = connect_local(&node.sql_addr(), "main").await?;
        let mut hashes = Vec::new();
        for table in ["reg", "acct", "s"] {
            hashes.push(table_hash(&local, table).await?);
        }
        copies.push((node.id, hashes));
    }
    if copies.iter().any(|(_, hashes)| *hashes != copies[0].1) {
        anomalies.push(format!("replicas differ after healing: {copies:?}"));
    }
    Ok((lost, anomalies))
}
