//! How every Corral client (the worker's scheduler session and CAS
//! traffic, `corral runner exec --remote`, the bench tools) says which
//! certificate authority it trusts, which certificate it presents and
//! which token it sends, and the one place where that is applied.
//!
//! [`ClientOptions`] is what the user wrote (flags or a configuration
//! table); [`ClientOptions::connector`] reads and checks every file once
//! and gives a [`Connector`], which opens [`Connection`]s: TLS for
//! `https://` URLs, the token's `authorization` header on every call.
//!
//! ```toml
//! token_file = "/etc/corral/worker.token"
//! [tls]
//! ca = "/etc/corral/tls/farm-ca.pem"
//! cert = "/etc/corral/tls/worker-1.pem"
//! key = "/etc/corral/tls/worker-1.key"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::ClientTlsConfig;

pub use corral_tls::TlsClientConfig;

use crate::channel::{self, Target};
use crate::client_connection::Connection;
use crate::client_token::BearerToken;
use crate::error::{Error, Result};

/// What a client presents to a server. Every field is optional: the
/// default is plaintext for `http://` and `unix:`, TLS trusting the
/// system's certificate authorities for `https://`, and no token.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientOptions {
    /// TLS for `https://` URLs (`[tls]`: `ca`, `cert`, `key`,
    /// `server_name`). Giving it for an `http://` or `unix:` URL is an
    /// error rather than a silent plaintext connection.
    pub tls: Option<TlsClientConfig>,
    /// File holding the bearer token sent on every call (re-read when it
    /// changes). Default: none.
    pub token_file: Option<PathBuf>,
}

/// The command-line spelling of [`ClientOptions`], so errors name the flag
/// the user typed: `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`,
/// flattened into `corral worker`, `corral runner exec --remote` and the
/// bench tools.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientFlags {
    /// PEM file of the CA that signs the server's certificate (for
    /// https:// URLs; default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file with this client's certificate, presented to a server that
    /// asks for one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding a bearer token sent on every call (re-read when it
    /// changes); a token on the command line would be visible to every
    /// user of the machine.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientFlags {
    /// The connector for these flags alone (no configuration file); a
    /// file that cannot be read is an error naming its flag.
    pub fn connector(&self) -> Result<Connector> {
        self.apply(ClientOptions::default())?.connector()
    }

    /// The options these flags give, on top of `base` (a flag wins over
    /// the configuration). Every file named by a flag must be readable
    /// now; one that is not is an error naming the flag and the path.
    pub fn apply(&self, base: ClientOptions) -> Result<ClientOptions> {
        let flags = [
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--token-file", &self.token_file),
        ];
        for (flag, path) in flags {
            if let Some(path) = path {
                readable(flag, path)?;
            }
        }
        let mut options = base;
        if self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() {
            let tls = options.tls.get_or_insert_with(TlsClientConfig::default);
            if let Some(p) = &self.tls_ca {
                tls.ca = Some(p.clone());
            }
            if let Some(p) = &self.tls_cert {
                tls.cert = Some(p.clone());
            }
            if let Some(p) = &self.tls_key {
                tls.key = Some(p.clone());
            }
        }
        if let Some(p) = &self.token_file {
            options.token_file = Some(p.clone());
        }
        Ok(options)
    }
}

/// Opens `path` for reading, or says which flag names an unusable file.
fn readable(flag: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::io(format!("{flag} {}: cannot be read", path.display()), e))
}

impl ClientOptions {
    /// Reads and checks every file now (the CA, the certificate and key,
    /// the token), naming the setting and the file at fault, and gives the
    /// connector that applies them.
    pub fn connector(&self) -> Result<Connector> {
        let tls = match &self.tls {
            Some(tls) => Some(
                tls.tonic_config()
                    .map_err(|e| Error::invalid("tls", e.to_string()))?,
            ),
            None => None,
        };
        let token = match &self.token_file {
            Some(path) => Some(BearerToken::load(path)?),
            None => None,
        };
        Ok(Connector { tls, token })
    }
}

