//! `$n` parameters and result columns: how many parameters a statement has, and what their
//! types (and the types of computed result columns) probably are, from the statement's text.
//!
//! PostgreSQL infers a parameter's type from its context; SQLite has no such thing, so this
//! module recognizes the easy contexts and leaves the rest to the caller (which reports text):
//! `col <op> $n` and `SET col = $n` (the column's declared type), `INSERT INTO t (cols)
//! VALUES ($1, …)`, `CAST($n AS type)`, `LIMIT $n`/`OFFSET $n`.

use sqlparser::ast::{CastKind, Expr, SelectItem, SetExpr, Statement, Value as AstValue};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::split::significant_tokens;

/// Where a parameter's type can come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamSource {
    /// The declared type of this column of one of [`ParamHints::tables`].
    Column(String),
    /// This declared column of this table (INSERT).
    TableColumn {
        table: String,
        column: Option<String>,
        position: usize,
    },
    /// An explicit SQLite type name (`CAST($1 AS INTEGER)`).
    TypeName(String),
    /// Always an integer (`LIMIT`, `OFFSET`).
    Integer,
}

/// What the text says about a statement's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamHints {
    /// The highest `$n` used (PostgreSQL counts parameters that way).
    pub count: usize,
    /// Tables the statement names after FROM, JOIN, UPDATE or INTO (left empty when the
    /// statement has no `$n`: nothing to type).
    pub tables: Vec<String>,
    /// `(parameter index from 0, where its type comes from)`; the first hint for an index wins.
    pub sources: Vec<(usize, ParamSource)>,
}

fn placeholder_index(token: &Token) -> Option<usize> {
    match token {
        Token::Placeholder(text) => text
            .strip_prefix('$')?
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n - 1),
        _ => None,
    }
}

/// Operators whose other operand gives a parameter its type: comparisons, and arithmetic
/// (`amount + $1` takes the column's numeric type).
fn is_comparison(token: &Token) -> bool {
    matches!(
        token,
        Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
    )
}

fn word(token: &Token) -> Option<&sqlparser::tokenizer::Word> {
    match token {
        Token::Word(w) => Some(w),
        _ => None,
    }
}

/// Reads the hints out of one statement's text.
pub fn param_hints(sql: &str) -> ParamHints {
    if !sql.contains('$') {
        // Parameters are `$n` (PostgreSQL's numbering): without a `$` there is nothing to
        // hint, and no need to tokenize the statement.
        return ParamHints::default();
    }
    let Some(tokens) = significant_tokens(sql) else {
        return ParamHints::default();
    };
    let mut hints = ParamHints {
        count: tokens
            .iter()
            .filter_map(placeholder_index)
            .map(|i| i + 1)
            .max()
            .unwrap_or(0),
        ..ParamHints::default()
    };
    for (position, token) in tokens.iter().enumerate() {
        let window = &tokens[position..];
        if let Some(w) = word(token) {
            if matches!(
                w.keyword,
                Keyword::FROM | Keyword::JOIN | Keyword::UPDATE | Keyword::INTO
            ) {
                if let Some(table) = table_name(&window[1..]) {
                    hints.tables.push(table);
                }
            }
            if matches!(w.keyword, Keyword::LIMIT | Keyword::OFFSET) {
                if let Some(index) = window.get(1).and_then(placeholder_index) {
                    hints.sources.push((index, ParamSource::Integer));
                }
            }
            if w.keyword == Keyword::CAST {
                if let [_, Token::LParen, p, Token::Word(as_word), Token::Word(type_word), ..] =
                    window
                {
                    if let (Some(index), Keyword::AS) = (placeholder_index(p), as_word.keyword) {
                        hints
                            .sources
                            .push((index, ParamSource::TypeName(type_word.value.clone())));
                    }
                }
            }
        }
        match window {
            [Token::Word(column), op, p, ..] if is_comparison(op) => {
                if let Some(index) = placeholder_index(p) {
                    hints
                        .sources
                        .push((index, ParamSource::Column(column.value.clone())));
                }
            }
            // `col [NOT] BETWEEN $1 AND $2`, `col [NOT] IN ($1, $2, …)`: each bound is typed
            // like the column.
            [Token::Word(column), rest @ ..]
                if column.keyword != Keyword::NOT && !is_structural(column.keyword) =>
            {
                let rest = match rest.first().and_then(word) {
                    Some(w) if w.keyword == Keyword::NOT => &rest[1..],
                    _ => rest,
                };
                let bounds: Vec<usize> = match rest {
                    [Token::Word(between), low, Token::Word(and), high, ..]
                        if between.keyword == Keyword::BETWEEN && and.keyword == Keyword::AND =>
                    {
                        [low, high]
                            .into_iter()
                            .filter_map(placeholder_index)
                            .collect()
                    }
                    [Token::Word(in_word), Token::LParen, list @ ..]
                        if in_word.keyword == Keyword::IN =>
                    {
                        list.iter()
                            .take_while(|t| **t != Token::RParen)
                            .filter_map(placeholder_index)
                            .collect()
                    }
                    _ => Vec::new(),
                };
                for index in bounds {
                    hints
                        .sources
                        .push((index, ParamSource::Column(column.value.clone())));
                }
            }
            [p, op, Token::Word(column), ..] if is_comparison(op) => {
                if let Some(index) = placeholder_index(p) {
                    hints
                        .sources
                        .push((index, ParamSource::Column(column.value.clone())));
                }
            }
            _ => {}
        }
    }
    insert_hints(&tokens, &mut hints);
    hints
}

