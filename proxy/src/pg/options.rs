//! [`ServerOptions`] from the node's configuration, and the users file.
//!
//! The users file is TOML, one `name = "password"` line per user (keep it mode 0600: the
//! passwords are in clear, because SCRAM derives its salted keys from them at startup). With
//! at least one user, every client must log in with SCRAM-SHA-256; without the file, any user
//! name is trusted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{ServeError, ServerOptions, TlsFiles, User};
use crate::config::SqlServerConfig;

/// Most users a users file may list.
pub const USERS_MAX: usize = 1_000;

impl ServerOptions {
    /// The wire server's options for a node: defaults, overridden by what is configured.
    pub fn from_config(config: &SqlServerConfig) -> Result<ServerOptions, ServeError> {
        let mut options = ServerOptions::default();
        if let Some(max) = config.max_connections {
            options.connections_max = max;
        }
        if let Some(path) = &config.users_file {
            options.users = load_users_file(path)?;
        }
        if let Some((certificate_path, private_key_path)) = &config.tls {
            options.tls = Some(TlsFiles {
                certificate_path: certificate_path.clone(),
                private_key_path: private_key_path.clone(),
            });
        }
        options.idle_session_timeout = config.idle_session_timeout_ms.map(Duration::from_millis);
        Ok(options)
    }
}

/// Reads a users file (see the module docs).
pub fn load_users_file(path: &Path) -> Result<Vec<User>, ServeError> {
    let invalid = |reason: String| ServeError::UsersFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
        invalid(format!(
            "{e}; write one `name = \"password\"` line per user"
        ))
    })?;
    if table.is_empty() {
        return Err(invalid(
            "it lists no user; remove --users-file to trust every user name".into(),
        ));
    }
    if table.len() > USERS_MAX {
        return Err(invalid(format!(
            "it lists {} users; at most {USERS_MAX} are supported",
            table.len()
        )));
    }
    if let Some((name, _)) = table
        .iter()
        .find(|(name, password)| name.is_empty() || password.is_empty())
    {
        return Err(invalid(format!(
            "user {name:?} has an empty name or password"
        )));
    }
    Ok(table
        .into_iter()
        .map(|(name, password)| User { name, password })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_lists_names_and_passwords_and_refuses_nonsense() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("users.toml");
        std::fs::write(&path, "alice = \"s3cret\"\n\"bob smith\" = \"pw\"\n").expect("write");
        let users = load_users_file(&path).expect("valid file");
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["alice", "bob smith"]);
        assert_eq!(users[0].password, "s3cret");
        for bad in ["", "alice = 1", "alice = \"\"", "not toml"] {
            std::fs::write(&path, bad).expect("write");
            assert!(load_users_file(&path).is_err(), "{bad:?} was accepted");
        }
        assert!(load_users_file(&directory.path().join("missing")).is_err());
    }
}
