//! The output modes of `.mode`, written like `sqlite3` 3.40 writes them.
//!
//! Values come over the wire as text. Two things differ from what `sqlite3` sees:
//! - REAL values are sent with Rust's shortest round-trip form (`0.30000000000000004`,
//!   `1e20`); where that differs from SQLite's `%!.15g` display (`0.3`, `1.0e+20`) the shell
//!   reformats them, so a TEXT value spelled exactly like such a float displays as SQLite
//!   would display the float. Exact values are in `.dump` (it uses `quote()`).
//! - BLOBs arrive as `\x…` hex (PostgreSQL bytea text), and are shown that way.
//!
//! In `json` mode a value is written as a JSON number when its text is an integer or a float
//! in canonical form; SQLite would decide by the value's type instead.

use std::io::Write;

/// `.mode` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    List,
    Column,
    Csv,
    Json,
    Table,
}

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        Some(match name {
            "list" => Mode::List,
            "column" | "columns" => Mode::Column,
            "csv" => Mode::Csv,
            "json" => Mode::Json,
            "table" => Mode::Table,
            _ => return None,
        })
    }

    /// Columnar modes show headers unless the user said `.headers off`.
    pub fn is_columnar(self) -> bool {
        matches!(self, Mode::Column | Mode::Table)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::List => "list",
            Mode::Column => "column",
            Mode::Csv => "csv",
            Mode::Json => "json",
            Mode::Table => "table",
        }
    }
}

/// One statement's rows, as text (`None` is NULL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Writes `result` in `settings.mode`. Nothing is written for a result without rows, as in
/// `sqlite3`.
pub fn render(
    out: &mut dyn Write,
    settings: &super::Settings,
    result: &ResultSet,
) -> std::io::Result<()> {
    if result.rows.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Option<String>>> = result
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| value.as_deref().map(display_text))
                .collect()
        })
        .collect();
    let text = match settings.mode {
        Mode::List => delimited(
            &result.columns,
            &rows,
            settings.headers,
            "|",
            "\n",
            |cell| cell.to_string(),
        ),
        Mode::Csv => delimited(
            &result.columns,
            &rows,
            settings.headers,
            ",",
            "\r\n",
            csv_field,
        ),
        Mode::Json => json(&result.columns, &rows),
        Mode::Column => columnar(&result.columns, &rows, settings.headers, false),
        Mode::Table => columnar(&result.columns, &rows, settings.headers, true),
    };
    out.write_all(text.as_bytes())
}

/// The text `sqlite3` would display for a value the wire sent as `text`.
pub fn display_text(text: &str) -> String {
    match wire_real(text) {
        Some(real) => sqlite_real_text(real),
        None => text.to_string(),
    }
}

/// `text` if it is exactly how the server writes a finite REAL (Rust's shortest round-trip
/// form, which always has a `.` or an exponent).
fn wire_real(text: &str) -> Option<f64> {
    if !text.contains(['.', 'e']) {
        return None;
    }
    let real: f64 = text.parse().ok()?;
    (real.is_finite() && format!("{real:?}") == text).then_some(real)
}

