//! The `paxsql` command line: one subcommand per file.

pub mod admin;
pub mod dev_cluster;
pub mod node;
pub mod status;
