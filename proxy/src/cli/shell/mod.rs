//! `paxsql shell`: a `sqlite3`-style shell over the PostgreSQL wire, to any node.
//!
//! - [`input`]: where lines come from (rustyline on a terminal, plain lines otherwise) and when
//!   SQL is complete (SQLite's own `sqlite3_complete`, so `CREATE TRIGGER … END;` works).
//! - [`render`]: the output modes, byte for byte like `sqlite3` 3.40 where the wire allows.
//! - [`commands`]: the dot-commands; [`schema`], [`dump`] and [`import`] hold the bigger ones.
//!
//! Values arrive as text (simple query protocol). Where the type matters (`.dump`), the shell
//! asks SQLite for it server-side with `quote()`, which is exact for every value.
//!
//! Errors: an interactive shell prints them and goes on; a script (`-c`, piped stdin) stops at
//! the first one and exits non-zero, like `sqlite3 -bail`.

mod commands;
mod dump;
mod import;
mod input;
mod render;
mod schema;

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::Context;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use input::{FileLines, LineSource, TerminalLines};
use render::{Mode, ResultSet};

/// The prompt for a new statement, and for its continuation lines.
const PROMPT: &str = "paxsql> ";
const CONTINUATION_PROMPT: &str = "   ...> ";
/// How deep `.read` may nest (a file that reads itself would otherwise never end).
const READ_DEPTH_MAX: usize = 16;

#[derive(Clone, Debug, clap::Args)]
pub struct ShellArgs {
    /// Host of any node's SQL port.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Any node's SQL port (its --sql flag).
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// The database (group) to use.
    #[arg(long, default_value = "main")]
    pub db: String,
    /// User name sent to the node (any name is trusted on loopback when no users are set).
    #[arg(long, default_value = "paxsql")]
    pub user: String,
    /// The node's HTTP address for `.status`; by default the dev-cluster layout (SQL port
    /// + 200) is tried and checked against the node's own report.
    #[arg(long)]
    pub http: Option<String>,
    /// Run this SQL (or dot-command) and exit; non-zero exit status on any error.
    #[arg(short = 'c', long = "command")]
    pub command: Option<String>,
}

/// Settings changed by dot-commands.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub headers: bool,
    /// The user chose `.headers` explicitly: columnar modes no longer turn headers on.
    pub headers_set: bool,
    pub timer: bool,
    pub consistency: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::List,
            headers: false,
            headers_set: false,
            timer: false,
            consistency: "lease".into(),
        }
    }
}

/// What the input loop does after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

pub struct Shell {
    client: Client,
    args: ShellArgs,
    settings: Settings,
    /// Learned or given HTTP address of the node, for `.status`.
    http: Option<String>,
    read_depth: usize,
}

pub async fn run(args: ShellArgs) -> anyhow::Result<()> {
    let client = connect(&args.host, args.port, &args.db, &args.user).await?;
    let mut shell = Shell {
        client,
        http: args.http.clone(),
        args: args.clone(),
        settings: Settings::default(),
        read_depth: 0,
    };
    let outcome = if let Some(command) = &args.command {
        // Like `sqlite3 DB "SQL"`, a last statement needs no semicolon.
        let command = if command.trim_start().starts_with('.') || input::is_complete(command) {
            command.clone()
        } else {
            format!("{command};")
        };
        let mut lines = FileLines::from_text(&command);
        shell.process(&mut lines, true).await
    } else if std::io::stdin().is_terminal() {
        println!(
            "paxsql shell: connected to {}:{} database {}. Enter \".help\" for usage hints.",
            args.host, args.port, args.db
        );
        let mut lines = TerminalLines::new()?;
        let outcome = shell.process(&mut lines, false).await;
        lines.save_history();
        outcome
    } else {
        let mut lines = FileLines::from_reader(Box::new(std::io::stdin().lock()));
        shell.process(&mut lines, true).await
    };
    std::io::stdout().flush()?;
    if outcome.is_err() {
        // Already reported where it happened; a script only needs the status.
        std::process::exit(1);
    }
    Ok(())
}

/// Connects with the simple-query-friendly tokio-postgres client; the connection task runs in
/// the background.
pub async fn connect(host: &str, port: u16, db: &str, user: &str) -> anyhow::Result<Client> {
    let config = format!("host={host} port={port} user={user} dbname={db} connect_timeout=10");
    let (client, connection) =
        tokio_postgres::connect(&config, NoTls)
            .await
            .with_context(|| {
                format!("cannot connect to {host}:{port} database {db}: is a node listening there?")
            })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("connection closed: {error}");
        }
    });
    // REALs as sqlite3 prints them (`2.0`, `1.0e+20`), not as PostgreSQL prints a float8.
    client
        .batch_execute("SET paxsql.real_format = 'sqlite'")
        .await
        .with_context(|| {
            format!("{host}:{port} does not speak paxsql's settings: is it a paxsql node?")
        })?;
    Ok(client)
}

