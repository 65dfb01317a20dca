//! Handshakes through `ServerTls::incoming` under tonic: server-only TLS,
//! client certificates (required, optional, foreign), what a handler sees,
//! and that failing or slow clients never stop or hold up the listener.

mod common;

use std::time::{Duration, Instant};

use common::{call, client, refused, write, write_leaf, Ca, Logs, Setup, TestServer};
use corral_tls::{ClientAuth, ServerTls, TlsClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

#[tokio::test]
async fn server_only_tls_serves_a_client_that_trusts_its_ca() {
    let s = Setup::new();
    let server = TestServer::start(&s.server_config()).await;
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let remote = seen[0]
        .remote
        .expect("remote address visible through TlsConnectInfo");
    assert!(remote.ip().is_loopback(), "{remote}");
    assert!(
        seen[0].chain.is_none(),
        "no client certificate was asked for"
    );
    assert_eq!(
        seen[0].chain_from_extension,
        Some(None),
        "the TlsConnectInfo extension is there, without certificates"
    );

    // A client that trusts another CA refuses the server.
    let other = Ca::new("Other CA");
    let other_pem = write(s.path(), "other-ca.pem", &other.pem);
    refused(
        call(server.addr, &client(&other_pem, None)).await,
        "UnknownIssuer",
    );
}

#[tokio::test]
async fn a_required_client_certificate_is_verified_and_visible_to_the_handler() {
    let logs = Logs::capture();
    let s = Setup::new();
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    assert_eq!(config.client_auth(), ClientAuth::Required);
    let server = TestServer::start(&config).await;

    let worker = s.ca.client("worker-1", 100);
    let identity = write_leaf(s.path(), "worker-1", &worker);
    call(server.addr, &client(&s.ca_pem, Some(identity)))
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let chain = seen[0].chain.clone().expect("the client's chain");
    assert_eq!(
        chain,
        vec![worker.der.clone()],
        "the verified chain, client first"
    );
    assert_eq!(
        seen[0].chain_from_extension,
        Some(Some(vec![worker.der.clone()]))
    );

    // Without a certificate: refused.
    refused(
        call(server.addr, &client(&s.ca_pem, None)).await,
        "CertificateRequired",
    );
    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("TLS handshake refused")
            && l.contains("no certificates")),
        "{text}"
    );
    // With a certificate from a CA the server does not trust: refused.
    let rogue_ca = Ca::new("Rogue CA");
    let rogue = write_leaf(s.path(), "rogue", &rogue_ca.client("worker-1", 100));
    refused(
        call(server.addr, &client(&s.ca_pem, Some(rogue))).await,
        "UnknownCA",
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("UnknownIssuer")),
        "{text}"
    );
    assert_eq!(
        server.seen().len(),
        1,
        "no refused client reached the handler"
    );
}

#[tokio::test]
async fn an_optional_client_certificate_may_be_absent_but_not_wrong() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    config.client_auth = Some(ClientAuth::Optional);
    let server = TestServer::start(&config).await;

    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();
    let person = s.ca.client("alice", 7);
    let identity = write_leaf(s.path(), "alice", &person);
    call(server.addr, &client(&s.ca_pem, Some(identity)))
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].chain.is_none());
    assert_eq!(seen[1].chain.as_deref(), Some(&[person.der.clone()][..]));

    let rogue_ca = Ca::new("Rogue CA");
    let rogue = write_leaf(s.path(), "rogue", &rogue_ca.client("alice", 7));
    refused(
        call(server.addr, &client(&s.ca_pem, Some(rogue))).await,
        "UnknownCA",
    );
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn failed_handshakes_do_not_stop_the_listener() {
    let logs = Logs::capture();
    let s = Setup::new();
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    let server = TestServer::start(&config).await;
    let good = client(
        &s.ca_pem,
        Some(write_leaf(s.path(), "w", &s.ca.client("w", 5))),
    );

    // Garbage instead of a ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    // A client without the required certificate.
    refused(
        call(server.addr, &client(&s.ca_pem, None)).await,
        "CertificateRequired",
    );
    // A client that hangs up in the middle.
    drop(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    // Plaintext gRPC on the TLS port.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        let mut c = bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient::new(channel);
        c.get_capabilities(
            bazel_remote_apis::build::bazel::remote::execution::v2::GetCapabilitiesRequest::default(
            ),
        )
        .await
        .unwrap_err();
    }

    call(server.addr, &good).await.unwrap();
    call(server.addr, &good).await.unwrap();
    assert!(server.is_running());
    let text = logs.text();
    assert!(
        text.lines().filter(|l| l.contains("TLS handshake")).count() >= 3,
        "each failed handshake is logged:\n{text}"
    );
    assert_eq!(
        server.seen().len(),
        2,
        "only the good client's calls arrived"
    );
}

