//! The `[…tls]` table of a listener, as TOML.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How long a client may take to complete the TLS handshake, by default.
const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// How many handshakes may be under way at once, by default.
const DEFAULT_MAX_PENDING_HANDSHAKES: u32 = 1024;

/// TLS settings of one listener. Every field is optional; with neither
/// `cert` nor `key` the table turns nothing on (see [`is_enabled`]), so the
/// caller decides whether plaintext is acceptable where it listens.
///
/// Relative paths are taken as they are, i.e. relative to the process's
/// working directory; the caller resolves them against the configuration
/// file's directory if it wants that.
///
/// ```toml
/// cert = "/etc/corral/tls/server.pem"       # chain, leaf first
/// key = "/etc/corral/tls/server.key"
/// client_ca = "/etc/corral/tls/clients-ca.pem"
/// client_auth = "required"                  # the default once client_ca is set
/// crl = ["/etc/corral/tls/clients.crl"]     # or a single path
/// ```
///
/// [`is_enabled`]: TlsServerConfig::is_enabled
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM file with the server's certificate chain, leaf first. Read again
    /// when it changes (checked at most once a second), so a renewed
    /// certificate is served without a restart; a new file that does not
    /// load (or does not fit `key`) keeps the previous certificate and logs
    /// a warning. Required for TLS.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    /// Reloaded together with `cert`; replace both (the key first, or both
    /// at once by renaming) when rotating. Required for TLS.
    pub key: Option<PathBuf>,
    /// PEM file of the certificate authorities that sign client
    /// certificates. Unset: clients are not asked for a certificate.
    /// Read once at start.
    pub client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by `client_ca`:
    /// `none`, `optional` (a certificate, if presented, must verify; a
    /// client without one is let through for another credential to
    /// identify), or `required` (the handshake fails without one). Default:
    /// `required` when `client_ca` is set, `none` otherwise.
    pub client_auth: Option<ClientAuth>,
    /// Certificate revocation lists (PEM, possibly several blocks in one
    /// file, or DER), as one path or a list of paths. A client certificate
    /// they revoke fails the handshake. Reloaded when any file changes; a
    /// set that no longer loads keeps the previous lists. Needs `client_ca`.
    #[serde(default, deserialize_with = "one_or_many_paths")]
    pub crl: Vec<PathBuf>,
    /// Which certificates of a client's chain the CRLs are checked for:
    /// `chain` (default: the client certificate and every intermediate, so
    /// each issuer's CRL must be given) or `end_entity` (the client
    /// certificate only).
    pub crl_scope: Option<CrlScope>,
    /// What to do with a certificate none of the CRLs covers (its issuer has
    /// no CRL among `crl`): `deny` (default) or `allow`.
    pub crl_unknown_status: Option<UnknownStatus>,
    /// Seconds a client may take to complete the handshake before its
    /// connection is closed (default 10). Handshakes run concurrently, so a
    /// slow client only holds its own connection.
    pub handshake_timeout_secs: Option<u64>,
    /// How many handshakes may be under way at once (default 1024). Beyond
    /// it no connection is accepted until one finishes; the kernel's backlog
    /// holds the rest. Bounds what a flood of silent connections can take.
    pub max_pending_handshakes: Option<u32>,
}

/// Whether a listener asks clients for a certificate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    None,
    /// Clients are asked; one that presents a certificate must present a
    /// valid one, one that presents none is let through.
    Optional,
    /// Clients must present a valid certificate.
    Required,
}

/// How much of a client's chain the CRLs are checked for.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CrlScope {
    /// Every certificate of the chain except the trust anchor.
    #[default]
    Chain,
    /// The client's own certificate only.
    EndEntity,
}

/// What to do with a certificate whose revocation status no CRL gives.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownStatus {
    /// Fail the handshake.
    #[default]
    Deny,
    /// Accept the certificate.
    Allow,
}

impl TlsServerConfig {
    /// Whether the table asks for TLS at all (`cert` or `key` set).
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// The client authentication in effect, with its default applied.
    pub fn client_auth(&self) -> ClientAuth {
        match (self.client_auth, &self.client_ca) {
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientAuth::Required,
            (None, None) => ClientAuth::None,
        }
    }