/// A database error as the user should read it: message, SQLSTATE, and detail if any.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("\nDETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("\nHINT: {hint}"));
            }
            text
        }
        None => error.to_string(),
    }
}

impl Shell {
    /// Reads lines until the input ends or `.quit`. With `bail`, the first error ends it.
    /// Errors are printed here; `Err` only tells the caller to stop.
    pub async fn process(
        &mut self,
        lines: &mut dyn LineSource,
        bail: bool,
    ) -> anyhow::Result<Flow> {
        let mut pending = String::new();
        let mut pending_line = 0;
        let mut line_number = 0;
        loop {
            let prompt = if pending.is_empty() {
                PROMPT
            } else {
                CONTINUATION_PROMPT
            };
            let Some(line) = lines.next_line(prompt)? else {
                break;
            };
            line_number += 1;
            if pending.is_empty() && line.trim_start().starts_with('.') {
                match self.dot_command(line.trim()).await {
                    Ok(Flow::Quit) => return Ok(Flow::Quit),
                    Ok(Flow::Continue) => {}
                    Err(error) => report(error, line_number, bail)?,
                }
                std::io::stdout().flush()?;
                continue;
            }
            if pending.is_empty() {
                if line.trim().is_empty() {
                    continue;
                }
                pending_line = line_number;
            }
            pending.push_str(&line);
            pending.push('\n');
            if input::is_complete(&pending) {
                let sql = std::mem::take(&mut pending);
                if let Err(error) = self.execute_sql(&sql).await {
                    report(error, pending_line, bail)?;
                }
                std::io::stdout().flush()?;
            }
        }
        if !pending.trim().is_empty() {
            report(
                anyhow::anyhow!("incomplete SQL: {}", pending.trim()),
                pending_line,
                bail,
            )?;
        }
        Ok(Flow::Continue)
    }

    /// Runs SQL text (one or more complete statements in one simple query) and prints each
    /// result set in the current mode.
    pub async fn execute_sql(&mut self, sql: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let usage_before = cpu_times();
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
        let mut out = std::io::stdout().lock();
        for result in result_sets(messages) {
            render::render(&mut out, &self.settings, &result)?;
        }
        if self.settings.timer {
            let usage_after = cpu_times();
            writeln!(
                out,
                "Run Time: real {:.3} user {:.6} sys {:.6}",
                started.elapsed().as_secs_f64(),
                usage_after.0 - usage_before.0,
                usage_after.1 - usage_before.1
            )?;
        }
        Ok(())
    }

    /// Runs a query and returns its rows as text (NULL as `None`), for the dot-commands.
    pub async fn query_rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
        Ok(result_sets(messages)
            .into_iter()
            .flat_map(|result| result.rows)
            .collect())
    }
}

/// Prints an error the way `sqlite3` does; in bail mode it also ends the input loop.
fn report(error: anyhow::Error, line_number: usize, bail: bool) -> anyhow::Result<()> {
    let _ = std::io::stdout().flush();
    if bail {
        eprintln!("Error: near line {line_number}: {error:#}");
        return Err(error);
    }
    eprintln!("Error: {error:#}");
    Ok(())
}

/// Groups simple-query messages into result sets (statements without rows give none).
fn result_sets(messages: Vec<SimpleQueryMessage>) -> Vec<ResultSet> {
    let mut sets = Vec::new();
    let mut current: Option<ResultSet> = None;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                sets.extend(current.take());
                current = Some(ResultSet {
                    columns: columns
                        .iter()
                        .map(|column| column.name().to_string())
                        .collect(),
                    rows: Vec::new(),
                });
            }
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len())
                    .map(|index| row.get(index).map(str::to_string))
                    .collect();
                match current.as_mut() {
                    Some(set) => set.rows.push(values),
                    None => {
                        current = Some(ResultSet {
                            columns: row
                                .columns()
                                .iter()
                                .map(|column| column.name().to_string())
                                .collect(),
                            rows: vec![values],
                        })
                    }
                }
            }
            SimpleQueryMessage::CommandComplete(_) => sets.extend(current.take()),
            _ => {}
        }
    }
    sets.extend(current);
    sets
}

/// User and system CPU seconds of this process, for `.timer`.
fn cpu_times() -> (f64, f64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the valid, zeroed buffer we pass.
    let code = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if code != 0 {
        return (0.0, 0.0);
    }
    // SAFETY: getrusage succeeded, so it initialized the struct (it was zeroed anyway).
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}
