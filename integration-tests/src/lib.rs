//! Helpers to start real `paxsql node` processes on loopback and talk to them with real
//! clients (tokio-postgres, psql, HTTP).
//!
//! - [`cluster`]: a cluster of node processes in a temporary directory, with kill/restart.
//! - [`sql`]: client helpers (connect, table hashes).

pub mod cluster;
pub mod sql;

pub use cluster::{paxsql_bin, Cluster, NodeProcess};
