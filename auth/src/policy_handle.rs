//! The policy in force, swapped whole when its file is reloaded (on SIGHUP,
//! say), each reload audited.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::audit::{AuditEvent, AuditKind, AuditSink};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::policy::Policy;

/// Holds the current [`Policy`]. Readers take an `Arc` and keep a
/// consistent policy for the whole call, even if a reload happens
/// meanwhile.
#[derive(Debug)]
pub struct PolicyHandle {
    current: RwLock<Arc<Policy>>,
    file: Option<PathBuf>,
}

impl PolicyHandle {
    /// A handle on `policy`; `file` is where [`PolicyHandle::reload`]
    /// reads it again (`None` for an inline or zero-config policy).
    pub fn new(policy: Policy, file: Option<PathBuf>) -> Self {
        PolicyHandle {
            current: RwLock::new(Arc::new(policy)),
            file,
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The policy file, if the policy came from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the policy file again. A policy that loads replaces the
    /// current one; one that does not leaves it in force. Either way one
    /// `policy_reload` event is audited, saying which. The caller then
    /// passes the new policy to [`crate::Quotas::update`].
    pub fn reload(&self, audit: &dyn AuditSink, clock: &dyn Clock) -> Result<Arc<Policy>> {
        let Some(path) = &self.file else {
            return Err(Error::Setting {
                field: "auth.policy_file".to_string(),
                reason: "not set: an inline policy is reloaded with the server".to_string(),
            });
        };
        let event = AuditEvent::new(AuditKind::PolicyReload, clock.now())
            .field("file", path.display().to_string());
        match Policy::load(path) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = policy.clone();
                audit
                    .record(&event.detail(format!("loaded: {} tenants", policy.tenants().count())));
                Ok(policy)
            }
            Err(e) => {
                audit.record(&event.detail(format!("refused, the previous policy stays: {e}")));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemoryAuditLog;
    use crate::clock::ManualClock;
    use crate::permission::Permission;
    use crate::principal::Principal;

    #[test]
    fn reload_swaps_a_good_policy_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let grant = |perm: &str| {
            format!(
                "[tenants.a]\ninstances = [\"a\"]\n[[grants]]\nprincipals = [\"alice\"]\ntenant = \"a\"\npermissions = [\"{perm}\"]\n"
            )
        };
        std::fs::write(&path, grant("cas.read")).unwrap();
        let handle = PolicyHandle::new(Policy::load(&path).unwrap(), Some(path.clone()));
        let alice = Principal::person("alice", "t");
        let held = handle.current();
        assert!(held.authorize(&alice, Permission::CasRead, "a").is_ok());
        let audit = MemoryAuditLog::new();
        let clock = ManualClock::at_unix(5);
        std::fs::write(&path, grant("execute")).unwrap();
        handle.reload(&audit, &clock).unwrap();
        assert!(handle
            .current()
            .authorize(&alice, Permission::Execute, "a")
            .is_ok());
        assert!(handle
            .current()
            .authorize(&alice, Permission::CasRead, "a")
            .is_err());
        // A call that took the policy before the reload keeps it.
        assert!(held.authorize(&alice, Permission::CasRead, "a").is_ok());
        std::fs::write(
            &path,
            "[tenants.a]\ninstances = [\"x\"]\n[tenants.b]\ninstances = [\"x/y\"]\n",
        )
        .unwrap();
        let err = handle.reload(&audit, &clock).unwrap_err().to_string();
        assert!(err.contains("`a`") && err.contains("`b`"), "{err}");
        assert!(handle
            .current()
            .authorize(&alice, Permission::Execute, "a")
            .is_ok());
        let events = audit.events();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.event == AuditKind::PolicyReload));
        assert!(events[0].detail.as_deref().unwrap().starts_with("loaded"));
        assert!(events[1]
            .detail
            .as_deref()
            .unwrap()
            .contains("previous policy stays"));
        let inline = PolicyHandle::new(Policy::local(), None);
        assert!(inline.reload(&audit, &clock).is_err());
    }
}
