//! SQLite values on the PostgreSQL wire: result column types, row encoding, parameter decoding.
//!
//! SQLite INTEGER → int8, REAL → float8, TEXT → text, BLOB → bytea. A column's declared type
//! wins (a column declared INTEGER is int8 even when its first value is NULL; BOOLEAN is bool);
//! otherwise the type is guessed from the expression (extended protocol, before any row
//! exists) or from the first non-NULL value (simple protocol). Text-format columns accept any
//! value; binary-format columns convert where it is lossless and fail with a clear error
//! where it is not.

use std::sync::Arc;

use paxsql_replicator::sqlite::types::{Column, Value};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

use super::errors::PgError;
use crate::sql::params::ExprType;

/// The PostgreSQL type for a SQLite declared column type (SQLite's affinity rules, plus
/// BOOL → bool and NUMERIC/DECIMAL → float8).
pub fn type_for_declared(declared: &str) -> Type {
    let upper = declared.to_ascii_uppercase();
    if upper.contains("BOOL") {
        Type::BOOL
    } else if upper.contains("INT") {
        Type::INT8
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        Type::TEXT
    } else if upper.contains("BLOB") || upper.contains("BYTEA") {
        Type::BYTEA
    } else if ["REAL", "FLOA", "DOUB", "NUM", "DEC"]
        .iter()
        .any(|t| upper.contains(t))
    {
        Type::FLOAT8
    } else {
        Type::TEXT
    }
}

fn type_for_value(value: &Value) -> Option<Type> {
    match value {
        Value::Null => None,
        Value::Integer(_) => Some(Type::INT8),
        Value::Real(_) => Some(Type::FLOAT8),
        Value::Text(_) => Some(Type::TEXT),
        Value::Blob(_) => Some(Type::BYTEA),
    }
}

/// Column types known before running: declared types, then expression guesses, then text.
pub fn described_types(
    columns: &[Column],
    guesses: Option<&[ExprType]>,
    param_types: &[Type],
) -> Vec<Type> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            if let Some(declared) = &column.decl_type {
                return type_for_declared(declared);
            }
            match guesses.and_then(|g| g.get(index)) {
                Some(ExprType::Integer) => Type::INT8,
                Some(ExprType::Real) => Type::FLOAT8,
                Some(ExprType::TypeName(name)) => type_for_declared(name),
                Some(ExprType::Param(n)) => param_types.get(*n).cloned().unwrap_or(Type::TEXT),
                _ => Type::TEXT,
            }
        })
        .collect()
}

/// Column types for a result already in hand (simple protocol): declared types, then the
/// first non-NULL value of each column, then text.
pub fn result_types(columns: &[Column], rows: &[Vec<Value>]) -> Vec<Type> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| match &column.decl_type {
            Some(declared) => type_for_declared(declared),
            None => rows
                .iter()
                .find_map(|row| type_for_value(&row[index]))
                .unwrap_or(Type::TEXT),
        })
        .collect()
}

/// Field descriptions for `columns` typed `types`, in `format`.
pub fn fields(columns: &[Column], types: &[Type], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .zip(types)
        .enumerate()
        .map(|(index, (column, pg_type))| {
            FieldInfo::new(
                column.name.clone(),
                None,
                None,
                pg_type.clone(),
                format.format_for(index),
            )
        })
        .collect()
}

/// Encodes rows for `fields`.
pub fn encode_rows(
    fields: Arc<Vec<FieldInfo>>,
    rows: &[Vec<Value>],
    reals: RealFormat,
) -> Result<Vec<DataRow>, PgError> {
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut encoded = Vec::with_capacity(rows.len());
    for row in rows {
        for (value, field) in row.iter().zip(fields.iter()) {
            encode_value(&mut encoder, value, field, reals)?;
        }
        encoded.push(encoder.take_row());
    }
    Ok(encoded)
}

fn wire(error: pgwire::error::PgWireError) -> PgError {
    PgError::new("XX000", format!("encoding a result value failed: {error}"))
}

