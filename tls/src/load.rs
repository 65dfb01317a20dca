//! Reading certificates, keys and CRLs from the files the configuration
//! names. Each function fails with an error that names the file and says
//! what was expected in it, because a TLS setup that "does not work" is
//! otherwise very hard to diagnose from a handshake failure on the far side.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// The crypto provider of every configuration this crate builds. It is
/// named explicitly rather than taken from rustls' process-wide default, so
/// that another crate enabling a second provider cannot change (or make
/// ambiguous) which one Corral's listeners use.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of `path`.
pub(crate) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of the PEM file `path`, in file order; at least one.
pub(crate) fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| Error::invalid(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            what,
            path,
            "no PEM `CERTIFICATE` block in the file",
        ));
    }
    Ok(certs)
}

/// The private key of the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    const WHAT: &str = "private key";
    let bytes = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::invalid(
            WHAT,
            path,
            "no PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block in the file",
        ),
        e => Error::invalid(WHAT, path, format!("not valid PEM: {e}")),
    })
}

/// The certificate chain of `cert` with the key of `key`, checked to belong
/// together: a key that does not match its certificate would otherwise
/// only show up as every client's handshake failing.
pub(crate) fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = certificates("certificate", cert)?;
    let key_der = private_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        Error::invalid(
            "private key",
            key,
            format!("does not fit the certificate {}: {e}", cert.display()),
        )
    })
}

/// The CRLs of `path`: one or more PEM `X509 CRL` blocks, or a single DER
/// CRL (what `openssl ca -gencrl -outform DER` writes).
pub(crate) fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    const WHAT: &str = "CRL";
    let bytes = read(WHAT, path)?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        // DER: an ASN.1 SEQUENCE. Anything else is neither form.
        if bytes.first() != Some(&0x30) {
            return Err(Error::invalid(
                WHAT,
                path,
                "neither PEM (`-----BEGIN X509 CRL-----`) nor DER",
            ));
        }
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| Error::invalid(WHAT, path, format!("not valid PEM: {e}")))?;
    if crls.is_empty() {
        return Err(Error::invalid(
            WHAT,
            path,
            "no PEM `X509 CRL` block in the file",
        ));
    }
    Ok(crls)
}
