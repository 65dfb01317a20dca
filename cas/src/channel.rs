//! Client channels to Corral's own services, from one kind of address.
//!
//! Every Corral client (the worker's scheduler session and CAS traffic,
//! the remote stores, `runner exec --remote`, the bench tools) reaches a
//! server through [`connect`], so each kind of address works everywhere:
//!
//! * `http://host:port`: plaintext TCP (loopback, or a trusted network);
//! * `https://host:port`: TLS, with the settings of the client's
//!   [`crate::client_options::Connector`] (CA, client certificate), or
//!   trusting the system's certificate authorities through [`connect`];
//! * `unix:/path/to/socket` (also `unix:///path`): a UNIX socket, on
//!   which the server learns the caller's uid from the kernel (the worker
//!   listener of `corral server` / `corral up`).
//!
//! Credentials (TLS settings, a bearer token on every call) are given in
//! one place, [`crate::client_options::ClientOptions`], whose connector
//! opens a [`crate::client_connection::Connection`] through [`open`].
//!
//! The HTTP/2 settings match the server's (`service::server_builder`):
//! tonic's defaults (64 KiB windows, 16 KiB frames) hold a large blob to
//! a fraction of what loopback carries.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

use crate::error::{Error, Result};

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server is, parsed from a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `http://…` (TCP).
    Tcp(String),
    /// `unix:/path` (a UNIX socket).
    Unix(PathBuf),
}

impl Target {
    /// Parses `url`; an address of an unknown kind is refused, naming it.
    pub fn parse(url: &str) -> Result<Target> {
        if let Some(rest) = url.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(Error::invalid(
                    "url",
                    format!("{url:?}: a unix: address needs an absolute socket path (unix:/path)"),
                ));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Target::Tcp(url.to_string()));
        }
        Err(Error::invalid(
            "url",
            format!("{url:?}: expected http://HOST:PORT, https://HOST:PORT or unix:/PATH"),
        ))
    }
}

/// The endpoint for `url` with Corral's HTTP/2 settings. For a UNIX
/// socket the URI is a placeholder: the connector ignores it.
pub fn endpoint(url: &str) -> Result<Endpoint> {
    let uri = match Target::parse(url)? {
        Target::Tcp(u) => u,
        Target::Unix(_) => "http://unix.socket.invalid".to_string(),
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| Error::invalid("url", format!("{url:?}: {e}")))?
        .initial_connection_window_size(32 << 20)
        .initial_stream_window_size(16 << 20)
        .max_frame_size(crate::service::MAX_FRAME)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// Connects to `url` (see the module documentation for the forms), with
/// no credentials of its own; an `https://` URL trusts the system's
/// certificate authorities.
pub async fn connect(url: &str) -> Result<Channel> {
    let tls = if url.starts_with("https://") {
        Some(system_tls()?)
    } else {
        None
    };
    open(url, tls).await
}

/// TLS trusting the system's certificate authorities, presenting no
/// certificate: an `https://` URL given without TLS settings.
pub(crate) fn system_tls() -> Result<ClientTlsConfig> {
    corral_tls::TlsClientConfig::default()
        .tonic_config()
        .map_err(|e| Error::invalid("tls", e.to_string()))
}

/// Connects to `url`, speaking TLS with `tls` when it is given (the URL is
/// then `https://`; the connector checks that).
pub async fn open(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel> {
    let mut endpoint = endpoint(url)?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Error::invalid("url", format!("{url:?}: TLS: {e}")))?;
    }
    let connected = match Target::parse(url)? {
        Target::Tcp(_) => endpoint.connect().await,
        // The connector opens the socket whatever URI it is given.
        Target::Unix(path) => {
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
    };
    connected.map_err(|e| {
        Error::Remote(tonic::Status::unavailable(format!(
            "connecting to {url}: {}",
            error_chain(&e)
        )))
    })
}

/// `error` and its sources: tonic's own message ("transport error") says
/// nothing; the handshake's reason (an unknown CA, a refused client
/// certificate) is in its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form_and_names_a_bad_one() {
        assert_eq!(
            Target::parse("http://127.0.0.1:1").unwrap(),
            Target::Tcp("http://127.0.0.1:1".into())
        );
        assert_eq!(
            Target::parse("unix:/run/w.sock").unwrap(),
            Target::Unix("/run/w.sock".into())
        );
        assert_eq!(
            Target::parse("unix:///run/w.sock").unwrap(),
            Target::Unix("/run/w.sock".into())
        );
        let e = Target::parse("unix:rel.sock").unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = Target::parse("grpc://h:1").unwrap_err().to_string();
        assert!(e.contains("grpc://h:1"), "{e}");
    }
}
