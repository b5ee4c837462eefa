//! [`LogWriter`]: the thread that owns one group's log.
//!
//! # Group commit
//! The thread takes every job queued, appends the records of all `Persist` jobs among them,
//! calls `sync()` **once**, and only then sends the persists' `then_send` envelopes (through
//! the outbox it was given; else they ride in the completions) and hands the completions back
//! to the group driver, in job order. So a promise or accept leaves the node only after its
//! record is durable, and many of them share one fsync.
//!
//! `Append` jobs (Chosen records) are appended in queue order like the records of a `Persist`
//! but nothing waits for them and they cause no sync: they become durable with the next sync
//! (of a later `Persist`, a truncation, or the close). A sync covers every earlier append of
//! the file, so the durable log is always a prefix of what was appended.
//!
//! Reads (for learners) and prefix truncations go through the same queue, so a read sees every
//! record of every earlier `Persist` or `Append` job. **Ordering:** a truncation first syncs the records
//! appended before it in the batch (a checkpoint's meta record), so they are durable before
//! anything below them is deleted.
//!
//! # Failure
//! An append or sync error is fatal: after a failed fsync the kernel may have dropped the
//! dirty pages, so a retry could report success for data that is gone. The thread calls the
//! [`FatalHandler`] and stops; it never syncs again and never releases the completions of the
//! failed batch. The node's handler is [`abort_process`]: it logs the error and calls
//! `std::process::abort()` (the process dies with SIGABRT, exit status 134 in a shell) without
//! running destructors that could touch the log. Tests pass a handler that only records.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use paxsql_binlog::{LogError, LogStore, Record};
use paxsql_schema::Envelope;
use tokio::sync::{mpsc, oneshot};

use crate::limits::LOG_WRITER_QUEUE_MAX;
use crate::runtime::error::RuntimeError;
use crate::runtime::group::Outbox;
use crate::runtime::metrics::RuntimeMetrics;

/// Called once with a description when the log can no longer promise durability.
pub type FatalHandler = Arc<dyn Fn(&str) + Send + Sync>;

/// The node's fatal handler: log loudly, then abort the process.
pub fn abort_process() -> FatalHandler {
    Arc::new(|message: &str| {
        tracing::error!("FATAL: {message}");
        eprintln!("paxsql: FATAL: {message}");
        std::process::abort();
    })
}

/// A `Persist` action whose records are now durable.
#[derive(Debug)]
pub struct PersistDone {
    pub token: u64,
    pub then_send: Vec<Envelope>,
}

/// The answer to a read.
#[derive(Debug)]
pub struct LogRead {
    pub records: Vec<Record>,
    /// The lowest instance the log still holds, when the read ran.
    pub first_instance: Option<u64>,
}

enum Job {
    Persist {
        token: u64,
        records: Vec<Record>,
        then_send: Vec<Envelope>,
    },
    Append {
        records: Vec<Record>,
    },
    Read {
        from: u64,
        to: u64,
        reply: oneshot::Sender<Result<LogRead, LogError>>,
    },
    Truncate {
        below: u64,
    },
}

/// Owns the log writer thread of one group. Dropping it lets the thread finish the queued
/// jobs and exit; [`LogWriter::close`] also waits for that.
pub struct LogWriter {
    group: Arc<str>,
    jobs: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cloneable handle that can only read (used by tasks that serve learners).
#[derive(Clone)]
pub struct LogReader {
    group: Arc<str>,
    jobs: mpsc::Sender<Job>,
}

impl LogWriter {
    /// Starts the thread. Completions go to `completions`, one message per sync; its capacity
    /// must be at least the number of persist jobs the caller keeps in flight, so the thread
    /// never waits on it. With an `outbox`, the thread sends each persist's `then_send`
    /// envelopes itself right after the sync (its completion then carries none): a follower's
    /// accept reply leaves without a hop through the group driver, which is on the critical
    /// path of every write. Without one, the envelopes ride in the completion.
    pub fn spawn(
        group: &str,
        log: Box<dyn LogStore>,
        completions: mpsc::Sender<Vec<PersistDone>>,
        outbox: Option<Arc<dyn Outbox>>,
        metrics: Arc<RuntimeMetrics>,
        fatal: FatalHandler,
    ) -> Result<LogWriter, RuntimeError> {
        let (jobs, receiver) = mpsc::channel(LOG_WRITER_QUEUE_MAX);
        let thread_group = group.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("log-{group}"))
            .spawn(move || {
                let mut writer = WriterThread {
                    group: thread_group,
                    unsynced_records: 0,
                    log,
                    completions,
                    outbox,
                    metrics,
                    fatal,
                };
                writer.run(receiver);
            })
            .map_err(|source| RuntimeError::Io {
                context: format!("starting the log writer of group {group}"),
                source,
            })?;
        Ok(LogWriter {
            group: Arc::from(group),
            jobs,
            thread: Some(thread),
        })
    }

    /// Queues records to append; the completion arrives after the sync that covers them.
    pub async fn persist(
        &self,
        token: u64,
        records: Vec<Record>,
        then_send: Vec<Envelope>,
    ) -> Result<(), RuntimeError> {
        self.jobs
            .send(Job::Persist {
                token,
                records,
                then_send,
            })
            .await
            .map_err(|_| RuntimeError::LogWriterStopped {
                group: self.group.to_string(),
            })
    }