fn encode_value(
    encoder: &mut DataRowEncoder,
    value: &Value,
    field: &FieldInfo,
    reals: RealFormat,
) -> Result<(), PgError> {
    if matches!(value, Value::Null) {
        return encoder.encode_field(&None::<i64>).map_err(wire);
    }
    if field.format() == FieldFormat::Text {
        let text = match (value, reals) {
            (Value::Real(real), RealFormat::Sqlite) if real.is_finite() => sqlite_real_text(*real),
            _ => text_of(value, field.datatype()),
        };
        return encoder
            .encode_field_with_type_and_format(
                &text,
                &Type::TEXT,
                FieldFormat::Text,
                field.format_options(),
            )
            .map_err(wire);
    }
    let mismatch = || {
        PgError::new(
            "22P03",
            format!(
                "column \"{}\" holds {value:?}, which cannot be sent as {}; CAST it in the query \
                 or ask for text results",
                field.name(),
                field.datatype().name()
            ),
        )
    };
    let pg_type = field.datatype();
    match *pg_type {
        Type::INT8 => encoder.encode_field(&as_integer(value).ok_or_else(mismatch)?),
        Type::FLOAT8 => encoder.encode_field(&as_real(value).ok_or_else(mismatch)?),
        Type::BOOL => encoder.encode_field(&(as_integer(value).ok_or_else(mismatch)? != 0)),
        Type::BYTEA => match value {
            Value::Blob(bytes) => encoder.encode_field(bytes),
            Value::Text(text) => encoder.encode_field(&text.as_bytes()),
            _ => return Err(mismatch()),
        },
        _ => encoder.encode_field(&text_of(value, &Type::TEXT)),
    }
    .map_err(wire)
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(v) => Some(*v),
        Value::Real(v) if v.fract() == 0.0 && v.abs() < 9.2e18 => Some(*v as i64),
        Value::Text(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn as_real(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(v) => Some(*v as f64),
        Value::Real(v) => Some(*v),
        Value::Text(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// PostgreSQL's text form of a value shown as `pg_type`.
fn text_of(value: &Value, pg_type: &Type) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(v) if *pg_type == Type::BOOL => if *v != 0 { "t" } else { "f" }.to_owned(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) if v.is_nan() => "NaN".to_owned(),
        Value::Real(v) if v.is_infinite() => {
            if *v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
        }
        Value::Real(v) => float_text(*v),
        Value::Text(text) => text.clone(),
        Value::Blob(bytes) => {
            let mut text = String::with_capacity(2 + bytes.len() * 2);
            text.push_str("\\x");
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text
        }
    }
}

/// How REAL values are written in text results: as PostgreSQL prints a float8 (the default,
/// what drivers parse), or as SQLite prints a REAL (`SET paxsql.real_format = 'sqlite'`, which
/// `paxsql shell` sends so its output matches the `sqlite3` command line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RealFormat {
    #[default]
    Postgres,
    Sqlite,
}

/// A REAL as SQLite's `%!.15g` prints it: 15 significant digits, always a decimal point
/// (`2.0`, `0.25`, `1.0e+20`).
pub fn sqlite_real_text(value: f64) -> String {
    let scientific = format!("{value:.14e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let with_point = |digits: &str| {
        let trimmed = if digits.contains('.') {
            digits.trim_end_matches('0')
        } else {
            digits
        };
        if trimmed.ends_with('.') {
            format!("{trimmed}0")
        } else if trimmed.contains('.') {
            trimmed.to_owned()
        } else {
            format!("{trimmed}.0")
        }
    };
    if !(-4..15).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", with_point(mantissa), exponent.abs());
    }
    with_point(&format!("{value:.*}", (14 - exponent).max(0) as usize))
}

/// A float as PostgreSQL prints a float8: the shortest text that reads back exactly, `3`
/// rather than `3.0`, and `1e+300` rather than `1e300`.
fn float_text(value: f64) -> String {
    let shortest = format!("{value:?}");
    match shortest.split_once('e') {
        Some((mantissa, exponent)) => {
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => shortest.strip_suffix(".0").unwrap_or(&shortest).to_owned(),
    }
}

/// Decodes one bound parameter sent as `pg_type` in text or binary format.
pub fn decode_param(bytes: Option<&[u8]>, pg_type: &Type, binary: bool) -> Result<Value, PgError> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    let bad = |what: &str| {
        PgError::new(
            "22P02",
            format!("invalid {what} for a parameter of type {}", pg_type.name()),
        )
    };
    if binary {
        let fixed = |n: usize| -> Result<&[u8], PgError> {
            if bytes.len() == n {
                Ok(bytes)
            } else {
                Err(bad("binary length"))
            }
        };
        return Ok(match *pg_type {
            Type::INT2 => Value::Integer(
                i16::from_be_bytes(fixed(2)?.try_into().expect("length checked")).into(),
            ),
            Type::INT4 => Value::Integer(
                i32::from_be_bytes(fixed(4)?.try_into().expect("length checked")).into(),
            ),
            Type::INT8 => Value::Integer(i64::from_be_bytes(
                fixed(8)?.try_into().expect("length checked"),
            )),
            Type::FLOAT4 => Value::Real(
                f32::from_be_bytes(fixed(4)?.try_into().expect("length checked")).into(),
            ),
            Type::FLOAT8 => Value::Real(f64::from_be_bytes(
                fixed(8)?.try_into().expect("length checked"),
            )),
            Type::BOOL => Value::Integer(i64::from(fixed(1)?[0] != 0)),
            Type::BYTEA => Value::Blob(bytes.to_vec()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| bad("UTF-8"))?)
            }
            _ => {
                return Err(PgError::new(
                    "0A000",
                    format!(
                        "parameters of type {} are not supported in binary format; send text, int, \
                         float, bool or bytea",
                        pg_type.name()
                    ),
                ))
            }
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("UTF-8"))?;
    Ok(match *pg_type {
        Type::INT2 | Type::INT4 | Type::INT8 => {
            Value::Integer(text.trim().parse().map_err(|_| bad("integer"))?)
        }
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => {
            Value::Real(text.trim().parse().map_err(|_| bad("number"))?)
        }
        Type::BOOL => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "yes" | "on" | "y" => Value::Integer(1),
            "f" | "false" | "0" | "no" | "off" | "n" => Value::Integer(0),
            _ => return Err(bad("boolean")),
        },
        Type::BYTEA => Value::Blob(decode_bytea_text(text).ok_or_else(|| bad("bytea"))?),
        _ => Value::Text(text.to_owned()),
    })
}

