//! Checkers for histories recorded against a real cluster.
//!
//! - [`linearizable`]: a Wing–Gong (WGL) linearizability checker for one register, with
//!   operations of unknown outcome ("maybe": SQLSTATE 40003, a broken connection, a timeout).

pub mod linearizable;

pub use linearizable::{check_register, CheckOutcome, RegisterOp, RegisterOpKind};
