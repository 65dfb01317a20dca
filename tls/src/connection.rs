//! One accepted TLS connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// What tonic puts in the extensions of every request that arrived on a
/// [`TlsConnection`]: the addresses and the verified certificate chain of
/// the client. It is tonic's own type, so code that reads it (the
/// authentication layer) needs only tonic, with its `tls-aws-lc` feature
/// (which exports this type and `Request::peer_certs`), not this crate.
/// See the crate documentation for how a handler reads it.
pub type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

/// An accepted connection whose TLS handshake completed: the client's
/// certificate, when it sent one, verified against the configured CA and
/// CRLs, and `h2` negotiated.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    remote_addr: SocketAddr,
}

impl TlsConnection {
    pub(crate) fn new(stream: TlsStream<TcpStream>, remote_addr: SocketAddr) -> Self {
        TlsConnection {
            stream,
            remote_addr,
        }
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The client's verified certificate chain, its own certificate first,
    /// or `None` when it presented none (allowed only with
    /// `client_auth = "optional"`).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.stream.get_ref().1.peer_certificates()
    }

    /// The negotiated application protocol (`h2` for every client that
    /// offered ALPN; `None` for one that offered none).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.get_ref().0
    }

    /// The tokio-rustls stream, for uses this type does not cover.
    pub fn into_inner(self) -> TlsStream<TcpStream> {
        self.stream
    }
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("remote_addr", &self.remote_addr)
            .field(
                "peer_certificates",
                &self.peer_certificates().map(<[_]>::len),
            )
            .finish_non_exhaustive()
    }
}

/// tonic calls this once per connection and puts the result in every
/// request's extensions. Delegating to tonic's own implementation for
/// tokio-rustls streams keeps `Request::remote_addr()` and
/// `Request::peer_certs()` working.
impl Connected for TlsConnection {
    type ConnectInfo = ConnectInfo;

    fn connect_info(&self) -> ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
