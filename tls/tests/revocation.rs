//! CRLs: a revoked client certificate fails the handshake, in PEM and DER,
//! and a new CRL takes effect without a restart.

mod common;

use std::time::Duration;

use common::{call, client, refused, write, write_leaf, Ca, Logs, Setup, TestServer};
use corral_tls::{CrlScope, ServerTls, UnknownStatus};

#[tokio::test]
async fn a_revoked_client_certificate_fails_the_handshake() {
    let logs = Logs::capture();
    let s = Setup::new();
    let good = write_leaf(s.path(), "good", &s.ca.client("worker-good", 10));
    let revoked = write_leaf(s.path(), "revoked", &s.ca.client("worker-revoked", 11));
    let crl = write(s.path(), "ca.crl", s.ca.crl(&[11]).pem().unwrap());
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    config.crl = vec![crl];
    let server = TestServer::start(&config).await;

    call(server.addr, &client(&s.ca_pem, Some(good)))
        .await
        .unwrap();
    refused(
        call(server.addr, &client(&s.ca_pem, Some(revoked.clone()))).await,
        "CertificateRevoked",
    );
    assert_eq!(
        server.seen().len(),
        1,
        "the revoked client never reached the handler"
    );
    let text = logs.text();
    let refusal = text
        .lines()
        .find(|l| l.contains("TLS handshake refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    assert!(
        refusal.contains("WARN") && refusal.contains("Revoked") && refusal.contains("127.0.0.1"),
        "{refusal}"
    );

    // Also with `optional`: presenting a revoked certificate is not the
    // same as presenting none.
    let mut optional = config.clone();
    optional.client_auth = Some(corral_tls::ClientAuth::Optional);
    let server = TestServer::start(&optional).await;
    refused(
        call(server.addr, &client(&s.ca_pem, Some(revoked))).await,
        "CertificateRevoked",
    );
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();
}

#[tokio::test]
async fn several_cas_with_a_crl_each_in_pem_and_der() {
    let logs = Logs::capture();
    let s = Setup::new();
    let ca2 = Ca::new("Corral test CA 2");
    // Both CAs sign client certificates: one file with both.
    let cas = write(s.path(), "cas.pem", format!("{}{}", s.ca.pem, ca2.pem));
    let a = write_leaf(s.path(), "a", &s.ca.client("a", 20));
    let b = write_leaf(s.path(), "b", &ca2.client("b", 21));
    let c = write_leaf(s.path(), "c", &ca2.client("c", 22));
    let pem_crl = write(s.path(), "ca1.crl", s.ca.crl(&[]).pem().unwrap());
    let der_crl = write(s.path(), "ca2.crl.der", ca2.crl(&[21]).der().as_ref());
    let mut config = s.server_config();
    config.client_ca = Some(cas);
    config.crl = vec![pem_crl, der_crl];
    config.crl_scope = Some(CrlScope::EndEntity);
    let server = TestServer::start(&config).await;
    call(server.addr, &client(&s.ca_pem, Some(a)))
        .await
        .unwrap();
    call(server.addr, &client(&s.ca_pem, Some(c.clone())))
        .await
        .unwrap();
    refused(
        call(server.addr, &client(&s.ca_pem, Some(b))).await,
        "CertificateRevoked",
    );

    // Without CA 2's CRL, its certificates have no known status: refused
    // by default, accepted with `crl_unknown_status = "allow"`.
    config.crl.pop();
    let server = TestServer::start(&config).await;
    refused(
        call(server.addr, &client(&s.ca_pem, Some(c.clone()))).await,
        "UnknownCA",
    );
    let text = logs.text();
    assert!(text.contains("UnknownRevocationStatus"), "{text}");
    config.crl_unknown_status = Some(UnknownStatus::Allow);
    let server = TestServer::start(&config).await;
    call(server.addr, &client(&s.ca_pem, Some(c)))
        .await
        .unwrap();
}

#[tokio::test]
async fn two_crls_of_one_issuer_are_refused_naming_both() {
    let s = Setup::new();
    let old = write(s.path(), "old.crl", s.ca.crl(&[]).pem().unwrap());
    let new = write(s.path(), "new.crl", s.ca.crl(&[5]).pem().unwrap());
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    config.crl = vec![old, new];
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("old.crl") && e.contains("new.crl"), "{e}");
}

#[tokio::test]
async fn a_new_crl_takes_effect_without_restart_and_a_broken_one_is_ignored() {
    let s = Setup::new();
    let worker = write_leaf(s.path(), "w", &s.ca.client("worker-7", 30));
    let crl = write(s.path(), "ca.crl", s.ca.crl(&[]).pem().unwrap());
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    config.crl = vec![crl.clone()];
    let server = TestServer::start(&config).await;
    call(server.addr, &client(&s.ca_pem, Some(worker.clone())))
        .await
        .unwrap();

    // A broken CRL keeps the previous lists (the worker still gets in).
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\nnot base64!\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    call(server.addr, &client(&s.ca_pem, Some(worker.clone())))
        .await
        .unwrap();

    // The CA revokes the worker: the next handshake fails.
    std::fs::write(&crl, s.ca.crl(&[30]).pem().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    refused(
        call(server.addr, &client(&s.ca_pem, Some(worker))).await,
        "CertificateRevoked",
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_bad_crl_file_is_named_at_start() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    config.crl = vec![write(s.path(), "junk.crl", "junk")];
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("junk.crl"), "{e}");
    config.crl = vec![s.path().join("absent.crl")];
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("absent.crl"), "{e}");
}
