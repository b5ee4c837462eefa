//! [`ChunkTable`]: the CRC32C of every [`STREAM_CHUNK_BYTES`] chunk of a checkpoint file and the
//! xxh3-128 of the whole file, computed in one pass when the checkpoint is written and stored
//! beside it (`ckpt-<instance>.chunks`). Serving the checkpoint to a peer then never reads the
//! file into user space: the server sends each chunk's CRC from the table and the chunk's bytes
//! with `sendfile` ([`super::checkpoint_stream`]). Because the CRCs date from when the file was
//! written, a chunk that rotted on the serving disk since then fails its CRC at the fetcher.
//!
//! Sidecar layout (big-endian): magic [`SIDECAR_MAGIC`] | chunk bytes u32 | file bytes u64 |
//! file xxh3-128 (16 bytes) | one CRC32C u32 per chunk | CRC32C u32 of everything before it.
//! A sidecar that is missing, fails its own CRC, or describes another file (size, hash or
//! chunk size differ from the checkpoint's info) is rebuilt from the file; the rebuilt hash must
//! then match the info, so a checkpoint file that changed since it was written is never served.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::Xxh3;

use super::checkpoint_stream::STREAM_CHUNK_BYTES;
use super::checkpoints::CheckpointInfo;

/// First bytes of a sidecar; the digit is the layout's version.
pub const SIDECAR_MAGIC: [u8; 8] = *b"PXCHUNK1";
/// Magic, chunk bytes, file bytes, file hash.
const SIDECAR_HEAD_BYTES: usize = 8 + 4 + 8 + 16;
/// Largest sidecar read back: one CRC per chunk of a 16 TiB checkpoint (16 MiB of table).
const SIDECAR_BYTES_MAX: u64 = SIDECAR_HEAD_BYTES as u64 + 4 * (1 << 22) + 4;

/// Per-chunk CRC32C and whole-file xxh3-128 of one checkpoint file (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkTable {
    pub chunk_bytes: u32,
    pub file_bytes: u64,
    pub file_hash: u128,
    /// One CRC32C per chunk, in file order; the last chunk may be short.
    pub crcs: Vec<u32>,
}

/// Where the sidecar of checkpoint file `file` lives.
pub fn sidecar_path(file: &Path) -> PathBuf {
    file.with_extension("chunks")
}

/// Why a checkpoint's chunk table could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ChunkTableError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "checkpoint file {path} changed since it was written (size {file_bytes}, hash {file_hash}; \
         its info says size {info_bytes}, hash {info_hash}): it is not served; the next checkpoint replaces it"
    )]
    Changed {
        path: PathBuf,
        file_bytes: u64,
        file_hash: String,
        info_bytes: u64,
        info_hash: String,
    },
}

impl ChunkTable {
    /// Reads `file` once: CRC32C per chunk and xxh3-128 of the whole.
    pub fn build(file: &Path) -> std::io::Result<ChunkTable> {
        use std::io::Read;
        let mut source = std::fs::File::open(file)?;
        let mut hasher = Xxh3::new();
        let mut crcs = Vec::new();
        let mut buffer = vec![0u8; STREAM_CHUNK_BYTES];
        let mut file_bytes = 0u64;
        loop {
            let mut length = 0;
            while length < buffer.len() {
                let read = source.read(&mut buffer[length..])?;
                if read == 0 {
                    break;
                }
                length += read;
            }
            if length == 0 {
                break;
            }
            let chunk = &buffer[..length];
            hasher.update(chunk);
            crcs.push(crc32c::crc32c(chunk));
            file_bytes += length as u64;
            if length < buffer.len() {
                break;
            }
        }
        Ok(ChunkTable {
            chunk_bytes: chunk_bytes_u32(),
            file_bytes,
            file_hash: hasher.digest128(),
            crcs,
        })
    }

    /// The info of this file as checkpoint `instance_id` with no cluster state in it: what the
    /// stream needs to send and verify the bytes (tests and the stream benchmark).
    pub fn bare_info(&self, instance_id: u64) -> CheckpointInfo {
        CheckpointInfo {
            instance_id,
            file_bytes: self.file_bytes,
            file_hash: self.file_hash_hex(),
            checksum_after: 0,
            cluster_gid: 0,
            members: Vec::new(),
            members_version: 0,
            master_id: None,
            lease_ms: 0,
            lease_version: 0,
        }
    }

