//! What one statement is, as far as routing and the session are concerned.
//!
//! Transaction control and session commands are recognized by their leading keywords;
//! `SELECT`/`WITH` statements are parsed with sqlparser (a `WITH … INSERT` writes). PRAGMAs
//! with a value write, others read. Anything else that is not obviously a write is
//! [`StatementKind::Undecided`]: the server asks SQLite (`sqlite3_stmt_readonly`).

use paxsql_replicator::sqlite::policy::contains_ignore_ascii_case;
use sqlparser::ast::{SetExpr, Statement};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::split::significant_tokens;

/// The class of one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// Only reads: served at the session's consistency.
    Read,
    /// Writes or DDL: goes to the master as (part of) a write unit.
    Write,
    /// sqlparser could not tell; ask the backend.
    Undecided,
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT` (the whole transaction).
    Rollback,
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`: run inside the open transaction.
    SavepointControl,
    /// `SET name = value`; `value` is `None` for `SET name TO DEFAULT` and `RESET name`.
    Set { name: String, value: Option<String> },
    /// `SHOW name`, `SELECT current_setting('name')`. `column` is the result column's name.
    Show { name: String, column: String },
    /// `SELECT version()`.
    Version,
    /// A query on `pg_catalog` or `information_schema` (psql's `\dt`, `\d`).
    Catalog,
}

/// Classifies one statement (no trailing semicolon needed).
pub fn classify(sql: &str) -> StatementKind {
    if leading_word_writes(sql) {
        return StatementKind::Write;
    }
    if plain_select(sql) {
        return StatementKind::Read;
    }
    let Some(tokens) = significant_tokens(sql) else {
        return StatementKind::Undecided;
    };
    let keywords: Vec<Keyword> = tokens
        .iter()
        .map(|t| match t {
            Token::Word(w) => w.keyword,
            _ => Keyword::NoKeyword,
        })
        .collect();
    let lower = sql.to_ascii_lowercase();
    match keywords.first() {
        Some(Keyword::BEGIN | Keyword::START) => StatementKind::Begin,
        Some(Keyword::COMMIT | Keyword::END) => StatementKind::Commit,
        Some(Keyword::ROLLBACK | Keyword::ABORT) if keywords.contains(&Keyword::TO) => {
            StatementKind::SavepointControl
        }
        Some(Keyword::ROLLBACK | Keyword::ABORT) => StatementKind::Rollback,
        Some(Keyword::SAVEPOINT | Keyword::RELEASE) => StatementKind::SavepointControl,
        Some(Keyword::SET) => classify_set(&tokens[1..]),
        Some(Keyword::RESET) => StatementKind::Set {
            name: setting_name(&tokens[1..]),
            value: None,
        },
        Some(Keyword::SHOW) => {
            let name = setting_name(&tokens[1..]);
            StatementKind::Show {
                column: name.clone(),
                name,
            }
        }
        Some(Keyword::PRAGMA) if tokens.contains(&Token::Eq) => StatementKind::Write,
        Some(Keyword::PRAGMA | Keyword::EXPLAIN) => StatementKind::Read,
        Some(
            Keyword::INSERT
            | Keyword::UPDATE
            | Keyword::DELETE
            | Keyword::REPLACE
            | Keyword::CREATE
            | Keyword::DROP
            | Keyword::ALTER
            | Keyword::VACUUM
            | Keyword::REINDEX
            | Keyword::ANALYZE
            | Keyword::ATTACH
            | Keyword::DETACH,
        ) => StatementKind::Write,
        Some(Keyword::SELECT | Keyword::WITH | Keyword::VALUES) => {
            if lower.contains("pg_catalog") || lower.contains("information_schema") {
                StatementKind::Catalog
            } else if let Some(name) = current_setting_name(&tokens) {
                StatementKind::Show {
                    name,
                    column: "current_setting".to_owned(),
                }
            } else if is_version_call(&tokens) {
                StatementKind::Version
            } else if keywords.first() == Some(&Keyword::SELECT) {
                // A statement that starts with SELECT only reads (only `WITH … INSERT` and the
                // like write): no full parse on the hot path of every point read. SQLite
                // reports its syntax errors when it prepares it.
                StatementKind::Read
            } else {
                classify_query(sql)
            }
        }
        _ => StatementKind::Undecided,
    }
}

