//! [`Checkpoints`]: one group's checkpoints on this node.
//!
//! - Every `interval_instances` applied instances (and on demand) a task copies the replica
//!   from a reader connection (SQLite backup API, one WAL read transaction: the writer never
//!   waits) into `checkpoints/ckpt-<instance>.sqlite`, fsyncs it, hashes it (whole file and
//!   per streamed chunk: the [`ChunkTable`] sidecar `.chunks`, so serving it needs no read)
//!   and writes its [`CheckpointInfo`] beside it (`.json`, written last: a checkpoint without
//!   it is ignored).
//! - The newest `keep_max` are kept; a checkpoint being streamed to a peer is pinned and never
//!   deleted while the stream runs.
//! - Then the log is truncated below `newest − hold_instances`, and never below a pinned
//!   checkpoint − hold, nor while this node is being bootstrapped.
//! - A node that needs instances no peer's log holds fetches a peer's newest checkpoint
//!   ([`super::checkpoint_stream`]), installs it through the writer thread, and tells the core.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::Xxh3;

use super::checkpoint_chunks::{sidecar_path, ChunkTable};
use super::checkpoint_stream::{self, FetchProgress, SharedProgress};
use super::handle::SqlService;
use crate::paxos::{CheckpointMeta, InstanceId, NodeId};
use crate::runtime::group::CheckpointNeeded;
use crate::sqlite::checkpoint::{remove_if_present, sync_parent_directory, write_checkpoint};
use crate::sqlite::SqlErrorKind;

/// Checksums remembered for recently delivered instances (a checkpoint needs the one of its
/// instance; older instances than this are never checkpointed).
pub const CHECKSUM_RING_MAX: usize = 65_536;
/// Checkpoints kept per group by default.
pub const CHECKPOINTS_KEPT_DEFAULT: usize = 3;
/// On-demand checkpoint requests waiting at once.
pub const CHECKPOINT_REQUESTS_MAX: usize = 8;
/// Pause after a failed bootstrap before the next "need a checkpoint" notice is served.
const BOOTSTRAP_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How often an install is retried while readers are still busy.
const INSTALL_ATTEMPTS_MAX: u32 = 100;

/// The running checksum after each recently delivered instance.
#[derive(Default)]
pub struct ChecksumRing {
    entries: Mutex<VecDeque<(InstanceId, u64)>>,
}

impl ChecksumRing {
    pub fn record(&self, instance_id: InstanceId, checksum_after: u64) {
        let mut entries = self.entries.lock().expect("checksum ring lock");
        if entries.back().is_some_and(|(last, _)| *last >= instance_id) {
            return;
        }
        if entries.len() >= CHECKSUM_RING_MAX {
            entries.pop_front();
        }
        entries.push_back((instance_id, checksum_after));
    }

    pub fn get(&self, instance_id: InstanceId) -> Option<u64> {
        let entries = self.entries.lock().expect("checksum ring lock");
        let first = entries.front()?.0;
        let index = usize::try_from(instance_id.checked_sub(first)?).ok()?;
        entries
            .get(index)
            .filter(|(id, _)| *id == instance_id)
            .map(|(_, checksum)| *checksum)
            .or_else(|| {
                entries
                    .iter()
                    .find(|(id, _)| *id == instance_id)
                    .map(|(_, checksum)| *checksum)
            })
    }
}

/// What a checkpoint holds, stored beside it as JSON and sent first in a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub instance_id: InstanceId,
    pub file_bytes: u64,
    /// xxh3-128 of the whole file, 32 hex digits.
    pub file_hash: String,
    pub checksum_after: u64,
    pub cluster_gid: u64,
    pub members: Vec<NodeId>,
    pub members_version: InstanceId,
    pub master_id: Option<NodeId>,
    pub lease_ms: u64,
    pub lease_version: InstanceId,
}

