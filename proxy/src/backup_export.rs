//! `GET /backup?group=G` on the HTTP port: a consistent copy of a group as a plain SQLite
//! file, streamed from a temporary file (never built in memory).
//!
//! The snapshot is taken with SQLite's backup API in one step, from a read-only connection of
//! its own on the replica: one WAL read transaction, so the copy holds exactly the state after
//! one applied instance and the writer is never blocked. The applied instance travels in the
//! `X-Paxsql-Instance` header. paxsql's `_paxsql_*` tables are then dropped from the copy
//! (with `secure_delete`, so their content does not linger in free pages) and the copy is
//! switched out of WAL mode: the user gets a plain single-file database.
//!
//! With `min_instance=N` the node first waits (bounded) until it has applied instance N: the
//! `paxsql backup` command reads N from the master through a linearizable read, so every
//! write acknowledged before the backup started is in the copy, even one taken on a follower.
//!
//! Temporary files live in `DIR/<group>/backups/` and are removed once sent or on failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxsql_replicator::sqlite::meta::{self, PAXSQL_TABLE_PREFIX};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::http::{FileResponse, FileRouteFuture, HttpResponse};

/// Backups prepared at once per node (each holds a full copy on disk while it is sent).
pub const BACKUPS_IN_FLIGHT_MAX: usize = 2;
/// How long a backup waits for this node to apply the requested `min_instance`.
pub const BACKUP_CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// How often the applied instance is checked while waiting.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);
/// How long the snapshot's read waits for a lock held by a WAL checkpoint.
const BACKUP_BUSY_TIMEOUT_MS: u64 = 10_000;

/// Response headers naming what the backup holds.
pub const INSTANCE_HEADER: &str = "X-Paxsql-Instance";
pub const GROUP_HEADER: &str = "X-Paxsql-Group";

/// The applied instance of a group on this node (`None`: nothing applied, or no such group).
pub type AppliedInstance = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

pub struct BackupExporter {
    data_dir: PathBuf,
    applied: AppliedInstance,
    groups: Vec<String>,
    slots: Arc<Semaphore>,
    counter: AtomicU64,
}

impl BackupExporter {
    pub fn new(data_dir: PathBuf, groups: Vec<String>, applied: AppliedInstance) -> Self {
        BackupExporter {
            data_dir,
            applied,
            groups,
            slots: Arc::new(Semaphore::new(BACKUPS_IN_FLIGHT_MAX)),
            counter: AtomicU64::new(0),
        }
    }

    /// Answers `GET /backup[?group=G]`; any other target is not ours.
    pub fn route(&self, method: &str, target: &str) -> Option<FileRouteFuture> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/backup" {
            return None;
        }
        let response = self.prepare(method, query);
        Some(Box::pin(async move { response?.await }))
    }

    fn prepare(&self, method: &str, query: &str) -> Result<FileRouteFuture, HttpResponse> {
        if method != "GET" {
            return Err(HttpResponse::text(405, "use GET /backup?group=NAME\n"));
        }
        let parameter = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let group = parameter("group").unwrap_or("main").to_string();
        let min_instance = match parameter("min_instance").map(str::parse::<u64>) {
            None => None,
            Some(Ok(instance)) => Some(instance),
            Some(Err(_)) => {
                return Err(HttpResponse::text(
                    400,
                    "min_instance must be an instance number\n",
                ))
            }
        };
        if !self.groups.contains(&group) {
            return Err(HttpResponse::text(
                404,
                format!(
                    "no group {group:?} on this node; its groups are {:?}\n",
                    self.groups
                ),
            ));
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            HttpResponse::text(
                503,
                format!("{BACKUPS_IN_FLIGHT_MAX} backups are already in progress on this node; retry later\n"),
            )
        })?;
        let group_dir = self.data_dir.join(&group);
        let serial = self.counter.fetch_add(1, Ordering::Relaxed);
        let temporary = group_dir
            .join("backups")
            .join(format!("backup-{}-{serial}.sqlite", std::process::id()));
        let applied = self.applied.clone();
        Ok(Box::pin(async move {
            if let Some(target) = min_instance {
                wait_applied(&applied, &group, target).await?;
            }
            let source = group_dir.join("db.sqlite");
            let destination = temporary.clone();
            let exported = tokio::task::spawn_blocking(move || export(&source, &destination)).await;
            drop(permit);
            let instance = match exported {
                Ok(Ok(instance)) => instance,
                Ok(Err(error)) => {
                    remove_export(&temporary);
                    return Err(HttpResponse::text(
                        500,
                        format!("backup failed: {error:#}\n"),
                    ));
                }
                Err(error) => {
                    remove_export(&temporary);
                    return Err(HttpResponse::text(
                        500,
                        format!("backup task failed: {error}\n"),
                    ));
                }
            };
            tracing::info!(group, instance, "streaming a backup");
            Ok(FileResponse {
                content_type: "application/vnd.sqlite3",
                headers: vec![
                    (INSTANCE_HEADER.into(), instance.to_string()),
                    (GROUP_HEADER.into(), group),
                ],
                path: temporary,
                remove_after: true,
            })
        }))
    }
}

