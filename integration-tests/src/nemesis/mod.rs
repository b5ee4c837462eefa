//! A nemesis over real `paxsql node` processes: crashes, pauses, restarts and network faults
//! while register, bank and set workloads run over the PostgreSQL wire, then checkers.
//!
//! - [`relay`]: a fault-injecting TCP relay for one direction of one peer link.
//! - [`network`]: every link of a cluster (cut, drop, delay; symmetric or one-way).
//! - [`workload`]: the clients and what they record.
//! - [`run`]: one run: cluster, workloads, a fault schedule, healing, checks, figures.

pub mod network;
pub mod relay;
pub mod run;
pub mod workload;

pub use network::Network;
pub use relay::{LinkMode, Relay};
pub use run::{run_nemesis, Fault, NemesisConfig, NemesisReport};
