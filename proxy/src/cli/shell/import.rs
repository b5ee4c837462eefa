//! `.import [--csv] [--skip N] FILE TABLE`: CSV rows into a table, in batched multi-row
//! INSERTs, with a progress bar on large files.
//!
//! As in `sqlite3`: when TABLE does not exist, the first row names its columns (all TEXT);
//! when it exists, every row is data. Values are inserted as text and the column's affinity
//! converts them; short rows are filled with NULL and long rows cut, with a warning.
//!
//! Unlike `sqlite3`, the import is not one transaction: each batch is one replicated write
//! (a Paxos instance), so a failure leaves the batches before it in place and says how many
//! rows that was. A reader thread parses the next batches while one is being written.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::schema::{quote_identifier, sql_literal};
use super::{describe_error, Shell};

/// Most rows in one INSERT statement.
pub const IMPORT_BATCH_ROWS_MAX: usize = 20_000;
/// A batch is closed once its SQL text passes this many bytes (well under the 8 MiB value
/// limit, so a batch plus its binlog framing always fits).
pub const IMPORT_BATCH_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Batches parsed ahead of the one being written.
pub const IMPORT_BATCHES_QUEUED: usize = 4;
/// Files at least this big get a progress bar.
pub const IMPORT_PROGRESS_MIN_BYTES: u64 = 16 * 1024 * 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
const PROGRESS_BAR_WIDTH: usize = 30;

/// Parsed `.import` arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportArgs {
    pub file: String,
    pub table: String,
    pub skip: usize,
}

impl ImportArgs {
    pub fn parse(arguments: &[String]) -> anyhow::Result<ImportArgs> {
        let mut positional = Vec::new();
        let mut skip = 0;
        let mut index = 0;
        while index < arguments.len() {
            match arguments[index].as_str() {
                "--csv" | "-csv" => {}
                "--skip" | "-skip" => {
                    index += 1;
                    skip = arguments
                        .get(index)
                        .and_then(|count| count.parse().ok())
                        .context("--skip needs a row count")?;
                }
                option if option.starts_with("--") => {
                    bail!("unknown .import option {option}; usage: .import [--csv] [--skip N] FILE TABLE")
                }
                value => positional.push(value.to_string()),
            }
            index += 1;
        }
        let [file, table] = <[String; 2]>::try_from(positional)
            .map_err(|_| anyhow::anyhow!("usage: .import [--csv] [--skip N] FILE TABLE"))?;
        Ok(ImportArgs { file, table, skip })
    }
}

/// One INSERT ready to send, and how far into the file it reaches.
struct Batch {
    sql: String,
    rows: usize,
    file_offset: u64,
}

impl Shell {
    pub async fn import(&self, args: &ImportArgs) -> anyhow::Result<()> {
        let path = Path::new(&args.file);
        let file_bytes = std::fs::metadata(path)
            .with_context(|| format!("cannot open {}", args.file))?
            .len();
        let mut reader = csv_reader(path)?;
        // As in sqlite3, skipped rows come before the header row.
        for _ in 0..args.skip {
            if next_record(&mut reader)?.is_none() {
                break;
            }
        }
        let column_count = match self.table_column_count(&args.table).await? {
            Some(count) => count,
            None => {
                let header = next_record(&mut reader)?.with_context(|| {
                    format!("{} is empty: no header row to name the columns", args.file)
                })?;
                self.create_table(&args.table, &header).await?;
                header.len()
            }
        };
        let insert = format!("INSERT INTO {} VALUES", quote_identifier(&args.table));
        let (sender, mut receiver) = tokio::sync::mpsc::channel(IMPORT_BATCHES_QUEUED);
        let file_name = args.file.clone();
        let parser = std::thread::spawn(move || {
            parse_batches(reader, &file_name, column_count, &insert, &sender)
        });
        let started = Instant::now();
        let mut progress = Progress::new(file_bytes, started);
        let mut rows_done = 0u64;
        let mut outcome = Ok(());
        while let Some(batch) = receiver.recv().await {
            let batch: Batch = batch;
            if let Err(error) = self.client.simple_query(&batch.sql).await {
                outcome = Err(anyhow::anyhow!(
                    "{} (the {rows_done} rows before this batch were imported)",
                    describe_error(&error)
                ));
                break;
            }
            rows_done += batch.rows as u64;
            progress.update(batch.file_offset, rows_done);
        }
        drop(receiver);
        let parsed = parser.join().expect("the CSV parser thread does not panic");
        outcome?;
        parsed?;
        progress.finish(rows_done);
        Ok(())
    }

    /// The number of columns of an existing table, or `None` when there is no such table.
    async fn table_column_count(&self, table: &str) -> anyhow::Result<Option<usize>> {
        let exists = self
            .names(&format!(
                "SELECT name FROM sqlite_schema WHERE type IN ('table','view') AND name = {}",
                sql_literal(table)
            ))
            .await?;
        if exists.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.column_names(table).await?.len()))
    }

    /// `CREATE TABLE "t"(\n"a" TEXT, "b" TEXT)`, exactly as `sqlite3 .import` creates it.
    async fn create_table(&self, table: &str, header: &[String]) -> anyhow::Result<()> {
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let columns: Vec<String> = header
            .iter()
            .map(|name| format!("{} TEXT", quote(name)))
            .collect();
        let sql = format!("CREATE TABLE {}(\n{})", quote(table), columns.join(", "));
        self.client
            .simple_query(&sql)
            .await
            .map_err(|error| anyhow::anyhow!(describe_error(&error)))?;
        Ok(())
    }
}

