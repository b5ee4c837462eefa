//! PostgreSQL cancel requests (psql's Ctrl-C, JDBC `Statement.cancel()`, tokio-postgres
//! `CancelToken`): a new connection sends the process id and secret key the session got in
//! its BackendKeyData, and the server interrupts that session's running statement.
//!
//! What a cancel can stop — never a wrong answer (DESIGN "Rules that keep it correct"):
//! - an autocommit **read** (local replica reader, or forwarded to the master): interrupted,
//!   the client gets 57014 and the session stays usable;
//! - everything else (writes, statements inside a transaction, catalog questions): the
//!   cancel is a no-op, which PostgreSQL allows. A write's client always gets its real
//!   outcome, so a proposed write is never reported as canceled.
//!
//! pgwire's own cancel (a `ConnectionHandle` in the session extensions, which makes it drop
//! the statement's future) is never installed: only the reads named above are ever stopped.
//!
//! Keys: pgwire's generator gives each session a counter pid and a random secret (the
//! process's CSPRNG, `rand`). The [`CancelRegistry`] holds one entry per live, authenticated
//! session (bounded by `--max-connections`), removed when the connection ends. A wrong key is
//! ignored silently. Cancel connections are counted like any other connection and closed as
//! soon as the request is handled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use paxsql_replicator::sqlite::ReadCancel;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;

use super::errors::PgError;

/// SQLite forgets an interrupt that lands before a statement's first step; a cancel repeats
/// its interrupt this many times, this far apart, while the read is still running.
pub const INTERRUPT_REPEATS: u32 = 10;
pub const INTERRUPT_REPEAT_INTERVAL: Duration = Duration::from_millis(50);

/// PostgreSQL's answer to a canceled statement.
pub fn canceled_error() -> PgError {
    PgError::new("57014", "canceling statement due to user request")
}

/// One session's cancel switch: the cancelable read it runs now, if any.
#[derive(Debug, Default)]
pub struct SessionCancel {
    running: Mutex<Option<ReadCancel>>,
}

impl SessionCancel {
    /// Makes a new read the one a cancel request stops, until the returned guard drops. A
    /// fresh switch per read: a cancel that arrives between statements stops nothing later.
    pub fn start_read(self: &Arc<Self>) -> RunningRead {
        let cancel = ReadCancel::new();
        *self.running.lock().expect("session cancel lock") = Some(cancel.clone());
        RunningRead {
            session: self.clone(),
            cancel,
        }
    }

    /// Cancels the running read, if any, repeating the interrupt while it still runs.
    pub async fn cancel(&self) {
        let running = self.running.lock().expect("session cancel lock").clone();
        let Some(read) = running else {
            return;
        };
        read.cancel();
        for _ in 0..INTERRUPT_REPEATS {
            tokio::time::sleep(INTERRUPT_REPEAT_INTERVAL).await;
            if !read.interrupt_if_running() {
                break;
            }
        }
    }
}

/// A read a cancel request may stop; it stops being the session's running read on drop.
pub struct RunningRead {
    session: Arc<SessionCancel>,
    cancel: ReadCancel,
}

impl RunningRead {
    /// The switch to hand to the backend.
    pub fn switch(&self) -> ReadCancel {
        self.cancel.clone()
    }

    pub fn is_canceled(&self) -> bool {
        self.cancel.is_canceled()
    }
}

impl Drop for RunningRead {
    fn drop(&mut self) {
        *self.session.running.lock().expect("session cancel lock") = None;
    }
}

struct Registered {
    secret_key: SecretKey,
    session: Arc<SessionCancel>,
}

/// Live sessions by process id, for cancel requests. Bounded: one entry per admitted session.
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, Registered>>,
    sessions_max: usize,
}

impl CancelRegistry {
    /// `sessions_max` is the server's connection limit: more sessions are never admitted.
    pub fn new(sessions_max: usize) -> Self {
        CancelRegistry {
            sessions: Mutex::new(HashMap::new()),
            sessions_max,
        }
    }

