//! SQLSTATEs: how [`SqlError`]s and the session's own refusals reach the client.

use paxsql_replicator::sqlite::types::{SqlError, SqlErrorKind};
use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_ERROR, SEVERITY_FATAL};

/// An error for the client: a SQLSTATE and a message that says what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgError {
    pub code: &'static str,
    pub message: String,
    /// FATAL errors end the session (startup refusals); everything else leaves it usable.
    pub fatal: bool,
}

impl PgError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            code,
            message: message.into(),
            fatal: true,
        }
    }

    pub fn into_info(self) -> ErrorInfo {
        let severity = if self.fatal {
            SEVERITY_FATAL
        } else {
            SEVERITY_ERROR
        };
        ErrorInfo::new(severity.to_owned(), self.code.to_owned(), self.message)
    }

    pub fn into_wire(self) -> PgWireError {
        PgWireError::UserError(Box::new(self.into_info()))
    }
}

/// The SQLSTATE of each backend error kind (DESIGN.md, "Routing and retries").
pub fn sqlstate(error: &SqlError) -> &'static str {
    match error.kind {
        SqlErrorKind::UniqueViolation => "23505",
        SqlErrorKind::ForeignKeyViolation => "23503",
        SqlErrorKind::NotNullViolation => "23502",
        SqlErrorKind::CheckViolation => "23514",
        SqlErrorKind::Syntax => "42601",
        SqlErrorKind::UndefinedTable => "42P01",
        SqlErrorKind::UndefinedColumn => "42703",
        SqlErrorKind::NotReplicable => "0A000",
        SqlErrorKind::NotMaster | SqlErrorKind::ReadOnly => "25006",
        SqlErrorKind::NoMaster => "57P03",
        SqlErrorKind::Lost => "40001",
        SqlErrorKind::Unknown => "40003",
        SqlErrorKind::Busy => "53000",
        SqlErrorKind::LimitExceeded => "54000",
        SqlErrorKind::Other if is_io_error(&error.message) => "58000",
        SqlErrorKind::Other if error.message.starts_with("no such savepoint") => "3B001",
        SqlErrorKind::Other => "XX000",
    }
}

fn is_io_error(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("disk i/o")
        || lower.contains("database or disk is full")
        || lower.contains("unable to open")
}

impl From<SqlError> for PgError {
    fn from(error: SqlError) -> Self {
        PgError::new(sqlstate(&error), error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_documented_sqlstate() {
        let cases = [
            (SqlErrorKind::UniqueViolation, "23505"),
            (SqlErrorKind::ForeignKeyViolation, "23503"),
            (SqlErrorKind::NotNullViolation, "23502"),
            (SqlErrorKind::CheckViolation, "23514"),
            (SqlErrorKind::Syntax, "42601"),
            (SqlErrorKind::UndefinedTable, "42P01"),
            (SqlErrorKind::UndefinedColumn, "42703"),
            (SqlErrorKind::NotReplicable, "0A000"),
            (SqlErrorKind::NotMaster, "25006"),
            (SqlErrorKind::ReadOnly, "25006"),
            (SqlErrorKind::NoMaster, "57P03"),
            (SqlErrorKind::Lost, "40001"),
            (SqlErrorKind::Unknown, "40003"),
            (SqlErrorKind::Busy, "53000"),
            (SqlErrorKind::LimitExceeded, "54000"),
            (SqlErrorKind::Other, "XX000"),
        ];
        for (kind, code) in cases {
            assert_eq!(
                sqlstate(&SqlError::new(kind.clone(), "x")),
                code,
                "{kind:?}"
            );
        }
        assert_eq!(
            sqlstate(&SqlError::new(SqlErrorKind::Other, "disk I/O error")),
            "58000"
        );
    }
}
