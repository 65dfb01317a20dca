//! Client certificates: the TLS layer has verified the chain against the
//! farm's CA (and its CRL); here the leaf's subject alternative name or
//! subject names the principal.

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authenticator::{AuthError, Authenticator};
use crate::config::{CertField, MtlsConfig};
use crate::credentials::Credentials;
use crate::principal::{Principal, PrincipalKind};

/// The fields tried when `principal_from` is not set.
pub const DEFAULT_CERT_FIELDS: [CertField; 4] = [
    CertField::SanUri,
    CertField::SanEmail,
    CertField::SanDns,
    CertField::SubjectCn,
];

/// Authenticates by the verified leaf certificate.
#[derive(Debug)]
pub struct MtlsAuthenticator {
    fields: Vec<CertField>,
    kind: PrincipalKind,
}

impl MtlsAuthenticator {
    /// Builds it.
    pub fn new(config: &MtlsConfig, kind: PrincipalKind) -> Self {
        MtlsAuthenticator {
            fields: config
                .principal_from
                .clone()
                .unwrap_or_else(|| DEFAULT_CERT_FIELDS.to_vec()),
            kind,
        }
    }
}

/// The first value of `field` in the certificate, if it has one that is a
/// usable name (not empty, no control characters).
fn field_value<'a>(cert: &'a X509Certificate<'a>, field: CertField) -> Option<&'a str> {
    let usable = |s: &&str| !s.is_empty() && !s.chars().any(char::is_control);
    if field == CertField::SubjectCn {
        return cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .find(usable);
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value
        .general_names
        .iter()
        .filter_map(|name| match (field, name) {
            (CertField::SanUri, GeneralName::URI(v))
            | (CertField::SanEmail, GeneralName::RFC822Name(v))
            | (CertField::SanDns, GeneralName::DNSName(v)) => Some(*v),
            _ => None,
        })
        .find(usable)
}

impl Authenticator for MtlsAuthenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let leaf = credentials
            .peer_certificates
            .first()
            .ok_or_else(|| AuthError::missing("a client certificate"))?;
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|_| AuthError::refused("client certificate", "it does not parse"))?;
        let name = self
            .fields
            .iter()
            .find_map(|f| field_value(&cert, *f))
            .ok_or_else(|| {
                AuthError::refused(
                    "client certificate",
                    "it has none of the fields that name a principal (see [mtls] principal_from)",
                )
            })?;
        let fingerprint = hex::encode(Sha256::digest(leaf));
        Ok(Principal::new(
            self.kind,
            name,
            Some(format!("x509-sha256:{fingerprint}")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn creds(der: Vec<u8>) -> Credentials {
        Credentials {
            peer_certificates: vec![der],
            ..Credentials::default()
        }
    }

    fn auth(fields: Option<Vec<CertField>>) -> MtlsAuthenticator {
        MtlsAuthenticator::new(
            &MtlsConfig {
                principal_from: fields,
            },
            PrincipalKind::Person,
        )
    }

    #[test]
    fn san_maps_to_the_principal_in_the_configured_order() {
        let der = cert(
            vec![
                SanType::DnsName("ci.example.com".try_into().unwrap()),
                SanType::URI("spiffe://farm/ci/main".try_into().unwrap()),
                SanType::Rfc822Name("ci@example.com".try_into().unwrap()),
            ],
            Some("CI runner"),
        );
        let p = auth(None).authenticate(&creds(der.clone())).unwrap();
        assert_eq!(p.to_string(), "person:spiffe://farm/ci/main");
        let id = p.credential_id().unwrap();
        assert_eq!(
            id,
            format!("x509-sha256:{}", hex::encode(Sha256::digest(&der)))
        );
        let by = |f: Vec<CertField>| auth(Some(f)).authenticate(&creds(der.clone())).unwrap();
        assert_eq!(by(vec![CertField::SanDns]).name(), "ci.example.com");
        assert_eq!(by(vec![CertField::SanEmail]).name(), "ci@example.com");
        assert_eq!(
            by(vec![CertField::SubjectCn, CertField::SanDns]).name(),
            "CI runner"
        );
    }

    #[test]
    fn falls_back_to_the_common_name_and_refuses_a_nameless_certificate() {
        let der = cert(vec![], Some("worker-7"));
        assert_eq!(
            auth(None).authenticate(&creds(der.clone())).unwrap().name(),
            "worker-7"
        );
        let err = auth(Some(vec![CertField::SanUri]))
            .authenticate(&creds(der))
            .unwrap_err();
        assert!(matches!(err, AuthError::Refused { .. }), "{err}");
        let err = auth(None)
            .authenticate(&creds(vec![0x30, 0x01, 0x00]))
            .unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
        let err = auth(None)
            .authenticate(&Credentials::default())
            .unwrap_err();
        assert_eq!(err, AuthError::missing("a client certificate"));
        let w = MtlsAuthenticator::new(&MtlsConfig::default(), PrincipalKind::Worker);
        let der = cert(vec![SanType::DnsName("w1.farm".try_into().unwrap())], None);
        assert_eq!(
            w.authenticate(&creds(der)).unwrap().to_string(),
            "worker:w1.farm"
        );
    }
}
