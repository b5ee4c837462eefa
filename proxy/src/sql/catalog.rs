//! Answers for the `pg_catalog` queries psql 15 sends for `\dt`, `\d` and `\d TABLE`, made
//! from SQLite's own `sqlite_schema` and `pragma_table_info`. paxsql's `_paxsql_*` tables and
//! SQLite's `sqlite_*` tables are hidden. Pragmatic pattern matching on psql's query text:
//!
//! - the relation list (`\dt`, `\d`): "Schema", "Name", "Type", "Owner";
//! - `\d NAME` step 1 (`c.relname OPERATOR(pg_catalog.~) '^(NAME)$'`): oid, schema, name;
//! - step 2 (`c.relchecks, c.relkind, …`): one row of table properties;
//! - step 3 (`a.attname, pg_catalog.format_type(…)`): the columns;
//! - any other catalog query: no rows (psql then prints no indexes, policies, …).
//!
//! A relation's oid is `16384 + its sqlite_schema rowid`.

use paxsql_replicator::sqlite::types::{
    Column, Consistency, SqlError, StatementRequest, StatementResult, Value,
};

use crate::backend::Backend;

const OID_BASE: i64 = 16384;

struct Relation {
    oid: i64,
    name: String,
    kind: String,
}

/// The answer to one catalog query.
pub async fn answer(
    backend: &dyn Backend,
    group: &str,
    sql: &str,
    consistency: Consistency,
) -> Result<StatementResult, SqlError> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("operator(pg_catalog.~)") && lower.contains("c.relname") {
        let pattern = between(sql, "'^(", ")$'").unwrap_or_default();
        let relations = relations(backend, group, consistency).await?;
        let rows = relations
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(&pattern))
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
        let rows = relation
            .map(|r| {
                let kind = if r.kind == "view" { "v" } else { "r" };
                [
                    "0", kind, "f", "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d", "heap",
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
    if lower.contains("c.relkind") && lower.contains("\"name\"") {
        // psql's CASE names every kind; the `c.relkind IN (…)` list says which are wanted.
        let include_views =
            between(&lower, "c.relkind in (", ")").is_some_and(|kinds| kinds.contains("'v'"));
        let rows = relations(backend, group, consistency)
            .await?
            .into_iter()
            .filter(|r| r.kind == "table" || include_views)
            .map(|r| vec![text("public"), text(&r.name), text(&r.kind), text("paxsql")])
            .collect();
        return Ok(result(&["Schema", "Name", "Type", "Owner"], rows));
    }
    Ok(result(&["?column?"], Vec::new()))
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
                "SELECT rowid, name, type FROM sqlite_schema WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
                 ORDER BY name",
            ),
            consistency,
        )
        .await?;
    Ok(listing
        .rows
        .into_iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Integer(rowid), Value::Text(name), Value::Text(kind)] => Some(Relation {
                oid: OID_BASE + rowid,
                name: name.clone(),
                kind: kind.clone(),
            }),
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
