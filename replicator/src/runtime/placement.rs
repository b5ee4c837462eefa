//! Master placement: a hint that spreads the masters of a node's groups over the members, so
//! parallel groups use every node's CPU and disk instead of piling onto one master.
//!
//! Group number g (its position in `--groups`) prefers member `g mod members` (members sorted).
//! The preferred node campaigns as soon as it sees no live master; every other node keeps the
//! core's ordinary random pause before it campaigns, so the preferred node usually wins.
//!
//! This is a hint, never a safety rule: campaigning goes through the core's normal lease
//! proposal (which refuses while another master is alive), any node may still win, and nodes
//! that disagree on the group order only duel a little longer.

use std::time::Duration;

use tokio::time::Instant;

use crate::paxos::NodeId;
use crate::runtime::group::GroupHandle;

/// Shortest pause between two campaigns the hint starts for one group (the lease round of the
/// first one needs a moment to be chosen or to fail).
pub const PLACEMENT_CAMPAIGN_INTERVAL_MS: u64 = 200;

/// The member that group number `group_index` prefers as master (`members` in any order).
pub fn preferred_master(group_index: usize, members: &[NodeId]) -> Option<NodeId> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[group_index % sorted.len()])
}

/// Watches the group's status and campaigns when this node is the preferred master and the
/// group has no live master. Ends when the group driver stops.
pub fn spawn_master_preference(
    handle: GroupHandle,
    node_id: NodeId,
    group_index: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut status = handle.status_watch();
        let interval = Duration::from_millis(PLACEMENT_CAMPAIGN_INTERVAL_MS);
        let mut last_campaign: Option<Instant> = None;
        while status.changed().await.is_ok() {
            let due = {
                let current = status.borrow_and_update();
                current.master_id.is_none()
                    && current.chosen_instance.is_some()
                    && current.halted.is_none()
                    && preferred_master(group_index, &current.members) == Some(node_id)
            };
            let rested = last_campaign.is_none_or(|at| at.elapsed() >= interval);
            if due && rested {
                last_campaign = Some(Instant::now());
                if handle.campaign().is_err() {
                    return; // the driver stopped
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_groups_prefer_consecutive_members() {
        let members = [3, 1, 2];
        let preferred: Vec<_> = (0..4)
            .map(|group| preferred_master(group, &members))
            .collect();
        assert_eq!(preferred, vec![Some(1), Some(2), Some(3), Some(1)]);
        assert_eq!(preferred_master(0, &[]), None);
    }
}
