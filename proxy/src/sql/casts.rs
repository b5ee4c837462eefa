//! PostgreSQL `expr::type` casts, rewritten to SQLite's `CAST(expr AS type)` before SQLite sees
//! the statement (psql, pgbench scripts and drivers' users write them; SQLite has no `::`).
//!
//! The operand is the token just before `::`: a literal, a `$n` parameter, a possibly
//! qualified name, or a parenthesized expression (with its function name, if any). Types map to
//! SQLite's storage classes: integers → INTEGER, floats and numeric → REAL, bytea → BLOB,
//! strings, dates and times → TEXT, bool → INTEGER (a quoted `'true'`/`'f'` literal becomes
//! 1/0). A cast to any other type (`regclass`, arrays…) is left as written, and SQLite's error
//! tells the user.

use std::borrow::Cow;

use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::split::{byte_offset, line_starts, tokens};

/// Most casts rewritten in one statement; past it the rest are left for SQLite to refuse.
pub const CASTS_PER_STATEMENT_MAX: usize = 64;

/// `sql` with every `::` cast it understands rewritten; borrowed when there is none.
pub fn rewrite_casts(sql: &str) -> Cow<'_, str> {
    if !sql.contains("::") {
        return Cow::Borrowed(sql);
    }
    let mut text = sql.to_owned();
    // One cast per pass, left to right: a chain `a::int::text` becomes nested CASTs.
    for _ in 0..CASTS_PER_STATEMENT_MAX {
        match rewrite_first(&text) {
            Some(rewritten) => text = rewritten,
            None => break,
        }
    }
    if text == sql {
        Cow::Borrowed(sql)
    } else {
        Cow::Owned(text)
    }
}

/// One statement as it will run, with its class: `::` casts rewritten, except in catalog
/// queries, which are answered from their PostgreSQL text (see `catalog`).
pub fn classify_and_rewrite(sql: &str) -> (String, super::StatementKind) {
    let kind = super::classify(sql);
    if kind == super::StatementKind::Catalog {
        return (sql.to_owned(), kind);
    }
    match rewrite_casts(sql) {
        Cow::Borrowed(_) => (sql.to_owned(), kind),
        Cow::Owned(rewritten) => {
            let kind = super::classify(&rewritten);
            (rewritten, kind)
        }
    }
}

/// A significant token and its byte range.
struct Located {
    token: Token,
    start: usize,
    end: usize,
}

fn located(sql: &str) -> Option<Vec<Located>> {
    let lines = line_starts(sql);
    let offset = |location: sqlparser::tokenizer::Location| {
        byte_offset(sql, &lines, location.line, location.column)
    };
    Some(
        tokens(sql)?
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|TokenWithSpan { token, span }| Located {
                token,
                start: offset(span.start),
                end: offset(span.end),
            })
            .collect(),
    )
}

/// Rewrites the first rewritable `::` cast, or `None` when there is none left.
fn rewrite_first(sql: &str) -> Option<String> {
    let tokens = located(sql)?;
    for (index, token) in tokens.iter().enumerate() {
        if token.token != Token::DoubleColon || index == 0 {
            continue;
        }
        let Some(operand_first) = operand_start(&tokens, index - 1) else {
            continue;
        };
        let Some((type_name, type_end)) = type_after(&tokens, index + 1) else {
            continue;
        };
        let operand = &sql[tokens[operand_first].start..tokens[index - 1].end];
        let Some(cast) = cast_text(operand, &tokens[index - 1].token, &type_name) else {
            continue;
        };
        return Some(format!(
            "{}{cast}{}",
            &sql[..tokens[operand_first].start],
            &sql[tokens[type_end].end..]
        ));
    }
    None
}

