//! What the TLS tests share: a certificate authority made with rcgen, a
//! tonic server (REAPI Capabilities, recording who called) over
//! `ServerTls::incoming`, and clients.

#![allow(dead_code)] // each test file uses a part
// Test helpers: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_server::{
    Capabilities, CapabilitiesServer,
};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    GetCapabilitiesRequest, ServerCapabilities,
};
use corral_tls::{CertificateDer, ServerTls, TlsClientConfig, TlsServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use tokio::net::TcpListener;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Endpoint, Server};

/// A certificate authority.
pub struct Ca {
    pub name: String,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            name: name.to_string(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, cn: &str, sans: &[&str], serial: u64, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, cn: &str, serial: u64) -> Leaf {
        self.issue(
            cn,
            &["localhost", "127.0.0.1"],
            serial,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, cn: &str, serial: u64) -> Leaf {
        self.issue(cn, &[], serial, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A CRL revoking the certificates of `serials`.
    pub fn crl(&self, serials: &[u64]) -> rcgen::CertificateRevocationList {
        let revoked_certs = serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a leaf's certificate and key as `NAME.pem` and `NAME.key`.
pub fn write_leaf(dir: &Path, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("{name}.pem"), &leaf.cert_pem),
        write(dir, &format!("{name}.key"), &leaf.key_pem),
    )
}

/// What the handler saw of one call.
#[derive(Clone, Debug)]
pub struct Seen {
    /// From `Request::remote_addr()`.
    pub remote: Option<SocketAddr>,
    /// From `Request::peer_certs()`.
    pub chain: Option<Vec<CertificateDer<'static>>>,
    /// The same chain, read from the extension directly.
    pub chain_from_extension: Option<Option<Vec<CertificateDer<'static>>>>,
}

/// REAPI Capabilities that records who called.
#[derive(Clone, Default)]
struct Probe {
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[tonic::async_trait]
impl Capabilities for Probe {
    async fn get_capabilities(
        &self,
        req: tonic::Request<GetCapabilitiesRequest>,
    ) -> Result<tonic::Response<ServerCapabilities>, tonic::Status> {
        let from_extension = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|info| info.peer_certs().map(|c| c.to_vec()));
        self.seen.lock().unwrap().push(Seen {
            remote: req.remote_addr(),
            chain: req.peer_certs().map(|c| c.to_vec()),
            chain_from_extension: from_extension,
        });
        Ok(tonic::Response::new(ServerCapabilities::default()))
    }
}

/// A tonic server over `ServerTls::incoming`, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: &TlsServerConfig) -> TestServer {
        let tls = ServerTls::from_config(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = Probe::default();
        let seen = probe.seen.clone();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(CapabilitiesServer::new(probe))
                .serve_with_incoming(tls.incoming(listener))
                .await
                .unwrap();
        });
        TestServer { addr, seen, task }
    }

    /// What the handler saw, oldest call first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The server is still serving (its task did not end).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One GetCapabilities call over a new connection to `addr`, addressed as
/// `https://127.0.0.1:PORT` (the server certificates name it).
pub async fn call(addr: SocketAddr, client: &TlsClientConfig) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let endpoint = client.apply(endpoint).map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    CapabilitiesClient::new(channel)
        .get_capabilities(GetCapabilitiesRequest {
            instance_name: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e:?}"))
}

/// A client trusting `ca` (a PEM file), with an optional identity.
pub fn client(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> TlsClientConfig {
    let (cert, key) = match identity {
        Some((c, k)) => (Some(c), Some(k)),
        None => (None, None),
    };
    TlsClientConfig {
        ca: Some(ca.to_path_buf()),
        cert,
        key,
        ..Default::default()
    }
}

/// The certificate the server at `addr` presents to a plain rustls client
/// trusting the PEM files `cas`, or the handshake error.
pub async fn server_certificate(
    addr: SocketAddr,
    cas: &[&Path],
) -> Result<CertificateDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    Ok(certs[0].clone())
}

/// A directory with a CA, a server certificate it signed (`server.pem`,
/// `server.key`) and the CA's certificate (`ca.pem`).
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Corral test CA");
        let ca_pem = write(dir.path(), "ca.pem", &ca.pem);
        let (cert, key) = write_leaf(dir.path(), "server", &ca.server("corral server", 1));
        Setup {
            dir,
            ca,
            ca_pem,
            cert,
            key,
        }
    }

    /// Server settings with this certificate and nothing else.
    pub fn server_config(&self) -> TlsServerConfig {
        TlsServerConfig {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ..Default::default()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Everything logged on this thread while the guard lives (the tests run
/// on tokio's current-thread runtime, so the server's tasks log here too).
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn capture() -> Logs {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        Logs {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client that trusts `ca` and presents `cert`/`key`, with ALPN `h2`.
pub fn rustls_client(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Asserts that a call failed, and for the reason `why` (a TLS alert or
/// certificate error, as rustls names it).
pub fn refused(result: Result<(), String>, why: &str) {
    let e = result.expect_err("the call should have been refused");
    assert!(e.contains(why), "refused, but not for {why}: {e}");
}
