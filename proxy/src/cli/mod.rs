//! The `paxsql` command line: one subcommand per file.

pub mod backup;
pub mod dev_cluster;
pub mod node;
pub mod restore;
pub mod shell;
pub mod status;