/// SQLite's display of a REAL: `%!.15g` (15 significant digits, at least one decimal).
pub fn sqlite_real_text(real: f64) -> String {
    if real == 0.0 {
        return "0.0".into();
    }
    let scientific = format!("{real:.14e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` output has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if negative { "-" } else { "" };
    if !(-4..15).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}.{rest}e{exponent_sign}{:02}", exponent.abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let integer_digits = exponent as usize + 1;
    if digits.len() <= integer_digits {
        let zeros = "0".repeat(integer_digits - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (integer, fraction) = digits.split_at(integer_digits);
        format!("{sign}{integer}.{fraction}")
    }
}

fn delimited(
    columns: &[String],
    rows: &[Vec<Option<String>>],
    headers: bool,
    separator: &str,
    row_separator: &str,
    field: fn(&str) -> String,
) -> String {
    let mut text = String::new();
    let mut line = |cells: Vec<String>| {
        text.push_str(&cells.join(separator));
        text.push_str(row_separator);
    };
    if headers {
        line(columns.iter().map(|name| field(name)).collect());
    }
    for row in rows {
        // NULL is written as the empty `.nullvalue`, never quoted.
        line(
            row.iter()
                .map(|cell| cell.as_deref().map_or(String::new(), field))
                .collect(),
        );
    }
    text
}

/// A CSV field, quoted when `sqlite3` quotes it: empty, or holding a control character,
/// space, `"`, `'`, a comma, DEL or any non-ASCII byte.
pub fn csv_field(value: &str) -> String {
    let needs_quotes = value.is_empty()
        || value
            .bytes()
            .any(|byte| byte < 0x21 || matches!(byte, b'"' | b'\'' | b',') || byte >= 0x7f);
    if needs_quotes {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn json(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let mut text = String::new();
    for (index, row) in rows.iter().enumerate() {
        text.push_str(if index == 0 { "[{" } else { ",\n{" });
        for (column, (name, value)) in columns.iter().zip(row).enumerate() {
            if column > 0 {
                text.push(',');
            }
            text.push_str(&json_string(name));
            text.push(':');
            match value {
                None => text.push_str("null"),
                Some(value) if looks_numeric(value) => text.push_str(value),
                Some(value) => text.push_str(&json_string(value)),
            }
        }
        text.push('}');
    }
    text.push_str("]\n");
    text
}

/// An integer or float literal in the form SQLite displays it (so `007` or `1.50` stay text).
fn looks_numeric(value: &str) -> bool {
    if let Ok(integer) = value.parse::<i64>() {
        return integer.to_string() == value;
    }
    value
        .parse::<f64>()
        .is_ok_and(|real| real.is_finite() && sqlite_real_text(real) == value)
}

pub fn json_string(value: &str) -> String {
    let mut text = String::with_capacity(value.len() + 2);
    text.push('"');
    for character in value.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            '\u{8}' => text.push_str("\\b"),
            '\u{c}' => text.push_str("\\f"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                text.push_str(&format!("\\u{:04x}", control as u32))
            }
            other => text.push(other),
        }
    }
    text.push('"');
    text
}

/// `column` and `table` modes: every cell padded to its column's width (in characters);
/// multi-line values take several lines, and then rows get a divider between them.
fn columnar(
    columns: &[String],
    rows: &[Vec<Option<String>>],
    headers: bool,
    boxed: bool,
) -> String {
    let cells: Vec<Vec<Vec<&str>>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.as_deref().unwrap_or("").split('\n').collect())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|name| width(name)).collect();
    for row in &cells {
        for (column, lines) in row.iter().enumerate() {
            for line in lines {
                widths[column] = widths[column].max(width(line));
            }
        }
    }
    let multi_line = cells.iter().flatten().any(|lines| lines.len() > 1);
    let border: String = widths
        .iter()
        .map(|width| "-".repeat(width + 2))
        .fold(String::from("+"), |line, dashes| line + &dashes + "+")
        + "\n";
    let mut text = String::new();
    if boxed {
        text.push_str(&border);
    }
    if headers {
        let header: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(name, width)| {
                if boxed {
                    center(name, *width)
                } else {
                    pad(name, *width)
                }
            })
            .collect();
        text.push_str(&cells_line(&header, boxed));
        if boxed {
            text.push_str(&border);
        } else {
            let underline: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
            text.push_str(&cells_line(&underline, false));
        }
    }
    for (index, row) in cells.iter().enumerate() {
        if index > 0 && multi_line {
            text.push_str(if boxed { &border } else { "\n" });
        }
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(lines, width)| pad(lines.get(line).copied().unwrap_or(""), *width))
                .collect();
            text.push_str(&cells_line(&padded, boxed));
        }
    }
    if boxed {
        text.push_str(&border);
    }
    text
}

fn cells_line(cells: &[String], boxed: bool) -> String {
    if boxed {
        format!("| {} |\n", cells.join(" | "))
    } else {
        format!("{}\n", cells.join("  "))
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

fn pad(text: &str, width: usize) -> String {
    format!(
        "{text}{}",
        " ".repeat(width.saturating_sub(self::width(text)))
    )
}

fn center(text: &str, width: usize) -> String {
    let spare = width.saturating_sub(self::width(text));
    let left = spare / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(spare - left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_display_like_sqlite() {
        let cases = [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e20, "1.0e+20"),
            (1e15, "1.0e+15"),
            (1e14, "100000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.30000000000000004, "0.3"),
            (1.0 / 3.0, "0.333333333333333"),
            (1.234_567_890_123_456_8e17, "1.23456789012346e+17"),
            (-0.25, "-0.25"),
            (0.001, "0.001"),
        ];
        for (real, text) in cases {
            assert_eq!(sqlite_real_text(real), text, "{real:?}");
        }
    }

    #[test]
    fn only_canonical_wire_reals_are_reformatted() {
        assert_eq!(display_text("1e20"), "1.0e+20");
        assert_eq!(display_text("1.50"), "1.50");
        assert_eq!(display_text("12"), "12");
        assert_eq!(display_text("v1.5"), "v1.5");
    }

    #[test]
    fn csv_quotes_what_sqlite_quotes() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "\"\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("it's"), "\"it's\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("ünï"), "\"ünï\"");
    }

    #[test]
    fn table_mode_centers_headers_and_divides_multi_line_rows() {
        let result = ResultSet {
            columns: vec!["id".into(), "name".into()],
            rows: vec![
                vec![Some("1".into()), Some("it's".into())],
                vec![Some("2".into()), Some("line1\nline2".into())],
            ],
        };
        let text = columnar(&result.columns, &result.rows, true, true);
        assert_eq!(
            text,
            "+----+-------+\n| id | name  |\n+----+-------+\n| 1  | it's  |\n+----+-------+\n\
             | 2  | line1 |\n|    | line2 |\n+----+-------+\n"
        );
        let text = columnar(&result.columns, &result.rows, true, false);
        assert_eq!(
            text,
            "id  name \n--  -----\n1   it's \n\n2   line1\n    line2\n"
        );
    }
}
