//! [`RuntimeMetrics`]: counters of one node's runtime, rendered as Prometheus text.
//!
//! Plain relaxed atomics: each counter is independent, and a scrape that sees one a moment
//! before another is fine. Sums (`*_micros_total`, `*_records_total`) divided by their counts
//! give averages, the Prometheus way.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame or envelope was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A frame longer than the limit (the connection is closed).
    Oversized,
    /// Bytes that do not decode (the connection is closed).
    Malformed,
    /// `Envelope.from` differs from the node id the handshake proved.
    FromMismatch,
    /// `Envelope.to` is not this node.
    Misaddressed,
    /// The envelope names a group this node does not run.
    UnknownGroup,
    /// The group driver's inbox is full.
    GroupInboxFull,
    /// The send queue toward the peer is full.
    SendQueueFull,
    /// The envelope is addressed to a node that is not a configured peer.
    UnknownPeer,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::FromMismatch,
        DropReason::Misaddressed,
        DropReason::UnknownGroup,
        DropReason::GroupInboxFull,
        DropReason::SendQueueFull,
        DropReason::UnknownPeer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::FromMismatch => "from_mismatch",
            DropReason::Misaddressed => "misaddressed",
            DropReason::UnknownGroup => "unknown_group",
            DropReason::GroupInboxFull => "group_inbox_full",
            DropReason::SendQueueFull => "send_queue_full",
            DropReason::UnknownPeer => "unknown_peer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters shared by the transport, the log writers and the group drivers of one node.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    pub proposals_submitted: AtomicU64,
    pub proposals_chosen: AtomicU64,
    pub proposals_lost: AtomicU64,
    pub proposals_busy: AtomicU64,
    pub values_delivered: AtomicU64,
    pub read_index_rounds: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_micros_total: AtomicU64,
    /// Records made durable, summed over syncs (records per sync = this / `fsyncs`).
    pub synced_records_total: AtomicU64,
    /// Persist jobs made durable, summed over syncs (batch size = this / `fsyncs`).
    pub synced_persist_jobs_total: AtomicU64,
    /// Records appended without a sync of their own (Chosen records; durable with the next).
    pub lazy_records: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub peer_connections_established: AtomicU64,
    pub handshakes_refused: AtomicU64,
    /// Handshakes refused because the peer reported another cluster gid.
    pub handshakes_refused_foreign_gid: AtomicU64,
    pub learn_requests_served: AtomicU64,
    pub learn_requests_dropped: AtomicU64,
    pub checkpoints_needed: AtomicU64,
    frames_dropped: [AtomicU64; DropReason::ALL.len()],
}

impl RuntimeMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one dropped frame or envelope.
    pub fn count_drop(&self, reason: DropReason) {
        self.frames_dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Frames or envelopes dropped for this reason so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.frames_dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Adds one sync of `records` records from `persist_jobs` jobs that took `micros`.
    pub fn record_sync(&self, persist_jobs: usize, records: usize, micros: u64) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.synced_records_total
            .fetch_add(records as u64, Ordering::Relaxed);
        self.synced_persist_jobs_total
            .fetch_add(persist_jobs as u64, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut text = String::new();
        let counters: [(&str, &str, &AtomicU64); 19] = [
            (
                "proposals_submitted_total",
                "Local proposals handed to the core.",
                &self.proposals_submitted,
            ),
            (
                "proposals_chosen_total",
                "Local proposals chosen.",
                &self.proposals_chosen,
            ),
            (
                "proposals_lost_total",
                "Local proposals whose instance chose another value.",
                &self.proposals_lost,
            ),
            (
                "proposals_busy_total",
                "Local proposals refused because a queue was full.",
                &self.proposals_busy,
            ),
            (
                "values_delivered_total",
                "Chosen values handed to the state machine.",
                &self.values_delivered,
            ),
            (
                "read_index_rounds_total",
                "Read-index rounds started.",
                &self.read_index_rounds,
            ),
            (
                "log_fsyncs_total",
                "Log syncs (each covers every persist job drained before it).",
                &self.fsyncs,
            ),
            (
                "log_fsync_micros_total",
                "Microseconds spent in log syncs.",
                &self.fsync_micros_total,
            ),
            (
                "log_synced_records_total",
                "Log records made durable.",
                &self.synced_records_total,
            ),
            (
                "log_synced_persist_jobs_total",
                "Persist jobs made durable.",
                &self.synced_persist_jobs_total,
            ),
            (
                "log_lazy_records_total",
                "Log records appended without waiting for a sync (Chosen records).",
                &self.lazy_records,
            ),
            (
                "peer_frames_sent_total",
                "Frames written to peers.",
                &self.frames_sent,
            ),
            (
                "peer_frames_received_total",
                "Frames read from peers.",
                &self.frames_received,
            ),
            (
                "peer_connections_established_total",
                "Peer connections that passed the handshake.",
                &self.peer_connections_established,
            ),
            (
                "peer_handshakes_refused_total",
                "Peer handshakes refused (any reason).",
                &self.handshakes_refused,
            ),
            (
                "peer_handshakes_refused_foreign_gid_total",
                "Peer handshakes refused for another cluster gid.",
                &self.handshakes_refused_foreign_gid,
            ),
            (
                "learn_requests_served_total",
                "Learn requests answered from the log.",
                &self.learn_requests_served,
            ),
            (
                "learn_requests_dropped_total",
                "Learn requests dropped because too many were being served.",
                &self.learn_requests_dropped,
            ),
            (
                "checkpoints_needed_total",
                "Times a group needed a checkpoint from a peer.",
                &self.checkpoints_needed,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(text, "# HELP paxsql_{name} {help}");
            let _ = writeln!(text, "# TYPE paxsql_{name} counter");
            let _ = writeln!(text, "paxsql_{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            text,
            "# HELP paxsql_peer_frames_dropped_total Frames or envelopes dropped, by reason."
        );
        let _ = writeln!(text, "# TYPE paxsql_peer_frames_dropped_total counter");
        for reason in DropReason::ALL {
            let _ = writeln!(
                text,
                "paxsql_peer_frames_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.dropped(reason)
            );
        }
        text
    }
}
