//! The binlog value format: how a chosen [`PaxosValue`] (usually a [`BinlogBatch`] of SQL
//! statements) is encoded, with the limits every encoder and decoder enforces.
//!
//! Limits are checked on both sides: the master refuses to propose an oversized value (so the
//! client gets a clear error), and every node refuses to decode one (so a bad peer or a damaged
//! record cannot make a node allocate without bound).

use paxsql_schema::{paxos_value, BinlogBatch, Message, PaxosValue, Statement};

/// The largest encoded value, in bytes.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The most statements one batch may carry.
pub const BATCH_STATEMENTS_MAX: usize = 1024;
/// The longest SQL text of one statement, in bytes.
pub const STATEMENT_SQL_BYTES_MAX: usize = 1024 * 1024;
/// The most bound parameters of one statement (SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`).
pub const STATEMENT_PARAMS_MAX: usize = 32_766;

// A value of the largest size must fit in one log record, with room for the acceptor state.
const _: () = assert!(VALUE_BYTES_MAX + 4096 <= crate::record::RECORD_PAYLOAD_BYTES_MAX);

/// Why a value was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValueError {
    #[error("value of {bytes} bytes exceeds the limit of {limit} bytes; split the transaction into smaller ones")]
    TooLarge { bytes: usize, limit: usize },
    #[error("batch of {count} statements exceeds the limit of {limit}; split the transaction into smaller ones")]
    TooManyStatements { count: usize, limit: usize },
    #[error("statement {statement_index} has {bytes} bytes of SQL, over the limit of {limit}")]
    SqlTooLong { statement_index: usize, bytes: usize, limit: usize },
    #[error("statement {statement_index} binds {count} parameters, over the limit of {limit}")]
    TooManyParams { statement_index: usize, count: usize, limit: usize },
    #[error("statement {statement_index} names {names} parameters but binds {params}; names must be absent or one per parameter")]
    ParamNamesMismatch { statement_index: usize, names: usize, params: usize },
    #[error("value has no payload (cluster init, binlog batch, lease, membership or opaque)")]
    MissingPayload,
    #[error("malformed value: {0}; the record or message is damaged or from an incompatible version")]
    Malformed(#[from] prost::DecodeError),
}

/// Checks the limits of a value: its encoded size, and for a binlog batch its statements.
pub fn check_value(value: &PaxosValue) -> Result<(), ValueError> {
    let bytes = value.encoded_len();
    if bytes > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes, limit: VALUE_BYTES_MAX });
    }
    match &value.payload {
        None => Err(ValueError::MissingPayload),
        Some(paxos_value::Payload::Binlog(batch)) => check_batch(batch),
        Some(_) => Ok(()),
    }
}

/// Checks the limits of a batch (its encoded size and every statement).
pub fn check_batch(batch: &BinlogBatch) -> Result<(), ValueError> {
    let bytes = batch.encoded_len();
    if bytes > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes, limit: VALUE_BYTES_MAX });
    }
    if batch.statements.len() > BATCH_STATEMENTS_MAX {
        return Err(ValueError::TooManyStatements { count: batch.statements.len(), limit: BATCH_STATEMENTS_MAX });
    }
    batch.statements.iter().enumerate().try_for_each(|(statement_index, statement)| check_statement(statement_index, statement))
}

fn check_statement(statement_index: usize, statement: &Statement) -> Result<(), ValueError> {
    if statement.sql.len() > STATEMENT_SQL_BYTES_MAX {
        return Err(ValueError::SqlTooLong { statement_index, bytes: statement.sql.len(), limit: STATEMENT_SQL_BYTES_MAX });
    }
    if statement.params.len() > STATEMENT_PARAMS_MAX {
        return Err(ValueError::TooManyParams { statement_index, count: statement.params.len(), limit: STATEMENT_PARAMS_MAX });
    }
    if !statement.param_names.is_empty() && statement.param_names.len() != statement.params.len() {
        return Err(ValueError::ParamNamesMismatch {
            statement_index,
            names: statement.param_names.len(),
            params: statement.params.len(),
        });
    }
    Ok(())
}

/// Encodes a value after checking its limits.
pub fn encode_value(value: &PaxosValue) -> Result<Vec<u8>, ValueError> {
    check_value(value)?;
    Ok(value.encode_to_vec())
}

/// Decodes a value, refusing oversized input before parsing it and checking limits after.
pub fn decode_value(bytes: &[u8]) -> Result<PaxosValue, ValueError> {
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes: bytes.len(), limit: VALUE_BYTES_MAX });
    }
    let value = PaxosValue::decode(bytes)?;
    check_value(&value)?;
    Ok(value)
}

/// Encodes a batch on its own (e.g. to size it before wrapping it in a value).
pub fn encode_batch(batch: &BinlogBatch) -> Result<Vec<u8>, ValueError> {
    check_batch(batch)?;
    Ok(batch.encode_to_vec())
}

/// Decodes a batch on its own, with the same checks as [`decode_value`].
pub fn decode_batch(bytes: &[u8]) -> Result<BinlogBatch, ValueError> {
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge { bytes: bytes.len(), limit: VALUE_BYTES_MAX });
    }
    let batch = BinlogBatch::decode(bytes)?;
    check_batch(&batch)?;
    Ok(batch)
}
