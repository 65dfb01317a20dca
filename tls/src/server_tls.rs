//! A listener's TLS, built from its [`TlsServerConfig`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cert_resolver::CertResolver;
use crate::client_verifier::client_verifier;
use crate::error::{Error, Result};
use crate::incoming::TlsIncoming;
use crate::load;
use crate::reloading::RELOAD_INTERVAL;
use crate::server_config::TlsServerConfig;

/// The only application protocol a Corral listener speaks: gRPC is HTTP/2,
/// and clients (tonic, grpc-core) insist on negotiating it with ALPN.
pub const ALPN_H2: &[u8] = b"h2";

/// The TLS side of one listener: the rustls configuration (whose
/// certificate and CRLs follow their files) and the handshake limits.
/// Cheap to clone; clones share the certificate state.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    max_pending_handshakes: usize,
}

impl ServerTls {
    /// Checks `config` and loads every file it names, so that a mistake is
    /// reported at start, naming the setting or file, rather than as
    /// failing handshakes later.
    pub fn from_config(config: &TlsServerConfig) -> Result<ServerTls> {
        Self::with_reload_interval(config, RELOAD_INTERVAL)
    }

    /// As [`ServerTls::from_config`], looking at the certificate and CRL
    /// files at most once per `interval` instead of once a second.
    pub fn with_reload_interval(config: &TlsServerConfig, interval: Duration) -> Result<ServerTls> {
        let (cert, key) = config.check()?;
        let provider = load::provider();
        let resolver = CertResolver::new(cert.clone(), key.clone(), provider.clone(), interval)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Rustls {
                what: "server",
                source,
            })?;
        let builder = match client_verifier(config, &provider, interval)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(resolver));
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No session resumption: a resumed session skips certificate
        // verification, so a client whose certificate was revoked since
        // (or that saw the previous server certificate) could carry on
        // with an old session. gRPC connections are long-lived, so a full
        // handshake per connection costs next to nothing.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(server),
            handshake_timeout: config.handshake_timeout(),
            max_pending_handshakes: config.max_pending_handshakes(),
        })
    }

    /// The accepted TLS connections of `listener`, for tonic's
    /// `Server::serve_with_incoming` (see [`TlsIncoming`]).
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        TlsIncoming::new(listener, self)
    }

    /// The rustls configuration, e.g. for a listener that is not tonic's.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// How long a client may take to complete the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// How many handshakes may be under way at once.
    pub fn max_pending_handshakes(&self) -> usize {
        self.max_pending_handshakes
    }
}
