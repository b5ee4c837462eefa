//! The tokio runtime that drives the pure Paxos core with real TCP and the real log.
