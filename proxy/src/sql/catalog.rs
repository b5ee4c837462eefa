//! Answers for the `pg_catalog` queries psql 15 sends for `\d`, `\dt`, `\dv`, `\di` and
//! `\d TABLE`, made from SQLite's own `sqlite_schema` and pragmas. paxsql's `_paxsql_*` tables
//! and SQLite's `sqlite_*` tables are hidden (the indexes SQLite makes for UNIQUE and PRIMARY
//! KEY constraints, `sqlite_autoindex_*`, are shown). Pragmatic pattern matching on psql's
//! query text:
//!
//! - the relation lists (`c.relkind IN (…)` says which kinds, an optional
//!   `c.relname OPERATOR(pg_catalog.~) '^(…)$'` which names): "Schema", "Name", "Type",
//!   "Owner", and "Table" for indexes;
//! - `\d NAME` step 1 (`c.relname OPERATOR(pg_catalog.~) '^(NAME)$'`): oid, schema, name;
//! - step 2 (`c.relchecks, c.relkind, …`): one row of table properties;
//! - step 3 (`a.attname, pg_catalog.format_type(…)`): the columns;
//! - step 4 (`pg_catalog.pg_get_indexdef(i.indexrelid, …)`): the "Indexes:" footer, with the
//!   table's rowid primary key (`INTEGER PRIMARY KEY`, no index of its own) as `TABLE_pkey`;
//! - any other catalog query: no rows (psql then prints no policies, triggers, …).
//!
//! A relation's oid is `16384 + its sqlite_schema rowid`.

use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, StatementRequest, StatementResult, Value,
};

use crate::backend::Backend;

mod indexes;

const OID_BASE: i64 = 16384;

struct Relation {
    oid: i64,
    name: String,
    /// `table`, `view` or `index` (sqlite_schema's type).
    kind: String,
    /// The table an index belongs to (sqlite_schema's `tbl_name`).
    table: String,
}

/// The answer to one catalog query.
pub async fn answer(
    backend: &dyn Backend,
    group: &str,
    sql: &str,
    consistency: Consistency,
) -> Result<StatementResult, SqlError> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("c.relkind") && lower.contains("\"name\"") {
        return relation_list(backend, group, sql, consistency).await;
    }
    if lower.contains("operator(pg_catalog.~)") && lower.contains("c.relname") {
        let pattern = between(sql, "'^(", ")$'")
            .unwrap_or_default()
            .replace("''", "'");
        let relations = relations(backend, group, consistency).await?;
        let rows = relations
            .iter()
            .filter(|r| r.kind != "index" && name_matches(&pattern, &r.name))
            .map(|r| {
                vec![
                    Value::Text(r.oid.to_string()),
                    text("public"),
                    text(&r.name),
                ]
            })
            .collect();
        return Ok(result(&["oid", "nspname", "relname"], rows));
    }
    if lower.contains("c.relchecks") {
        let relation = relation_by_oid(backend, group, sql, consistency).await?;
        let has_index = match &relation {
            Some(r) if r.kind == "table" => {
                !indexes::of_table(backend, group, &r.name, consistency)
                    .await?
                    .is_empty()
            }
            _ => false,
        };
        let rows = relation
            .map(|r| {
                let kind = if r.kind == "view" { "v" } else { "r" };
                let has_index = if has_index { "t" } else { "f" };
                [
                    "0", kind, has_index, "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d",
                    "heap",
                ]
                .iter()
                .map(|v| text(v))
                .collect()
            })
            .into_iter()
            .collect();
        let names = [
            "relchecks",
            "relkind",
            "relhasindex",
            "relhasrules",
            "relhastriggers",
            "relrowsecurity",
            "relforcerowsecurity",
            "relhasoids",
            "relispartition",
            "reloptions",
            "reltablespace",
            "reloftype",
            "relpersistence",
            "relreplident",
            "amname",
        ];
        return Ok(result(&names, rows));
    }
    if lower.contains("a.attname") && lower.contains("pg_catalog.pg_attribute") {
        let Some(relation) = relation_by_oid(backend, group, sql, consistency).await? else {
            return Ok(result(&["attname"], Vec::new()));
        };
        let info = backend
            .read(
                group,
                StatementRequest::with_params(
                    "SELECT name, lower(type), \"notnull\" OR pk = 1, dflt_value FROM pragma_table_info($1) ORDER BY cid",
                    vec![Value::Text(relation.name)],
                ),
                consistency,
            )
            .await?;
        let rows = info
            .rows
            .into_iter()
            .map(|row| {
                let [name, declared, not_null, default] =
                    <[Value; 4]>::try_from(row).expect("four columns selected");
                let declared = match declared {
                    Value::Text(t) if !t.is_empty() => Value::Text(t),
                    _ => text("any"),
                };
                let not_null = text(if not_null == Value::Integer(1) {
                    "t"
                } else {
                    "f"
                });
                vec![
                    name,
                    declared,
                    default,
                    not_null,
                    Value::Null,
                    text(""),
                    text(""),
                ]
            })
            .collect();
        let names = [
            "attname",
            "format_type",
            "default",
            "attnotnull",
            "attcollation",
            "attidentity",
            "attgenerated",
        ];
        return Ok(result(&names, rows));
    }
    if lower.contains("pg_catalog.pg_get_indexdef(i.indexrelid") {
        let Some(relation) = relation_by_oid(backend, group, sql, consistency).await? else {
            return Ok(result(&["relname"], Vec::new()));
        };
        return indexes::footer(backend, group, &relation.name, consistency).await;
    }
    Ok(result(&["?column?"], Vec::new()))
}