impl CheckpointInfo {
    pub fn meta(&self) -> CheckpointMeta {
        CheckpointMeta {
            instance_id: self.instance_id,
            checksum_after: self.checksum_after,
            cluster_gid: self.cluster_gid,
            members: self.members.clone(),
            members_version: self.members_version,
            master_id: self.master_id,
            lease_ms: self.lease_ms,
            lease_version: self.lease_version,
        }
    }
}

/// How checkpoints are taken and kept.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// `--checkpoint-interval-instances`.
    pub interval_instances: u64,
    /// `--log-hold-instances`.
    pub hold_instances: u64,
    pub keep_max: usize,
    /// With a cluster secret: the proof a bootstrap sends with its fetches, in place of the
    /// admin token the serving peer may require (`checkpoint_proof.rs`).
    pub peer_identity: Option<checkpoint_stream::PeerIdentity>,
}

type Request = oneshot::Sender<Result<CheckpointInfo, String>>;

/// One group's checkpoints (see the module docs).
pub struct Checkpoints {
    group: String,
    dir: PathBuf,
    options: CheckpointOptions,
    service: SqlService,
    pins: Mutex<BTreeMap<InstanceId, usize>>,
    bootstrapping: AtomicBool,
    progress: SharedProgress,
    last_bootstrap: Mutex<Option<serde_json::Value>>,
    requests: mpsc::Sender<Request>,
}

/// Keeps a checkpoint from being deleted while it is streamed.
pub struct Pin {
    owner: Arc<Checkpoints>,
    instance_id: InstanceId,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.owner.pins.lock().expect("pins lock");
        if let Some(count) = pins.get_mut(&self.instance_id) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.instance_id);
            }
        }
    }
}

impl Checkpoints {
    /// Starts the checkpoint task of one group (`dir` is `DIR/<group>/checkpoints`).
    pub fn start(
        group: &str,
        dir: PathBuf,
        options: CheckpointOptions,
        service: SqlService,
    ) -> std::io::Result<Arc<Checkpoints>> {
        std::fs::create_dir_all(&dir)?;
        let (requests, receiver) = mpsc::channel(CHECKPOINT_REQUESTS_MAX);
        let checkpoints = Arc::new(Checkpoints {
            group: group.to_string(),
            dir,
            options,
            service,
            pins: Mutex::new(BTreeMap::new()),
            bootstrapping: AtomicBool::new(false),
            progress: Arc::new(Mutex::new(FetchProgress::default())),
            last_bootstrap: Mutex::new(None),
            requests,
        });
        tokio::spawn(checkpoints.clone().run(receiver));
        Ok(checkpoints)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes a checkpoint now (`POST /admin/checkpoint`).
    pub async fn take_now(&self) -> Result<CheckpointInfo, String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(reply)
            .map_err(|_| "too many checkpoint requests are waiting; retry shortly".to_string())?;
        answer
            .await
            .map_err(|_| "the checkpoint task stopped".to_string())?
    }

