//! The accepted TLS connections of a TCP listener, as the stream tonic's
//! `Server::serve_with_incoming` takes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;

use crate::connection::TlsConnection;
use crate::server_tls::ServerTls;

/// How long to wait before accepting again after an accept error that is
/// about this process rather than one client (out of file descriptors,
/// memory): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connections of a listener whose TLS handshake completed.
///
/// Each accepted socket gets `TCP_NODELAY` (without it every small unary
/// call waits for Nagle and delayed ACKs: 40 ms a round trip on loopback)
/// and its handshake runs in a task of its own, bounded by the handshake
/// timeout, so a slow or silent client never holds up the next one. A
/// handshake that fails or times out is logged with the client's address
/// (a refused client certificate at warn level, anything else at debug
/// level: port scanners and health checks are not news) and the stream
/// carries on. At most `max_pending_handshakes` run at once; beyond that,
/// accepting waits for one to finish. Dropping the stream closes the
/// listener and abandons the handshakes under way.
///
/// The stream never ends and never yields an error, hence `Infallible`.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    max_pending: usize,
    handshakes: JoinSet<Option<TlsConnection>>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl TlsIncoming {
    /// The TLS connections of `listener`, made with `tls`.
    pub fn new(listener: TcpListener, tls: &ServerTls) -> TlsIncoming {
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(tls.rustls_config()),
            handshake_timeout: tls.handshake_timeout(),
            max_pending: tls.max_pending_handshakes().max(1),
            handshakes: JoinSet::new(),
            backoff: None,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the handshake of a newly accepted socket.
    fn start(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "setting TCP_NODELAY: {e}");
        }
        let acceptor = self.acceptor.clone();
        let timeout = self.handshake_timeout;
        self.handshakes
            .spawn(handshake(acceptor, tcp, peer, timeout));
    }

    /// Logs an accept error and decides whether to pause.
    fn accept_failed(&mut self, e: io::Error) {
        match e.kind() {
            // The client gave up between SYN and accept: nothing to do.
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock => tracing::debug!("accepting a connection: {e}"),
            _ => {
                tracing::warn!(
                    "accepting a connection: {e}; pausing {} ms",
                    ACCEPT_BACKOFF.as_millis()
                );
                self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
            }
        }
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Finished handshakes first: they are clients waiting.
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(Ok(None))) => continue,
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("a TLS handshake task ended abnormally: {e}");
                    continue;
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            // At the bound, the next finished handshake wakes us (the join
            // set registered the waker above).
            if this.handshakes.len() >= this.max_pending {
                return Poll::Pending;
            }
            if let Some(sleep) = this.backoff.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => this.start(tcp, peer),
                Poll::Ready(Err(e)) => this.accept_failed(e),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("listener", &self.listener)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

/// The TLS handshake of one client, or `None` (logged) if it failed or
/// took longer than `timeout`; dropping the socket then closes it.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsConnection> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(TlsConnection::new(stream, peer)),
        Ok(Err(e)) => {
            log_failure(peer, &e);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out after {} s", timeout.as_secs_f64());
            None
        }
    }
}

/// A refused client certificate is worth a warning (someone holds a
/// revoked, expired or foreign certificate); other failures are not.
fn log_failure(peer: SocketAddr, e: &io::Error) {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(
            err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) => {
            tracing::warn!(%peer, "TLS handshake refused: client certificate: {err}");
        }
        _ => tracing::debug!(%peer, "TLS handshake failed: {e}"),
    }
}
