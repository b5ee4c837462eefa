//! `paxsql bench --failover`: kill -9 the master of a running cluster (a dev-cluster) and time
//! how long until a write through a surviving node is acknowledged.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::paxsql::{connect, error_code, Target};
use super::workload::Operation;

/// How long the failover run waits for the first acknowledged write before giving up.
const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long one write attempt may take before it is abandoned and tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one failover measurement found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FailoverReport {
    pub group: String,
    pub killed_node: u64,
    pub killed_pid: u64,
    pub new_master: Option<u64>,
    /// From `kill -9` to the first acknowledged write.
    pub failover_ms: u64,
    pub lease_ms: u64,
    /// Failed write attempts before the first success, by SQLSTATE.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// A node as `/status` describes it.
pub struct NodeView {
    pub http: String,
    pub sql: String,
    pub node_id: u64,
    pub pid: u64,
    pub master_id: Option<u64>,
}

/// Reads node `http`'s `/status` for `group`; `sql` is the same node's SQL address.
pub async fn view(http: &str, sql: &str, group: &str) -> anyhow::Result<NodeView> {
    let (code, body) = crate::http::get(http, "/status").await?;
    if code != 200 {
        bail!("{http} answered HTTP {code} to /status");
    }
    let status: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{http} sent invalid JSON"))?;
    let group_status = match status["groups"].get(group) {
        Some(found) => found.clone(),
        None => status.clone(),
    };
    Ok(NodeView {
        http: http.to_string(),
        sql: sql.to_string(),
        node_id: status["node_id"]
            .as_u64()
            .context("/status lacks node_id")?,
        pid: status["pid"].as_u64().context("/status lacks pid")?,
        master_id: group_status["master_id"].as_u64(),
    })
}

/// Kills the master of `group` (found through the nodes' `/status`) and times the first write
/// acknowledged through another node. `hosts[i]` and `https[i]` are the same node.
pub async fn run(
    hosts: &[String],
    https: &[String],
    group: &str,
    user: &str,
    lease_ms: u64,
) -> anyhow::Result<FailoverReport> {
    if hosts.len() < 2 {
        bail!("--failover needs --hosts and --http listing the same nodes, in the same order, at least two");
    }
    let views = views(hosts, https, group).await?;
    let master_id = views
        .iter()
        .find_map(|node| node.master_id)
        .context("no node knows a master: wait for the election, then run again")?;
    let master = views
        .iter()
        .find(|node| node.node_id == master_id)
        .with_context(|| format!("the master, node {master_id}, is not among --http"))?;
    let survivor = views
        .iter()
        .find(|node| node.node_id != master_id)
        .expect("at least two nodes were checked");
    let target = Target::new(&survivor.sql, group, user, "lease")?;
    let client = connect(&target).await?;
    client
        .simple_query(&Operation::Insert { client: 0 }.sql())
        .await
        .with_context(|| format!("a write through {} failed before the kill", survivor.sql))?;
    let killed_pid = master.pid;
    // SAFETY: plain kill(2); the pid was read from the master's own /status just now.
    if unsafe { libc::kill(killed_pid as libc::pid_t, libc::SIGKILL) } != 0 {
        bail!(
            "cannot kill -9 pid {killed_pid} (node {master_id}): {}",
            std::io::Error::last_os_error()
        );
    }
    let killed = Instant::now();
    let errors = write_until_acknowledged(&target, client, killed).await?;
    let failover_ms = killed.elapsed().as_millis() as u64;
    let new_master = view(&survivor.http, &survivor.sql, group).await?.master_id;
    Ok(FailoverReport {
        group: group.to_string(),
        killed_node: master_id,
        killed_pid,
        new_master,
        failover_ms,
        lease_ms,
        errors,
    })
}

/// Every node's view of `group`; `hosts[i]` and `https[i]` must be the same node.
pub async fn views(
    hosts: &[String],
    https: &[String],
    group: &str,
) -> anyhow::Result<Vec<NodeView>> {
    if hosts.len() != https.len() {
        bail!("--http must list the same nodes as --hosts, in the same order");
    }
    let mut views = Vec::new();
    for (sql, http) in hosts.iter().zip(https) {
        views.push(view(http, sql, group).await?);
    }
    Ok(views)
}

/// The SQL address of `group`'s master, as the nodes' `/status` tell it.
pub async fn master_sql_address(
    hosts: &[String],
    https: &[String],
    group: &str,
) -> anyhow::Result<String> {
    let views = views(hosts, https, group).await?;
    let master_id = views
        .iter()
        .find_map(|node| node.master_id)
        .with_context(|| format!("group {group} has no master yet: wait for the election"))?;
    views
        .iter()
        .find(|node| node.node_id == master_id)
        .map(|node| node.sql.clone())
        .with_context(|| format!("group {group}'s master, node {master_id}, is not among --http"))
}

/// Writes through `target` until one write is acknowledged; returns the failures on the way.
async fn write_until_acknowledged(
    target: &Target,
    mut client: tokio_postgres::Client,
    killed: Instant,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut errors = std::collections::BTreeMap::new();
    let sql = Operation::Insert { client: 0 }.sql();
    loop {
        if killed.elapsed() > FAILOVER_WAIT_MAX {
            bail!("no write was acknowledged within {FAILOVER_WAIT_MAX:?} of the kill; errors: {errors:?}");
        }
        if client.is_closed() {
            match connect(target).await {
                Ok(fresh) => client = fresh,
                Err(_) => {
                    *errors.entry("connect".to_string()).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.simple_query(&sql)).await {
            Ok(Ok(_)) => return Ok(errors),
            Ok(Err(error)) => {
                *errors.entry(error_code(&error)).or_insert(0) += 1;
                // A retryable refusal comes back fast; do not spin on it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => *errors.entry("timeout".to_string()).or_insert(0) += 1,
        }
    }
}
