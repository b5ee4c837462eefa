//! The binlog value format: how a chosen [`PaxosValue`] (usually a [`BinlogBatch`] of SQL
//! statements) is encoded, with the limits every encoder and decoder enforces.
//!
//! Limits are checked on both sides: the master refuses to propose an oversized value (so the
//! client gets a clear error), and every node refuses to decode one (so a bad peer or a damaged
//! record cannot make a node allocate without bound).

use bytes::Buf;
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
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum ValueError {
    #[error("value of {bytes} bytes exceeds the limit of {limit} bytes; split the transaction into smaller ones")]
    TooLarge { bytes: usize, limit: usize },
    #[error("batch of {count} statements exceeds the limit of {limit}; split the transaction into smaller ones")]
    TooManyStatements { count: usize, limit: usize },
    #[error("statement {statement_index} has {bytes} bytes of SQL, over the limit of {limit}")]
    SqlTooLong {
        statement_index: usize,
        bytes: usize,
        limit: usize,
    },
    #[error("statement {statement_index} binds {count} parameters, over the limit of {limit}")]
    TooManyParams {
        statement_index: usize,
        count: usize,
        limit: usize,
    },
    #[error("statement {statement_index} names {names} parameters but binds {params}; names must be absent or one per parameter")]
    ParamNamesMismatch {
        statement_index: usize,
        names: usize,
        params: usize,
    },
    #[error("value has no payload (cluster init, binlog batch, lease, membership or opaque)")]
    MissingPayload,
    #[error(
        "malformed value: {0}; the record or message is damaged or from an incompatible version"
    )]
    Malformed(#[from] prost::DecodeError),
}

/// Checks the limits of a value: its encoded size, and for a binlog batch its statements.
pub fn check_value(value: &PaxosValue) -> Result<(), ValueError> {
    let bytes = value.encoded_len();
    if bytes > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge {
            bytes,
            limit: VALUE_BYTES_MAX,
        });
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
        return Err(ValueError::TooLarge {
            bytes,
            limit: VALUE_BYTES_MAX,
        });
    }
    if batch.statements.len() > BATCH_STATEMENTS_MAX {
        return Err(ValueError::TooManyStatements {
            count: batch.statements.len(),
            limit: BATCH_STATEMENTS_MAX,
        });
    }
    batch
        .statements
        .iter()
        .enumerate()
        .try_for_each(|(statement_index, statement)| check_statement(statement_index, statement))
}

