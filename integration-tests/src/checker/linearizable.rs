//! A Wing–Gong linearizability checker (with Lowe's memoization, as in WGL/Knossos/Porcupine)
//! for one integer register with read, write and compare-and-set.
//!
//! Each operation has an invoke time and, if it completed, a completion time and result. An
//! operation whose outcome is unknown (SQLSTATE 40003, a broken connection, a timeout) is a
//! *maybe*: it may take effect at any point after its invocation, or never. The search
//! linearizes every completed operation; a maybe operation may be linearized or left out.
//!
//! The search is a depth-first walk over (set of linearized operations, register value),
//! memoized so no configuration is explored twice. At each step the candidates are the
//! operations not yet linearized that were invoked before the earliest completion among the
//! completed operations not yet linearized (nothing may be linearized after an operation that
//! returned before it started).

use std::collections::HashSet;

/// What an operation did, with its result if it completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOpKind {
    /// A read that returned this value.
    Read(i64),
    /// A write of this value.
    Write(i64),
    /// Compare-and-set `expected → new`; `succeeded` is its result when it completed (for a
    /// maybe operation it is ignored: a maybe CAS may have succeeded or not taken effect).
    Cas {
        expected: i64,
        new: i64,
        succeeded: bool,
    },
}

/// One operation of the history of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterOp {
    pub client: u32,
    pub kind: RegisterOpKind,
    /// When the client sent it (µs since the history began).
    pub invoke_us: u64,
    /// When the client got its answer; `None` for a maybe operation.
    pub complete_us: Option<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    Linearizable,
    /// No linearization exists; the message describes the history near the deepest point the
    /// search reached.
    NotLinearizable(String),
    /// The search gave up after visiting this many configurations (not a proof either way).
    Inconclusive(usize),
}

/// Configurations the search may visit before giving up.
pub const SEARCH_STATES_MAX: usize = 5_000_000;

/// Checks one key's history, starting from `initial`.
pub fn check_register(initial: i64, history: &[RegisterOp]) -> CheckOutcome {
    // Maybe reads and maybe failed CASes have no effect: drop them. A maybe CAS keeps both
    // possibilities (its effect, if any, is a successful CAS).
    let ops: Vec<RegisterOp> = history
        .iter()
        .copied()
        .filter(|op| op.complete_us.is_some() || !matches!(op.kind, RegisterOpKind::Read(_)))
        .collect();
    let count = ops.len();
    let words = count.div_ceil(64).max(1);
    let required: usize = ops.iter().filter(|op| op.complete_us.is_some()).count();
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&index| ops[index].invoke_us);

    let mut seen: HashSet<(Vec<u64>, i64)> = HashSet::new();
    // Each stack frame: (linearized set, value, completed ops linearized so far).
    let mut stack: Vec<(Vec<u64>, i64, usize)> = vec![(vec![0; words], initial, 0)];
    let mut deepest = 0usize;
    let mut deepest_frame: (Vec<u64>, i64) = (vec![0; words], initial);
    while let Some((done, value, linearized_required)) = stack.pop() {
        if linearized_required == required {
            return CheckOutcome::Linearizable;
        }
        if linearized_required > deepest {
            deepest = linearized_required;
            deepest_frame = (done.clone(), value);
        }
        if seen.len() >= SEARCH_STATES_MAX {
            return CheckOutcome::Inconclusive(seen.len());
        }
        let is_done = |index: usize| done[index / 64] >> (index % 64) & 1 == 1;
        let horizon = order
            .iter()
            .filter(|&&index| !is_done(index))
            .filter_map(|&index| ops[index].complete_us)
            .min()
            .unwrap_or(u64::MAX);
        for &index in order.iter() {
            let op = ops[index];
            if op.invoke_us > horizon {
                break;
            }
            if is_done(index) {
                continue;
            }
            let maybe = op.complete_us.is_none();
            for next in successors(op.kind, value, maybe) {
                let mut next_done = done.clone();
                next_done[index / 64] |= 1 << (index % 64);
                if seen.insert((next_done.clone(), next)) {
                    let gained = usize::from(!maybe);
                    stack.push((next_done, next, linearized_required + gained));
                }
            }
        }
    }
    CheckOutcome::NotLinearizable(describe(&ops, &deepest_frame))
}

