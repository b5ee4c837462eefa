//! The `paxsql` command and its server side.
//!
//! - [`cli`]: the subcommands (`node`, `dev-cluster`, `status`, …).
//! - [`config`]: a node's validated configuration (flags or TOML).
//! - [`pg`]: the PostgreSQL-wire server; [`sql`]: statement splitting and classification.
//! - [`backend`]: what the wire server needs from the database; [`node_backend`] implements it
//!   over this node's groups, [`routing`] sends writes and master reads to the master, and
//!   [`forward`] carries them between nodes.
//! - [`http`]: `/status`, `/metrics`, `/ready`; [`status`] builds those documents.
//! - [`backup_export`]: `GET /backup`, a group as a plain SQLite file.
//! - [`log_budget`]: a budget for log lines anyone on the network can trigger.
//! - [`node`]: wires the replicator, the SQL front end and HTTP into one running node.

pub mod admin_routes;
pub mod backend;
pub mod backup_export;
pub mod checkpoint_bench;
pub mod cli;
pub mod config;
pub mod forward;
pub mod http;
pub mod log_budget;
pub mod membership;
pub mod node;
pub mod node_backend;
pub mod pg;
pub mod routing;
pub mod sql;
pub mod status;