#[tokio::test]
async fn a_silent_client_holds_up_no_one_and_is_dropped_after_the_timeout() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.handshake_timeout_secs = Some(3);
    let server = TestServer::start(&config).await;

    // Connects and never says hello.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served in {:?} while a handshake was stuck",
        started.elapsed()
    );

    // The server closes the silent connection once the timeout passes.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the silent connection is closed by the server")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn at_the_bound_on_pending_handshakes_accepting_waits() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.handshake_timeout_secs = Some(2);
    config.max_pending_handshakes = Some(1);
    let server = TestServer::start(&config).await;

    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Let the server accept the silent connection first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    call(server.addr, &client(&s.ca_pem, None)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200),
        "the second connection was taken up after {waited:?}, before the first handshake timed out"
    );
}

/// The stream itself, without tonic: TCP_NODELAY, ALPN, the peer address
/// and chain, and what `Connected` hands tonic.
#[tokio::test]
async fn the_incoming_stream_yields_configured_connections() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.client_ca = Some(s.ca_pem.clone());
    let tls = ServerTls::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = tls.incoming(listener);
    assert_eq!(incoming.local_addr().unwrap(), addr);

    let leaf = s.ca.client("bench", 9);
    let (cert_path, key_path) = write_leaf(s.path(), "bench", &leaf);
    let client_config = common::rustls_client(&s.ca_pem, &cert_path, &key_path);
    let client = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client_config)
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        local
    });

    let mut conn = incoming.next().await.unwrap().unwrap();
    assert!(conn.tcp().nodelay().unwrap(), "TCP_NODELAY is set");
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(conn.peer_certificates(), Some(&[leaf.der.clone()][..]));
    let info = conn.connect_info();
    assert_eq!(info.get_ref().remote_addr(), Some(conn.remote_addr()));
    assert_eq!(info.get_ref().local_addr(), Some(addr));
    assert_eq!(
        info.peer_certs().unwrap().as_slice(),
        std::slice::from_ref(&leaf.der)
    );

    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").await.unwrap();
    conn.flush().await.unwrap();
    let local = client.await.unwrap();
    assert_eq!(conn.remote_addr(), local);
}

#[tokio::test]
async fn a_bad_setting_or_file_is_named_at_start() {
    let s = Setup::new();
    let mut config = s.server_config();
    config.key = Some(s.path().join("missing.key"));
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("missing.key"), "{e}");

    // A key that belongs to another certificate.
    let other = s.ca.server("other", 2);
    let (_, other_key) = write_leaf(s.path(), "other", &other);
    let mut config = s.server_config();
    config.key = Some(other_key);
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("other.key") && e.contains("server.pem"), "{e}");

    let mut config = s.server_config();
    config.client_ca = Some(write(s.path(), "empty-ca.pem", "nothing here\n"));
    let e = ServerTls::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("empty-ca.pem"), "{e}");

    let e = ServerTls::from_config(&corral_tls::TlsServerConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`cert`"), "{e}");
}

#[tokio::test]
async fn a_client_config_with_server_name_reaches_a_server_by_ip() {
    let s = Setup::new();
    let server = TestServer::start(&s.server_config()).await;
    // The URL names 127.0.0.1; the certificate is checked for `localhost`.
    let mut c: TlsClientConfig = client(&s.ca_pem, None);
    c.server_name = Some("localhost".into());
    call(server.addr, &c).await.unwrap();
    c.server_name = Some("not-the-server.example".into());
    refused(call(server.addr, &c).await, "NotValidForName");
}

#[test]
fn a_client_key_that_does_not_fit_its_certificate_is_named() {
    let s = Setup::new();
    let (cert, _) = write_leaf(s.path(), "w1", &s.ca.client("w1", 1));
    let (_, other_key) = write_leaf(s.path(), "w2", &s.ca.client("w2", 2));
    let e = client(&s.ca_pem, Some((cert, other_key)))
        .tonic_config()
        .unwrap_err()
        .to_string();
    assert!(e.contains("w2.key") && e.contains("w1.pem"), "{e}");
}
