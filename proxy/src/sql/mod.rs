//! SQL text handling for the wire server, with sqlparser's SQLite dialect: splitting a
//! simple-Query message into statements ([`split`]), classifying each one ([`classify`]),
//! finding `$n` parameters and guessing their types from context ([`params`]), and answering
//! the PostgreSQL catalog queries that psql sends for `\dt` and `\d` ([`catalog`]), and rewriting
//! PostgreSQL `::` casts into SQLite `CAST`s ([`casts`]).
//!
//! Everything here is pragmatic pattern matching over tokens: when it cannot decide, it says
//! so ([`classify::StatementKind::Undecided`]) and the server asks SQLite itself.

pub mod casts;
pub mod catalog;
pub mod classify;
pub mod params;
pub mod split;

pub use casts::{classify_and_rewrite, rewrite_casts};
pub use classify::{classify, command_verb, runs_in_a_transaction, StatementKind};
pub use split::split_statements;
