//! Verification of client certificates: against the configured CA, and
//! against CRLs that are reloaded when their files change, so revoking a
//! certificate (a worker's, a person's) needs no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};
use crate::load;
use crate::reloading::Reloading;
use crate::server_config::{ClientAuth, CrlScope, TlsServerConfig, UnknownStatus};

/// The verifier for `config`, or `None` when clients are not asked for a
/// certificate. `interval` is how often the CRL files are looked at.
pub(crate) fn client_verifier(
    config: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
    interval: Duration,
) -> Result<Option<Arc<dyn ClientCertVerifier>>> {
    let Some(ca) = &config.client_ca else {
        return Ok(None);
    };
    let policy = Policy {
        roots: Arc::new(roots(ca)?),
        provider: provider.clone(),
        mandatory: config.client_auth() == ClientAuth::Required,
        scope: config.crl_scope.unwrap_or_default(),
        unknown: config.crl_unknown_status.unwrap_or_default(),
    };
    if config.crl.is_empty() {
        let verifier = policy
            .build(Vec::new())
            .map_err(|e| Error::invalid("client CA", ca, e))?;
        return Ok(Some(verifier));
    }
    let hints = policy.roots.subjects();
    let mandatory = policy.mandatory;
    let current = Reloading::new(
        "CRL",
        config.crl.clone(),
        interval,
        Box::new(move |paths: &[PathBuf]| policy.with_crls(paths)),
    )?;
    Ok(Some(Arc::new(CrlReloadingVerifier {
        hints,
        mandatory,
        current,
    })))
}

/// The trust anchors of the PEM file `ca`.
fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load::certificates("client CA", ca)? {
        roots.add(cert).map_err(|e| {
            Error::invalid("client CA", ca, format!("not a usable CA certificate: {e}"))
        })?;
    }
    Ok(roots)
}

/// What webpki tells CRLs apart by: the DER of the issuer's name and of
/// the issuing distribution point.
type CrlKey = (Vec<u8>, Option<Vec<u8>>);

/// Everything a client verifier is built from except the CRLs.
struct Policy {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    mandatory: bool,
    scope: CrlScope,
    unknown: UnknownStatus,
}

impl Policy {
    fn build(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Arc<dyn ClientCertVerifier>, rustls::server::VerifierBuilderError> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .with_crls(crls);
        if !self.mandatory {
            builder = builder.allow_unauthenticated();
        }
        if self.scope == CrlScope::EndEntity {
            builder = builder.only_check_end_entity_revocation();
        }
        if self.unknown == UnknownStatus::Allow {
            builder = builder.allow_unknown_revocation_status();
        }
        builder.build()
    }

    /// A verifier with the CRLs of `paths`. Each CRL is parsed on its own
    /// first, so that a bad file is named, and two CRLs of one issuer (and
    /// scope) are refused: webpki consults only the first it finds, so an
    /// old list left next to the new one would silently win.
    fn with_crls(&self, paths: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>> {
        let mut all = Vec::new();
        // (issuer, issuing distribution point) of each CRL, and its file.
        let mut issuers: Vec<(CrlKey, &PathBuf)> = Vec::new();
        for path in paths {
            for crl in load::crls(path)? {
                let parsed = webpki::BorrowedCertRevocationList::from_der(crl.as_ref())
                    .map(webpki::CertRevocationList::from)
                    .map_err(|e| Error::invalid("CRL", path, format!("not a valid CRL: {e}")))?;
                let key = (
                    parsed.issuer().to_vec(),
                    parsed.issuing_distribution_point().map(<[u8]>::to_vec),
                );
                if let Some((_, first)) = issuers.iter().find(|(k, _)| *k == key) {
                    return Err(Error::invalid(
                        "CRL",
                        path,
                        format!(
                            "has the same issuer as a CRL in {}; only one would be consulted: keep only the newest",
                            first.display()
                        ),
                    ));
                }
                issuers.push((key, path));
                all.push(crl);
            }
        }
        self.build(all).map_err(|e| Error::Config {
            field: "crl",
            reason: e.to_string(),
        })
    }
}

/// A client verifier whose CRLs follow their files. The CA is fixed (its
/// subjects are the hints sent to clients); only the revocation lists
/// change, by swapping the whole inner verifier.
#[derive(Debug)]
struct CrlReloadingVerifier {
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    current: Reloading<Arc<dyn ClientCertVerifier>>,
}

impl ClientCertVerifier for CrlReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .get()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .get()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.get().supported_verify_schemes()
    }
}
