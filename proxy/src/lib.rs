//! The `paxsql` command and its server side: the PostgreSQL-wire front end, SQL classification
//! and routing, HTTP `/status` and `/metrics`.