/// `\d`, `\dt`, `\dv`, `\di` (with or without a name pattern).
async fn relation_list(
    backend: &dyn Backend,
    group: &str,
    sql: &str,
    consistency: Consistency,
) -> Result<StatementResult, SqlError> {
    let lower = sql.to_ascii_lowercase();
    // psql's CASE names every kind; the `c.relkind IN (…)` list says which are wanted.
    let kinds = between(&lower, "c.relkind in (", ")").unwrap_or_default();
    let wanted = |kind: &str| match kind {
        "table" => kinds.contains("'r'"),
        "view" => kinds.contains("'v'"),
        "index" => kinds.contains("'i'"),
        _ => false,
    };
    let pattern = lower
        .contains("c.relname operator(pg_catalog.~)")
        .then(|| between(sql, "'^(", ")$'"))
        .flatten()
        .map(|pattern| pattern.replace("''", "'"));
    let with_table = lower.contains("as \"table\"");
    let rows = relations(backend, group, consistency)
        .await?
        .into_iter()
        .filter(|r| wanted(&r.kind))
        .filter(|r| pattern.as_deref().is_none_or(|p| name_matches(p, &r.name)))
        .map(|r| {
            let mut row = vec![text("public"), text(&r.name), text(&r.kind), text("paxsql")];
            if with_table {
                row.push(if r.kind == "index" {
                    text(&r.table)
                } else {
                    Value::Null
                });
            }
            row
        })
        .collect();
    let mut names = vec!["Schema", "Name", "Type", "Owner"];
    if with_table {
        names.push("Table");
    }
    Ok(result(&names, rows))
}

/// One element of psql's name pattern, as it arrives in regex form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PatternPart {
    /// `.*` (psql's `*`).
    AnyRun,
    /// `.` (psql's `?`).
    AnyChar,
    Literal(char),
}

