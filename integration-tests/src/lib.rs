//! Helpers to start real `paxsql node` processes on loopback and talk to them with real
//! clients (tokio-postgres, psql, HTTP).
//!
//! - [`cluster`]: a cluster of node processes in a temporary directory, with kill/restart.
//! - [`sql`]: client helpers (connect, table hashes).
//! - [`nemesis`]: fault injection (kills, pauses, relayed network faults) under workloads.
//! - [`checker`]: checkers for recorded histories (linearizability).

pub mod checker;
pub mod cluster;
pub mod nemesis;
pub mod sql;

pub use cluster::{paxsql_bin, Cluster, ClusterOptions, NodeProcess, PeerRoute};
