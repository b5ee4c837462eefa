//! The SQLite state machine: master batches, follower replay, deterministic functions.
