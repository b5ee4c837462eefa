//! The `/status`, `/metrics` and `/ready` documents of a running node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use paxsql_replicator::runtime::metrics::RuntimeMetrics;
use serde_json::{json, Value};

use crate::config::NodeConfig;
use crate::http::AdminSource;
use crate::node_backend::NodeBackend;

pub struct NodeStatus {
    config: NodeConfig,
    backend: Arc<NodeBackend>,
    metrics: Arc<RuntimeMetrics>,
    /// Per group, the chosen instance this node knew when it started: `/ready` waits for it.
    chosen_at_start: BTreeMap<String, Option<u64>>,
    /// `GET /backup`: plain SQLite copies of a group.
    backups: crate::backup_export::BackupExporter,
}

impl NodeStatus {
    pub fn new(
        config: NodeConfig,
        backend: Arc<NodeBackend>,
        metrics: Arc<RuntimeMetrics>,
    ) -> Self {
        let chosen_at_start = backend
            .services()
            .iter()
            .map(|(name, service)| (name.clone(), service.group().status().chosen_instance))
            .collect();
        let applied_backend = backend.clone();
        let backups = crate::backup_export::BackupExporter::new(
            config.data_dir.clone(),
            config.groups.clone(),
            Arc::new(move |group: &str| applied_backend.service(group).ok()?.applied_instance()),
        );
        NodeStatus {
            backups,
            config,
            backend,
            metrics,
            chosen_at_start,
        }
    }

    fn group_json(&self, name: &str) -> Value {
        let Ok(service) = self.backend.service(name) else {
            return Value::Null;
        };
        let status = service.group().status();
        json!({
            "role": status.role.as_str(),
            "master_id": status.master_id,
            "serving": status.serving_as_master,
            "committed_instance": status.chosen_instance,
            "applied_instance": service.applied_instance(),
            "members": status.members,
            "members_version": status.members_version,
            "member_addrs": status.member_addrs,
            "may_vote": status.may_vote,
            "cluster_gid": format!("{:016x}", status.cluster_gid),
            "halted": status.halted,
            "foreign_gid_dropped": status.foreign_gid_dropped,
            "non_member_dropped": status.non_member_dropped,
        })
    }
}

impl AdminSource for NodeStatus {
    fn file_route(&self, method: &str, target: &str) -> Option<crate::http::FileRouteFuture> {
        self.backups.route(method, target)
    }

    fn status_json(&self) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .backend
            .services()
            .keys()
            .map(|name| (name.clone(), self.group_json(name)))
            .collect();
        let primary = if groups.contains_key("main") {
            "main"
        } else {
            self.config.groups[0].as_str()
        };
        let mut document = groups.get(primary).cloned().unwrap_or(Value::Null);
        let object = document
            .as_object_mut()
            .expect("a group status is an object");
        object.insert("node_id".into(), json!(self.config.node_id));
        object.insert("pid".into(), json!(std::process::id()));
        object.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        object.insert("sql_addr".into(), json!(self.config.sql_addr.to_string()));
        object.insert("http_addr".into(), json!(self.config.http_addr.to_string()));
        object.insert("lease_ms".into(), json!(self.config.lease_ms));
        object.insert("groups".into(), Value::Object(groups));
        document
    }

    fn metrics_text(&self) -> String {
        let mut text = self.metrics.render_prometheus();
        // (name, help, Prometheus type), one line per group each.
        let series: [(&str, &str, &str); 7] = [
            (
                "paxsql_chosen_instance",
                "Highest instance known chosen.",
                "gauge",
            ),
            (
                "paxsql_applied_instance",
                "Highest instance applied to SQLite.",
                "gauge",
            ),
            (
                "paxsql_apply_lag_instances",
                "Chosen minus applied instances.",
                "gauge",
            ),
            (
                "paxsql_is_master",
                "1 when this node serves as the group's master.",
                "gauge",
            ),
            (
                "paxsql_foreign_gid_dropped_total",
                "Messages dropped for carrying another cluster id.",
                "gauge",
            ),
            (
                "paxsql_wal_checkpoint_passes_total",
                "SQLite WAL checkpoint passes run by the group's wal thread.",
                "counter",
            ),
            (
                "paxsql_wal_writer_checkpoints_total",
                "WAL checkpoints the writer ran itself at the WAL's bound (sustained writes, long reads).",
                "counter",
            ),
        ];
        for (name, help, kind) in series {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (group, service) in self.backend.services() {
                let status = service.group().status();
                let chosen = status.chosen_instance.unwrap_or(0);
                let applied = service.applied_instance().unwrap_or(0);
                let wal = service.wal_checkpoint_stats();
                let value = match name {
                    "paxsql_chosen_instance" => chosen,
                    "paxsql_applied_instance" => applied,
                    "paxsql_apply_lag_instances" => chosen.saturating_sub(applied),
                    "paxsql_is_master" => u64::from(status.serving_as_master),
                    "paxsql_wal_checkpoint_passes_total" => {
                        wal.background_passes.load(Ordering::Relaxed)
                    }
                    "paxsql_wal_writer_checkpoints_total" => {
                        wal.writer_checkpoints.load(Ordering::Relaxed)
                    }
                    _ => status.foreign_gid_dropped,
                };
                let _ = writeln!(text, "{name}{{group=\"{group}\"}} {value}");
            }
        }
        text
    }

    fn ready(&self) -> bool {
        self.backend.services().iter().all(|(name, service)| {
            let status = service.group().status();
            let caught_up = match self.chosen_at_start.get(name).copied().flatten() {
                None => true,
                Some(target) => service
                    .applied_instance()
                    .is_some_and(|applied| applied >= target),
            };
            status.master_id.is_some() && caught_up && status.halted.is_none()
        })
    }
}
