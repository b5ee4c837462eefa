//! Membership changes through Paxos (PhxPaxos SystemVSM): the new member list is proposed as a
//! `Membership` value in every group and is in force from the next instance on. The member list
//! is a chosen value, so it is persisted in the log and in each replica's `_paxsql_meta`.
//!
//! `POST /admin/members?op=add|remove|replace&node=N[&old=M][&peer=HOST:PORT]` must reach the master of each
//! group (the CLI asks the node given by `--http`; a follower answers 409 with the master id).
//! The change is computed from the member list in force and carries its version, so two racing
//! changes cannot both win. `peer` is the added node's peer address: it travels in the chosen
//! value, and every member's transport starts talking to it when the value is chosen.

use std::collections::HashMap;
use std::sync::Arc;

use paxsql_replicator::paxos::ProposalOutcome;
use paxsql_schema::{paxos_value::Payload, Member, Membership as MembershipValue, MembershipOp};
use serde_json::{json, Value};

use crate::node_backend::NodeBackend;

pub struct Membership {
    pub node_id: u32,
    pub backend: Arc<NodeBackend>,
}

type Failure = (u16, String);

impl Membership {
    /// Carries out one change in every group; answers the new member lists.
    pub async fn change(&self, query: &HashMap<String, String>) -> Result<Value, Failure> {
        let number = |key: &str| -> Result<u32, Failure> {
            query
                .get(key)
                .and_then(|value| value.parse().ok())
                .ok_or((400, format!("missing or bad `{key}` (a node id)")))
        };
        let op = query.get("op").map(String::as_str).unwrap_or("");
        let node = number("node")?;
        let peer_addr = query.get("peer").cloned().unwrap_or_default();
        if op != "remove" && !peer_addr.is_empty() && !peer_addr.contains(':') {
            return Err((400, format!("`peer` must be HOST:PORT, not {peer_addr:?}")));
        }
        let mut answers = serde_json::Map::new();
        for (group, service) in self.backend.services() {
            let handle = service.group();
            let status = handle.status();
            if !status.serving_as_master {
                return Err((
                    409,
                    format!(
                        "node {} is not the master of group {group} (master: {:?}); send the change to the master",
                        self.node_id, status.master_id
                    ),
                ));
            }
            let mut members = status.members.clone();
            let (kind, changed) = match op {
                "add" => (MembershipOp::Add, !members.contains(&node)),
                "remove" => (MembershipOp::Remove, members.contains(&node)),
                "replace" => (MembershipOp::Replace, true),
                _ => return Err((400, "op must be add, remove or replace".into())),
            };
            match kind {
                MembershipOp::Add => members.push(node),
                MembershipOp::Remove => members.retain(|member| *member != node),
                _ => {
                    let old = number("old")?;
                    members.retain(|member| *member != old);
                    members.push(node);
                }
            }
            members.sort_unstable();
            members.dedup();
            if members.is_empty() {
                return Err((400, "a group cannot have no members".into()));
            }
            if !changed {
                answers.insert(group.clone(), json!({"members": members, "changed": false}));
                continue;
            }
            let value = MembershipValue {
                op: kind as i32,
                members: members.clone(),
                expected_version: status.members_version,
                member_info: member_info(kind, node, &peer_addr),
            };
            let outcome = handle
                .propose(Payload::Membership(value), None)
                .await
                .map_err(|error| (500, error.to_string()))?;
            match outcome {
                ProposalOutcome::Chosen { instance_id, .. } => {
                    tracing::info!(
                        group,
                        op,
                        node,
                        instance_id,
                        ?members,
                        "member list changed"
                    );
                    answers.insert(
                        group.clone(),
                        json!({"members": members, "instance_id": instance_id, "changed": true}),
                    );
                }
                other => {
                    return Err((
                        409,
                        format!("group {group}: the change was not chosen: {other:?}; retry"),
                    ))
                }
            }
        }
        Ok(Value::Object(answers))
    }
}

/// The added node's address, carried in the chosen value (nothing for a removal).
fn member_info(kind: MembershipOp, node: u32, peer_addr: &str) -> Vec<Member> {
    if kind == MembershipOp::Remove || peer_addr.is_empty() {
        return Vec::new();
    }
    vec![Member {
        node_id: node,
        incarnation: 0,
        peer_addr: peer_addr.to_string(),
    }]
}