/// Whether `sql` starts (after whitespace) with the word INSERT, UPDATE, DELETE or REPLACE: a
/// write whatever follows, known without tokenizing the whole statement (every autocommit
/// write pays this). Text with a leading comment takes the tokenizer's path.
fn leading_word_writes(sql: &str) -> bool {
    let word = leading_word(sql);
    ["INSERT", "UPDATE", "DELETE", "REPLACE"]
        .iter()
        .any(|verb| word.eq_ignore_ascii_case(verb))
}

/// Whether `sql` starts with the word SELECT and names nothing the session answers itself
/// (catalog tables, `current_setting()`, `version()`): a read, known without tokenizing the
/// statement (every point read pays this; tokenizing took ~10 % of a node's CPU on reads).
/// Anything else takes the tokenizer's path below, which decides the same for such text —
/// except text it cannot tokenize (`SELECT 'unterminated`), once `Undecided`: as a read it
/// meets the same SQLite syntax error, on a reader.
fn plain_select(sql: &str) -> bool {
    leading_word(sql).eq_ignore_ascii_case("SELECT")
        && ![
            "pg_catalog",
            "information_schema",
            "current_setting",
            "version",
        ]
        .iter()
        .any(|name| contains_ignore_ascii_case(sql, name))
}

/// The first word of `sql` after whitespace (empty when it starts with anything else, such
/// as a comment).
fn leading_word(sql: &str) -> &str {
    let text = sql.trim_start();
    let word_end = text
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '$')
        .unwrap_or(text.len());
    &text[..word_end]
}

fn classify_query(sql: &str) -> StatementKind {
    match Parser::parse_sql(&SQLiteDialect {}, sql) {
        Ok(statements) if statements.len() == 1 => match &statements[0] {
            Statement::Query(query) => match query.body.as_ref() {
                SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => StatementKind::Write,
                _ => StatementKind::Read,
            },
            Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) => {
                StatementKind::Write
            }
            _ => StatementKind::Undecided,
        },
        _ => StatementKind::Undecided,
    }
}

/// `SET [SESSION|LOCAL] name {=|TO} value`, `SET TIME ZONE value`, `SET TRANSACTION …`.
fn classify_set(tokens: &[Token]) -> StatementKind {
    let mut rest = tokens;
    if let Some(Token::Word(w)) = rest.first() {
        if matches!(w.keyword, Keyword::SESSION | Keyword::LOCAL) {
            rest = &rest[1..];
        }
    }
    if let [Token::Word(a), Token::Word(b), value @ ..] = rest {
        if a.keyword == Keyword::TIME && b.keyword == Keyword::ZONE {
            return StatementKind::Set {
                name: "timezone".to_owned(),
                value: Some(value_text(value)),
            };
        }
    }
    if let Some(Token::Word(w)) = rest.first() {
        if matches!(
            w.keyword,
            Keyword::TRANSACTION | Keyword::SESSION | Keyword::CHARACTERISTICS
        ) {
            return StatementKind::Set {
                name: "transaction".to_owned(),
                value: Some(value_text(&rest[1..])),
            };
        }
    }
    let name = setting_name(rest);
    let name_tokens = rest.iter().take_while(|t| !is_assignment(t)).count();
    let value_tokens = rest.get(name_tokens + 1..).unwrap_or(&[]);
    let value = match value_tokens {
        [Token::Word(w)] if w.keyword == Keyword::DEFAULT => None,
        _ => Some(value_text(value_tokens)),
    };
    StatementKind::Set { name, value }
}

fn is_assignment(token: &Token) -> bool {
    matches!(token, Token::Eq) || matches!(token, Token::Word(w) if w.keyword == Keyword::TO)
}

/// A (possibly dotted) setting name, lowercased: `paxsql.consistency`, `datestyle`.
fn setting_name(tokens: &[Token]) -> String {
    let mut name = String::new();
    for token in tokens {
        match token {
            Token::Word(w) if !is_assignment(token) => name.push_str(&w.value.to_ascii_lowercase()),
            Token::Period => name.push('.'),
            _ => break,
        }
    }
    name
}

