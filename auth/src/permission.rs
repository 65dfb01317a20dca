//! What a principal may do, and the class of call a rate quota counts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// One permission. The names (`cas.read`, …) are what the policy file,
/// error messages and audit lines use. Each is also a class of call for
/// rate quotas: a call is counted under the permission it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// FindMissingBlobs, BatchReadBlobs, ByteStream Read, GetTree.
    CasRead,
    /// BatchUpdateBlobs, ByteStream Write.
    CasWrite,
    /// GetActionResult (and the cache lookup of Execute).
    AcRead,
    /// UpdateActionResult: a client writing a result the farm did not
    /// produce. Never held by a worker.
    AcWrite,
    /// Execute.
    Execute,
    /// WaitExecution, GetOperation, ListOperations of the tenant's
    /// operations.
    OperationsRead,
    /// CancelOperation, DeleteOperation.
    OperationsCancel,
    /// Farm administration: drain and kill workers, read the audit log.
    Admin,
    /// Speak the worker protocol. Only workers hold it.
    Worker,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 9] = [
        Permission::CasRead,
        Permission::CasWrite,
        Permission::AcRead,
        Permission::AcWrite,
        Permission::Execute,
        Permission::OperationsRead,
        Permission::OperationsCancel,
        Permission::Admin,
        Permission::Worker,
    ];

    /// The name, e.g. `cas.read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CasRead => "cas.read",
            Permission::CasWrite => "cas.write",
            Permission::AcRead => "ac.read",
            Permission::AcWrite => "ac.write",
            Permission::Execute => "execute",
            Permission::OperationsRead => "operations.read",
            Permission::OperationsCancel => "operations.cancel",
            Permission::Admin => "admin",
            Permission::Worker => "worker",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownPermission {
                name: s.to_string(),
            })
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of permissions (a bit set: cheap to copy and to test).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u16);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission in `perms`.
    pub fn of(perms: &[Permission]) -> PermissionSet {
        perms.iter().fold(Self::EMPTY, |set, p| set.with(*p))
    }

    /// Every permission but `worker`: what the zero-config local user holds.
    pub fn all_but_worker() -> PermissionSet {
        let mut set = Self::of(&Permission::ALL);
        set.0 &= !Self::bit(Permission::Worker);
        set
    }

    fn bit(p: Permission) -> u16 {
        1 << (p as u16)
    }

    /// This set plus `p`.
    #[must_use]
    pub fn with(self, p: Permission) -> PermissionSet {
        PermissionSet(self.0 | Self::bit(p))
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & Self::bit(p) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in the set, in [`Permission::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names: Vec<String> = Permission::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "cas.read",
                "cas.write",
                "ac.read",
                "ac.write",
                "execute",
                "operations.read",
                "operations.cancel",
                "admin",
                "worker"
            ]
        );
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        let err = "cas.delete".parse::<Permission>().unwrap_err().to_string();
        assert!(
            err.contains("cas.delete") && err.contains("ac.write"),
            "{err}"
        );
    }

    #[test]
    fn serde_uses_the_names() {
        #[derive(Deserialize)]
        struct T {
            p: Vec<Permission>,
        }
        let t: T = toml::from_str(r#"p = ["ac.write", "operations.cancel"]"#).unwrap();
        assert_eq!(t.p, [Permission::AcWrite, Permission::OperationsCancel]);
        assert!(toml::from_str::<T>(r#"p = ["root"]"#).is_err());
        assert_eq!(
            serde_json::to_string(&Permission::CasRead).unwrap(),
            "\"cas.read\""
        );
    }

    #[test]
    fn sets() {
        let set = PermissionSet::of(&[Permission::CasRead, Permission::Execute]);
        assert!(set.contains(Permission::CasRead) && set.contains(Permission::Execute));
        assert!(!set.contains(Permission::AcWrite));
        let local = PermissionSet::all_but_worker();
        assert!(!local.contains(Permission::Worker));
        assert_eq!(local.iter().count(), 8);
        assert!(PermissionSet::EMPTY.is_empty());
        assert_eq!(
            set.union(PermissionSet::of(&[Permission::Admin]))
                .iter()
                .count(),
            3
        );
    }
}
