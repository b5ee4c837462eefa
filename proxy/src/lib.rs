//! The `paxsql` command and its server side: the PostgreSQL-wire front end, SQL classification
//! and routing, HTTP `/status` and `/metrics`.

pub mod backend;
pub mod pg;
pub mod sql;