    /// The session a cancel request names, if its key matches.
    pub fn find(&self, pid: i32, secret_key: &SecretKey) -> Option<Arc<SessionCancel>> {
        let sessions = self.sessions.lock().expect("cancel registry lock");
        let registered = sessions.get(&pid)?;
        registered
            .secret_key
            .eq_value(secret_key)
            .then(|| registered.session.clone())
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("cancel registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, pid: i32, secret_key: SecretKey, session: Arc<SessionCancel>) -> bool {
        let mut sessions = self.sessions.lock().expect("cancel registry lock");
        if sessions.len() >= self.sessions_max || sessions.contains_key(&pid) {
            return false;
        }
        sessions.insert(
            pid,
            Registered {
                secret_key,
                session,
            },
        );
        true
    }

    fn remove(&self, pid: i32) {
        self.sessions
            .lock()
            .expect("cancel registry lock")
            .remove(&pid);
    }
}

/// One connection's entry in the registry: made once authentication succeeded, removed when
/// the connection ends (explicitly, and on drop as a safety net).
pub struct CancelRegistration {
    registry: Arc<CancelRegistry>,
    session: Arc<SessionCancel>,
    pid: Mutex<Option<i32>>,
}

impl CancelRegistration {
    pub fn new(registry: Arc<CancelRegistry>, session: Arc<SessionCancel>) -> Self {
        CancelRegistration {
            registry,
            session,
            pid: Mutex::new(None),
        }
    }

    /// Registers the session under the key sent in its BackendKeyData (once).
    pub fn register(&self, pid: i32, secret_key: SecretKey) {
        let mut registered = self.pid.lock().expect("registration lock");
        if registered.is_some() {
            return;
        }
        if self.registry.insert(pid, secret_key, self.session.clone()) {
            *registered = Some(pid);
        } else {
            tracing::warn!(
                pid,
                "cancel requests for this session are not possible (registry full or pid reused)"
            );
        }
    }

    pub fn unregister(&self) {
        if let Some(pid) = self.pid.lock().expect("registration lock").take() {
            self.registry.remove(pid);
        }
    }
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// pgwire's handler for a CancelRequest connection.
pub struct CancelGate {
    pub registry: Arc<CancelRegistry>,
}

#[async_trait]
impl CancelHandler for CancelGate {
    async fn on_cancel_request(&self, request: CancelRequest) {
        match self.registry.find(request.pid, &request.secret_key) {
            Some(session) => session.cancel().await,
            // As PostgreSQL: no answer either way, so a key cannot be probed.
            None => tracing::debug!(
                pid = request.pid,
                "ignoring a cancel request with an unknown key"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_key_or_pid_finds_nothing_and_entries_leave_on_unregister() {
        let registry = Arc::new(CancelRegistry::new(2));
        let session = Arc::new(SessionCancel::default());
        let registration = CancelRegistration::new(registry.clone(), session.clone());
        registration.register(100_000, SecretKey::I32(42));
        assert!(registry.find(100_000, &SecretKey::I32(42)).is_some());
        assert!(registry.find(100_000, &SecretKey::I32(43)).is_none());
        assert!(registry.find(100_001, &SecretKey::I32(42)).is_none());
        registration.unregister();
        assert!(registry.is_empty());
        registration.register(100_002, SecretKey::I32(7));
        drop(registration);
        assert!(
            registry.is_empty(),
            "dropping a registration removes its entry"
        );
    }

    #[test]
    fn the_registry_never_holds_more_than_its_bound() {
        let registry = Arc::new(CancelRegistry::new(2));
        let registrations: Vec<_> = (0..3)
            .map(|pid| {
                let registration =
                    CancelRegistration::new(registry.clone(), Arc::new(SessionCancel::default()));
                registration.register(pid, SecretKey::I32(pid));
                registration
            })
            .collect();
        assert_eq!(registry.len(), 2);
        drop(registrations);
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_cancel_stops_only_the_read_running_at_that_moment() {
        let session = Arc::new(SessionCancel::default());
        session.cancel().await;
        let first = session.start_read();
        assert!(
            !first.is_canceled(),
            "an earlier cancel does not reach a later read"
        );
        session.cancel().await;
        assert!(first.is_canceled());
        drop(first);
        let second = session.start_read();
        assert!(!second.is_canceled());
    }
}
