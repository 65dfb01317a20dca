//! The authentication layer every listener has: who is calling, from the
//! connection alone.
//!
//! For each request it gathers what the connection and headers prove (the
//! verified TLS client certificate chain, the UNIX peer's uid, the
//! `authorization` header, the peer address) and asks the listener's
//! authenticator. A caller it accepts continues with its
//! `corral_auth::Principal` in the request's extensions, where
//! `corral_cas::Caller::from_request` finds it; extensions never come over
//! the wire, so no client can put one there. A caller it refuses gets
//! UNAUTHENTICATED, saying why, and one audit line, before any service runs.

use std::sync::Arc;
use std::task::{Context, Poll};

use corral_auth::{AuditEvent, AuditSink, Authenticator, Clock, Credentials};
use futures::future::BoxFuture;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// The layer; see the module documentation.
#[derive(Clone)]
pub struct Authenticate {
    authenticator: Arc<dyn Authenticator>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
}

impl Authenticate {
    /// Authenticates with `authenticator`, auditing refusals to `audit`.
    pub fn new(
        authenticator: Arc<dyn Authenticator>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Authenticate {
            authenticator,
            audit,
            clock,
        }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer wraps around the routes.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: Authenticate,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if is_health_probe(&request) {
            // Process supervisors and Kubernetes probe without credentials;
            // these answer only "up" and "ready".
            return self.forward(request);
        }
        let credentials = credentials_of(&request);
        match self.layer.authenticator.authenticate(&credentials) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                if let Some(peer) = credentials.peer_label() {
                    request
                        .extensions_mut()
                        .insert(corral_cas::Peer(peer.into()));
                }
                self.forward(request)
            }
            Err(error) => {
                tracing::warn!(peer = ?credentials.peer_addr, uid = ?credentials.peer_uid, %error, "unauthenticated call refused");
                self.layer.audit.record(&AuditEvent::unauthenticated(
                    self.layer.clock.now(),
                    &error,
                    &credentials,
                ));
                let refusal = if corral_web::dispatch::is_grpc(&request) {
                    tonic::Status::unauthenticated(error.to_string()).into_http()
                } else {
                    unauthorized_page(&error.to_string())
                };
                Box::pin(async move { Ok(refusal) })
            }
        }
    }
}

impl<S: Clone> Authenticated<S> {
    /// Passes `request` on. The clone is ready only after `poll_ready`, so
    /// the service that was polled takes the call and the clone stays for
    /// the next one.
    fn forward<B>(
        &mut self,
        request: http::Request<B>,
    ) -> BoxFuture<'static, Result<S::Response, S::Error>>
    where
        S: tower::Service<http::Request<B>> + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { ready.call(request).await })
    }
}

/// What a browser or a scraper gets when it is refused: 401 with the
/// reason as text (a gRPC status in headers would read as an empty 200).
fn unauthorized_page(reason: &str) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(format!(
        "401 Unauthorized: {reason}\n"
    )));
    *response.status_mut() = http::StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// `GET /healthz` or `GET /readyz`: the only calls that need no identity.
fn is_health_probe<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::GET && matches!(request.uri().path(), "/healthz" | "/readyz")
}

/// What the connection and the headers of `request` prove.
fn credentials_of<B>(request: &http::Request<B>) -> Credentials {
    let extensions = request.extensions();
    let authorization =
        request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| match v.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            });
    let mut credentials = Credentials {
        authorization,
        ..Credentials::default()
    };
    if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        credentials.peer_addr = tls.get_ref().remote_addr();
        credentials.peer_certificates = tls
            .peer_certs()
            .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
    } else if let Some(tcp) = extensions.get::<TcpConnectInfo>() {
        credentials.peer_addr = tcp.remote_addr();
    } else if let Some(uds) = extensions.get::<UdsConnectInfo>() {
        credentials.unix_socket = true;
        credentials.peer_uid = uds.peer_cred.map(|c| c.uid());
    }
    credentials
}