/// The value of a SET: quoted strings unquoted, lists joined with `, `.
fn value_text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .filter(|t| !matches!(t, Token::Comma | Token::SemiColon))
        .map(|t| match t {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
            Token::Word(w) => w.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT current_setting('name')` → `name`.
fn current_setting_name(tokens: &[Token]) -> Option<String> {
    match tokens {
        [Token::Word(_), Token::Word(f), Token::LParen, Token::SingleQuotedString(name), Token::RParen, ..]
            if f.value.eq_ignore_ascii_case("current_setting") =>
        {
            Some(name.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// `SELECT version()` (also `pg_catalog.version()` lands in [`StatementKind::Catalog`]).
fn is_version_call(tokens: &[Token]) -> bool {
    matches!(tokens, [Token::Word(_), Token::Word(f), Token::LParen, Token::RParen, ..]
        if f.value.eq_ignore_ascii_case("version"))
}

/// The command tag verb PostgreSQL would report for `sql`: `INSERT`, `UPDATE`, `DELETE`,
/// `SELECT`, `CREATE TABLE`, `DROP INDEX`, `BEGIN`… (`REPLACE` reports `INSERT`; a
/// `WITH … INSERT` reports `INSERT`).
pub fn command_verb(sql: &str) -> String {
    let words: Vec<String> = significant_tokens(sql)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    match first {
        "CREATE" | "DROP" | "ALTER" => {
            let object = words
                .iter()
                .skip(1)
                .find(|w| {
                    !matches!(
                        w.as_str(),
                        "TEMP" | "TEMPORARY" | "UNIQUE" | "VIRTUAL" | "OR"
                    )
                })
                .map(String::as_str)
                .unwrap_or("");
            format!("{first} {object}").trim().to_owned()
        }
        "REPLACE" => "INSERT".to_owned(),
        "WITH" => match classify_query(sql) {
            StatementKind::Write => words
                .iter()
                .find(|w| matches!(w.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE"))
                .map(|w| {
                    if w == "REPLACE" {
                        "INSERT".to_owned()
                    } else {
                        w.clone()
                    }
                })
                .unwrap_or_else(|| "SELECT".to_owned()),
            _ => "SELECT".to_owned(),
        },
        "VALUES" => "SELECT".to_owned(),
        "" => String::new(),
        other => other.to_owned(),
    }
}

/// Whether SQLite runs `sql` inside a transaction as it runs it alone, so an extended-protocol
/// pipeline's implicit transaction may include it. Everything may but `VACUUM` (refused inside
/// a transaction), `PRAGMA` (some are ignored there, such as `foreign_keys`),
/// `ATTACH`/`DETACH`, `REINDEX` and `ANALYZE`, which run alone. Text that starts with a
/// comment or a parenthesis takes the tokenizer's path; text it cannot read may join (the
/// pipeline stays atomic; SQLite reports what it refuses).
pub fn runs_in_a_transaction(sql: &str) -> bool {
    const ALONE: [&str; 6] = ["VACUUM", "PRAGMA", "ATTACH", "DETACH", "REINDEX", "ANALYZE"];
    let word = leading_word(sql);
    let verb;
    let word = if word.is_empty() {
        verb = command_verb(sql);
        verb.split(' ').next().unwrap_or("")
    } else {
        word
    };
    !ALONE.iter().any(|alone| word.eq_ignore_ascii_case(alone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_schema_changes_run_in_a_transaction_and_maintenance_does_not() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "insert into t values (1)",
            "  REPLACE INTO t VALUES (1)",
            "INSERT OR REPLACE INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "CREATE TABLE u (a)",
            "DROP TABLE u",
            "ALTER TABLE t ADD COLUMN b",
            "/* sqlcommenter */ INSERT INTO t VALUES (1)",
            "-- a comment\nUPDATE t SET a = 2",
            // Text the tokenizer cannot read joins: the pipeline stays atomic.
            "/* c */ INSERT INTO t VALUES ('unterminated",
        ] {
            assert!(runs_in_a_transaction(sql), "{sql}");
        }
        for sql in [
            "VACUUM",
            "PRAGMA foreign_keys = ON",
            "ATTACH 'x.db' AS x",
            "DETACH x",
            "REINDEX",
            "ANALYZE",
            "/* c */ VACUUM",
        ] {
            assert!(!runs_in_a_transaction(sql), "{sql}");
        }
    }

    fn set(name: &str, value: Option<&str>) -> StatementKind {
        StatementKind::Set {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn transaction_control_is_recognized() {
        assert_eq!(classify("begin"), StatementKind::Begin);
        assert_eq!(
            classify("START TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            StatementKind::Begin
        );
        assert_eq!(classify("BEGIN IMMEDIATE"), StatementKind::Begin);
        assert_eq!(classify("end"), StatementKind::Commit);
        assert_eq!(classify("ROLLBACK"), StatementKind::Rollback);
        assert_eq!(
            classify("ROLLBACK TO SAVEPOINT a"),
            StatementKind::SavepointControl
        );
        assert_eq!(classify("release a"), StatementKind::SavepointControl);
    }

    #[test]
    fn session_commands_are_recognized() {
        assert_eq!(
            classify("SET paxsql.consistency = 'local'"),
            set("paxsql.consistency", Some("local"))
        );
        assert_eq!(
            classify("set DateStyle to ISO, MDY"),
            set("datestyle", Some("ISO, MDY"))
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            set("timezone", Some("UTC"))
        );
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            set("extra_float_digits", Some("3"))
        );
        assert_eq!(
            classify("RESET paxsql.consistency"),
            set("paxsql.consistency", None)
        );
        assert_eq!(
            classify("SHOW server_version"),
            StatementKind::Show {
                name: "server_version".into(),
                column: "server_version".into()
            }
        );
        assert_eq!(
            classify("select current_setting('TimeZone')"),
            StatementKind::Show {
                name: "timezone".into(),
                column: "current_setting".into()
            }
        );
        assert_eq!(classify("SELECT version()"), StatementKind::Version);
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        assert_eq!(
            classify("SELECT a FROM t WHERE b = $1"),
            StatementKind::Read
        );
        assert_eq!(
            classify("WITH x AS (SELECT 1) SELECT * FROM x"),
            StatementKind::Read
        );
        assert_eq!(classify("INSERT INTO t VALUES (1)"), StatementKind::Write);
        // The leading-word shortcut: any case, leading whitespace, whole words only.
        assert_eq!(
            classify("\n  insert into t values ('x"),
            StatementKind::Write
        );
        assert_eq!(classify("Update t SET a = 1"), StatementKind::Write);
        assert_eq!(classify("REPLACE INTO t VALUES (1)"), StatementKind::Write);
        assert_eq!(classify("delete_all()"), StatementKind::Undecided);
        assert_eq!(classify("-- c\nDELETE FROM t"), StatementKind::Write);
        assert_eq!(classify("create table t (a integer)"), StatementKind::Write);
        assert_eq!(classify("PRAGMA user_version = 3"), StatementKind::Write);
        assert_eq!(classify("PRAGMA table_info(t)"), StatementKind::Read);
        assert_eq!(
            classify("SELECT c.relname FROM pg_catalog.pg_class c"),
            StatementKind::Catalog
        );
        assert_eq!(classify("SELEC oops"), StatementKind::Undecided);
        assert_eq!(
            classify("SELECT 1 UNION SELECT a FROM t"),
            StatementKind::Read
        );
        assert_eq!(
            classify("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
            StatementKind::Write
        );
    }

    /// The SELECT shortcut answers exactly what the tokenizer's path answers: reads, except
    /// what the session answers itself, in any case and however far into the text.
    #[test]
    fn the_select_shortcut_leaves_session_answers_to_the_tokenizer() {
        assert_eq!(
            classify("  select id FROM t WHERE id = 7"),
            StatementKind::Read
        );
        assert_eq!(classify("SELECT id FROM versions"), StatementKind::Read);
        assert_eq!(classify("SELECT Version()"), StatementKind::Version);
        assert_eq!(
            classify("SELECT CURRENT_SETTING('DateStyle')"),
            StatementKind::Show {
                name: "datestyle".into(),
                column: "current_setting".into()
            }
        );
        assert_eq!(
            classify("SELECT table_name FROM INFORMATION_SCHEMA.tables"),
            StatementKind::Catalog
        );
        assert_eq!(
            classify("SELECT n.nspname FROM t JOIN Pg_Catalog.pg_namespace n ON true"),
            StatementKind::Catalog
        );
        assert_eq!(
            classify("/* why */ SELECT version()"),
            StatementKind::Version
        );
        assert_eq!(classify("SELECT 'unterminated"), StatementKind::Read);
    }

    #[test]
    fn command_verbs_match_postgres_tags() {
        assert_eq!(command_verb("create table t (a int)"), "CREATE TABLE");
        assert_eq!(
            command_verb("CREATE UNIQUE INDEX i ON t(a)"),
            "CREATE INDEX"
        );
        assert_eq!(command_verb("replace into t values (1)"), "INSERT");
        assert_eq!(
            command_verb("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
            "INSERT"
        );
        assert_eq!(command_verb("update t set a = 1"), "UPDATE");
        assert_eq!(command_verb("VALUES (1)"), "SELECT");
    }
}