/// Keywords that can stand where a table name would: a subquery, a row source, a clause.
fn is_structural(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::SELECT
            | Keyword::VALUES
            | Keyword::WITH
            | Keyword::WHERE
            | Keyword::SET
            | Keyword::DEFAULT
            | Keyword::OR
            | Keyword::ON
            | Keyword::LATERAL
            | Keyword::JSON_TABLE
    )
}

/// `name` or `schema.name` at the start of `tokens`.
fn table_name(tokens: &[Token]) -> Option<String> {
    match tokens {
        [Token::Word(_), Token::Period, Token::Word(name), ..] => Some(name.value.clone()),
        // Many ordinary names are keywords to sqlparser (`items`, `data`, `name`…): refuse
        // only the words that can follow FROM/INTO/JOIN/UPDATE in place of a table name.
        [Token::Word(name), ..] if name.quote_style.is_some() || !is_structural(name.keyword) => {
            Some(name.value.clone())
        }
        _ => None,
    }
}

/// `INSERT INTO t [(c1, c2)] VALUES ($1, $2), (…)`: each bare `$n` takes its column's type.
fn insert_hints(tokens: &[Token], hints: &mut ParamHints) {
    let Some(into) = tokens
        .iter()
        .position(|t| word(t).is_some_and(|w| w.keyword == Keyword::INTO))
    else {
        return;
    };
    let Some(table) = table_name(&tokens[into + 1..]) else {
        return;
    };
    let mut cursor = into + 2;
    if matches!(tokens.get(cursor), Some(Token::Period)) {
        cursor += 2;
    }
    let mut columns: Option<Vec<String>> = None;
    if matches!(tokens.get(cursor), Some(Token::LParen)) {
        let mut names = Vec::new();
        cursor += 1;
        while let Some(token) = tokens.get(cursor) {
            cursor += 1;
            match token {
                Token::Word(w) => names.push(w.value.clone()),
                Token::RParen => break,
                _ => {}
            }
        }
        columns = Some(names);
    }
    if tokens
        .get(cursor)
        .and_then(word)
        .is_none_or(|w| w.keyword != Keyword::VALUES)
    {
        return;
    }
    cursor += 1;
    // Walk each parenthesized row; a position holding exactly one `$n` gets a hint.
    while matches!(tokens.get(cursor), Some(Token::LParen)) {
        let mut depth = 0;
        let mut position = 0;
        let mut item: Vec<&Token> = Vec::new();
        cursor += 1;
        while let Some(token) = tokens.get(cursor) {
            cursor += 1;
            match token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => {
                    push_insert_hint(hints, &table, &columns, position, &item);
                    break;
                }
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    push_insert_hint(hints, &table, &columns, position, &item);
                    position += 1;
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(token);
        }
        if matches!(tokens.get(cursor), Some(Token::Comma)) {
            cursor += 1;
        }
    }
}

fn push_insert_hint(
    hints: &mut ParamHints,
    table: &str,
    columns: &Option<Vec<String>>,
    position: usize,
    item: &[&Token],
) {
    if let [single] = item {
        if let Some(index) = placeholder_index(single) {
            let column = columns.as_ref().and_then(|c| c.get(position).cloned());
            hints.sources.push((
                index,
                ParamSource::TableColumn {
                    table: table.to_owned(),
                    column,
                    position,
                },
            ));
        }
    }
}

/// The likely type of a computed result column (one with no declared type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprType {
    Integer,
    Real,
    Text,
    /// The type of parameter `$n` (index from 0).
    Param(usize),
    /// An explicit SQLite type name (`CAST(x AS REAL)`).
    TypeName(String),
    Unknown,
}

/// The likely type of each item of a plain `SELECT` list, or `None` when the statement is not
/// a plain SELECT or uses `*` (then the item count does not match the result columns).
pub fn projection_types(sql: &str) -> Option<Vec<ExprType>> {
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                Some(expr_type(expr))
            }
            _ => None,
        })
        .collect()
}

