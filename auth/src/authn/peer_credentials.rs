//! UNIX peer credentials: the kernel says which uid is on the other end of
//! the socket, and the uid names the principal.

use std::collections::HashMap;

use crate::authenticator::{AuthError, Authenticator};
use crate::config::PeerCredentialsConfig;
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::principal::{Principal, PrincipalKind};

/// Authenticates by the peer's uid: named by `users`, else `uid:N`.
#[derive(Debug)]
pub struct PeerCredentialsAuthenticator {
    names: HashMap<u32, String>,
    kind: PrincipalKind,
}

impl PeerCredentialsAuthenticator {
    /// Builds it; a key of `users` that is not a uid is an error naming
    /// `field`.
    pub fn new(config: &PeerCredentialsConfig, kind: PrincipalKind, field: &str) -> Result<Self> {
        let mut names = HashMap::new();
        for (uid, name) in &config.users {
            let parsed: u32 = uid.parse().map_err(|_| Error::Setting {
                field: format!("{field}.users"),
                reason: format!("key {uid:?} is not a numeric uid"),
            })?;
            if name.is_empty() {
                return Err(Error::Setting {
                    field: format!("{field}.users.{uid}"),
                    reason: "empty name".to_string(),
                });
            }
            names.insert(parsed, name.clone());
        }
        Ok(PeerCredentialsAuthenticator { names, kind })
    }
}

impl Authenticator for PeerCredentialsAuthenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let uid = credentials
            .peer_uid
            .ok_or_else(|| AuthError::missing("UNIX peer credentials"))?;
        let name = self
            .names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| format!("uid:{uid}"));
        Ok(Principal::new(self.kind, name, Some(format!("uid:{uid}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_names_the_principal() {
        let config: PeerCredentialsConfig =
            toml::from_str("users = { \"1001\" = \"builder-1\" }").unwrap();
        let a = PeerCredentialsAuthenticator::new(&config, PrincipalKind::Worker, "t").unwrap();
        let mut c = Credentials {
            peer_uid: Some(1001),
            unix_socket: true,
            ..Credentials::default()
        };
        let p = a.authenticate(&c).unwrap();
        assert_eq!(p.to_string(), "worker:builder-1");
        assert_eq!(p.credential_id(), Some("uid:1001"));
        c.peer_uid = Some(7);
        assert_eq!(a.authenticate(&c).unwrap().name(), "uid:7");
        c.peer_uid = None;
        assert!(matches!(a.authenticate(&c), Err(AuthError::Missing { .. })));
        let bad: PeerCredentialsConfig = toml::from_str("users = { \"bob\" = \"b\" }").unwrap();
        let err = PeerCredentialsAuthenticator::new(&bad, PrincipalKind::Worker, "auth.x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.x.users") && err.contains("bob"), "{err}");
    }
}
