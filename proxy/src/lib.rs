//! The `paxsql` command and its server side.
//!
//! - [`cli`]: the subcommands (`node`, `dev-cluster`, `status`, …).
//! - [`config`]: a node's validated configuration (flags or TOML).
//! - [`http`]: `/status`, `/metrics`, `/ready`.
//! - [`node`]: wires the replicator, the SQL front end and HTTP into one running node.

pub mod backend;
pub mod cli;
pub mod config;
pub mod forward;
pub mod http;
pub mod node;
pub mod node_backend;
pub mod routing;