fn expr_type(expr: &Expr) -> ExprType {
    match expr {
        Expr::Nested(inner) => expr_type(inner),
        Expr::Value(value) => match &value.value {
            AstValue::Number(text, _) if text.contains(['.', 'e', 'E']) => ExprType::Real,
            AstValue::Number(..) => ExprType::Integer,
            AstValue::SingleQuotedString(_) => ExprType::Text,
            AstValue::Placeholder(text) => text
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .map_or(ExprType::Unknown, |n| ExprType::Param(n - 1)),
            _ => ExprType::Unknown,
        },
        Expr::Cast {
            kind: CastKind::Cast,
            data_type,
            ..
        } => ExprType::TypeName(data_type.to_string()),
        Expr::Function(function) => {
            let name = function.name.to_string().to_ascii_lowercase();
            match name.as_str() {
                "count" | "length" | "octet_length" | "instr" | "unicode" | "changes"
                | "total_changes" | "last_insert_rowid" | "random" | "sign" => ExprType::Integer,
                "avg" | "total" | "julianday" | "pi" | "sqrt" | "exp" | "ln" | "log" | "pow"
                | "power" => ExprType::Real,
                "lower" | "upper" | "substr" | "substring" | "trim" | "ltrim" | "rtrim"
                | "replace" | "hex" | "quote" | "printf" | "format" | "group_concat"
                | "string_agg" | "typeof" | "date" | "time" | "datetime" | "strftime"
                | "sqlite_version" | "char" | "concat" | "concat_ws" | "json" | "json_object"
                | "json_array" | "json_extract" => ExprType::Text,
                _ => ExprType::Unknown,
            }
        }
        Expr::BinaryOp { op, .. } => {
            use sqlparser::ast::BinaryOperator as Op;
            match op {
                Op::StringConcat => ExprType::Text,
                Op::Eq | Op::NotEq | Op::Lt | Op::Gt | Op::LtEq | Op::GtEq | Op::And | Op::Or => {
                    ExprType::Integer
                }
                _ => ExprType::Unknown,
            }
        }
        Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::Like { .. }
        | Expr::InList { .. }
        | Expr::Between { .. } => ExprType::Integer,
        _ => ExprType::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parameters_by_highest_number() {
        assert_eq!(param_hints("SELECT $2, $1").count, 2);
        assert_eq!(param_hints("SELECT 1").count, 0);
    }

    #[test]
    fn finds_column_cast_limit_and_insert_contexts() {
        let hints = param_hints("SELECT a FROM t WHERE b = $1 AND $2 < c LIMIT $3");
        assert_eq!(hints.tables, vec!["t".to_owned()]);
        assert!(hints
            .sources
            .contains(&(0, ParamSource::Column("b".into()))));
        assert!(hints
            .sources
            .contains(&(1, ParamSource::Column("c".into()))));
        assert!(hints.sources.contains(&(2, ParamSource::Integer)));
        let hints = param_hints("SELECT CAST($1 AS REAL)");
        assert_eq!(
            hints.sources,
            vec![(0, ParamSource::TypeName("REAL".into()))]
        );
        let hints = param_hints("INSERT INTO t (x, y) VALUES ($2, lower($1)), ($3, 4)");
        assert!(hints.sources.contains(&(
            1,
            ParamSource::TableColumn {
                table: "t".into(),
                column: Some("x".into()),
                position: 0
            }
        )));
        assert!(hints.sources.contains(&(
            2,
            ParamSource::TableColumn {
                table: "t".into(),
                column: Some("x".into()),
                position: 0
            }
        )));
        assert!(!hints.sources.iter().any(|(index, _)| *index == 0));
    }

    #[test]
    fn between_and_in_bounds_take_the_column_type() {
        let hints =
            param_hints("SELECT * FROM t WHERE a BETWEEN $1 AND $2 OR b NOT IN ($3, 4, $4)");
        let columns: Vec<(usize, String)> = hints
            .sources
            .iter()
            .filter_map(|(index, source)| match source {
                ParamSource::Column(name) => Some((*index, name.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            columns,
            vec![
                (0, "a".into()),
                (1, "a".into()),
                (2, "b".into()),
                (3, "b".into())
            ]
        );
    }

    #[test]
    fn table_names_that_are_sqlparser_keywords_still_give_hints() {
        let hints = param_hints("INSERT INTO items (id, data) VALUES ($1, $2)");
        assert_eq!(hints.tables, vec!["items".to_owned()]);
        assert!(hints.sources.contains(&(
            0,
            ParamSource::TableColumn {
                table: "items".into(),
                column: Some("id".into()),
                position: 0
            }
        )));
        assert_eq!(
            param_hints("UPDATE data SET v = $1 WHERE id = $2").tables,
            vec!["data".to_owned()]
        );
        assert!(param_hints("SELECT * FROM (SELECT 1)").tables.is_empty());
    }

    #[test]
    fn projection_types_cover_literals_functions_and_params() {
        assert_eq!(
            projection_types("SELECT 1, 2.5, 'x', count(*), $2, CAST(a AS INTEGER) AS n FROM t"),
            Some(vec![
                ExprType::Integer,
                ExprType::Real,
                ExprType::Text,
                ExprType::Integer,
                ExprType::Param(1),
                ExprType::TypeName("INTEGER".into()),
            ])
        );
        assert_eq!(projection_types("SELECT * FROM t"), None);
    }
}
