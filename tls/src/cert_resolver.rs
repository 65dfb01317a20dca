//! The server certificate, reloaded when its files change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Result;
use crate::load;
use crate::reloading::Reloading;

/// Answers every handshake with the certificate and key currently in the
/// configured files (see [`crate::reloading`] for when they are re-read).
/// One certificate for every server name: Corral serves one service per
/// listener, so there is nothing to choose by SNI.
#[derive(Debug)]
pub(crate) struct CertResolver {
    key: Reloading<CertifiedKey>,
}

impl CertResolver {
    /// Loads `cert` and `key`; fails, naming the file, if they do not load
    /// or do not belong together.
    pub(crate) fn new(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
        interval: Duration,
    ) -> Result<Self> {
        let key = Reloading::new(
            "server certificate",
            vec![cert, key],
            interval,
            Box::new(move |paths: &[PathBuf]| load::certified_key(&paths[0], &paths[1], &provider)),
        )?;
        Ok(CertResolver { key })
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.get())
    }
}
