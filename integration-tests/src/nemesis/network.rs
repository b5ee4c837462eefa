//! The peer network of a cluster, one [`Relay`] per ordered pair of nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::relay::{LinkMode, Relay};
use crate::cluster::{ClusterOptions, PeerRoute};

/// Every peer link (from → to) of a cluster, controllable per direction.
#[derive(Clone, Default)]
pub struct Network {
    relays: Arc<Mutex<BTreeMap<(u32, u32), Relay>>>,
}

impl Network {
    pub fn new() -> Network {
        Network::default()
    }

    /// Cluster options that put a relay on every peer link of this network. Must be used
    /// inside a tokio runtime (relays bind and spawn as the cluster is spawned).
    pub fn cluster_options(&self) -> ClusterOptions {
        let relays = self.relays.clone();
        let route: PeerRoute = Arc::new(move |from, to, real: &str| {
            let relay = Relay::start(real.to_string()).expect("a relay binds a loopback port");
            let addr = relay.addr();
            relays
                .lock()
                .expect("relay table lock")
                .insert((from, to), relay);
            addr
        });
        ClusterOptions {
            peer_route: Some(route),
            ..ClusterOptions::default()
        }
    }

    /// Sets the mode of the link that carries what `from` sends to `to`.
    pub fn set(&self, from: u32, to: u32, mode: LinkMode) {
        let relays = self.relays.lock().expect("relay table lock");
        relays
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no relay for link {from} → {to}"))
            .set_mode(mode);
    }

    /// Applies `mode` to every link from a node in `senders` to a node in `receivers`.
    pub fn one_way(&self, senders: &[u32], receivers: &[u32], mode: LinkMode) {
        for &from in senders {
            for &to in receivers {
                if from != to {
                    self.set(from, to, mode);
                }
            }
        }
    }

    /// Applies `mode` both ways between the two sides.
    pub fn split(&self, side_a: &[u32], side_b: &[u32], mode: LinkMode) {
        self.one_way(side_a, side_b, mode);
        self.one_way(side_b, side_a, mode);
    }

    /// Applies `mode` to every link.
    pub fn all(&self, mode: LinkMode) {
        for relay in self.relays.lock().expect("relay table lock").values() {
            relay.set_mode(mode);
        }
    }

    /// Every link back to `Pass`.
    pub fn heal(&self) {
        self.all(LinkMode::Pass);
    }

    /// Links not in `Pass`, for failure messages.
    pub fn faulty_links(&self) -> Vec<((u32, u32), LinkMode)> {
        self.relays
            .lock()
            .expect("relay table lock")
            .iter()
            .map(|(link, relay)| (*link, relay.mode()))
            .filter(|(_, mode)| *mode != LinkMode::Pass)
            .collect()
    }
}
