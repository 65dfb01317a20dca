//! Why an authorization was refused.

use std::fmt;

use crate::permission::Permission;
use crate::principal::{Principal, PrincipalKind};
use crate::tenant_id::TenantId;

/// Why a permission was not held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The instance name is under no tenant's prefix.
    NoTenant,
    /// No grant (or worker entry) gives the principal the permission there.
    NotGranted,
    /// The worker's pools are not among those the tenant allows.
    PoolNotAllowed,
    /// Principals of this kind never get this permission under this
    /// policy (a person asking for `worker`, the local user once a policy
    /// is configured).
    WrongKind(PrincipalKind),
}

/// A refused authorization. Its display is the message of the
/// PERMISSION_DENIED status: it names the permission and the instance, and
/// never another tenant's name (the `tenant` field is for the audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The permission asked for.
    pub permission: Permission,
    /// The instance name, or `None` for a farm-wide permission.
    pub instance: Option<String>,
    /// The tenant owning the instance, when one does.
    pub tenant: Option<TenantId>,
    /// Who asked.
    pub principal: Principal,
    /// Why it was refused.
    pub reason: DenyReason,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "permission `{}` denied ", self.permission)?;
        match &self.instance {
            Some(instance) => write!(f, "on instance {instance:?}")?,
            None => f.write_str("on the farm")?,
        }
        write!(f, " to {}: ", self.principal)?;
        match self.reason {
            DenyReason::NoTenant => f.write_str("the instance name belongs to no tenant"),
            DenyReason::NotGranted => f.write_str("no grant gives it"),
            DenyReason::PoolNotAllowed => {
                f.write_str("the tenant does not let this worker's pools run its actions")
            }
            DenyReason::WrongKind(kind) => write!(f, "a {kind} principal never holds it here"),
        }
    }
}

impl std::error::Error for Denied {}
