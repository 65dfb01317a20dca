//! Who is calling: the identity authentication proves from the connection.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of the zero-config loopback user ([`PrincipalKind::Local`]).
pub const LOCAL_PRINCIPAL: &str = "local";
/// The name of the farm's own code ([`PrincipalKind::Farm`]).
pub const FARM_PRINCIPAL: &str = "farm";

/// The kind of a principal. Kinds never mix: a worker is never a person, so a
/// grant for people can never make a worker able to write the action cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A build client: a person, a CI job, a tool. Gets what the policy's
    /// grants give it.
    Person,
    /// A worker, authenticated on the workers' listener. Gets what the
    /// policy's `workers` entries give it, never `ac.write`.
    Worker,
    /// The one user of a farm that has no policy configured: every loopback
    /// caller of `corral up` or a zero-config `corral server`.
    Local,
    /// The farm's own code in this process (the scheduler writing an
    /// executed result). Never built from anything a client sends.
    Farm,
}

impl PrincipalKind {
    /// The lower-case name used in logs, audit lines and [`Principal`]'s
    /// display.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Person => "person",
            PrincipalKind::Worker => "worker",
            PrincipalKind::Local => "local",
            PrincipalKind::Farm => "farm",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated identity: its name (what policy patterns match), its
/// kind, and the id of the credential that proved it (for the audit log and
/// for revocation: a token entry's id, a certificate's fingerprint, a uid).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    name: String,
    kind: PrincipalKind,
    credential_id: Option<String>,
}

impl Principal {
    /// A principal of any kind. Authenticators and tests build them; a
    /// service never builds one from a request body.
    pub fn new(
        kind: PrincipalKind,
        name: impl Into<String>,
        credential_id: Option<String>,
    ) -> Self {
        Principal {
            name: name.into(),
            kind,
            credential_id,
        }
    }

    /// A person (build client) proved by the credential `credential_id`.
    pub fn person(name: impl Into<String>, credential_id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::Person, name, Some(credential_id.into()))
    }

    /// A worker proved by the credential `credential_id`.
    pub fn worker(name: impl Into<String>, credential_id: impl Into<String>) -> Self {
        Self::new(PrincipalKind::Worker, name, Some(credential_id.into()))
    }

    /// The zero-config loopback user.
    pub fn local() -> Self {
        Self::new(
            PrincipalKind::Local,
            LOCAL_PRINCIPAL,
            Some("loopback".to_string()),
        )
    }

    /// The farm's own code.
    pub fn farm() -> Self {
        Self::new(PrincipalKind::Farm, FARM_PRINCIPAL, None)
    }

    /// The name policy patterns match against.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The id of the credential that proved this principal, if any.
    pub fn credential_id(&self) -> Option<&str> {
        self.credential_id.as_deref()
    }
}

/// `kind:name`, e.g. `person:alice@example.com`, `worker:uid:1001`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_display() {
        let p = Principal::person("alice", "jwt:k1");
        assert_eq!(p.to_string(), "person:alice");
        assert_eq!(p.credential_id(), Some("jwt:k1"));
        assert_eq!(p.kind(), PrincipalKind::Person);
        let w = Principal::worker("uid:1001", "uid:1001");
        assert_eq!(w.to_string(), "worker:uid:1001");
        assert_eq!(Principal::local().to_string(), "local:local");
        assert_eq!(Principal::farm().credential_id(), None);
        assert_eq!(Principal::farm().kind().as_str(), "farm");
    }
}
