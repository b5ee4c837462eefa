//! Errors of the Paxos log.

use std::path::PathBuf;

/// Everything that can go wrong in a [`crate::LogStore`].
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error other than a failed fsync; the operation did not happen.
    #[error("log I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// fsync failed. The node must stop: after a failed fsync the kernel may have dropped the
    /// dirty pages, so retrying could report success for data that is gone (PostgreSQL's
    /// "fsyncgate"). Never retry.
    #[error(
        "fsync failed on {path}: {source}; stopping: the log can no longer promise durability"
    )]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record that is not the last one is damaged: the log is corrupt. It is never dropped
    /// silently; an operator (or a peer) must restore the data.
    #[error("corrupt log record in {path} at offset {offset}: {reason}; restore this node's log from a peer (replace-member) or from a checkpoint")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record is larger than the log accepts.
    #[error("log record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    /// The log was asked for something its contract forbids (e.g. reading below the prefix).
    #[error("log misuse: {0}")]
    Misuse(String),
}
