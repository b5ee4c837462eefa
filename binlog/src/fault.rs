//! Fault-injection hooks for tests of the real binary (disk full, failed fsync).
//!
//! **Test hooks, not features.** Read once, when a [`crate::FileLog`] opens, from:
//! - `PAXSQL_FAULT_LOG_FULL_AFTER_BYTES=N`: once this process has appended N bytes of records
//!   to this log, every further append fails with ENOSPC ("No space left on device"), as on a
//!   full disk.
//! - `PAXSQL_FAULT_LOG_FAIL_SYNC_AFTER=N`: after N successful syncs of this log, the next sync
//!   fails with EIO, as when `fsync` reports lost writes.
//!
//! Both go through the same error paths as the real failures (the log is poisoned, the node
//! stops). Unset (the normal case) they cost one branch per append or sync.
//!
//! Segments are preallocated, so on a real full disk it is the zero-filling of the next segment
//! that fails (at a rollover, or at open), not an append inside a segment. That failure takes
//! the same path as a failed append: [`crate::LogError::Io`] with ENOSPC, the log poisoned. The
//! byte budget above counts record bytes only (the zeros are not appends), so a test still
//! stops the node after about N bytes of records, whatever the segment size.

/// The hooks in force for one log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultHooks {
    full_after_bytes: Option<u64>,
    fail_sync_after: Option<u64>,
    appended_bytes: u64,
    syncs: u64,
}

pub(crate) const FULL_AFTER_BYTES_VAR: &str = "PAXSQL_FAULT_LOG_FULL_AFTER_BYTES";
pub(crate) const FAIL_SYNC_AFTER_VAR: &str = "PAXSQL_FAULT_LOG_FAIL_SYNC_AFTER";

impl FaultHooks {
    /// Reads the environment (once per opened log).
    pub(crate) fn from_env() -> FaultHooks {
        let read = |name: &str| {
            let value = std::env::var(name).ok()?;
            let parsed = value.trim().parse().unwrap_or_else(|_| {
                panic!("{name}={value:?} must be a number of bytes or syncs (a test hook)")
            });
            tracing::warn!("{name}={parsed}: fault-injection test hook is active");
            Some(parsed)
        };
        FaultHooks {
            full_after_bytes: read(FULL_AFTER_BYTES_VAR),
            fail_sync_after: read(FAIL_SYNC_AFTER_VAR),
            appended_bytes: 0,
            syncs: 0,
        }
    }

    /// Called before appending `bytes`: `Err(ENOSPC)` once the byte budget is spent.
    pub(crate) fn before_append(&mut self, bytes: u64) -> std::io::Result<()> {
        if let Some(limit) = self.full_after_bytes {
            if self.appended_bytes + bytes > limit {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        self.appended_bytes += bytes;
        Ok(())
    }

    /// Called before a sync: `Err(EIO)` once the sync budget is spent.
    pub(crate) fn before_sync(&mut self) -> std::io::Result<()> {
        if let Some(limit) = self.fail_sync_after {
            if self.syncs >= limit {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
        }
        self.syncs += 1;
        Ok(())
    }
}