/// Waits until this node has applied `target` in `group`, or answers 503.
async fn wait_applied(
    applied: &AppliedInstance,
    group: &str,
    target: u64,
) -> Result<(), HttpResponse> {
    let deadline = Instant::now() + BACKUP_CATCH_UP_WAIT;
    while applied(group).is_none_or(|instance| instance < target) {
        if Instant::now() >= deadline {
            return Err(HttpResponse::text(
                503,
                format!(
                    "this node has not applied instance {target} of group {group} within \
                     {BACKUP_CATCH_UP_WAIT:?} (it has {:?}); try another node or retry\n",
                    applied(group)
                ),
            ));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    Ok(())
}

fn remove_export(path: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}

/// Copies the replica at `source` into `destination` as a plain user database and returns
/// the applied instance it holds.
pub fn export(source: &Path, destination: &Path) -> anyhow::Result<u64> {
    use anyhow::Context;
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let reader = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", source.display()))?;
    reader.busy_timeout(std::time::Duration::from_millis(BACKUP_BUSY_TIMEOUT_MS))?;
    let mut copy = Connection::open(destination)
        .with_context(|| format!("cannot create {}", destination.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(&reader, &mut copy)?;
        // All pages in one step: one read transaction, one consistent snapshot.
        backup.step(-1).context("copying the database")?;
    }
    drop(reader);
    let instance = meta::applied_instance(&copy)
        .context("reading the applied instance of the copy")?
        .context("this group has applied nothing yet: there is nothing to back up")?;
    strip_paxsql_tables(&copy)?;
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    copy.close().map_err(|(_, error)| error)?;
    Ok(instance)
}

/// Drops every `_paxsql_*` table, zeroing their pages.
fn strip_paxsql_tables(copy: &Connection) -> anyhow::Result<()> {
    copy.pragma_update(None, "secure_delete", true)?;
    let mut statement = copy.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND lower(substr(name, 1, ?1)) = ?2",
    )?;
    let names: Vec<String> = statement
        .query_map(
            rusqlite::params![PAXSQL_TABLE_PREFIX.len() as i64, PAXSQL_TABLE_PREFIX],
            |row| row.get(0),
        )?
        .collect::<Result<_, _>>()?;
    drop(statement);
    for name in names {
        copy.execute_batch(&format!("DROP TABLE \"{}\"", name.replace('"', "\"\"")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admin source that only serves backups of one group.
    struct BackupsOnly(BackupExporter);

    impl crate::http::AdminSource for BackupsOnly {
        fn status_json(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn metrics_text(&self) -> String {
            String::new()
        }
        fn ready(&self) -> bool {
            true
        }
        fn file_route(&self, method: &str, target: &str) -> Option<FileRouteFuture> {
            self.0.route(method, target)
        }
    }

    #[tokio::test]
    async fn backup_route_streams_the_copy_and_removes_its_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group_dir = dir.path().join("main");
        std::fs::create_dir_all(&group_dir).expect("group dir");
        let connection = Connection::open(group_dir.join("db.sqlite")).expect("open");
        connection
            .execute_batch(
                "CREATE TABLE _paxsql_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
                 INSERT INTO _paxsql_meta VALUES ('applied_instance', 7);
                 CREATE TABLE items(id INTEGER PRIMARY KEY);",
            )
            .expect("seed");
        let applied: AppliedInstance = Arc::new(|_: &str| Some(7));
        let exporter = BackupExporter::new(dir.path().into(), vec!["main".into()], applied);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve(
            listener,
            Arc::new(BackupsOnly(exporter)),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        let file = dir.path().join("copy.sqlite");
        let summary = crate::cli::backup::backup(&addr, "main", 7, &file)
            .await
            .expect("backup");
        assert_eq!(summary.instance, 7);
        assert_eq!(summary.bytes, std::fs::metadata(&file).expect("file").len());
        // The node removes its temporary export just after the last byte is sent.
        let mut left = Vec::new();
        for _ in 0..200 {
            left = std::fs::read_dir(group_dir.join("backups"))
                .expect("backups dir")
                .collect::<Result<Vec<_>, _>>()
                .expect("list");
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(left.is_empty(), "temporary exports left behind: {left:?}");
        let missing = crate::cli::backup::backup(&addr, "orders", 7, &file).await;
        assert!(missing
            .expect_err("unknown group")
            .to_string()
            .contains("404"));
        let behind = crate::http::get(&addr, "/backup?group=main&min_instance=x").await;
        assert_eq!(behind.expect("answer").0, 400);
        stop.send(()).expect("server running");
        server.await.expect("joins").expect("serves");
    }

    #[test]
    fn export_is_a_plain_database_without_paxsql_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("db.sqlite");
        let connection = Connection::open(&source).expect("open");
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE _paxsql_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
                 INSERT INTO _paxsql_meta VALUES ('applied_instance', 42);
                 CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT);
                 INSERT INTO items VALUES (1, 'one'), (2, 'two');",
            )
            .expect("seed");
        let destination = dir.path().join("backups").join("copy.sqlite");
        assert_eq!(export(&source, &destination).expect("export"), 42);
        let copy = Connection::open(&destination).expect("open copy");
        let tables: Vec<String> = copy
            .prepare("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY 1")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(tables, vec!["items"]);
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("mode");
        assert_eq!(mode, "delete");
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("check");
        assert_eq!(check, "ok");
    }
}
