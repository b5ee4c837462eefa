//! `.tables`, `.schema` and `.indexes`, read from `sqlite_schema` over the wire.
//!
//! paxsql's own `_paxsql_*` tables are hidden everywhere, as are SQLite's internal
//! `sqlite_*` tables where `sqlite3` hides them.

use std::io::Write;

use super::Shell;

/// The filter that hides paxsql's own objects (`_` is a LIKE wildcard, hence the escapes).
pub const HIDE_PAXSQL: &str =
    "name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' AND tbl_name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\'";

/// Width of the terminal `sqlite3` assumes when it lists names in columns.
const LISTING_WIDTH: usize = 80;

impl Shell {
    pub async fn tables(&self, pattern: Option<&str>) -> anyhow::Result<()> {
        let filter = pattern
            .map(|pattern| format!(" AND name LIKE {}", sql_literal(pattern)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT name FROM sqlite_schema WHERE type IN ('table','view') \
             AND name NOT LIKE 'sqlite_%' AND {HIDE_PAXSQL}{filter} ORDER BY 1"
        );
        let names = self.names(&sql).await?;
        std::io::stdout().write_all(listing(&names).as_bytes())?;
        Ok(())
    }

    pub async fn indexes(&self, table: Option<&str>) -> anyhow::Result<()> {
        let filter = table
            .map(|table| format!(" AND tbl_name LIKE {}", sql_literal(table)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT name FROM sqlite_schema WHERE type='index' AND {HIDE_PAXSQL}{filter} ORDER BY 1"
        );
        let names = self.names(&sql).await?;
        std::io::stdout().write_all(listing(&names).as_bytes())?;
        Ok(())
    }

    pub async fn schema(&self, pattern: Option<&str>) -> anyhow::Result<()> {
        let filter = pattern
            .map(|pattern| format!(" AND lower(tbl_name) LIKE lower({})", sql_literal(pattern)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT sql, type, name FROM sqlite_schema WHERE sql IS NOT NULL \
             AND {HIDE_PAXSQL}{filter} ORDER BY rowid"
        );
        let mut text = String::new();
        for row in self.query_rows(&sql).await? {
            let [Some(sql), Some(kind), Some(name)] = row.as_slice() else {
                continue;
            };
            text.push_str(&schema_line(sql));
            if kind == "view" {
                let columns = self.column_names(name).await?;
                let columns: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
                text.push_str(&format!(
                    "\n/* {}({}) */",
                    quote_identifier(name),
                    columns.join(",")
                ));
            }
            text.push_str(";\n");
        }
        std::io::stdout().write_all(text.as_bytes())?;
        Ok(())
    }

    /// The first column of every row of `sql`.
    pub async fn names(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .query_rows(sql)
            .await?
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect())
    }

    /// The visible columns of a table or view, in order.
    pub async fn column_names(&self, table: &str) -> anyhow::Result<Vec<String>> {
        self.names(&format!(
            "SELECT name FROM pragma_table_info({}) ORDER BY cid",
            sql_literal(table)
        ))
        .await
    }
}

/// A CREATE statement as `sqlite3` prints it: a table whose name starts with a quote gets
/// `IF NOT EXISTS`, so the output can be loaded where that table already exists.
pub fn schema_line(sql: &str) -> String {
    let quoted_name = sql
        .strip_prefix("CREATE TABLE ")
        .filter(|rest| rest.starts_with(['"', '\'']));
    match quoted_name {
        Some(rest) => format!("CREATE TABLE IF NOT EXISTS {rest}"),
        None => sql.to_string(),
    }
}

/// A SQL string literal: `'…'` with quotes doubled.
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An identifier as `sqlite3` writes it: bare when it is a plain name and not a keyword,
/// double-quoted otherwise.
pub fn quote_identifier(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !is_keyword(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn is_keyword(name: &str) -> bool {
    let Ok(length) = i32::try_from(name.len()) else {
        return false;
    };
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call;
    // sqlite3_keyword_check only reads them.
    unsafe { rusqlite::ffi::sqlite3_keyword_check(name.as_ptr().cast(), length) != 0 }
}

/// Names in columns down the page, the way `sqlite3` lists `.tables` and `.indexes`.
pub fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let width = names
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0);
    let columns = (LISTING_WIDTH / (width + 2)).max(1);
    let rows = names.len().div_ceil(columns);
    let mut text = String::new();
    for row in 0..rows {
        for (position, name) in names.iter().enumerate().skip(row).step_by(rows) {
            let separator = if position < rows { "" } else { "  " };
            let padding = width - name.chars().count();
            text.push_str(&format!("{separator}{name}{}", " ".repeat(padding)));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_like_sqlite3() {
        assert_eq!(quote_identifier("items"), "items");
        assert_eq!(quote_identifier("odd name"), "\"odd name\"");
        assert_eq!(quote_identifier("order"), "\"order\"");
        assert_eq!(quote_identifier("1st"), "\"1st\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn listing_fills_columns_down_the_page() {
        let names: Vec<String> = ["odd name", "t", "v"].map(String::from).to_vec();
        assert_eq!(listing(&names), "odd name  t         v       \n");
        let long: Vec<String> = (0..5).map(|i| format!("{}{i}", "x".repeat(30))).collect();
        let text = listing(&long);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.starts_with(&format!("{}  {}\n", long[0], long[3])),
            "{text}"
        );
    }

    #[test]
    fn quoted_table_names_get_if_not_exists() {
        assert_eq!(
            schema_line("CREATE TABLE \"odd name\"(x)"),
            "CREATE TABLE IF NOT EXISTS \"odd name\"(x)"
        );
        assert_eq!(schema_line("CREATE TABLE t(x)"), "CREATE TABLE t(x)");
    }
}
