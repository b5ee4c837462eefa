//! Splitting a simple-Query message into statements while keeping each statement's original
//! text (SQLite, not sqlparser, executes it, so it must get exactly what the client wrote).

use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Tokenizes `sql` with the SQLite dialect, or `None` when it cannot (an unterminated string
/// or comment): the caller then hands the text to SQLite whole, which reports the error.
pub fn tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&SQLiteDialect {}, sql)
        .tokenize_with_location()
        .ok()
}

/// The significant tokens (no whitespace or comments) of `sql`, or `None` as for [`tokens`].
pub fn significant_tokens(sql: &str) -> Option<Vec<Token>> {
    Some(
        tokens(sql)?
            .into_iter()
            .map(|t| t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

/// Splits `sql` at top-level semicolons. Semicolons inside a `CREATE TRIGGER … BEGIN … END`
/// body do not split. Pieces with no statement in them (only comments, whitespace) are
/// dropped; each piece keeps its text without the trailing semicolon.
pub fn split_statements(sql: &str) -> Vec<String> {
    // Fast path for the common message of one statement: no semicolon to split at, and a
    // leading word means the piece holds a statement (no tokenizing needed to know).
    let trimmed = sql.trim();
    if !sql.contains(';') && trimmed.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return vec![trimmed.to_owned()];
    }
    let Some(all_tokens) = tokens(sql) else {
        return vec![sql.trim().to_owned()];
    };
    let line_starts = line_starts(sql);
    let mut pieces = Vec::new();
    let mut start_byte = 0;
    let mut words: Vec<Keyword> = Vec::new();
    let mut depth: i32 = 0;
    for token in &all_tokens {
        match &token.token {
            Token::Word(word) => {
                if words.len() < 4 {
                    words.push(word.keyword);
                }
                if is_trigger(&words) {
                    match word.keyword {
                        Keyword::BEGIN | Keyword::CASE => depth += 1,
                        Keyword::END => depth -= 1,
                        _ => {}
                    }
                }
            }
            Token::SemiColon if depth <= 0 => {
                let end_byte = byte_offset(
                    sql,
                    &line_starts,
                    token.span.start.line,
                    token.span.start.column,
                );
                push_piece(&mut pieces, &sql[start_byte..end_byte]);
                start_byte = end_byte + 1;
                words.clear();
                depth = 0;
            }
            _ => {}
        }
    }
    push_piece(&mut pieces, &sql[start_byte..]);
    pieces
}

fn is_trigger(words: &[Keyword]) -> bool {
    words.first() == Some(&Keyword::CREATE) && words.contains(&Keyword::TRIGGER)
}

fn push_piece(pieces: &mut Vec<String>, text: &str) {
    let has_statement = significant_tokens(text).is_none_or(|t| !t.is_empty());
    if has_statement {
        pieces.push(text.trim().to_owned());
    }
}

pub(crate) fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Byte offset of the 1-based (line, character column) position sqlparser reports.
pub(crate) fn byte_offset(sql: &str, line_starts: &[usize], line: u64, column: u64) -> usize {
    let line_start = line_starts[(line as usize).saturating_sub(1)];
    sql[line_start..]
        .char_indices()
        .nth((column as usize).saturating_sub(1))
        .map(|(offset, _)| line_start + offset)
        .unwrap_or(sql.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_and_keeps_text() {
        let pieces = split_statements("INSERT INTO t VALUES ('a;b');\n SELECT 1 ; -- done\n");
        assert_eq!(pieces, vec!["INSERT INTO t VALUES ('a;b')", "SELECT 1"]);
    }

    #[test]
    fn trigger_bodies_do_not_split() {
        let sql = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = CASE WHEN 1 THEN 2 END; DELETE FROM v; END; SELECT 2";
        let pieces = split_statements(sql);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert!(pieces[0].ends_with("DELETE FROM v; END"));
        assert_eq!(pieces[1], "SELECT 2");
    }

    #[test]
    fn multibyte_text_before_semicolon_is_cut_on_char_boundaries() {
        let pieces = split_statements("SELECT 'é✓';SELECT 'ü'");
        assert_eq!(pieces, vec!["SELECT 'é✓'", "SELECT 'ü'"]);
    }

    #[test]
    fn comment_only_message_has_no_statements() {
        assert!(split_statements("-- nothing\n ; ;").is_empty());
        assert!(split_statements("  /* nothing */ ").is_empty());
        assert!(split_statements(" -- nothing").is_empty());
    }

    #[test]
    fn one_statement_without_semicolon_is_kept_whole() {
        assert_eq!(
            split_statements("\n SELECT 1 -- trailing comment\n"),
            vec!["SELECT 1 -- trailing comment"]
        );
        assert_eq!(
            split_statements("SELECT 'unterminated"),
            vec!["SELECT 'unterminated"]
        );
    }
}
