//! Certificates for tests of TLS farms, made in the test with rcgen: a
//! certificate authority, a server certificate for loopback and client
//! certificates, written as PEM files the farm's configuration names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};

/// A certificate authority whose certificate is in a PEM file.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM), what a client's `ca` or a server's
    /// `client_ca` names.
    pub cert: PathBuf,
    dir: PathBuf,
    /// The serial number of the next certificate.
    next_serial: AtomicU64,
}

/// A certificate and its key as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Its serial number (what a CRL names).
    pub serial: u64,
}

impl TestCa {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(TestCa {
            issuer: Issuer::new(params, key),
            cert: path,
            dir: dir.to_path_buf(),
            next_serial: AtomicU64::new(1),
        })
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.issue(
            name,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject common name and DNS name are
    /// `name` (what an mTLS authenticator names the principal by).
    pub fn client(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.issue(name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertFiles> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            serial,
        };
        std::fs::write(&files.cert, cert.pem())
            .with_context(|| format!("writing {}", files.cert.display()))?;
        std::fs::write(&files.key, key.serialize_pem())
            .with_context(|| format!("writing {}", files.key.display()))?;
        Ok(files)
    }

    /// A CRL of this CA revoking `revoked`, written as `NAME.crl` (PEM);
    /// valid from 2026 to 2099.
    pub fn crl(&self, name: &str, revoked: &[&CertFiles]) -> anyhow::Result<PathBuf> {
        let revoked_certs = revoked
            .iter()
            .map(|c| RevokedCertParams {
                serial_number: SerialNumber::from(c.serial),
                revocation_time: rcgen::date_time_ymd(2026, 1, 2),
                reason_code: Some(RevocationReason::Superseded),
                invalidity_date: None,
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 2),
            next_update: rcgen::date_time_ymd(2099, 12, 31),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)?;
        let path = self.dir.join(format!("{name}.crl"));
        std::fs::write(&path, crl.pem()?).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