/// The first token of the operand that ends at `last`.
fn operand_start(tokens: &[Located], last: usize) -> Option<usize> {
    match &tokens[last].token {
        Token::RParen => {
            let mut depth = 0i32;
            let mut index = last;
            loop {
                match tokens[index].token {
                    Token::RParen => depth += 1,
                    Token::LParen => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                index = index.checked_sub(1)?;
            }
            // A function call (its name touches the parenthesis): include the name.
            match index
                .checked_sub(1)
                .map(|i| (&tokens[i].token, tokens[i].end))
            {
                Some((Token::Word(name), end))
                    if end == tokens[index].start && !is_clause_word(&name.value) =>
                {
                    Some(index - 1)
                }
                _ => Some(index),
            }
        }
        Token::Word(_) => {
            // A qualified name: `t.col`.
            let mut first = last;
            while first >= 2
                && tokens[first - 1].token == Token::Period
                && matches!(tokens[first - 2].token, Token::Word(_))
            {
                first -= 2;
            }
            Some(first)
        }
        Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::Placeholder(_)
        | Token::HexStringLiteral(_)
        | Token::NationalStringLiteral(_) => Some(last),
        _ => None,
    }
}

/// Words that may touch a parenthesis without being a function name: `VALUES(1)`, `IN(…)`.
fn is_clause_word(word: &str) -> bool {
    [
        "select",
        "values",
        "in",
        "and",
        "or",
        "not",
        "where",
        "on",
        "when",
        "then",
        "else",
        "exists",
        "as",
        "by",
        "from",
        "having",
        "returning",
        "set",
    ]
    .contains(&word.to_ascii_lowercase().as_str())
}

/// The type name starting at `first` (lowercase, words joined by one space) and the index of
/// its last token, including a `(n, m)` modifier and a trailing `[]`.
fn type_after(tokens: &[Located], first: usize) -> Option<(String, usize)> {
    let word = |index: usize| match tokens.get(index).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    let mut words = vec![word(first)?];
    let mut last = first;
    let continues = |words: &[String], next: &str| {
        matches!(
            (words.last().map(String::as_str), next),
            (Some("double"), "precision")
                | (Some("character" | "char" | "bit"), "varying")
                | (Some("timestamp" | "time"), "with" | "without")
                | (Some("with" | "without"), "time")
                | (Some("time"), "zone")
        )
    };
    while let Some(next) = word(last + 1) {
        if !continues(&words, &next) {
            break;
        }
        words.push(next);
        last += 1;
    }
    if tokens.get(last + 1).map(|t| &t.token) == Some(&Token::LParen) {
        let close = (last + 1..tokens.len()).find(|&i| tokens[i].token == Token::RParen)?;
        last = close;
    }
    // Arrays have no SQLite equivalent: leave the cast alone. (SQLite's tokenizer reads `[]`
    // as a bracket-quoted name.)
    match tokens.get(last + 1).map(|t| &t.token) {
        Some(Token::LBracket) => return None,
        Some(Token::Word(w)) if w.quote_style == Some('[') => return None,
        _ => {}
    }
    Some((words.join(" "), last))
}

/// The SQLite text for `operand::type_name`, or `None` for a type left alone.
fn cast_text(operand: &str, operand_token: &Token, type_name: &str) -> Option<String> {
    let base = type_name.trim_start_matches("pg_catalog.");
    let sqlite_type = match base {
        "int" | "int2" | "int4" | "int8" | "integer" | "smallint" | "bigint" | "oid" => "INTEGER",
        "real" | "float" | "float4" | "float8" | "double precision" | "numeric" | "decimal" => {
            "REAL"
        }
        "bytea" => "BLOB",
        "text" | "varchar" | "char" | "character" | "character varying" | "bpchar" | "name"
        | "date" | "time" | "timestamp" | "timestamptz" | "timetz" | "interval" | "json"
        | "jsonb" | "uuid" => "TEXT",
        _ if base.starts_with("timestamp") || base.starts_with("time ") => "TEXT",
        "bool" | "boolean" => {
            if let Token::SingleQuotedString(value) = operand_token {
                let truth = match value.trim().to_ascii_lowercase().as_str() {
                    "t" | "true" | "y" | "yes" | "on" | "1" => "1",
                    "f" | "false" | "n" | "no" | "off" | "0" => "0",
                    _ => return None,
                };
                return Some(truth.to_owned());
            }
            "INTEGER"
        }
        _ => return None,
    };
    Some(format!("CAST({operand} AS {sqlite_type})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_become_sqlite_casts() {
        let cases = [
            ("SELECT 1::int8", "SELECT CAST(1 AS INTEGER)"),
            ("SELECT '2.5'::float8 * 2", "SELECT CAST('2.5' AS REAL) * 2"),
            (
                "SELECT $1::text, $2::bigint",
                "SELECT CAST($1 AS TEXT), CAST($2 AS INTEGER)",
            ),
            (
                "SELECT t.a::double precision FROM t",
                "SELECT CAST(t.a AS REAL) FROM t",
            ),
            (
                "SELECT count(*)::int FROM t",
                "SELECT CAST(count(*) AS INTEGER) FROM t",
            ),
            (
                "SELECT (a + 1)::numeric(10, 2) FROM t",
                "SELECT CAST((a + 1) AS REAL) FROM t",
            ),
            (
                "SELECT 'x'::varchar(3)::bytea",
                "SELECT CAST(CAST('x' AS TEXT) AS BLOB)",
            ),
            ("SELECT 'true'::boolean, 'f'::bool", "SELECT 1, 0"),
            (
                "SELECT now()::timestamp with time zone",
                "SELECT CAST(now() AS TEXT)",
            ),
        ];
        for (written, expected) in cases {
            assert_eq!(rewrite_casts(written), expected, "{written}");
        }
    }

    #[test]
    fn strings_comments_and_unknown_types_are_left_alone() {
        for sql in [
            "SELECT 'a::int'",
            "SELECT 1 -- x::int",
            "SELECT 'pg_class'::regclass",
            "SELECT ARRAY[1]::int[]",
            "SELECT 1",
        ] {
            assert_eq!(rewrite_casts(sql), sql);
        }
    }
}
