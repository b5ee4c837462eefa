//! The `paxsql` command line: one subcommand per file.

pub mod dev_cluster;
pub mod node;
pub mod status;
pub mod shell;