/// The register values an operation may leave, applied to `value`; empty if it cannot happen.
fn successors(kind: RegisterOpKind, value: i64, maybe: bool) -> Vec<i64> {
    match kind {
        RegisterOpKind::Read(read) => {
            if read == value {
                vec![value]
            } else {
                vec![]
            }
        }
        RegisterOpKind::Write(written) => vec![written],
        RegisterOpKind::Cas {
            expected,
            new,
            succeeded,
        } => {
            if maybe {
                // Taking effect means succeeding; not taking effect is "not linearized".
                if value == expected {
                    vec![new]
                } else {
                    vec![]
                }
            } else if succeeded {
                if value == expected {
                    vec![new]
                } else {
                    vec![]
                }
            } else if value != expected {
                vec![value]
            } else {
                vec![]
            }
        }
    }
}

fn describe(ops: &[RegisterOp], (done, value): &(Vec<u64>, i64)) -> String {
    let is_done = |index: usize| done[index / 64] >> (index % 64) & 1 == 1;
    let mut pending: Vec<&RegisterOp> = (0..ops.len())
        .filter(|&index| !is_done(index))
        .map(|index| &ops[index])
        .collect();
    pending.sort_by_key(|op| op.invoke_us);
    let shown: Vec<String> = pending
        .iter()
        .take(12)
        .map(|op| format!("{op:?}"))
        .collect();
    format!(
        "after linearizing {} operations the register holds {value}; none of the next operations fits:\n  {}",
        (0..ops.len()).filter(|&index| is_done(index)).count(),
        shown.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: u32,
        kind: RegisterOpKind,
        invoke_us: u64,
        complete_us: Option<u64>,
    ) -> RegisterOp {
        RegisterOp {
            client,
            kind,
            invoke_us,
            complete_us,
        }
    }

    use RegisterOpKind::{Cas, Read, Write};

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            op(1, Write(1), 0, Some(10)),
            op(1, Read(1), 20, Some(30)),
            op(
                1,
                Cas {
                    expected: 1,
                    new: 2,
                    succeeded: true,
                },
                40,
                Some(50),
            ),
            op(
                1,
                Cas {
                    expected: 1,
                    new: 3,
                    succeeded: false,
                },
                60,
                Some(70),
            ),
            op(1, Read(2), 80, Some(90)),
        ];
        assert_eq!(check_register(0, &history), CheckOutcome::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let history = [op(1, Write(1), 0, Some(10)), op(2, Read(0), 20, Some(30))];
        assert!(matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let history = [
            op(1, Write(1), 0, Some(100)),
            op(2, Read(1), 10, Some(20)),
            op(3, Read(0), 5, Some(15)),
        ];
        assert_eq!(check_register(0, &history), CheckOutcome::Linearizable);
    }

    #[test]
    fn a_maybe_write_may_take_effect_late_or_never() {
        let late = [
            op(1, Write(5), 0, None),
            op(2, Read(0), 10, Some(20)),
            op(2, Read(5), 30, Some(40)),
        ];
        assert_eq!(check_register(0, &late), CheckOutcome::Linearizable);
        let never = [op(1, Write(5), 0, None), op(2, Read(0), 10, Some(20))];
        assert_eq!(check_register(0, &never), CheckOutcome::Linearizable);
        // But it cannot take effect twice, nor be undone.
        let undone = [
            op(1, Write(5), 0, None),
            op(2, Read(5), 10, Some(20)),
            op(2, Read(0), 30, Some(40)),
        ];
        assert!(matches!(
            check_register(0, &undone),
            CheckOutcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn a_value_nobody_wrote_is_caught() {
        let history = [op(1, Write(1), 0, Some(10)), op(2, Read(7), 20, Some(30))];
        assert!(matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_caught() {
        let history = [
            op(
                1,
                Cas {
                    expected: 0,
                    new: 1,
                    succeeded: true,
                },
                0,
                Some(10),
            ),
            op(
                2,
                Cas {
                    expected: 0,
                    new: 2,
                    succeeded: true,
                },
                0,
                Some(10),
            ),
        ];
        assert!(matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn a_failed_cas_must_see_another_value() {
        let history = [op(
            1,
            Cas {
                expected: 0,
                new: 1,
                succeeded: false,
            },
            0,
            Some(10),
        )];
        assert!(matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let history = [
            op(1, Write(1), 0, Some(10)),
            op(1, Write(2), 20, Some(30)),
            op(2, Read(1), 40, Some(50)),
        ];
        assert!(matches!(
            check_register(0, &history),
            CheckOutcome::NotLinearizable(_)
        ));
    }
}
