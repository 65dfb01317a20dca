//! TLS for Corral's own clients (the worker, `runner exec --remote`, the
//! bench tools): what to trust and which certificate to present.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};
use crate::load;

/// How long the client's TLS handshake may take, by default.
const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// TLS settings of a client. Every field is optional; an empty table means
/// "TLS, trusting the system's certificate authorities, presenting no
/// certificate". Whether TLS is used at all follows the server's URL
/// (`https://`), which is the caller's business.
///
/// ```toml
/// ca = "/etc/corral/tls/server-ca.pem"
/// cert = "/etc/corral/tls/worker-1.pem"
/// key = "/etc/corral/tls/worker-1.key"
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM file of the certificate authorities that sign the server's
    /// certificate; only they are trusted. Unset: the system's trusted
    /// certificate authorities (as found by `rustls-native-certs`).
    pub ca: Option<PathBuf>,
    /// PEM file with the client's certificate chain, leaf first, presented
    /// to servers that ask for one. Needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of `cert`. Needs `cert`.
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// host of the URL (connecting by IP address, or through a tunnel).
    /// Also sent as SNI.
    pub server_name: Option<String>,
    /// Seconds the handshake may take (default 10).
    pub handshake_timeout_secs: Option<u64>,
}

impl TlsClientConfig {
    /// tonic's client TLS configuration for these settings. Every file is
    /// read and checked now (a CA file without certificates, a key that
    /// does not fit its certificate), naming the file, because tonic
    /// itself silently skips what it cannot parse and the mistake would
    /// only show as a failing handshake.
    pub fn tonic_config(&self) -> Result<ClientTlsConfig> {
        if self.handshake_timeout_secs == Some(0) {
            return Err(Error::config(
                "handshake_timeout_secs",
                "must be at least 1",
            ));
        }
        let mut tls = ClientTlsConfig::new().timeout(Duration::from_secs(
            self.handshake_timeout_secs
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
        ));
        tls = match &self.ca {
            Some(ca) => {
                load::certificates("server CA", ca)?;
                tls.ca_certificate(Certificate::from_pem(load::read("server CA", ca)?))
            }
            None => tls.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                load::certified_key(cert, key, &load::provider())?;
                tls = tls.identity(Identity::from_pem(
                    load::read("certificate", cert)?,
                    load::read("private key", key)?,
                ));
            }
            (Some(_), None) => {
                return Err(Error::config("key", "is required with `cert`"));
            }
            (None, Some(_)) => {
                return Err(Error::config("cert", "is required with `key`"));
            }
            (None, None) => {}
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str()).map_err(|e| {
                Error::config(
                    "server_name",
                    format!("{name:?} is not a DNS name or IP address: {e}"),
                )
            })?;
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }

    /// `endpoint` speaking TLS with these settings. Its URL should be
    /// `https://HOST:PORT`.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint> {
        let uri = endpoint.uri().to_string();
        endpoint
            .tls_config(self.tonic_config()?)
            .map_err(|source| Error::Endpoint { uri, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_and_refuses_unknown_ones() {
        let c: TlsClientConfig = toml::from_str(
            "ca = 'a'\ncert = 'c'\nkey = 'k'\nserver_name = 'corral.example'\nhandshake_timeout_secs = 5",
        )
        .unwrap();
        assert_eq!(c.server_name.as_deref(), Some("corral.example"));
        let e = toml::from_str::<TlsClientConfig>("ca_file = 'a'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca_file"), "{e}");
    }

    #[test]
    fn a_missing_file_or_half_an_identity_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let c = TlsClientConfig {
            ca: Some(missing.clone()),
            ..Default::default()
        };
        let e = c.tonic_config().unwrap_err().to_string();
        assert!(e.contains("nope.pem") && e.contains("server CA"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let c = TlsClientConfig {
            ca: Some(empty),
            ..Default::default()
        };
        let e = c.tonic_config().unwrap_err().to_string();
        assert!(e.contains("empty.pem") && e.contains("CERTIFICATE"), "{e}");

        let c = TlsClientConfig {
            cert: Some(missing),
            ..Default::default()
        };
        let e = c.tonic_config().unwrap_err().to_string();
        assert!(e.contains("`key`"), "{e}");
    }
}