    /// Queues records to append after every earlier job, with no sync and no completion.
    pub async fn append(&self, records: Vec<Record>) -> Result<(), RuntimeError> {
        self.jobs
            .send(Job::Append { records })
            .await
            .map_err(|_| RuntimeError::LogWriterStopped {
                group: self.group.to_string(),
            })
    }

    /// Queues a prefix truncation (instances `< below`; a durable checkpoint must cover them).
    pub async fn truncate_prefix(&self, below: u64) -> Result<(), RuntimeError> {
        self.jobs
            .send(Job::Truncate { below })
            .await
            .map_err(|_| RuntimeError::LogWriterStopped {
                group: self.group.to_string(),
            })
    }

    pub fn reader(&self) -> LogReader {
        LogReader {
            group: self.group.clone(),
            jobs: self.jobs.clone(),
        }
    }

    /// Lets the thread finish the queued jobs and waits for it to exit (blocking: call from
    /// `spawn_blocking` in async code).
    pub fn close(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the log writer thread panicked");
            }
        }
    }
}

impl LogReader {
    /// Every record with `from <= instance_id < to`, read after every earlier queued job.
    pub async fn read(&self, from: u64, to: u64) -> Result<LogRead, RuntimeError> {
        let stopped = || RuntimeError::LogWriterStopped {
            group: self.group.to_string(),
        };
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Read { from, to, reply })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(RuntimeError::Log)
    }
}

struct WriterThread {
    group: String,
    /// Records appended since the last sync (of `Persist` and `Append` jobs).
    unsynced_records: usize,
    log: Box<dyn LogStore>,
    completions: mpsc::Sender<Vec<PersistDone>>,
    outbox: Option<Arc<dyn Outbox>>,
    metrics: Arc<RuntimeMetrics>,
    fatal: FatalHandler,
}

impl WriterThread {
    fn run(&mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < LOG_WRITER_QUEUE_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Err(message) = self.carry_out(batch) {
                (self.fatal)(&message);
                // Only reached when the handler returns (tests): stop for good.
                return;
            }
        }
        // Closing: make the lazily appended tail durable, so a clean restart finds it.
        if let Err(message) = self.sync_and_release(&mut Vec::new(), true) {
            (self.fatal)(&message);
        }
    }

    fn append_all(&mut self, records: &[Record]) -> Result<(), String> {
        for record in records {
            self.log.append(record).map_err(|error| {
                format!(
                    "appending to the log of group {} failed: {error}",
                    self.group
                )
            })?;
        }
        self.unsynced_records += records.len();
        Ok(())
    }

    /// Appends, syncs once (if a `Persist` waits), then releases completions and read
    /// answers. `Err` is fatal.
    fn carry_out(&mut self, batch: Vec<Job>) -> Result<(), String> {
        let mut done = Vec::new();
        let mut reads = Vec::new();
        for job in batch {
            match job {
                Job::Persist {
                    token,
                    records,
                    then_send,
                } => {
                    self.append_all(&records)?;
                    done.push(PersistDone { token, then_send });
                }
                Job::Append { records } => {
                    self.append_all(&records)?;
                    self.metrics
                        .lazy_records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                }
                Job::Read { from, to, reply } => {
                    let read = self.log.read_range(from, to).map(|records| LogRead {
                        records,
                        first_instance: self.log.first_instance(),
                    });
                    reads.push((read, reply));
                }
                Job::Truncate { below } => {
                    // What was appended before the cut (a checkpoint's meta record, lazily
                    // appended Chosen records) must be durable before anything below it is
                    // deleted.
                    self.sync_and_release(&mut done, true)?;
                    self.truncate(below);
                }
            }
        }
        self.sync_and_release(&mut done, false)?;
        for (read, reply) in reads {
            let _ = reply.send(read);
        }
        Ok(())
    }

    /// Syncs once for every persist in `done` and hands their completions back; with
    /// `even_if_lazy`, also syncs when only `Append`ed records are unsynced. `Err` is fatal.
    fn sync_and_release(
        &mut self,
        done: &mut Vec<PersistDone>,
        even_if_lazy: bool,
    ) -> Result<(), String> {
        let lazy_only = even_if_lazy && self.unsynced_records > 0;
        if done.is_empty() && !lazy_only {
            return Ok(());
        }
        let started = Instant::now();
        self.log
            .sync()
            .map_err(|error| format!("syncing the log of group {} failed: {error}", self.group))?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics
            .record_sync(done.len(), self.unsynced_records, micros);
        self.unsynced_records = 0;
        if done.is_empty() {
            return Ok(());
        }
        // Durable now: what waited for these records may leave (see `spawn`).
        if let Some(outbox) = &self.outbox {
            for envelope in done.iter_mut().flat_map(|done| done.then_send.drain(..)) {
                outbox.send(envelope);
            }
        }
        // Err only when the driver is gone (shutdown): nobody is waiting any more.
        let _ = self.completions.blocking_send(std::mem::take(done));
        Ok(())
    }

    fn truncate(&mut self, below: u64) {
        match self.log.truncate_prefix(below) {
            Ok(()) => {
                tracing::info!(group = %self.group, below, first_instance = ?self.log.first_instance(), "truncated the log below a checkpoint")
            }
            Err(error) => {
                tracing::error!(group = %self.group, below, %error, "truncating the log failed; it keeps more than needed")
            }
        }
    }
}