    /// The whole-file hash as [`CheckpointInfo::file_hash`] spells it (32 hex digits).
    pub fn file_hash_hex(&self) -> String {
        format!("{:032x}", self.file_hash)
    }

    /// Whether this table describes the file `info` describes, in this build's chunk size.
    pub fn matches(&self, info: &CheckpointInfo) -> bool {
        self.chunk_bytes == chunk_bytes_u32()
            && self.file_bytes == info.file_bytes
            && self.file_hash_hex() == info.file_hash
            && self.crcs.len() as u64 == chunks_in(self.file_bytes)
    }

    /// The CRC32C of the chunk that starts at `offset` (a chunk boundary below the file's end).
    pub fn crc_at(&self, offset: u64) -> u32 {
        assert!(
            offset.is_multiple_of(STREAM_CHUNK_BYTES as u64) && offset < self.file_bytes,
            "chunk offset {offset} is not a chunk start of a {}-byte file",
            self.file_bytes
        );
        self.crcs[(offset / STREAM_CHUNK_BYTES as u64) as usize]
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SIDECAR_HEAD_BYTES + 4 * self.crcs.len() + 4);
        bytes.extend_from_slice(&SIDECAR_MAGIC);
        bytes.extend_from_slice(&self.chunk_bytes.to_be_bytes());
        bytes.extend_from_slice(&self.file_bytes.to_be_bytes());
        bytes.extend_from_slice(&self.file_hash.to_be_bytes());
        for crc in &self.crcs {
            bytes.extend_from_slice(&crc.to_be_bytes());
        }
        let own = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&own.to_be_bytes());
        bytes
    }

    /// The table in `bytes`, or `None` when they are not a whole, intact sidecar.
    fn decode(bytes: &[u8]) -> Option<ChunkTable> {
        let (body, own) = bytes.split_last_chunk::<4>()?;
        if crc32c::crc32c(body) != u32::from_be_bytes(*own) || body.len() < SIDECAR_HEAD_BYTES {
            return None;
        }
        let (head, table) = body.split_at(SIDECAR_HEAD_BYTES);
        if head[..8] != SIDECAR_MAGIC || !table.len().is_multiple_of(4) {
            return None;
        }
        Some(ChunkTable {
            chunk_bytes: u32::from_be_bytes(head[8..12].try_into().ok()?),
            file_bytes: u64::from_be_bytes(head[12..20].try_into().ok()?),
            file_hash: u128::from_be_bytes(head[20..36].try_into().ok()?),
            crcs: table
                .chunks_exact(4)
                .map(|crc| u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]))
                .collect(),
        })
    }

    /// Writes the sidecar durably enough for its purpose: a temporary file, fsync'd, renamed
    /// over `sidecar`. The caller fsyncs the directory when the rename itself must survive a
    /// crash (a lost sidecar is only rebuilt, never trusted blindly).
    pub fn store(&self, sidecar: &Path) -> std::io::Result<()> {
        // Unique per call: two peers may rebuild the same missing sidecar at once.
        static STORES: AtomicU64 = AtomicU64::new(0);
        let temporary = sidecar.with_extension(format!(
            "chunks.tmp-{}-{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&temporary, self.encode())
            .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::rename(&temporary, sidecar));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    /// The sidecar at `sidecar` if it is intact; `None` when missing or damaged.
    pub fn load(sidecar: &Path) -> Option<ChunkTable> {
        let length = std::fs::metadata(sidecar).ok()?.len();
        if length > SIDECAR_BYTES_MAX {
            return None;
        }
        ChunkTable::decode(&std::fs::read(sidecar).ok()?)
    }

    /// The table of checkpoint file `file` described by `info`: its sidecar when intact and
    /// describing that file, else rebuilt from the file (and stored again, best effort).
    pub fn load_or_build(
        file: &Path,
        info: &CheckpointInfo,
    ) -> Result<ChunkTable, ChunkTableError> {
        let sidecar = sidecar_path(file);
        if let Some(table) = ChunkTable::load(&sidecar).filter(|table| table.matches(info)) {
            return Ok(table);
        }
        let table = ChunkTable::build(file).map_err(|source| ChunkTableError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        if !table.matches(info) {
            return Err(ChunkTableError::Changed {
                path: file.to_path_buf(),
                file_bytes: table.file_bytes,
                file_hash: table.file_hash_hex(),
                info_bytes: info.file_bytes,
                info_hash: info.file_hash.clone(),
            });
        }
        if let Err(error) = table.store(&sidecar) {
            tracing::warn!(sidecar = %sidecar.display(), %error, "could not store a rebuilt chunk table; it is rebuilt on the next serve");
        } else {
            tracing::info!(sidecar = %sidecar.display(), "rebuilt a missing or damaged checkpoint chunk table");
        }
        Ok(table)
    }
}

/// Chunks in a file of `file_bytes` (the last may be short).
pub fn chunks_in(file_bytes: u64) -> u64 {
    file_bytes.div_ceil(STREAM_CHUNK_BYTES as u64)
}

fn chunk_bytes_u32() -> u32 {
    u32::try_from(STREAM_CHUNK_BYTES).expect("a chunk is below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two chunks and a short third.
    fn write_file(path: &Path) -> Vec<u8> {
        let bytes: Vec<u8> = (0..2 * STREAM_CHUNK_BYTES + 12_345)
            .map(|index| (index * 31 % 251) as u8)
            .collect();
        std::fs::write(path, &bytes).expect("write the file");
        bytes
    }

    #[test]
    fn table_holds_each_chunks_crc_and_the_whole_file_hash() {
        let folder = tempfile::tempdir().expect("tempdir");
        let file = folder.path().join("ckpt.sqlite");
        let bytes = write_file(&file);
        let table = ChunkTable::build(&file).expect("build");
        let expected: Vec<u32> = bytes
            .chunks(STREAM_CHUNK_BYTES)
            .map(crc32c::crc32c)
            .collect();
        assert_eq!(table.crcs, expected);
        assert_eq!(table.file_bytes, bytes.len() as u64);
        let (_, hash) = super::super::checkpoints::hash_file(&file).expect("hash");
        assert_eq!(table.file_hash_hex(), hash);
        assert_eq!(table.crc_at(STREAM_CHUNK_BYTES as u64 * 2), expected[2]);
        table.store(&sidecar_path(&file)).expect("store");
        assert_eq!(ChunkTable::load(&sidecar_path(&file)), Some(table));
    }

    #[test]
    fn damaged_sidecar_is_detected_and_rebuilt() {
        let folder = tempfile::tempdir().expect("tempdir");
        let file = folder.path().join("ckpt.sqlite");
        write_file(&file);
        let table = ChunkTable::build(&file).expect("build");
        let sidecar = sidecar_path(&file);
        table.store(&sidecar).expect("store");
        let mut stored = std::fs::read(&sidecar).expect("read the sidecar");
        // A CRC in the table: still well-formed, only its own checksum can tell.
        stored[SIDECAR_HEAD_BYTES + 5] ^= 0x01;
        std::fs::write(&sidecar, &stored).expect("damage the sidecar");
        assert_eq!(ChunkTable::load(&sidecar), None);
        let loaded = ChunkTable::load_or_build(&file, &table.bare_info(1)).expect("rebuilt");
        assert_eq!(loaded, table);
        assert_eq!(ChunkTable::load(&sidecar), Some(table), "stored again");
    }

    #[test]
    fn sidecar_of_another_file_is_not_used() {
        let folder = tempfile::tempdir().expect("tempdir");
        let file = folder.path().join("ckpt.sqlite");
        write_file(&file);
        let table = ChunkTable::build(&file).expect("build");
        let other = ChunkTable {
            crcs: vec![0; table.crcs.len()],
            file_hash: table.file_hash ^ 1,
            ..table.clone()
        };
        other.store(&sidecar_path(&file)).expect("store");
        let loaded = ChunkTable::load_or_build(&file, &table.bare_info(1)).expect("rebuilt");
        assert_eq!(loaded, table);
    }
}