fn csv_reader(path: &Path) -> anyhow::Result<csv::Reader<std::fs::File>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(file))
}

fn next_record(reader: &mut csv::Reader<std::fs::File>) -> anyhow::Result<Option<Vec<String>>> {
    let mut record = csv::StringRecord::new();
    if !reader.read_record(&mut record)? {
        return Ok(None);
    }
    Ok(Some(record.iter().map(str::to_string).collect()))
}

/// Runs on the parser thread: turns records into INSERT batches until the file ends or the
/// writer stops listening.
fn parse_batches(
    mut reader: csv::Reader<std::fs::File>,
    file_name: &str,
    column_count: usize,
    insert: &str,
    sender: &tokio::sync::mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut record = csv::StringRecord::new();
    let mut sql = String::new();
    let mut rows = 0;
    let mut warnings = 0;
    loop {
        let more = reader
            .read_record(&mut record)
            .with_context(|| format!("{file_name}: malformed CSV"))?;
        if more {
            if record.len() != column_count && warnings < 10 {
                warnings += 1;
                let line = record.position().map_or(0, csv::Position::line);
                eprintln!(
                    "{file_name}:{line}: expected {column_count} columns but found {}: {}",
                    record.len(),
                    if record.len() < column_count {
                        "filling the rest with NULL"
                    } else {
                        "extras ignored"
                    }
                );
            }
            sql.push_str(if rows == 0 { insert } else { "," });
            push_row(&mut sql, &record, column_count);
            rows += 1;
        }
        let full = rows >= IMPORT_BATCH_ROWS_MAX || sql.len() >= IMPORT_BATCH_BYTES_MAX;
        if rows > 0 && (full || !more) {
            let batch = Batch {
                sql: std::mem::take(&mut sql),
                rows: std::mem::take(&mut rows),
                file_offset: reader.position().byte(),
            };
            if sender.blocking_send(batch).is_err() {
                return Ok(());
            }
        }
        if !more {
            return Ok(());
        }
    }
}

fn push_row(sql: &mut String, record: &csv::StringRecord, column_count: usize) {
    sql.push('(');
    for column in 0..column_count {
        if column > 0 {
            sql.push(',');
        }
        match record.get(column) {
            Some(value) => {
                sql.push('\'');
                sql.push_str(&value.replace('\'', "''"));
                sql.push('\'');
            }
            None => sql.push_str("NULL"),
        }
    }
    sql.push(')');
}

/// A progress bar on stderr for big files, and the throughput at the end.
struct Progress {
    file_bytes: u64,
    started: Instant,
    last_shown: Instant,
    enabled: bool,
    terminal: bool,
}

impl Progress {
    fn new(file_bytes: u64, started: Instant) -> Self {
        Progress {
            file_bytes,
            started,
            last_shown: started,
            enabled: file_bytes >= IMPORT_PROGRESS_MIN_BYTES,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, bytes_done: u64, rows_done: u64) {
        if !self.enabled || self.last_shown.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last_shown = Instant::now();
        let fraction = bytes_done as f64 / self.file_bytes.max(1) as f64;
        let filled = (fraction * PROGRESS_BAR_WIDTH as f64) as usize;
        let bar = format!(
            "[{}{}]",
            "#".repeat(filled.min(PROGRESS_BAR_WIDTH)),
            " ".repeat(PROGRESS_BAR_WIDTH.saturating_sub(filled))
        );
        let seconds = self.started.elapsed().as_secs_f64();
        let line = format!(
            "{bar} {:5.1}% {} / {} MiB  {:.1} MiB/s  {rows_done} rows",
            fraction * 100.0,
            bytes_done / (1024 * 1024),
            self.file_bytes / (1024 * 1024),
            bytes_done as f64 / (1024.0 * 1024.0) / seconds.max(1e-3),
        );
        // On a terminal the bar redraws in place; in a log each update is its own line.
        let ending = if self.terminal { "\r" } else { "\n" };
        let _ = write!(std::io::stderr(), "{line}{ending}");
    }

    fn finish(&self, rows_done: u64) {
        if !self.enabled {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let mebibytes = self.file_bytes as f64 / (1024.0 * 1024.0);
        eprintln!(
            "{}imported {rows_done} rows ({mebibytes:.1} MiB) in {seconds:.1} s: {:.1} MiB/s, {:.0} rows/s",
            if self.terminal { "\n" } else { "" },
            mebibytes / seconds,
            rows_done as f64 / seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_arguments_parse_like_sqlite3() {
        let args: Vec<String> = ["--csv", "--skip", "1", "data.csv", "t"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            ImportArgs::parse(&args).expect("parses"),
            ImportArgs {
                file: "data.csv".into(),
                table: "t".into(),
                skip: 1
            }
        );
        assert!(ImportArgs::parse(&["only.csv".to_string()]).is_err());
    }

    #[test]
    fn rows_are_padded_cut_and_quoted() {
        let mut sql = String::new();
        push_row(&mut sql, &csv::StringRecord::from(vec!["it's", ""]), 3);
        assert_eq!(sql, "('it''s','',NULL)");
        sql.clear();
        push_row(&mut sql, &csv::StringRecord::from(vec!["a", "b", "c"]), 2);
        assert_eq!(sql, "('a','b')");
    }
}
