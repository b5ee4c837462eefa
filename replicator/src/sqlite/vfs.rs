//! The time-pinning VFS: a shallow copy of SQLite's default VFS whose clock returns the pinned
//! time of the value being executed or replayed.
//!
//! SQLite reads "now" through `xCurrentTimeInt64` for `datetime('now')`, `CURRENT_TIMESTAMP`,
//! `DEFAULT CURRENT_TIMESTAMP` columns, trigger bodies, `unixepoch()` and `julianday('now')`.
//! Rewriting SQL text cannot reach defaults and triggers; the VFS reaches all of them.
//!
//! The pin is **thread-local**: the state machine of a group runs on one thread, so each group
//! pins its own time while it steps a statement, and reader connections (which never pin) see the
//! real clock. SQLite reads the clock once per `sqlite3_step`; the pin stays fixed for a whole
//! value.

use std::cell::Cell;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Name under which the VFS is registered; every paxsql connection opens with it.
pub const VFS_NAME: &CStr = c"paxsql";

/// Milliseconds between the Julian-day epoch (noon, 4713 BC) and the Unix epoch.
const JULIAN_EPOCH_TO_UNIX_MS: i64 = 210_866_760_000_000;
const MS_PER_DAY: f64 = 86_400_000.0;

thread_local! {
    static PINNED_UNIX_MS: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The default VFS we copied, to answer with the real clock when nothing is pinned.
struct DefaultVfs(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite VFS objects are process-global and immutable once registered.
unsafe impl Send for DefaultVfs {}
unsafe impl Sync for DefaultVfs {}

static REGISTERED: OnceLock<Result<DefaultVfs, c_int>> = OnceLock::new();

/// Registers the paxsql VFS once per process. Must run before any paxsql connection opens
/// (every `open_*` helper calls it). Returns the SQLite error code on failure.
pub fn register() -> Result<(), c_int> {
    match REGISTERED.get_or_init(register_once) {
        Ok(_) => Ok(()),
        Err(code) => Err(*code),
    }
}

fn register_once() -> Result<DefaultVfs, c_int> {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS (or NULL), which lives for the whole
    // process. We copy it by value, replace the two clock entries and leak the copy, because
    // SQLite keeps a pointer to it forever once registered.
    unsafe {
        let default_vfs = ffi::sqlite3_vfs_find(std::ptr::null());
        if default_vfs.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        let mut copy: ffi::sqlite3_vfs = *default_vfs;
        copy.zName = VFS_NAME.as_ptr();
        copy.pNext = std::ptr::null_mut();
        copy.xCurrentTime = Some(current_time_days);
        if copy.iVersion >= 2 {
            copy.xCurrentTimeInt64 = Some(current_time_ms);
        }
        let leaked: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(copy));
        let code = ffi::sqlite3_vfs_register(leaked, 0);
        if code != ffi::SQLITE_OK {
            return Err(code);
        }
        Ok(DefaultVfs(default_vfs))
    }
}

/// Pins "now" for SQLite calls made on this thread until the guard drops.
#[must_use = "the pin lasts only while the guard lives"]
pub struct TimePin {
    previous: Option<i64>,
}

impl TimePin {
    pub fn new(unix_ms: i64) -> Self {
        let previous = PINNED_UNIX_MS.with(|cell| cell.replace(Some(unix_ms)));
        TimePin { previous }
    }
}

impl Drop for TimePin {
    fn drop(&mut self) {
        PINNED_UNIX_MS.with(|cell| cell.set(self.previous));
    }
}

fn pinned_julian_ms() -> Option<i64> {
    PINNED_UNIX_MS
        .with(Cell::get)
        .map(|unix_ms| unix_ms + JULIAN_EPOCH_TO_UNIX_MS)
}

fn default_vfs() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(DefaultVfs(pointer))) => *pointer,
        _ => unreachable!("the paxsql VFS is called only after it was registered"),
    }
}

unsafe extern "C" fn current_time_ms(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    if let Some(julian_ms) = pinned_julian_ms() {
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = julian_ms };
        return ffi::SQLITE_OK;
    }
    let real = default_vfs();
    // SAFETY: the default VFS is valid for the process lifetime; we call its own clock.
    unsafe {
        match (*real).xCurrentTimeInt64 {
            Some(clock) if (*real).iVersion >= 2 => clock(real, out),
            _ => {
                let mut days = 0.0;
                let code = current_time_days(real, &mut days);
                *out = (days * MS_PER_DAY) as i64;
                code
            }
        }
    }
}

unsafe extern "C" fn current_time_days(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    if let Some(julian_ms) = pinned_julian_ms() {
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = julian_ms as f64 / MS_PER_DAY };
        return ffi::SQLITE_OK;
    }
    let real = default_vfs();
    // SAFETY: as above.
    unsafe {
        match (*real).xCurrentTime {
            Some(clock) => clock(real, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}
