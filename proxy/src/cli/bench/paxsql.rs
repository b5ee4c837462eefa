//! The paxsql side of a run: N tokio-postgres connections, each looping over the workload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use super::stats::ClientStats;
use super::workload::{seed_statements, Picker, RunLimit, Workload, CREATE_TABLE_SQL};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a broken connection is opened again (a failover is under way).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Where one client connects.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// `local`, `lease` or `linearizable`: set with `SET paxsql.consistency`.
    pub consistency: String,
}

impl Target {
    /// Parses `HOST:PORT`.
    pub fn new(
        address: &str,
        database: &str,
        user: &str,
        consistency: &str,
    ) -> anyhow::Result<Self> {
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("{address:?} is not HOST:PORT"))?;
        let port = port
            .parse()
            .with_context(|| format!("{address:?}: the port is not a number"))?;
        Ok(Target {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: user.to_string(),
            consistency: consistency.to_string(),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

/// Opens one connection and sets its read consistency.
pub async fn connect(target: &Target) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.database)
        .user(&target.user)
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to {}: is the node running?",
            target.describe()
        )
    })?;
    tokio::spawn(async move {
        // Ends with the client; errors show up on the client's next call.
        let _ = connection.await;
    });
    client
        .simple_query(&format!(
            "SET paxsql.consistency = '{}'",
            target.consistency
        ))
        .await
        .with_context(|| format!("{}: cannot set the read consistency", target.describe()))?;
    Ok(client)
}

/// `--setup`: creates the bench table on `target`'s group and seeds rows `1..=rows`.
pub async fn setup(target: &Target, rows: u64) -> anyhow::Result<()> {
    let client = connect(target).await?;
    client
        .simple_query(CREATE_TABLE_SQL)
        .await
        .with_context(|| format!("{}: cannot create the bench table", target.describe()))?;
    for statement in seed_statements(rows) {
        client
            .simple_query(&statement)
            .await
            .with_context(|| format!("{}: cannot seed the bench table", target.describe()))?;
    }
    Ok(())
}

/// The SQLSTATE of a failed call, or a short word when there is none.
pub fn error_code(error: &tokio_postgres::Error) -> String {
    match error.code() {
        Some(state) => state.code().to_string(),
        None if error.is_closed() => "connection-closed".to_string(),
        None => "io".to_string(),
    }
}

/// One client: runs operations until the limit says stop; reconnects after a broken link.
pub async fn run_client(
    index: u64,
    target: Target,
    mut client: Client,
    workload: Workload,
    rows: u64,
    limit: Arc<RunLimit>,
) -> ClientStats {
    let mut stats = ClientStats::new(index + 1);
    let mut picker = Picker::new(workload, index, rows);
    while limit.claim() {
        if client.is_closed() {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            match connect(&target).await {
                Ok(fresh) => client = fresh,
                Err(_) => {
                    stats.record_error("connect");
                    limit.finished(false);
                    continue;
                }
            }
        }
        let sql = picker.next().sql();
        let started = Instant::now();
        match client.simple_query(&sql).await {
            Ok(_) => {
                stats.record_ok(started.elapsed());
                limit.finished(true);
            }
            Err(error) => {
                stats.record_error(&error_code(&error));
                limit.finished(false);
            }
        }
    }
    stats
}