    /// Checkpoints on disk, oldest first (only complete ones: file and info).
    pub fn list(&self) -> Vec<CheckpointInfo> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !(name.starts_with("ckpt-") && name.ends_with(".json")) {
                continue;
            }
            let info = std::fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<CheckpointInfo>(&bytes).ok());
            if let Some(info) = info.filter(|info| self.file_of(info.instance_id).exists()) {
                found.push(info);
            }
        }
        found.sort_by_key(|info| info.instance_id);
        found
    }

    fn file_of(&self, instance_id: InstanceId) -> PathBuf {
        self.dir.join(format!("ckpt-{instance_id:020}.sqlite"))
    }

    fn info_of(&self, instance_id: InstanceId) -> PathBuf {
        self.dir.join(format!("ckpt-{instance_id:020}.json"))
    }

    /// The checkpoint to stream (`0`: the newest), pinned until the returned guard drops.
    pub fn open_for_stream(
        self: &Arc<Self>,
        instance_id: InstanceId,
    ) -> Option<(PathBuf, CheckpointInfo, Pin)> {
        let mut pins = self.pins.lock().expect("pins lock");
        let list = self.list();
        let info = if instance_id == 0 {
            list.last().cloned()
        } else {
            list.into_iter()
                .find(|info| info.instance_id == instance_id)
        }?;
        *pins.entry(info.instance_id).or_default() += 1;
        let pin = Pin {
            owner: self.clone(),
            instance_id: info.instance_id,
        };
        Some((self.file_of(info.instance_id), info, pin))
    }

    /// `/status` facts: checkpoints on disk and the bootstrap, if any.
    pub fn status_json(&self) -> serde_json::Value {
        let newest = self.list().last().map(|info| info.instance_id);
        let bootstrap = if self.bootstrapping.load(Ordering::Acquire) {
            serde_json::to_value(&*self.progress.lock().expect("progress lock")).unwrap_or_default()
        } else {
            self.last_bootstrap
                .lock()
                .expect("bootstrap lock")
                .clone()
                .unwrap_or(serde_json::Value::Null)
        };
        serde_json::json!({
            "newest_checkpoint": newest,
            "checkpoints": self.list().len(),
            "pinned": self.pins.lock().expect("pins lock").keys().collect::<Vec<_>>(),
            "bootstrap": bootstrap,
        })
    }

    /// The checkpoint task: takes one per interval of applied instances and per request.
    async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<Request>) {
        let mut applied = self.service.applied_watch();
        let mut last_taken = self.list().last().map_or(0, |info| info.instance_id);
        loop {
            let request = tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => Some(request),
                    None => return,
                },
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
            };
            let now_applied = (*applied.borrow_and_update()).unwrap_or(0);
            let due = now_applied >= last_taken + self.options.interval_instances;
            if request.is_none() && !due {
                continue;
            }
            let outcome = self.clone().take().await;
            if let Ok(info) = &outcome {
                last_taken = info.instance_id;
            }
            match request {
                Some(reply) => drop(reply.send(outcome)),
                None => {
                    if let Err(error) = outcome {
                        tracing::warn!(group = %self.group, %error, "periodic checkpoint skipped");
                        // Try again after the next interval rather than on every instance.
                        last_taken = now_applied;
                    }
                }
            }
        }
    }

    /// Takes one checkpoint, prunes old ones and truncates the log.
    async fn take(self: Arc<Self>) -> Result<CheckpointInfo, String> {
        if self.bootstrapping.load(Ordering::Acquire) {
            return Err("this node is being bootstrapped from a peer's checkpoint".into());
        }
        let this = self.clone();
        let info = tokio::task::spawn_blocking(move || this.write_one())
            .await
            .map_err(|error| format!("the checkpoint thread failed: {error}"))??;
        self.prune();
        let below = self.truncation_point(info.instance_id);
        self.service
            .group()
            .checkpoint_durable(info.meta(), below)
            .await
            .map_err(|error| error.to_string())?;
        tracing::info!(
            group = %self.group,
            instance_id = info.instance_id,
            file_bytes = info.file_bytes,
            truncate_below = below,
            "checkpoint written"
        );
        Ok(info)
    }

    /// The log is cut below this instance: newest − hold, and never past a pinned checkpoint.
    fn truncation_point(&self, newest: InstanceId) -> InstanceId {
        let pinned_min = self.pins.lock().expect("pins lock").keys().next().copied();
        let floor = pinned_min.map_or(newest, |pinned| pinned.min(newest));
        floor.saturating_sub(self.options.hold_instances)
    }

    /// Blocking: backup, hash, info file. Runs on a blocking thread.
    fn write_one(&self) -> Result<CheckpointInfo, String> {
        let started = Instant::now();
        let taking = self.dir.join("taking.sqlite");
        let meta = write_checkpoint(
            self.service.readers(),
            self.service.database_path(),
            &taking,
        )
        .map_err(|error| error.to_string())?;
        let instance_id = meta.applied_instance.ok_or("nothing applied yet")?;
        // The replica records its running checksum in the same transaction as each apply; the
        // ring covers files written before it did (and instances delivered since the start).
        let checksum_after = meta
            .applied_checksum_after
            .or_else(|| self.service.checksums().get(instance_id));
        let Some(checksum_after) = checksum_after else {
            let _ = remove_if_present(&taking);
            return Err(format!(
                "instance {instance_id} was applied before this process started; the next checkpoint will do"
            ));
        };
        let table = ChunkTable::build(&taking).map_err(|error| error.to_string())?;
        let info = CheckpointInfo {
            instance_id,
            file_bytes: table.file_bytes,
            file_hash: table.file_hash_hex(),
            checksum_after,
            cluster_gid: meta.cluster_gid.unwrap_or(0),
            members: meta.members.clone(),
            members_version: meta.members_version.unwrap_or(0),
            master_id: meta.master_id,
            lease_ms: meta.lease_ms.unwrap_or(0),
            lease_version: meta.lease_version.unwrap_or(0),
        };
        let file = self.file_of(instance_id);
        std::fs::rename(&taking, &file).map_err(|error| error.to_string())?;
        // Before the info: a listed checkpoint has its table (a lost one is rebuilt on serve).
        table
            .store(&sidecar_path(&file))
            .map_err(|error| format!("writing the chunk table of {}: {error}", file.display()))?;
        let info_path = self.info_of(instance_id);
        let temporary = info_path.with_extension("tmp");
        std::fs::write(
            &temporary,
            serde_json::to_vec_pretty(&info).expect("info serializes"),
        )
        .map_err(|error| error.to_string())?;
        std::fs::File::open(&temporary)
            .and_then(|written| written.sync_all())
            .map_err(|error| format!("fsync {}: {error}", temporary.display()))?;
        std::fs::rename(&temporary, &info_path).map_err(|error| error.to_string())?;
        sync_parent_directory(&info_path).map_err(|error| error.to_string())?;
        tracing::debug!(group = %self.group, instance_id, millis = started.elapsed().as_millis() as u64, "checkpoint copied");
        Ok(info)
    }

    /// Deletes all but the newest `keep_max` checkpoints, skipping pinned ones.
    fn prune(&self) {
        let pins = self.pins.lock().expect("pins lock");
        let list = self.list();
        let excess = list.len().saturating_sub(self.options.keep_max.max(1));
        for info in list.into_iter().take(excess) {
            if pins.contains_key(&info.instance_id) {
                continue;
            }
            // The info file goes first: a checkpoint without it is no longer offered.
            let _ = std::fs::remove_file(self.info_of(info.instance_id));
            let _ = std::fs::remove_file(self.file_of(info.instance_id));
            let _ = std::fs::remove_file(sidecar_path(&self.file_of(info.instance_id)));
        }
    }

    /// Serves the core's "need a checkpoint" notices: fetch from the peer, install, go on.
    /// `peer_http` resolves a peer's HTTP address (learned in the peer handshake).
    pub async fn serve_notices(
        self: Arc<Self>,
        mut notices: mpsc::Receiver<CheckpointNeeded>,
        peer_http: Arc<dyn Fn(NodeId) -> Option<String> + Send + Sync>,
    ) {
        while let Some(notice) = notices.recv().await {
            let applied = self.service.applied_instance();
            if applied.is_some_and(|applied| applied + 1 >= notice.first_instance) {
                continue;
            }
            let Some(address) = peer_http(notice.peer) else {
                tracing::warn!(group = %self.group, peer = notice.peer, "need a checkpoint from a peer whose HTTP address is not known yet");
                continue;
            };
            if let Err(error) = self.bootstrap(notice.peer, &address).await {
                tracing::error!(group = %self.group, peer = notice.peer, %error, "bootstrap from a checkpoint failed; it is tried again when the group asks");
                // A refusal that will not change (a wrong secret, mixed releases) must not
                // turn the group's repeated notices into a busy loop of failed fetches.
                tokio::time::sleep(BOOTSTRAP_RETRY_PAUSE).await;
            }
            // Notices queued during the bootstrap are stale.
            while notices.try_recv().is_ok() {}
        }
    }

    async fn bootstrap(&self, peer: NodeId, address: &str) -> Result<(), String> {
        self.bootstrapping.store(true, Ordering::Release);
        *self.progress.lock().expect("progress lock") = FetchProgress {
            peer,
            peer_http: address.to_string(),
            state: "connecting".into(),
            ..FetchProgress::default()
        };
        let started = Instant::now();
        tracing::info!(group = %self.group, peer, address, "bootstrapping from a peer's checkpoint: this node lacks instances no peer's log holds");
        let outcome = match self.fetch_and_install(address).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => {
                // The replica caught up by other means (a queued notice outlived the need):
                // nothing to install, and the last bootstrap's summary stays as it was.
                self.bootstrapping.store(false, Ordering::Release);
                tracing::info!(group = %self.group, peer, "checkpoint no longer needed: this replica already applied past it");
                return Ok(());
            }
            Err(error) => Err(error),
        };
        let mut summary = serde_json::to_value(&*self.progress.lock().expect("progress lock"))
            .unwrap_or_default();
        summary["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        summary["state"] = serde_json::json!(match &outcome {
            Ok(_) => "installed".to_string(),
            Err(error) => format!("failed: {error}"),
        });
        *self.last_bootstrap.lock().expect("bootstrap lock") = Some(summary);
        self.bootstrapping.store(false, Ordering::Release);
        let info = outcome?;
        tracing::info!(
            group = %self.group,
            peer,
            instance_id = info.instance_id,
            file_bytes = info.file_bytes,
            seconds = started.elapsed().as_secs_f64(),
            "bootstrapped by checkpoint: installed instance {} from node {peer}; learning onward",
            info.instance_id
        );
        Ok(())
    }

    /// `Ok(None)`: the fetched checkpoint is not ahead of this replica any more.
    async fn fetch_and_install(&self, address: &str) -> Result<Option<CheckpointInfo>, String> {
        let (file, info) = checkpoint_stream::fetch(
            address,
            &self.group,
            &self.dir,
            &self.progress,
            self.options.peer_identity.as_ref(),
        )
        .await
        .map_err(|error| error.to_string())?;
        if self
            .service
            .applied_instance()
            .is_some_and(|applied| applied >= info.instance_id)
        {
            let _ = std::fs::remove_file(&file);
            return Ok(None);
        }
        let inside =
            crate::sqlite::checkpoint_instance(&file).map_err(|error| error.to_string())?;
        if inside != info.instance_id {
            let _ = std::fs::remove_file(&file);
            return Err(format!(
                "the checkpoint file holds instance {inside}, its header says {}",
                info.instance_id
            ));
        }
        self.progress.lock().expect("progress lock").state = "installing".into();
        let mut attempts = 0;
        loop {
            match self.service.install_checkpoint(file.clone()).await {
                Ok(_) => break,
                Err(error)
                    if error.kind == SqlErrorKind::Busy && attempts < INSTALL_ATTEMPTS_MAX =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => {
                    let _ = std::fs::remove_file(&file);
                    if self
                        .service
                        .applied_instance()
                        .is_some_and(|applied| applied >= info.instance_id)
                    {
                        return Ok(None);
                    }
                    return Err(error.to_string());
                }
            }
        }
        self.service
            .group()
            .checkpoint_installed(info.meta())
            .await
            .map_err(|error| error.to_string())?;
        Ok(Some(info))
    }
}

/// Size and xxh3-128 (hex) of a file, read in bounded chunks.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; crate::limits::CHECKPOINT_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((total, format!("{:032x}", hasher.digest128())))
}
