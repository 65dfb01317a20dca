//! The name of a tenant.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::error::Error;

/// The tenant of the zero-config policy ([`crate::Policy::local`]).
pub const LOCAL_TENANT: &str = "local";

/// A tenant's name, as the policy's `[tenants.NAME]` key spells it. Cheap to
/// clone (one reference count): the services put it in every request
/// context, and caches, operations and quotas are keyed by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Checks a tenant name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, so
    /// that it is safe in file names, metric labels and log lines. `*` is
    /// refused: in a grant it means "every tenant".
    pub fn new(name: &str) -> Result<TenantId, Error> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
            return Err(Error::BadTenantName {
                name: name.to_string(),
            });
        }
        Ok(TenantId(Arc::from(name)))
    }

    /// The tenant of the zero-config policy.
    pub fn local() -> TenantId {
        TenantId(Arc::from(LOCAL_TENANT))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(TenantId::new("team-a.1_x").unwrap().as_str(), "team-a.1_x");
        for bad in ["", "*", "a/b", "a b", "é", &"x".repeat(65)] {
            let err = TenantId::new(bad).unwrap_err().to_string();
            assert!(err.contains("tenant name"), "{bad}: {err}");
        }
        assert_eq!(TenantId::local().to_string(), "local");
    }
}
