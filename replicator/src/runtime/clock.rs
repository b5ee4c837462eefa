//! The monotonic clock that ticks carry: `CLOCK_BOOTTIME` on Linux.
//!
//! Why boot time: the master lease is computed from tick times, and `CLOCK_MONOTONIC` stops
//! while a VM or laptop is suspended. A node that slept through its lease must see that the
//! lease is gone, so the clock has to keep counting during suspension (DESIGN "Rules").

/// Milliseconds since boot, counting time spent suspended. Never goes backwards.
pub fn boot_time_ms() -> u64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec for the duration of the call, and the clock
    // id is a constant the kernel knows.
    let result = unsafe { libc::clock_gettime(CLOCK_ID, &mut spec) };
    // Cannot fail for a valid clock id and pointer; if it ever does, time is unknown and the
    // lease logic cannot be trusted: stop.
    assert_eq!(
        result,
        0,
        "clock_gettime failed: {}",
        std::io::Error::last_os_error()
    );
    let seconds = u64::try_from(spec.tv_sec).expect("boot time is not negative");
    let nanoseconds = u64::try_from(spec.tv_nsec).expect("nanoseconds are not negative");
    seconds * 1_000 + nanoseconds / 1_000_000
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const CLOCK_ID: libc::clockid_t = libc::CLOCK_BOOTTIME;
// Other systems have no boot-time clock in libc; their monotonic clock is the closest.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const CLOCK_ID: libc::clockid_t = libc::CLOCK_MONOTONIC;

/// Hands out tick times that never go backwards (a guard on top of the kernel's promise).
#[derive(Debug, Default)]
pub struct TickClock {
    last_ms: u64,
}

impl TickClock {
    pub fn new() -> Self {
        TickClock { last_ms: 0 }
    }

    /// The current boot time, clamped so it never goes below an earlier reading.
    pub fn now_ms(&mut self) -> u64 {
        self.last_ms = self.last_ms.max(boot_time_ms());
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_advances_with_real_time() {
        let before = boot_time_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = boot_time_ms();
        assert!(after >= before + 19, "before {before} after {after}");
    }

    #[test]
    fn tick_clock_never_goes_backwards() {
        let mut clock = TickClock::new();
        let mut previous = 0;
        for _ in 0..1_000 {
            let now = clock.now_ms();
            assert!(now >= previous);
            previous = now;
        }
    }
}
