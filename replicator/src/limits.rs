//! Every bound of the replicator in one place (TigerBeetle style): queues, batches, messages.
//! Relations between limits are asserted at compile time.

/// Largest encoded Paxos value (one binlog batch), in bytes.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest peer frame: a value plus envelope overhead, or one checkpoint chunk.
pub const PEER_FRAME_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 * 1024;
/// Proposals waiting in the core's queue before it answers "busy".
pub const PROPOSAL_QUEUE_MAX: usize = 1024;
/// Statements in one binlog batch.
pub const BATCH_STATEMENTS_MAX: usize = 1024;
/// How long a client waits for the outcome of its write before hearing "unknown" (40003).
pub const WRITE_OUTCOME_WAIT_MS: u64 = 20_000;
/// Longest a client statement may run on the master's writer (default of
/// `statement-time-max-ms`): while it runs, no other write of its group can.
pub const STATEMENT_TIME_MAX_MS: u64 = 10_000;
/// Highest `statement-time-max-ms`. A stopped statement's client must hear 54000 before it
/// gives up on the outcome, with time left for the Paxos round of the writes queued behind.
pub const STATEMENT_TIME_MAX_MS_LIMIT: u64 = 15_000;

const _: () = assert!(STATEMENT_TIME_MAX_MS <= STATEMENT_TIME_MAX_MS_LIMIT);
const _: () = assert!(STATEMENT_TIME_MAX_MS_LIMIT + 5_000 <= WRITE_OUTCOME_WAIT_MS);
/// Chosen values sent in one learn reply.
pub const LEARN_BATCH_VALUES_MAX: usize = 256;
/// Bytes of chosen values sent in one learn reply.
pub const LEARN_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Frames queued toward one peer before new ones are dropped (Paxos retries cover drops).
pub const PEER_SEND_QUEUE_MAX: usize = 4096;
/// Bytes in one checkpoint chunk.
pub const CHECKPOINT_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(LEARN_BATCH_BYTES_MAX <= PEER_FRAME_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_MAX < PEER_FRAME_BYTES_MAX);
const _: () = assert!(CHECKPOINT_CHUNK_BYTES < PEER_FRAME_BYTES_MAX);

// ------------------------------------------------------------------ runtime (tokio driver)
// Bounds owned by `runtime/`: peer connections, the group driver's queues, the log writer.

/// First wait before reconnecting to a peer; doubles per failure up to the maximum.
pub const PEER_RECONNECT_BACKOFF_MIN_MS: u64 = 50;
/// Longest wait between two reconnect attempts (before jitter).
pub const PEER_RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;
/// How long one TCP connect to a peer may take.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long the whole handshake on one connection may take.
pub const PEER_HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
/// Inbound peer connections served at once (a cluster has few nodes; extra ones are refused).
pub const PEER_INBOUND_CONNECTIONS_MAX: usize = 64;
/// Frames written toward one peer before the socket buffer is flushed.
pub const PEER_WRITE_BATCH_FRAMES_MAX: usize = 256;
/// Bytes of the random nonce each side sends in the handshake.
pub const HANDSHAKE_NONCE_BYTES: usize = 16;
/// Longest string field (cluster name, version, address) accepted in a handshake.
pub const HANDSHAKE_FIELD_BYTES_MAX: usize = 256;
/// Envelopes queued toward one group driver before new ones are dropped.
pub const GROUP_INBOX_MAX: usize = 4096;
/// Commands (propose, read index, campaign) queued toward one group driver.
pub const GROUP_COMMAND_QUEUE_MAX: usize = 1024;
/// Proposals submitted to the core and not yet answered; past it, `propose` answers busy.
pub const GROUP_PROPOSALS_IN_FLIGHT_MAX: usize = 2 * PROPOSAL_QUEUE_MAX;
/// Read-index rounds submitted to the core and not yet answered.
pub const GROUP_READ_INDEX_IN_FLIGHT_MAX: usize = 1024;
/// Chosen values queued toward the state machine's writer thread, the only buffer between
/// them (backpressure on the driver past it).
pub const DELIVER_QUEUE_MAX: usize = 256;
// One learned batch fits in the delivery queue without waiting on the writer midway.
const _: () = assert!(LEARN_BATCH_VALUES_MAX <= DELIVER_QUEUE_MAX);
/// "Need a checkpoint" notices queued toward the checkpoint side.
pub const CHECKPOINT_NEEDED_QUEUE_MAX: usize = 16;
/// How often the group driver ticks the core, in milliseconds.
pub const GROUP_TICK_INTERVAL_MS: u64 = 10;
/// Jobs (persist, read, truncate) queued toward one log writer thread.
pub const LOG_WRITER_QUEUE_MAX: usize = 1024;
/// Persist jobs handed to the log writer and not yet durable; the driver waits past it.
pub const LOG_WRITER_PERSISTS_IN_FLIGHT_MAX: usize = 512;
/// Learn requests being served at once by one group (each reads the log); extra ones are dropped.
pub const LEARN_SERVES_IN_FLIGHT_MAX: usize = 4;

const _: () = assert!(PEER_RECONNECT_BACKOFF_MIN_MS <= PEER_RECONNECT_BACKOFF_MAX_MS);
const _: () = assert!(LOG_WRITER_PERSISTS_IN_FLIGHT_MAX < LOG_WRITER_QUEUE_MAX);
const _: () = assert!(GROUP_PROPOSALS_IN_FLIGHT_MAX >= PROPOSAL_QUEUE_MAX);
const _: () = assert!(LEARN_BATCH_VALUES_MAX <= u32::MAX as usize);
