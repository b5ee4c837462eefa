//! Where the shell's lines come from, and when collected SQL is a complete statement.

use std::ffi::CString;
use std::io::BufRead;
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

/// Lines of history kept in `~/.paxsql_history`.
const HISTORY_LINES_MAX: usize = 2_000;

/// A source of input lines (without their line ending); `None` at the end of input.
pub trait LineSource {
    fn next_line(&mut self, prompt: &str) -> anyhow::Result<Option<String>>;
}

/// True when `sql` ends with a complete statement, by SQLite's own rules (semicolon outside
/// strings and comments, `CREATE TRIGGER … END;`).
pub fn is_complete(sql: &str) -> bool {
    let Ok(text) = CString::new(sql) else {
        // A NUL byte inside: let the server reject the statement rather than wait forever.
        return true;
    };
    // SAFETY: `text` is a valid NUL-terminated string that lives across the call, and
    // sqlite3_complete only reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) != 0 }
}

/// Lines from a file, a pipe or a `-c` argument. No prompt is printed.
pub struct FileLines {
    reader: Box<dyn BufRead>,
}

impl FileLines {
    pub fn from_reader(reader: Box<dyn BufRead>) -> Self {
        FileLines { reader }
    }

    pub fn from_text(text: &str) -> Self {
        FileLines {
            reader: Box::new(std::io::Cursor::new(text.to_string().into_bytes())),
        }
    }
}

impl LineSource for FileLines {
    fn next_line(&mut self, _prompt: &str) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        Ok(Some(line))
    }
}

/// Interactive lines with editing and history (rustyline).
pub struct TerminalLines {
    editor: DefaultEditor,
    history: Option<PathBuf>,
}

impl TerminalLines {
    pub fn new() -> anyhow::Result<Self> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY_LINES_MAX)?
            .auto_add_history(true)
            .build();
        let mut editor = DefaultEditor::with_config(config)?;
        let history =
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".paxsql_history"));
        if let Some(path) = &history {
            // A missing history file is the normal first run.
            let _ = editor.load_history(path);
        }
        Ok(TerminalLines { editor, history })
    }

    pub fn save_history(&mut self) {
        if let Some(path) = &self.history {
            if let Err(error) = self.editor.save_history(path) {
                eprintln!(
                    "warning: cannot save history to {}: {error}",
                    path.display()
                );
            }
        }
    }
}

impl LineSource for TerminalLines {
    fn next_line(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        loop {
            match self.editor.readline(prompt) {
                Ok(line) => return Ok(Some(line)),
                Err(ReadlineError::Eof) => return Ok(None),
                // Ctrl-C abandons the line being typed, as in sqlite3.
                Err(ReadlineError::Interrupted) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_follows_sqlite_rules() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("SELECT ';';"));
        assert!(!is_complete(
            "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1;"
        ));
        assert!(is_complete(
            "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;"
        ));
    }

    #[test]
    fn file_lines_strip_line_endings() {
        let mut lines = FileLines::from_text("a\r\nb\nc");
        assert_eq!(lines.next_line("").expect("line"), Some("a".into()));
        assert_eq!(lines.next_line("").expect("line"), Some("b".into()));
        assert_eq!(lines.next_line("").expect("line"), Some("c".into()));
        assert_eq!(lines.next_line("").expect("end"), None);
    }
}