fn decode_bytea_text(text: &str) -> Option<Vec<u8>> {
    let Some(hex) = text.strip_prefix("\\x") else {
        return Some(text.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        assert_eq!(type_for_declared("INTEGER"), Type::INT8);
        assert_eq!(type_for_declared("varchar(20)"), Type::TEXT);
        assert_eq!(type_for_declared("BOOLEAN"), Type::BOOL);
        assert_eq!(type_for_declared("double precision"), Type::FLOAT8);
        assert_eq!(type_for_declared("blob"), Type::BYTEA);
    }

    #[test]
    fn floats_print_as_postgres_prints_float8() {
        assert_eq!(text_of(&Value::Real(3.0), &Type::FLOAT8), "3");
        assert_eq!(text_of(&Value::Real(-2.5), &Type::FLOAT8), "-2.5");
        assert_eq!(text_of(&Value::Real(1e300), &Type::FLOAT8), "1e+300");
        assert_eq!(text_of(&Value::Real(-1.25e-7), &Type::FLOAT8), "-1.25e-07");
        assert_eq!(text_of(&Value::Real(0.1), &Type::FLOAT8), "0.1");
        assert_eq!(text_of(&Value::Real(-0.0), &Type::FLOAT8), "-0");
    }

    #[test]
    fn reals_print_as_sqlite_prints_them_when_asked() {
        assert_eq!(sqlite_real_text(2.0), "2.0");
        assert_eq!(sqlite_real_text(-3.0), "-3.0");
        assert_eq!(sqlite_real_text(0.25), "0.25");
        assert_eq!(sqlite_real_text(1.5), "1.5");
        assert_eq!(sqlite_real_text(1e20), "1.0e+20");
        assert_eq!(sqlite_real_text(1.25e-7), "1.25e-07");
        assert_eq!(sqlite_real_text(0.1), "0.1");
        assert_eq!(sqlite_real_text(123456789.125), "123456789.125");
    }

    #[test]
    fn params_decode_in_both_formats() {
        assert_eq!(
            decode_param(Some(&7i64.to_be_bytes()), &Type::INT8, true),
            Ok(Value::Integer(7))
        );
        assert_eq!(
            decode_param(Some(&7i32.to_be_bytes()), &Type::INT4, true),
            Ok(Value::Integer(7))
        );
        assert_eq!(
            decode_param(Some(&1.5f64.to_be_bytes()), &Type::FLOAT8, true),
            Ok(Value::Real(1.5))
        );
        assert_eq!(
            decode_param(Some(b"42"), &Type::INT8, false),
            Ok(Value::Integer(42))
        );
        assert_eq!(
            decode_param(Some(b"\\x0aff"), &Type::BYTEA, false),
            Ok(Value::Blob(vec![10, 255]))
        );
        assert_eq!(
            decode_param(Some(b"true"), &Type::BOOL, false),
            Ok(Value::Integer(1))
        );
        assert_eq!(decode_param(None, &Type::INT8, true), Ok(Value::Null));
        assert_eq!(
            decode_param(Some(b"x"), &Type::INT8, false).map_err(|e| e.code),
            Err("22P02")
        );
    }
}
