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
