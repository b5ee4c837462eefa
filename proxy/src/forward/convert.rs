//! Conversions between the shared SQL types and their protobuf form.

use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, SqlErrorKind, StatementRequest, StatementResult, Value,
};
use paxsql_schema::{
    sql_value, ForwardColumn, ForwardError, ForwardResult, ForwardRow, ForwardStatement, SqlValue,
};

pub fn value_to_proto(value: &Value) -> SqlValue {
    let value = match value {
        Value::Null => sql_value::Value::Null(true),
        Value::Integer(integer) => sql_value::Value::Integer(*integer),
        Value::Real(real) => sql_value::Value::Real(*real),
        Value::Text(text) => sql_value::Value::Text(text.clone()),
        Value::Blob(blob) => sql_value::Value::Blob(blob.clone().into()),
    };
    SqlValue { value: Some(value) }
}

pub fn value_from_proto(value: &SqlValue) -> Value {
    match &value.value {
        None | Some(sql_value::Value::Null(_)) => Value::Null,
        Some(sql_value::Value::Integer(integer)) => Value::Integer(*integer),
        Some(sql_value::Value::Real(real)) => Value::Real(*real),
        Some(sql_value::Value::Text(text)) => Value::Text(text.clone()),
        Some(sql_value::Value::Blob(blob)) => Value::Blob(blob.to_vec()),
    }
}

pub fn statement_to_proto(statement: &StatementRequest) -> ForwardStatement {
    ForwardStatement {
        sql: statement.sql.clone(),
        params: statement.params.iter().map(value_to_proto).collect(),
    }
}

pub fn statement_from_proto(statement: ForwardStatement) -> StatementRequest {
    StatementRequest {
        params: statement.params.iter().map(value_from_proto).collect(),
        sql: statement.sql,
    }
}

pub fn columns_to_proto(columns: &[Column]) -> Vec<ForwardColumn> {
    columns
        .iter()
        .map(|column| ForwardColumn {
            name: column.name.clone(),
            decl_type: column.decl_type.clone(),
        })
        .collect()
}

pub fn columns_from_proto(columns: Vec<ForwardColumn>) -> Vec<Column> {
    columns
        .into_iter()
        .map(|column| Column {
            name: column.name,
            decl_type: column.decl_type,
        })
        .collect()
}

pub fn result_to_proto(result: &StatementResult) -> ForwardResult {
    ForwardResult {
        columns: columns_to_proto(&result.columns),
        rows: result
            .rows
            .iter()
            .map(|row| ForwardRow {
                values: row.iter().map(value_to_proto).collect(),
            })
            .collect(),
        rows_changed: result.rows_changed,
        verb: result.verb.clone(),
    }
}

pub fn result_from_proto(result: ForwardResult) -> StatementResult {
    StatementResult {
        columns: columns_from_proto(result.columns),
        rows: result
            .rows
            .iter()
            .map(|row| row.values.iter().map(value_from_proto).collect())
            .collect(),
        rows_changed: result.rows_changed,
        verb: result.verb,
    }
}

pub fn consistency_to_proto(consistency: Consistency) -> u32 {
    match consistency {
        Consistency::Local => 0,
        Consistency::Lease => 1,
        Consistency::Linearizable => 2,
    }
}

pub fn consistency_from_proto(code: u32) -> Option<Consistency> {
    match code {
        0 => Some(Consistency::Local),
        1 => Some(Consistency::Lease),
        2 => Some(Consistency::Linearizable),
        _ => None,
    }
}

/// Every error kind by a stable name (both sides must agree; new kinds add names).
pub fn error_kind_name(kind: &SqlErrorKind) -> &'static str {
    match kind {
        SqlErrorKind::UniqueViolation => "UniqueViolation",
        SqlErrorKind::ForeignKeyViolation => "ForeignKeyViolation",
        SqlErrorKind::NotNullViolation => "NotNullViolation",
        SqlErrorKind::CheckViolation => "CheckViolation",
        SqlErrorKind::Syntax => "Syntax",
        SqlErrorKind::UndefinedTable => "UndefinedTable",
        SqlErrorKind::UndefinedColumn => "UndefinedColumn",
        SqlErrorKind::NotReplicable => "NotReplicable",
        SqlErrorKind::NotMaster => "NotMaster",
        SqlErrorKind::NoMaster => "NoMaster",
        SqlErrorKind::Lost => "Lost",
        SqlErrorKind::Unknown => "Unknown",
        SqlErrorKind::Busy => "Busy",
        SqlErrorKind::LimitExceeded => "LimitExceeded",
        SqlErrorKind::ReadOnly => "ReadOnly",
        SqlErrorKind::Other => "Other",
    }
}

pub fn error_kind_from_name(name: &str) -> SqlErrorKind {
    const KINDS: [SqlErrorKind; 16] = [
        SqlErrorKind::UniqueViolation,
        SqlErrorKind::ForeignKeyViolation,
        SqlErrorKind::NotNullViolation,
        SqlErrorKind::CheckViolation,
        SqlErrorKind::Syntax,
        SqlErrorKind::UndefinedTable,
        SqlErrorKind::UndefinedColumn,
        SqlErrorKind::NotReplicable,
        SqlErrorKind::NotMaster,
        SqlErrorKind::NoMaster,
        SqlErrorKind::Lost,
        SqlErrorKind::Unknown,
        SqlErrorKind::Busy,
        SqlErrorKind::LimitExceeded,
        SqlErrorKind::ReadOnly,
        SqlErrorKind::Other,
    ];
    KINDS
        .into_iter()
        .find(|kind| error_kind_name(kind) == name)
        .unwrap_or(SqlErrorKind::Other)
}

pub fn error_to_proto(error: &SqlError) -> ForwardError {
    ForwardError {
        kind: error_kind_name(&error.kind).to_string(),
        message: error.message.clone(),
    }
}

pub fn error_from_proto(error: ForwardError) -> SqlError {
    SqlError::new(error_kind_from_name(&error.kind), error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_results_round_trip() {
        let result = StatementResult {
            columns: vec![
                Column {
                    name: "a".into(),
                    decl_type: Some("INTEGER".into()),
                },
                Column {
                    name: "b".into(),
                    decl_type: None,
                },
            ],
            rows: vec![
                vec![Value::Integer(-5), Value::Real(f64::INFINITY)],
                vec![Value::Null, Value::Blob(vec![0, 255])],
                vec![Value::Text("é".into()), Value::Real(1.5)],
            ],
            rows_changed: 3,
            verb: "SELECT".into(),
        };
        assert_eq!(result_from_proto(result_to_proto(&result)), result);
    }

    #[test]
    fn every_error_kind_survives_the_trip() {
        for kind in [
            SqlErrorKind::Lost,
            SqlErrorKind::NotMaster,
            SqlErrorKind::Unknown,
            SqlErrorKind::Other,
        ] {
            let error = SqlError::new(kind.clone(), "m");
            assert_eq!(error_from_proto(error_to_proto(&error)), error);
        }
    }
}
