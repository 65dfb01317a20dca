//! `[auth.audit]`: where the audit log goes.

use std::path::PathBuf;

use serde::Deserialize;

/// The default audit log file, relative to the data directory.
pub const DEFAULT_AUDIT_PATH: &str = "audit.log";

/// The `[auth.audit]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write the audit log. Default true.
    pub enabled: Option<bool>,
    /// The JSON-lines file events are appended to (created with mode 0600).
    /// A relative path is under the data directory. Default `audit.log`.
    pub path: Option<PathBuf>,
}

impl AuditConfig {
    /// Whether the log is written.
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The file, as configured (relative paths not yet resolved).
    pub fn path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_PATH))
    }
}
