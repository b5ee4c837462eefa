//! The core's own state machines on the log (PhxPaxos SystemVSM): the cluster init at
//! instance 0, membership changes and master leases.
//!
//! - A `Membership` value replaces the member list from the next instance on, if its expected
//!   version (the instance of the list it was computed from; 0 = the init) still holds. The
//!   quorum for instance i therefore uses the list in force after i − 1.
//! - A member list change ends skip-prepare: the promises came from the old quorum.
//! - A master that is no longer a member stops serving as soon as it learns so. The remaining
//!   members still wait for its lease to run out before they campaign: a master cut off from
//!   them may not learn its removal and serves until its own lease ends (it cannot renew it:
//!   members ignore a non-member's votes). Electing at once made two masters (simulator).

use paxsql_schema::{paxos_value::Payload, PaxosValue};

use super::api::{Action, InstanceId, NodeId};
use super::core::Core;

impl Core {
    pub(super) fn apply_system_value(
        &mut self,
        instance_id: InstanceId,
        value: &PaxosValue,
        actions: &mut Vec<Action>,
    ) {
        match &value.payload {
            Some(Payload::ClusterInit(init)) if instance_id == 0 => {
                if self.config.cluster_gid != 0 && self.config.cluster_gid != init.cluster_gid {
                    let reason = format!(
                        "instance 0 names cluster id {:#x} but this data dir belongs to {:#x}; \
                         this node was pointed at another cluster",
                        init.cluster_gid, self.config.cluster_gid
                    );
                    self.halt(reason, actions);
                    return;
                }
                self.cluster_gid = init.cluster_gid;
                self.set_members(&init.members, 0);
            }
            Some(Payload::Membership(change))
                if change.expected_version == self.members_version =>
            {
                for member in &change.member_info {
                    if !member.peer_addr.is_empty() {
                        self.member_addrs
                            .insert(member.node_id, member.peer_addr.clone());
                    }
                }
                self.set_members(&change.members, instance_id);
            }
            Some(Payload::MasterLease(lease)) => self.apply_lease(instance_id, lease, value),
            _ => {}
        }
    }

    fn set_members(&mut self, members: &[NodeId], version: InstanceId) {
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        self.member_addrs
            .retain(|node_id, _| members.contains(node_id));
        self.members = members;
        self.members_version = version;
        self.proposer.prepared = false;
    }
}
