//! The `paxsql` command line: one subcommand per file.

pub mod admin;
pub mod backup;
pub mod bench;
pub mod dev_cluster;
pub mod node;
pub mod restore;
pub mod shell;
pub mod status;
