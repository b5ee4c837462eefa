//! The dot-commands: one dispatch `match`, each arm a short handler.

use std::io::Write;

use anyhow::{bail, Context};

use super::import::ImportArgs;
use super::input::FileLines;
use super::render::Mode;
use super::schema::sql_literal;
use super::{Flow, Shell, READ_DEPTH_MAX};

const HELP: &str = "\
.consistency [local|lease|linearizable]  Read consistency of this session (paxsql)
.dump [TABLE]            SQL text that sqlite3 can load (all tables, or TABLE)
.exit, .quit             Leave the shell
.headers on|off          Show column names
.help                    This text
.import [--csv] [--skip N] FILE TABLE   Load CSV into TABLE (created from the header if missing)
.indexes [TABLE]         List indexes
.mode list|column|csv|json|table   Output format
.read FILE               Run SQL and dot-commands from FILE
.schema [PATTERN]        CREATE statements of matching tables
.status                  Nodes, master and replication lag, from the node's /status (paxsql)
.tables [PATTERN]        List tables and views
.timer on|off            Time each statement
";

impl Shell {
    pub async fn dot_command(&mut self, line: &str) -> anyhow::Result<Flow> {
        let words = split_arguments(line.trim_start_matches('.'))?;
        let Some((name, arguments)) = words.split_first() else {
            bail!("empty dot-command: try .help");
        };
        let first = arguments.first().map(String::as_str);
        match name.as_str() {
            "quit" | "exit" => return Ok(Flow::Quit),
            "help" => print!("{HELP}"),
            "tables" => self.tables(first).await?,
            "schema" => self.schema(first).await?,
            "indexes" | "indices" => self.indexes(first).await?,
            "mode" => self.handle_mode(first)?,
            "headers" | "header" => {
                self.settings.headers = on_off(first, "headers")?;
                self.settings.headers_set = true;
            }
            "timer" => self.settings.timer = on_off(first, "timer")?,
            "dump" => self.dump(first).await?,
            "read" => self.handle_read(first).await?,
            "import" => self.import(&ImportArgs::parse(arguments)?).await?,
            "status" => self.handle_status().await?,
            "consistency" => self.handle_consistency(first).await?,
            other => {
                bail!("unknown command or invalid arguments: \"{other}\". Enter \".help\" for help")
            }
        }
        Ok(Flow::Continue)
    }

    fn handle_mode(&mut self, mode: Option<&str>) -> anyhow::Result<()> {
        let Some(name) = mode else {
            println!("current output mode: {}", self.settings.mode.name());
            return Ok(());
        };
        let mode = Mode::parse(name).with_context(|| {
            format!("unknown mode {name:?}: use list, column, csv, json or table")
        })?;
        self.settings.mode = mode;
        if mode.is_columnar() && !self.settings.headers_set {
            self.settings.headers = true;
        }
        Ok(())
    }

    async fn handle_read(&mut self, file: Option<&str>) -> anyhow::Result<()> {
        let file = file.context("usage: .read FILE")?;
        if self.read_depth >= READ_DEPTH_MAX {
            bail!(".read nested more than {READ_DEPTH_MAX} deep: does {file} read itself?");
        }
        let opened = std::fs::File::open(file).with_context(|| format!("cannot open {file}"))?;
        let mut lines = FileLines::from_reader(Box::new(std::io::BufReader::new(opened)));
        self.read_depth += 1;
        // sqlite3 stops a .read file at its first error, and so does this.
        let outcome = Box::pin(self.process(&mut lines, true)).await;
        self.read_depth -= 1;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) => Err(error.context(format!("while reading {file}"))),
        }
    }

    async fn handle_consistency(&mut self, level: Option<&str>) -> anyhow::Result<()> {
        let Some(level) = level else {
            println!("{}", self.settings.consistency);
            return Ok(());
        };
        if !matches!(level, "local" | "lease" | "linearizable") {
            bail!("unknown consistency {level:?}: use local, lease or linearizable");
        }
        let sql = format!("SET paxsql.consistency = {}", sql_literal(level));
        self.query_rows(&sql).await?;
        self.settings.consistency = level.to_string();
        Ok(())
    }

    async fn handle_status(&mut self) -> anyhow::Result<()> {
        let http = self.http_address().await?;
        let (code, body) = crate::http::get(&http, "/status").await?;
        if code != 200 {
            bail!("{http} answered HTTP {code}: {body}");
        }
        let status: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{http} sent invalid JSON"))?;
        let mut out = std::io::stdout().lock();
        write!(out, "{}", crate::cli::status::render(&status))?;
        let group = status["groups"].get(&self.args.db).unwrap_or(&status);
        let committed = group["committed_instance"].as_u64().unwrap_or(0);
        let applied = group["applied_instance"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "  this session: database {} on node {} ({http}), consistency {}, apply lag {} instances",
            self.args.db,
            status["node_id"],
            self.settings.consistency,
            committed.saturating_sub(applied)
        )?;
        Ok(())
    }

    /// The node's HTTP address: `--http`, or the dev-cluster layout (SQL port + 200) when the
    /// node there confirms it serves this SQL port.
    async fn http_address(&mut self) -> anyhow::Result<String> {
        if let Some(http) = &self.http {
            return Ok(http.clone());
        }
        let guess = self
            .args
            .port
            .checked_add(200)
            .map(|port| format!("{}:{port}", self.args.host));
        if let Some(guess) = guess {
            if let Ok((200, body)) = crate::http::get(&guess, "/status").await {
                let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let sql_port = status["sql_addr"]
                    .as_str()
                    .and_then(|addr| addr.rsplit_once(':'))
                    .map(|(_, port)| port.to_string());
                if sql_port == Some(self.args.port.to_string()) {
                    self.http = Some(guess.clone());
                    return Ok(guess);
                }
            }
        }
        bail!("cannot find this node's HTTP address: start the shell with --http HOST:PORT")
    }
}

fn on_off(value: Option<&str>, what: &str) -> anyhow::Result<bool> {
    match value {
        Some("on" | "1" | "yes" | "true") => Ok(true),
        Some("off" | "0" | "no" | "false") => Ok(false),
        _ => bail!("usage: .{what} on|off"),
    }
}

/// Splits a dot-command into words; '…' and "…" group words with spaces.
pub fn split_arguments(line: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut characters = line.chars().peekable();
    loop {
        while characters.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = characters.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '\'' || first == '"' {
            characters.next();
            loop {
                match characters.next() {
                    Some(c) if c == first => break,
                    Some(c) => word.push(c),
                    None => bail!("unterminated {first}quote{first} in: .{line}"),
                }
            }
        } else {
            while let Some(c) = characters.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_on_spaces_outside_quotes() {
        assert_eq!(
            split_arguments("import 'my file.csv' t").expect("splits"),
            vec!["import", "my file.csv", "t"]
        );
        assert_eq!(
            split_arguments("  mode   csv ").expect("splits"),
            vec!["mode", "csv"]
        );
        assert!(split_arguments("read 'open").is_err());
    }
}
