//! [`RuntimeError`]: what the runtime reports to the rest of the node.

use crate::runtime::frame::FrameError;

/// Errors of the runtime (transport, group driver, node assembly).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The group driver is not running, and the request was not handed to it: safe to retry.
    #[error("group {group} is not running; retry once the node has started")]
    NotRunning { group: String },
    /// The group driver stopped after the proposal was handed to it: the proposal may or may
    /// not be chosen (SQLSTATE 40003).
    #[error("group {group} stopped while a proposal was pending; its outcome is unknown")]
    OutcomeUnknown { group: String },
    /// The log writer thread of the group has stopped (shutdown or a fatal log error).
    #[error("the log writer of group {group} has stopped")]
    LogWriterStopped { group: String },
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] paxsql_binlog::LogError),
    /// Two groups with one name were configured.
    #[error("group {group} is configured twice; give every group a distinct name")]
    DuplicateGroup { group: String },
    /// A peer address could not be used.
    #[error("peer {node_id} has the invalid address {address:?}: {reason}")]
    BadPeerAddress {
        node_id: u32,
        address: String,
        reason: String,
    },
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
