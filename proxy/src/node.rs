//! One running node: the replicator's groups, the SQL front end and the HTTP endpoint.

use crate::config::NodeConfig;

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    anyhow::bail!(
        "node {} cannot start yet: the node runtime is not wired in this build",
        config.node_id
    )
}
