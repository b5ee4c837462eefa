//! The node's waiting and streaming HTTP routes, layered over [`NodeStatus`]:
//!
//! - `GET /checkpoint/stream?group=G&instance=I&offset=O`: a checkpoint for a peer's bootstrap
//!   (see `paxsql_replicator::service::checkpoint_stream`); the checkpoint is pinned meanwhile.
//! - `POST /admin/checkpoint?group=G`: take a checkpoint now (every group when `group` is
//!   absent); answers its info as JSON.
//! - `POST /admin/members?op=add|remove|replace&node=N[&old=M]`: a membership change, proposed
//!   by this node through Paxos in every group (see [`crate::membership`]).
//!
//! `/status` gains `groups.<g>.checkpoints` and `groups.<g>.bootstrap`.
//!
//! Every route here except `/status` is guarded by [`NodeAdmin::guard`] (`--admin-token-file`,
//! and for the checkpoint stream the peers' proof of the cluster secret; see
//! `crate::http::HttpGuard`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use paxsql_replicator::service::checkpoints::Checkpoints;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::{AdminSource, HttpGuard, HttpResponse, StreamRoute};
use crate::membership::Membership;
use crate::status::NodeStatus;

pub struct NodeAdmin {
    /// Checked by the HTTP server before any route runs.
    pub guard: Arc<HttpGuard>,
    pub status: Arc<NodeStatus>,
    pub checkpoints: BTreeMap<String, Arc<Checkpoints>>,
    pub membership: Arc<Membership>,
}

/// Parses `a=1&b=2` (no percent-decoding: every value here is a number or a plain name).
pub fn query(target: &str) -> HashMap<String, String> {
    let query = target.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

async fn write_json(mut stream: TcpStream, status: u16, value: &Value) -> std::io::Result<()> {
    let mut body = serde_json::to_vec_pretty(value).expect("a JSON value serializes");
    body.push(b'\n');
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

impl NodeAdmin {
    fn stream_checkpoint(&self, target: &str) -> StreamRoute {
        let query = query(target);
        let group = query.get("group").cloned().unwrap_or_else(|| "main".into());
        let instance: u64 = query
            .get("instance")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let offset: u64 = query
            .get("offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let version: Option<u32> = query.get("version").and_then(|v| v.parse().ok());
        let checkpoints = self.checkpoints.get(&group).cloned();
        Box::new(move |mut stream: TcpStream| {
            Box::pin(async move {
                let opened = checkpoints
                    .as_ref()
                    .and_then(|checkpoints| checkpoints.open_for_stream(instance));
                let Some((file, info, _pin)) = opened else {
                    return write_json(
                        stream,
                        404,
                        &json!({"error": format!("group {group} has no checkpoint {instance} here")}),
                    )
                    .await;
                };
                let _ = stream.set_nodelay(true);
                tracing::info!(
                    group,
                    instance_id = info.instance_id,
                    offset,
                    "streaming a checkpoint to a peer"
                );
                paxsql_replicator::service::checkpoint_stream::serve(
                    &mut stream,
                    &file,
                    &info,
                    offset,
                    version,
                )
                .await
            })
        })
    }

    fn take_checkpoint(&self, target: &str) -> StreamRoute {
        let query = query(target);
        let chosen: Vec<(String, Arc<Checkpoints>)> = self
            .checkpoints
            .iter()
            .filter(|(name, _)| query.get("group").is_none_or(|group| group == *name))
            .map(|(name, checkpoints)| (name.clone(), checkpoints.clone()))
            .collect();
        Box::new(move |stream: TcpStream| {
            Box::pin(async move {
                if chosen.is_empty() {
                    return write_json(stream, 404, &json!({"error": "no such group"})).await;
                }
                let mut answers = serde_json::Map::new();
                let mut failed = false;
                for (name, checkpoints) in chosen {
                    let answer = match checkpoints.take_now().await {
                        Ok(info) => json!(info),
                        Err(error) => {
                            failed = true;
                            json!({"error": error})
                        }
                    };
                    answers.insert(name, answer);
                }
                write_json(
                    stream,
                    if failed { 500 } else { 200 },
                    &Value::Object(answers),
                )
                .await
            })
        })
    }

    fn change_members(&self, target: &str) -> StreamRoute {
        let query = query(target);
        let membership = self.membership.clone();
        Box::new(move |stream: TcpStream| {
            Box::pin(async move {
                match membership.change(&query).await {
                    Ok(answer) => write_json(stream, 200, &answer).await,
                    Err((status, error)) => {
                        write_json(stream, status, &json!({"error": error})).await
                    }
                }
            })
        })
    }
}

impl AdminSource for NodeAdmin {
    fn status_json(&self) -> Value {
        let mut document = self.status.status_json();
        if let Some(groups) = document.get_mut("groups").and_then(Value::as_object_mut) {
            for (name, checkpoints) in &self.checkpoints {
                if let Some(group) = groups.get_mut(name).and_then(Value::as_object_mut) {
                    let facts = checkpoints.status_json();
                    group.insert("bootstrap".into(), facts["bootstrap"].clone());
                    group.insert("checkpoints".into(), facts);
                }
            }
        }
        document
    }

    fn metrics_text(&self) -> String {
        self.status.metrics_text()
    }

    fn guard(&self) -> Option<&HttpGuard> {
        Some(&self.guard)
    }

    fn ready(&self) -> bool {
        self.status.ready()
    }

    fn route(&self, method: &str, path: &str) -> Option<HttpResponse> {
        self.status.route(method, path)
    }

    fn file_route(&self, method: &str, target: &str) -> Option<crate::http::FileRouteFuture> {
        self.status.file_route(method, target)
    }

    fn stream_route(&self, method: &str, target: &str) -> Option<StreamRoute> {
        let path = target.split('?').next().unwrap_or(target);
        match (method, path) {
            ("GET", "/checkpoint/stream") => Some(self.stream_checkpoint(target)),
            ("POST", "/admin/checkpoint") => Some(self.take_checkpoint(target)),
            ("POST", "/admin/members") => Some(self.change_members(target)),
            _ => self.status.stream_route(method, target),
        }
    }
}
