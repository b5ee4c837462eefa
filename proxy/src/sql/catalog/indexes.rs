//! psql's "Indexes:" footer of `\d TABLE`, made from SQLite's `pragma_index_list`,
//! `pragma_index_xinfo` and each created index's own `CREATE INDEX` text.

use paxsql_replicator::sqlite::types::{
    Consistency, SqlError, StatementRequest, StatementResult, Value,
};

use super::{result, text};
use crate::backend::Backend;

/// The rows of psql 15's index query (`pg_catalog.pg_get_indexdef(i.indexrelid, …)`), in the
/// order of its select list: psql reads them by position.
pub(super) async fn footer(
    backend: &dyn Backend,
    group: &str,
    table: &str,
    consistency: Consistency,
) -> Result<StatementResult, SqlError> {
    let rows = of_table(backend, group, table, consistency)
        .await?
        .into_iter()
        .map(|index| {
            let flag = |on: bool| text(if on { "t" } else { "f" });
            let contype = match index.origin {
                IndexOrigin::PrimaryKey => text("p"),
                IndexOrigin::Unique => text("u"),
                IndexOrigin::Created => Value::Null,
            };
            vec![
                text(&index.name),
                flag(index.origin == IndexOrigin::PrimaryKey),
                flag(index.unique),
                flag(false),
                flag(true),
                text(&index.definition),
                Value::Null,
                contype,
                flag(false),
                flag(false),
                flag(false),
                text("0"),
            ]
        })
        .collect();
    let names = [
        "relname",
        "indisprimary",
        "indisunique",
        "indisclustered",
        "indisvalid",
        "pg_get_indexdef",
        "pg_get_constraintdef",
        "contype",
        "condeferrable",
        "condeferred",
        "indisreplident",
        "reltablespace",
    ];
    Ok(result(&names, rows))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexOrigin {
    PrimaryKey,
    Unique,
    Created,
}

/// One index of a table, as psql's "Indexes:" footer shows it.
pub(super) struct Index {
    name: String,
    unique: bool,
    origin: IndexOrigin,
    /// PostgreSQL's form, `CREATE … INDEX name ON public.table USING btree (columns)`: psql
    /// prints what follows `USING`.
    definition: String,
}

/// `x.name` as PostgreSQL prints an identifier: bare when lower-case letters, digits and `_`,
/// else in double quotes.
const QUOTED_NAME: &str = "CASE WHEN x.name GLOB '[a-z_]*' AND NOT x.name GLOB '*[^a-z0-9_]*' \
     THEN x.name ELSE '\"' || replace(x.name, '\"', '\"\"') || '\"' END";

/// The indexes of `table`: its rowid primary key first (an `INTEGER PRIMARY KEY` has no index
/// of its own in SQLite), then SQLite's `pragma_index_list`.
pub(super) async fn of_table(
    backend: &dyn Backend,
    group: &str,
    table: &str,
    consistency: Consistency,
) -> Result<Vec<Index>, SqlError> {
    let read = |sql: String, params: Vec<Value>| {
        backend.read(
            group,
            StatementRequest::with_params(sql, params),
            consistency,
        )
    };
    let listed = read(
        "SELECT l.name, l.\"unique\", l.origin, \
         (SELECT group_concat(coalesce(QUOTED_NAME, 'expression') \
                 || CASE WHEN x.desc THEN ' DESC' ELSE '' END, ', ') \
          FROM (SELECT * FROM pragma_index_xinfo(l.name) WHERE key ORDER BY seqno) AS x), \
         (SELECT s.sql FROM sqlite_schema AS s WHERE s.name = l.name) \
         FROM pragma_index_list($1) AS l ORDER BY l.origin <> 'pk', l.name"
            .replace("QUOTED_NAME", QUOTED_NAME),
        vec![Value::Text(table.to_owned())],
    )
    .await?;
    let mut found = Vec::new();
    let has_pk_index = listed
        .rows
        .iter()
        .any(|row| row.get(2) == Some(&Value::Text("pk".into())));
    if !has_pk_index {
        let key = read(
            "SELECT group_concat(QUOTED_NAME, ', ') \
             FROM (SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk) AS x"
                .replace("QUOTED_NAME", QUOTED_NAME),
            vec![Value::Text(table.to_owned())],
        )
        .await?;
        if let Some(Value::Text(columns)) = key.rows.first().and_then(|row| row.first()) {
            let name = format!("{table}_pkey");
            found.push(Index {
                definition: definition(&name, table, true, columns, None),
                name,
                unique: true,
                origin: IndexOrigin::PrimaryKey,
            });
        }
    }
    for row in listed.rows {
        let [name, unique, origin, columns, sql] =
            <[Value; 5]>::try_from(row).expect("five columns selected");
        let (Value::Text(name), Value::Text(origin)) = (name, origin) else {
            continue;
        };
        let unique = unique == Value::Integer(1);
        let columns = match columns {
            Value::Text(columns) => columns,
            _ => String::new(),
        };
        // A created index's own text says it best (expressions, collations, its WHERE).
        let (columns, condition) = match &sql {
            Value::Text(sql) => match created_parts(sql) {
                Some((listed, condition)) => (listed.to_owned(), condition),
                None => (columns, None),
            },
            _ => (columns, None),
        };
        found.push(Index {
            definition: definition(&name, table, unique, &columns, condition),
            name,
            unique,
            origin: match origin.as_str() {
                "pk" => IndexOrigin::PrimaryKey,
                "u" => IndexOrigin::Unique,
                _ => IndexOrigin::Created,
            },
        });
    }
    Ok(found)
}

fn definition(
    name: &str,
    table: &str,
    unique: bool,
    columns: &str,
    condition: Option<&str>,
) -> String {
    let unique = if unique { "UNIQUE " } else { "" };
    let mut definition =
        format!("CREATE {unique}INDEX \"{name}\" ON public.\"{table}\" USING btree ({columns})");
    if let Some(condition) = condition {
        definition.push_str(" WHERE ");
        definition.push_str(condition);
    }
    definition
}

/// The column list of a `CREATE INDEX … ON table (list) [WHERE condition]` text, and its
/// condition if it is a partial index. `None` when the text does not have that shape.
fn created_parts(sql: &str) -> Option<(&str, Option<&str>)> {
    // Upper case with whitespace as spaces: the same byte offsets as `sql`.
    let upper: String = sql
        .chars()
        .map(|c| {
            if c.is_ascii_whitespace() {
                ' '
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    let on = upper.find(" ON ")?;
    let open = on + sql[on..].find('(')?;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (offset, c) in sql[open..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`' | '[') => quote = Some(if c == '[' { ']' } else { c }),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    let close = open + offset;
                    let rest = sql[close + 1..].trim();
                    let condition = rest
                        .get(..5)
                        .filter(|word| word.eq_ignore_ascii_case("WHERE"))
                        .map(|_| rest[5..].trim());
                    return Some((sql[open + 1..close].trim(), condition));
                }
            }
            (None, _) => {}
        }
    }
    None
}