    /// The handshake timeout in effect.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.handshake_timeout_secs
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
        )
    }

    /// The bound on concurrent handshakes in effect.
    pub fn max_pending_handshakes(&self) -> usize {
        let n = self
            .max_pending_handshakes
            .unwrap_or(DEFAULT_MAX_PENDING_HANDSHAKES);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Checks that the settings make sense together, without reading any
    /// file; returns the certificate and key paths.
    pub(crate) fn check(&self) -> Result<(&PathBuf, &PathBuf)> {
        let cert = self
            .cert
            .as_ref()
            .ok_or_else(|| Error::config("cert", "is required for TLS (with `key`)"))?;
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::config("key", "is required for TLS (with `cert`)"))?;
        match (self.client_auth(), &self.client_ca) {
            (ClientAuth::None, Some(_)) => {
                return Err(Error::config(
                    "client_auth",
                    "is `none` but `client_ca` is set: remove `client_ca` or choose `optional` or `required`",
                ))
            }
            (ClientAuth::Optional | ClientAuth::Required, None) => {
                return Err(Error::config(
                    "client_auth",
                    "`optional` and `required` need `client_ca`, the CA that signs client certificates",
                ))
            }
            _ => {}
        }
        if !self.crl.is_empty() && self.client_ca.is_none() {
            return Err(Error::config(
                "crl",
                "revocation lists apply to client certificates: set `client_ca` too",
            ));
        }
        if self.handshake_timeout_secs == Some(0) {
            return Err(Error::config(
                "handshake_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.max_pending_handshakes == Some(0) {
            return Err(Error::config(
                "max_pending_handshakes",
                "must be at least 1",
            ));
        }
        Ok((cert, key))
    }
}

/// `crl = "a.pem"` or `crl = ["a.pem", "b.der"]`.
fn one_or_many_paths<'de, D>(deserializer: D) -> Result<Vec<PathBuf>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Paths;
    impl<'de> serde::de::Visitor<'de> for Paths {
        type Value = Vec<PathBuf>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a path or a list of paths")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![PathBuf::from(v)])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut paths = Vec::new();
            while let Some(p) = seq.next_element::<PathBuf>()? {
                paths.push(p);
            }
            Ok(paths)
        }
    }
    deserializer.deserialize_any(Paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TlsServerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_table_turns_nothing_on() {
        let c = parse("").unwrap();
        assert!(!c.is_enabled());
        assert_eq!(c.client_auth(), ClientAuth::None);
        assert_eq!(c.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.max_pending_handshakes(), 1024);
    }

    #[test]
    fn client_auth_defaults_to_required_once_a_ca_is_given() {
        let c = parse("cert = 'c'\nkey = 'k'\nclient_ca = 'ca'").unwrap();
        assert_eq!(c.client_auth(), ClientAuth::Required);
        let c = parse("cert = 'c'\nkey = 'k'\nclient_ca = 'ca'\nclient_auth = 'optional'").unwrap();
        assert_eq!(c.client_auth(), ClientAuth::Optional);
        assert!(c.check().is_ok());
    }

    #[test]
    fn crl_is_one_path_or_a_list() {
        let c = parse("crl = '/a.crl'").unwrap();
        assert_eq!(c.crl, vec![PathBuf::from("/a.crl")]);
        let c = parse("crl = ['/a.crl', '/b.der']").unwrap();
        assert_eq!(
            c.crl,
            vec![PathBuf::from("/a.crl"), PathBuf::from("/b.der")]
        );
        let e = parse("crl = 3").unwrap_err().to_string();
        assert!(e.contains("a path or a list of paths"), "{e}");
        let c = parse("crl_scope = 'end_entity'\ncrl_unknown_status = 'allow'").unwrap();
        assert_eq!(c.crl_scope, Some(CrlScope::EndEntity));
        assert_eq!(c.crl_unknown_status, Some(UnknownStatus::Allow));
    }

    #[test]
    fn unknown_fields_and_values_are_refused_by_name() {
        let e = parse("certificate = 'x'").unwrap_err().to_string();
        assert!(e.contains("certificate"), "{e}");
        let e = parse("client_auth = 'sometimes'").unwrap_err().to_string();
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn contradictions_name_the_setting() {
        let cases = [
            ("key = 'k'", "`cert`"),
            ("cert = 'c'", "`key`"),
            (
                "cert = 'c'\nkey = 'k'\nclient_auth = 'required'",
                "`client_auth`",
            ),
            (
                "cert = 'c'\nkey = 'k'\nclient_ca = 'ca'\nclient_auth = 'none'",
                "`client_auth`",
            ),
            ("cert = 'c'\nkey = 'k'\ncrl = 'x.crl'", "`crl`"),
            (
                "cert = 'c'\nkey = 'k'\nhandshake_timeout_secs = 0",
                "`handshake_timeout_secs`",
            ),
            (
                "cert = 'c'\nkey = 'k'\nmax_pending_handshakes = 0",
                "`max_pending_handshakes`",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap().check().unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
