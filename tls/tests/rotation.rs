//! Rotating the server certificate: new connections see the new one
//! without a restart; a broken or mismatched new pair keeps the old one.

mod common;

use std::time::Duration;

use common::{call, client, refused, server_certificate, write, Ca, Setup, TestServer};

/// Longer than the once-a-second look at the files.
const RELOAD: Duration = Duration::from_millis(1300);

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart() {
    let s = Setup::new();
    let server = TestServer::start(&s.server_config()).await;
    let first = server_certificate(server.addr, &[&s.ca_pem]).await.unwrap();

    // The new certificate comes from another CA, so that a client that
    // trusts only that CA proves which certificate it was shown.
    let ca2 = Ca::new("Corral test CA 2");
    let ca2_pem = write(s.path(), "ca2.pem", &ca2.pem);
    let second = ca2.server("corral server, renewed", 2);
    assert!(call(server.addr, &client(&ca2_pem, None)).await.is_err());

    std::fs::write(&s.key, &second.key_pem).unwrap();
    std::fs::write(&s.cert, &second.cert_pem).unwrap();
    tokio::time::sleep(RELOAD).await;

    let now = server_certificate(server.addr, &[&s.ca_pem, &ca2_pem])
        .await
        .unwrap();
    assert_eq!(now, second.der, "a new connection sees the new certificate");
    assert_ne!(now, first);
    call(server.addr, &client(&ca2_pem, None)).await.unwrap();
    refused(
        call(server.addr, &client(&s.ca_pem, None)).await,
        "UnknownIssuer",
    );
    assert!(server.is_running());
}

#[tokio::test]
async fn a_broken_rotation_keeps_the_old_certificate() {
    let s = Setup::new();
    let server = TestServer::start(&s.server_config()).await;
    let first = server_certificate(server.addr, &[&s.ca_pem]).await.unwrap();

    // Garbage where the certificate was.
    std::fs::write(&s.cert, "-----BEGIN CERTIFICATE-----\n!!\n").unwrap();
    tokio::time::sleep(RELOAD).await;
    assert_eq!(
        server_certificate(server.addr, &[&s.ca_pem]).await.unwrap(),
        first
    );
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();

    // A valid certificate whose key was not replaced: the pair does not
    // fit, so the old pair stays.
    let renewed = s.ca.server("corral server, renewed", 3);
    std::fs::write(&s.cert, &renewed.cert_pem).unwrap();
    tokio::time::sleep(RELOAD).await;
    assert_eq!(
        server_certificate(server.addr, &[&s.ca_pem]).await.unwrap(),
        first
    );
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();

    // Its key arrives: now the renewed certificate is served.
    std::fs::write(&s.key, &renewed.key_pem).unwrap();
    tokio::time::sleep(RELOAD).await;
    assert_eq!(
        server_certificate(server.addr, &[&s.ca_pem]).await.unwrap(),
        renewed.der
    );

    // A deleted key file keeps the current pair as well.
    std::fs::remove_file(&s.key).unwrap();
    tokio::time::sleep(RELOAD).await;
    assert_eq!(
        server_certificate(server.addr, &[&s.ca_pem]).await.unwrap(),
        renewed.der
    );
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();
}
