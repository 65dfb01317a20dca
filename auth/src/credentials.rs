//! What a connection and its headers offer as proof of identity, gathered
//! into one plain struct so that authentication does not depend on how the
//! server is built.

use std::fmt;
use std::net::SocketAddr;

use base64::Engine;
use tonic::metadata::MetadataMap;
use tonic::transport::server::UdsConnectInfo;
use tonic::Extensions;

/// The peer's certificate chain (DER, leaf first), as verified by the TLS
/// layer. The TLS crate inserts it into each request's extensions;
/// [`Credentials::from_request`] picks it up. Present only when the
/// handshake verified it against the configured CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// The peer's address, for listeners whose connection info is not tonic's
/// `TcpConnectInfo` (the TLS crate inserts it next to
/// [`PeerCertificates`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddress(pub SocketAddr);

/// The credentials of one request. Its `Debug` output never shows the
/// `authorization` value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `authorization` header's value (`Bearer T`, `Basic B64`).
    pub authorization: Option<String>,
    /// The verified peer certificate chain, DER, leaf first; empty without
    /// client certificates.
    pub peer_certificates: Vec<Vec<u8>>,
    /// The peer's uid, from the kernel, on a UNIX socket.
    pub peer_uid: Option<u32>,
    /// The peer's address on TCP.
    pub peer_addr: Option<SocketAddr>,
    /// The connection is a UNIX socket.
    pub unix_socket: bool,
}

impl Credentials {
    /// The peer as audit lines name it: `ADDR:PORT` on TCP, `unix uid=N`
    /// (or `unix`) on a UNIX socket.
    pub fn peer_label(&self) -> Option<String> {
        match (self.peer_addr, self.peer_uid) {
            (Some(addr), _) => Some(addr.to_string()),
            (None, Some(uid)) => Some(format!("unix uid={uid}")),
            (None, None) if self.unix_socket => Some("unix".to_string()),
            (None, None) => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("peer_certificates", &self.peer_certificates.len())
            .field("peer_uid", &self.peer_uid)
            .field("peer_addr", &self.peer_addr)
            .field("unix_socket", &self.unix_socket)
            .finish()
    }
}

impl Credentials {
    /// The credentials of a tonic request: the `authorization` header, the
    /// [`PeerCertificates`] the TLS layer inserted, the UNIX peer
    /// credentials tonic puts in `UdsConnectInfo`, and the peer address.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Credentials {
        Self::from_parts(
            request.metadata(),
            request.extensions(),
            request.remote_addr(),
        )
    }

    /// The same from a request's parts (for a tower layer that sees the
    /// HTTP request rather than the tonic one).
    pub fn from_parts(
        metadata: &MetadataMap,
        extensions: &Extensions,
        remote_addr: Option<SocketAddr>,
    ) -> Credentials {
        // Only the first value counts; a value that is not visible ASCII is
        // kept (lossily) so that it is refused rather than ignored.
        let authorization = metadata.get("authorization").map(|v| match v.to_str() {
            Ok(s) => s.to_string(),
            Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        });
        let uds = extensions.get::<UdsConnectInfo>();
        Credentials {
            authorization,
            peer_certificates: extensions
                .get::<PeerCertificates>()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
            peer_uid: uds.and_then(|u| u.peer_cred).map(|c| c.uid()),
            peer_addr: remote_addr.or_else(|| extensions.get::<PeerAddress>().map(|a| a.0)),
            unix_socket: uds.is_some(),
        }
    }

    /// Whether the connection is local to this machine: a UNIX socket or a
    /// loopback address (IPv4-mapped ones included).
    pub fn is_loopback(&self) -> bool {
        self.unix_socket
            || self
                .peer_addr
                .is_some_and(|a| a.ip().to_canonical().is_loopback())
    }
}

/// A parsed `authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Authorization<'a> {
    /// `Bearer TOKEN`.
    Bearer(&'a str),
    /// `Basic base64(login:password)`, as Bazel sends from a `.netrc`.
    Basic { login: String, password: String },
}

/// Parses an `authorization` value; the error says what is wrong without
/// repeating the value.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization<'_>, &'static str> {
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or("the authorization header has no scheme (expected `Bearer` or `Basic`)")?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err("malformed bearer token");
        }
        return Ok(Authorization::Bearer(rest));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "the Basic credential is not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "the Basic credential is not UTF-8")?;
        let (login, password) = text
            .split_once(':')
            .ok_or("the Basic credential has no `login:password` form")?;
        return Ok(Authorization::Basic {
            login: login.to_string(),
            password: password.to_string(),
        });
    }
    Err("unsupported authorization scheme (expected `Bearer` or `Basic`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        assert_eq!(
            parse_authorization("Bearer abc"),
            Ok(Authorization::Bearer("abc"))
        );
        assert_eq!(
            parse_authorization("bearer  abc "),
            Ok(Authorization::Bearer("abc"))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ci:s3:cret");
        assert_eq!(
            parse_authorization(&format!("Basic {basic}")),
            Ok(Authorization::Basic {
                login: "ci".into(),
                password: "s3:cret".into()
            })
        );
        for bad in [
            "Bearer",
            "Bearer a b",
            "Basic !!!",
            "Basic Y2k=",
            "Digest x",
            "token",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn from_request_reads_header_and_extensions() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer t0k3n".parse().unwrap());
        request
            .extensions_mut()
            .insert(PeerCertificates(vec![vec![1, 2, 3]]));
        let addr: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        request.extensions_mut().insert(PeerAddress(addr));
        let c = Credentials::from_request(&request);
        assert_eq!(c.authorization.as_deref(), Some("Bearer t0k3n"));
        assert_eq!(c.peer_certificates, vec![vec![1, 2, 3]]);
        assert_eq!(c.peer_addr, Some(addr));
        assert!(!c.is_loopback() && !c.unix_socket && c.peer_uid.is_none());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("t0k3n") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn unix_peer_credentials_come_from_tonic_connect_info() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let info = UdsConnectInfo {
            peer_addr: None,
            peer_cred: a.peer_cred().ok(),
        };
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(info);
        let c = Credentials::from_request(&request);
        assert!(c.unix_socket && c.is_loopback());
        assert_eq!(c.peer_uid, Some(nix_uid()));
    }

    fn nix_uid() -> u32 {
        // The peer of a socket pair is this process.
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap()
    }

    #[test]
    fn loopback_detection() {
        let mut c = Credentials::default();
        assert!(!c.is_loopback());
        for (addr, local) in [
            ("127.0.0.1:1", true),
            ("127.9.9.9:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("10.0.0.1:1", false),
            ("[::ffff:10.0.0.1]:1", false),
        ] {
            c.peer_addr = Some(addr.parse().unwrap());
            assert_eq!(c.is_loopback(), local, "{addr}");
        }
    }
}