/// Opens connections with a client's TLS settings and token, checked once
/// by [`ClientOptions::connector`]. Cheap to clone. `Default` is a client
/// with no settings.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    /// Configured TLS: only for `https://`.
    tls: Option<ClientTlsConfig>,
    token: Option<BearerToken>,
}

impl Connector {
    /// Whether TLS settings were given.
    pub fn has_tls_settings(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Connects to `url` (`http://`, `https://` or `unix:`). TLS settings
    /// with a URL that is not `https://` are refused, naming the URL: the
    /// user asked for TLS and must not silently get plaintext.
    pub async fn connect(&self, url: &str) -> Result<Connection> {
        let tls = self.tls_for(url)?;
        if let Some(token) = &self.token {
            if tls.is_none() && !is_local(url) {
                return Err(Error::invalid(
                    "url",
                    format!(
                        "{url:?}: refusing to send the token of {} in plaintext beyond this \
                         machine; use https://",
                        token.path().display()
                    ),
                ));
            }
        }
        let channel = channel::open(url, tls).await?;
        Ok(Connection::new(channel, self.token.clone()))
    }

    /// The TLS configuration for `url`: the given one, or the system's
    /// roots for an `https://` URL without settings.
    fn tls_for(&self, url: &str) -> Result<Option<ClientTlsConfig>> {
        let https = matches!(Target::parse(url)?, Target::Tcp(_)) && url.starts_with("https://");
        match (&self.tls, https) {
            (Some(tls), true) => Ok(Some(tls.clone())),
            (None, true) => channel::system_tls().map(Some),
            (Some(_), false) => Err(Error::invalid(
                "url",
                format!(
                    "{url:?}: TLS settings (CA, certificate or key) are given, but the URL is \
                     not https://; use https://HOST:PORT, or drop the TLS settings"
                ),
            )),
            (None, false) => Ok(None),
        }
    }
}

/// Whether `url` stays on this machine: a UNIX socket, or a loopback
/// address or `localhost` (where plaintext with a token is acceptable).
fn is_local(url: &str) -> bool {
    if url.starts_with("unix:") {
        return true;
    }
    let Ok(uri) = url.parse::<tonic::transport::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_naming_a_missing_file_is_named_with_its_path() {
        let flags = ClientFlags {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = flags
            .apply(ClientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--tls-ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let flags = ClientFlags {
            token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        };
        let e = flags
            .apply(ClientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--token-file") && e.contains("/nonexistent/token"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "abc\n").unwrap();
        let base: ClientOptions =
            toml::from_str("token_file = '/etc/old'\n[tls]\nca = '/etc/ca.pem'\n").unwrap();
        let flags = ClientFlags {
            token_file: Some(token.clone()),
            ..Default::default()
        };
        let options = flags.apply(base).unwrap();
        assert_eq!(options.token_file, Some(token));
        assert_eq!(
            options.tls.and_then(|t| t.ca),
            Some(PathBuf::from("/etc/ca.pem"))
        );
        let e = toml::from_str::<ClientOptions>("token = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
    }

    #[tokio::test]
    async fn a_token_never_leaves_the_machine_in_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "secret").unwrap();
        let connector = Connector {
            tls: None,
            token: Some(BearerToken::load(&file).unwrap()),
        };
        let e = connector
            .connect("http://192.0.2.1:8980")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("plaintext") && e.contains("192.0.2.1"), "{e}");
        for local in [
            "http://127.0.0.1:1",
            "http://localhost:1",
            "http://[::1]:1",
            "unix:/x",
        ] {
            assert!(is_local(local), "{local}");
        }
        assert!(!is_local("http://10.0.0.1:1"));
    }

    #[tokio::test]
    async fn tls_settings_with_a_plaintext_url_are_refused() {
        let connector = Connector {
            tls: Some(ClientTlsConfig::new()),
            token: None,
        };
        let e = connector
            .connect("http://127.0.0.1:1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://") && e.contains("127.0.0.1:1"), "{e}");
        let e = connector
            .connect("unix:/run/x.sock")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("unix:/run/x.sock"), "{e}");
    }
}