fn check_statement(statement_index: usize, statement: &Statement) -> Result<(), ValueError> {
    if statement.sql.len() > STATEMENT_SQL_BYTES_MAX {
        return Err(ValueError::SqlTooLong {
            statement_index,
            bytes: statement.sql.len(),
            limit: STATEMENT_SQL_BYTES_MAX,
        });
    }
    if statement.params.len() > STATEMENT_PARAMS_MAX {
        return Err(ValueError::TooManyParams {
            statement_index,
            count: statement.params.len(),
            limit: STATEMENT_PARAMS_MAX,
        });
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
/// Pass a `Bytes` (e.g. a record's payload) and the value's byte fields share it, uncopied.
pub fn decode_value(bytes: impl Buf) -> Result<PaxosValue, ValueError> {
    if bytes.remaining() > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge {
            bytes: bytes.remaining(),
            limit: VALUE_BYTES_MAX,
        });
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
pub fn decode_batch(bytes: impl Buf) -> Result<BinlogBatch, ValueError> {
    if bytes.remaining() > VALUE_BYTES_MAX {
        return Err(ValueError::TooLarge {
            bytes: bytes.remaining(),
            limit: VALUE_BYTES_MAX,
        });
    }
    let batch = BinlogBatch::decode(bytes)?;
    check_batch(&batch)?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxsql_schema::{sql_value, SqlValue};

    fn statement(sql: &str) -> Statement {
        Statement {
            sql: sql.to_string(),
            params: vec![
                SqlValue {
                    value: Some(sql_value::Value::Integer(7)),
                },
                SqlValue {
                    value: Some(sql_value::Value::Blob(vec![0, 255].into())),
                },
            ],
            param_names: vec!["$1".to_string(), "$2".to_string()],
            rows_changed: 1,
            effect_digest: 0xfeed,
            last_insert_rowid: 12,
            failed: false,
        }
    }

    fn batch_value(batch: BinlogBatch) -> PaxosValue {
        PaxosValue {
            value_id: 1 << 40 | 3,
            checksum_before: 99,
            payload: Some(paxos_value::Payload::Binlog(batch)),
        }
    }

    fn batch(statements: Vec<Statement>) -> BinlogBatch {
        BinlogBatch {
            statements,
            base_instance: 41,
            time_unix_ms: 1_700_000_000_000,
            random_seed: 5,
        }
    }

    #[test]
    fn a_binlog_batch_value_round_trips() {
        let value = batch_value(batch(vec![
            statement("INSERT INTO t VALUES ($1, $2)"),
            statement("UPDATE t SET a = $1 WHERE b = $2"),
        ]));
        let bytes = encode_value(&value).expect("encode");
        assert_eq!(decode_value(bytes.as_slice()).expect("decode"), value);
        let only_batch = batch(vec![statement("DELETE FROM t")]);
        assert_eq!(
            decode_batch(bytes::Bytes::from(
                encode_batch(&only_batch).expect("encode")
            ))
            .expect("decode"),
            only_batch
        );
    }

    #[test]
    fn an_oversized_value_is_refused_on_both_sides() {
        let huge = PaxosValue {
            value_id: 1,
            checksum_before: 0,
            payload: Some(paxos_value::Payload::Opaque(
                vec![0u8; VALUE_BYTES_MAX].into(),
            )),
        };
        assert!(matches!(
            encode_value(&huge),
            Err(ValueError::TooLarge {
                limit: VALUE_BYTES_MAX,
                ..
            })
        ));
        let bytes = prost::Message::encode_to_vec(&huge);
        assert_eq!(
            decode_value(bytes.as_slice()),
            Err(ValueError::TooLarge {
                bytes: bytes.len(),
                limit: VALUE_BYTES_MAX
            })
        );
    }

    #[test]
    fn too_many_statements_are_refused_on_both_sides() {
        let value = batch_value(batch(vec![statement("SELECT 1"); BATCH_STATEMENTS_MAX + 1]));
        let expected = ValueError::TooManyStatements {
            count: BATCH_STATEMENTS_MAX + 1,
            limit: BATCH_STATEMENTS_MAX,
        };
        assert_eq!(encode_value(&value), Err(expected.clone()));
        assert_eq!(
            decode_value(prost::Message::encode_to_vec(&value).as_slice()),
            Err(expected)
        );
        let at_limit = batch_value(batch(vec![statement("SELECT 1"); BATCH_STATEMENTS_MAX]));
        assert!(
            encode_value(&at_limit).is_ok(),
            "exactly the limit is accepted"
        );
    }

    #[test]
    fn long_sql_too_many_params_and_mismatched_names_are_refused() {
        let long_sql = batch_value(batch(vec![
            statement("SELECT 1"),
            statement(&"x".repeat(STATEMENT_SQL_BYTES_MAX + 1)),
        ]));
        assert!(matches!(
            encode_value(&long_sql),
            Err(ValueError::SqlTooLong {
                statement_index: 1,
                ..
            })
        ));
        let mut many = statement("SELECT 1");
        many.params = vec![
            SqlValue {
                value: Some(sql_value::Value::Null(true))
            };
            STATEMENT_PARAMS_MAX + 1
        ];
        many.param_names.clear();
        assert!(matches!(
            encode_value(&batch_value(batch(vec![many]))),
            Err(ValueError::TooManyParams {
                statement_index: 0,
                ..
            })
        ));
        let mut mismatched = statement("SELECT $1, $2");
        mismatched.param_names.pop();
        assert!(matches!(
            decode_value(
                prost::Message::encode_to_vec(&batch_value(batch(vec![mismatched]))).as_slice()
            ),
            Err(ValueError::ParamNamesMismatch {
                names: 1,
                params: 2,
                ..
            })
        ));
    }

    #[test]
    fn malformed_bytes_and_missing_payloads_are_refused() {
        assert!(matches!(
            decode_value(&[0xffu8, 0xff, 0xff][..]),
            Err(ValueError::Malformed(_))
        ));
        let bytes = encode_value(&batch_value(batch(vec![statement("SELECT 1")]))).expect("encode");
        assert!(
            matches!(
                decode_value(&bytes[..bytes.len() - 3]),
                Err(ValueError::Malformed(_))
            ),
            "a cut value does not decode"
        );
        let empty = PaxosValue {
            value_id: 1,
            checksum_before: 0,
            payload: None,
        };
        assert_eq!(encode_value(&empty), Err(ValueError::MissingPayload));
        assert_eq!(decode_value(&[][..]), Err(ValueError::MissingPayload));
    }
}
