//! Helpers to start real `paxsql` processes on loopback for the integration tests.
