//! A log line budget for events anyone on the network can trigger (refused connections): past
//! a few lines a minute they are counted, not logged, so a flood cannot fill the disk or bury
//! the lines that matter. The next line logged after a quiet spell says how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged per window at most.
pub const LOG_LINES_PER_WINDOW: u32 = 10;
/// The window.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);

/// One budget per kind of event (a `static` at the call site).
pub struct LogBudget {
    state: Mutex<Option<Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    pub const fn new() -> LogBudget {
        LogBudget {
            state: Mutex::new(None),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were left out before it in
    /// the window that ended; `None` when the budget of the current window is spent.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .expect("log budget lock is never poisoned");
        let window = state.get_or_insert(Window {
            started: now,
            logged: 0,
            left_out: 0,
        });
        let mut left_out_before = 0;
        if now.duration_since(window.started) >= LOG_WINDOW {
            left_out_before = window.left_out;
            *window = Window {
                started: now,
                logged: 0,
                left_out: 0,
            };
        }
        if window.logged < LOG_LINES_PER_WINDOW {
            window.logged += 1;
            Some(left_out_before)
        } else {
            window.left_out += 1;
            None
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_next_window_says_how_many_were_left_out() {
        let budget = LogBudget::new();
        let start = Instant::now();
        let admitted = (0..1_000).filter(|_| budget.admit(start).is_some()).count();
        assert_eq!(admitted, LOG_LINES_PER_WINDOW as usize);
        assert_eq!(budget.admit(start + LOG_WINDOW), Some(990));
        assert_eq!(budget.admit(start + LOG_WINDOW), Some(0));
    }
}
