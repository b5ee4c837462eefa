//! `.dump [TABLE]`: SQL text that `sqlite3` itself loads, laid out like `sqlite3`'s own dump
//! (tables in creation order with their rows, `sqlite_sequence`, then indexes, triggers and
//! views).
//!
//! Every value is read with SQLite's `quote()` on the server, which is exact: integers,
//! REALs that round-trip, `X'…'` blobs, quoted text and NULL. The shell only rewrites what
//! `sqlite3` writes differently: lower-case blob hex, text with line breaks as
//! `replace('…\n…','\n',char(10))`, and infinities as `1e999`. REALs are written as
//! `quote()` writes them (shortest exact form) where `sqlite3` writes 20 digits; both load
//! as the same value.

use std::io::Write;

use futures::StreamExt;
use tokio_postgres::SimpleQueryMessage;

use super::schema::{quote_identifier, schema_line, sql_literal, HIDE_PAXSQL};
use super::{describe_error, Shell};

impl Shell {
    pub async fn dump(&self, pattern: Option<&str>) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        // As in sqlite3: objects named like the pattern, and tables with an index so named.
        let filter = pattern
            .map(|pattern| {
                let pattern = sql_literal(pattern);
                format!(
                    " AND (name LIKE {pattern} ESCAPE '\\' OR name IN (SELECT i.tbl_name FROM \
                     sqlite_schema AS i WHERE i.type = 'index' AND i.name LIKE {pattern} ESCAPE '\\'))"
                )
            })
            .unwrap_or_default();
        out.write_all(b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")?;
        let tables = self
            .query_rows(&format!(
                "SELECT name, sql FROM sqlite_schema WHERE type='table' AND sql NOT NULL \
                 AND {HIDE_PAXSQL}{filter} ORDER BY tbl_name='sqlite_sequence', rowid"
            ))
            .await?;
        for row in tables {
            let [Some(name), Some(sql)] = row.as_slice() else {
                continue;
            };
            if name == "sqlite_sequence" {
                out.write_all(b"DELETE FROM sqlite_sequence;\n")?;
            } else if name.starts_with("sqlite_stat") {
                out.write_all(b"ANALYZE sqlite_schema;\n")?;
            } else if name.starts_with("sqlite_") {
                continue;
            } else {
                writeln!(out, "{};", schema_line(sql))?;
            }
            self.dump_rows(&mut out, name).await?;
        }
        let others = self
            .query_rows(&format!(
                "SELECT sql FROM sqlite_schema WHERE sql NOT NULL \
                 AND type IN ('index','trigger','view') AND {HIDE_PAXSQL}{filter} ORDER BY rowid"
            ))
            .await?;
        for sql in others
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            writeln!(out, "{sql};")?;
        }
        out.write_all(b"COMMIT;\n")?;
        out.flush()?;
        Ok(())
    }

    /// `INSERT INTO t VALUES(…);` for every row of `table`, streamed as the rows arrive.
    async fn dump_rows(&self, out: &mut dyn Write, table: &str) -> anyhow::Result<()> {
        let columns = self.column_names(table).await?;
        if columns.is_empty() {
            return Ok(());
        }
        let select: Vec<String> = columns
            .iter()
            .map(|column| format!("quote({})", quote_identifier_always(column)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}",
            select.join(","),
            quote_identifier_always(table)
        );
        let insert = format!("INSERT INTO {} VALUES(", quote_identifier(table));
        let stream = self
            .client
            .simple_query_raw(&sql)
            .await
            .map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
        futures::pin_mut!(stream);
        while let Some(message) = stream.next().await {
            let message = message.map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let mut line = insert.clone();
            for index in 0..row.len() {
                if index > 0 {
                    line.push(',');
                }
                line.push_str(&dump_literal(row.get(index).unwrap_or("NULL")));
            }
            line.push_str(");\n");
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// Always double-quoted, for SQL the shell sends itself (any name works).
fn quote_identifier_always(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A `quote()` result rewritten the way `sqlite3 .dump` writes that value.
pub fn dump_literal(quoted: &str) -> String {
    match quoted {
        "Inf" => return "1e999".into(),
        "-Inf" => return "-1e999".into(),
        _ => {}
    }
    if let Some(hex) = quoted.strip_prefix("X'") {
        return format!("X'{}", hex.to_ascii_lowercase());
    }
    if quoted.starts_with('\'') && quoted.contains(['\n', '\r']) {
        return escaped_line_breaks(quoted);
    }
    quoted.to_string()
}

/// `'a\nb'` (with a real line break) as `replace('a\nb','\n',char(10))`, choosing a marker
/// the text does not already contain.
fn escaped_line_breaks(literal: &str) -> String {
    let mut body = literal.to_string();
    let mut wrapped_prefix = String::new();
    let mut wrapped_suffix = String::new();
    let newline = literal
        .contains('\n')
        .then(|| unused_marker(literal, "\\n", "\\012"));
    let carriage = literal
        .contains('\r')
        .then(|| unused_marker(literal, "\\r", "\\015"));
    if let Some(marker) = &carriage {
        wrapped_prefix.push_str("replace(");
        body = body.replace('\r', marker);
    }
    if let Some(marker) = &newline {
        wrapped_prefix.push_str("replace(");
        body = body.replace('\n', marker);
    }
    // The carriage-return replace() is the inner one, as sqlite3 writes it.
    if let Some(marker) = &carriage {
        wrapped_suffix.push_str(&format!(",'{marker}',char(13))"));
    }
    if let Some(marker) = &newline {
        wrapped_suffix.push_str(&format!(",'{marker}',char(10))"));
    }
    format!("{wrapped_prefix}{body}{wrapped_suffix}")
}

fn unused_marker(text: &str, first: &str, second: &str) -> String {
    if !text.contains(first) {
        return first.to_string();
    }
    if !text.contains(second) {
        return second.to_string();
    }
    (0u64..)
        .map(|counter| format!("({first}{counter})"))
        .find(|marker| !text.contains(marker.as_str()))
        .expect("some counter is unused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_match_sqlite3_dump() {
        assert_eq!(dump_literal("NULL"), "NULL");
        assert_eq!(dump_literal("42"), "42");
        assert_eq!(dump_literal("X'00FF'"), "X'00ff'");
        assert_eq!(dump_literal("'it''s'"), "'it''s'");
        assert_eq!(dump_literal("Inf"), "1e999");
        assert_eq!(
            dump_literal("'line1\nline2'"),
            "replace('line1\\nline2','\\n',char(10))"
        );
        assert_eq!(
            dump_literal("'a\r\nb'"),
            "replace(replace('a\\r\\nb','\\r',char(13)),'\\n',char(10))"
        );
        assert_eq!(
            dump_literal("'x\\ny\nz'"),
            "replace('x\\ny\\012z','\\012',char(10))"
        );
    }
}