/// Whether `name` matches psql's pattern (its `*` and `?` arrive as the regex `.*` and `.`;
/// other regex characters it escapes with `\`). Names compare case-insensitively, as SQLite's.
/// Linear in the name for each pattern element (one backtrack point, the last `.*`): a
/// client's pattern of many `*` must not hold an async worker.
fn name_matches(pattern: &str, name: &str) -> bool {
    let mut parts = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        parts.push(match c {
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                PatternPart::AnyRun
            }
            '.' => PatternPart::AnyChar,
            '\\' => PatternPart::Literal(chars.next().unwrap_or('\\')),
            other => PatternPart::Literal(other),
        });
    }
    let name: Vec<char> = name.chars().collect();
    let (mut part, mut at) = (0, 0);
    // The last `.*` seen and where in the name it was tried to end.
    let mut backtrack: Option<(usize, usize)> = None;
    while at < name.len() {
        let step = match parts.get(part) {
            Some(PatternPart::AnyRun) => {
                backtrack = Some((part, at));
                part += 1;
                continue;
            }
            Some(PatternPart::AnyChar) => true,
            Some(PatternPart::Literal(c)) => c.eq_ignore_ascii_case(&name[at]),
            None => false,
        };
        if step {
            part += 1;
            at += 1;
        } else if let Some((run, end)) = backtrack {
            // Let the last `.*` take one more character and try again from there.
            backtrack = Some((run, end + 1));
            part = run + 1;
            at = end + 1;
        } else {
            return false;
        }
    }
    parts[part..].iter().all(|p| *p == PatternPart::AnyRun)
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

fn result(names: &[&str], rows: Vec<Vec<Value>>) -> StatementResult {
    StatementResult {
        columns: names
            .iter()
            .map(|n| Column {
                name: (*n).to_owned(),
                decl_type: Some("TEXT".to_owned()),
            })
            .collect(),
        rows,
        rows_changed: 0,
        verb: "SELECT".to_owned(),
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(text[from..to].to_owned())
}

async fn relations(
    backend: &dyn Backend,
    group: &str,
    consistency: Consistency,
) -> Result<Vec<Relation>, SqlError> {
    let listing = backend
        .read(
            group,
            StatementRequest::new(
                "SELECT rowid, name, type, tbl_name FROM sqlite_schema \
                 WHERE type IN ('table', 'view', 'index') \
                 AND (name NOT LIKE 'sqlite\\_%' ESCAPE '\\' OR name LIKE 'sqlite\\_autoindex\\_%' ESCAPE '\\') \
                 AND tbl_name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 AND tbl_name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
                 ORDER BY name",
            ),
            consistency,
        )
        .await?;
    Ok(listing
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Integer(rowid), Value::Text(name), Value::Text(kind), Value::Text(table)] => {
                Some(Relation {
                    oid: OID_BASE + rowid,
                    name: name.clone(),
                    kind: kind.clone(),
                    table: table.clone(),
                })
            }
            _ => None,
        })
        .collect())
}

/// The relation named by `… = 'OID'` in psql's query.
async fn relation_by_oid(
    backend: &dyn Backend,
    group: &str,
    sql: &str,
    consistency: Consistency,
) -> Result<Option<Relation>, SqlError> {
    let lower = sql.to_ascii_lowercase();
    let oid = ["c.oid = '", "a.attrelid = '"]
        .iter()
        .find_map(|marker| between(&lower, marker, "'"))
        .and_then(|oid| oid.parse::<i64>().ok());
    let Some(oid) = oid else { return Ok(None) };
    Ok(relations(backend, group, consistency)
        .await?
        .into_iter()
        .find(|r| r.oid == oid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_patterns_match_names() {
        assert!(name_matches("items", "items"));
        assert!(name_matches("ITEMS", "items"));
        assert!(name_matches("i.*", "items"));
        assert!(name_matches(".*s", "items"));
        assert!(name_matches("it.ms", "items"));
        assert!(name_matches(".*", ""));
        assert!(name_matches("a.*b.*c", "axxbyyc"));
        assert!(name_matches("a\\.b", "a.b"));
        assert!(!name_matches("a\\.b", "axb"));
        assert!(!name_matches("i.*x", "items"));
        assert!(!name_matches("item", "items"));
        assert!(!name_matches("items", "item"));
        assert!(!name_matches(".", ""));
    }

    #[test]
    fn a_pattern_of_many_stars_is_matched_in_linear_steps() {
        // Backtracking into every `.*` made this ~1e20 steps; a client must not stall a worker.
        let pattern = format!("{}!", ".*".repeat(40));
        assert!(!name_matches(&pattern, &"customer_orders".repeat(20)));
        assert!(name_matches(
            &".*".repeat(40),
            &"customer_orders".repeat(20)
        ));
    }
}
