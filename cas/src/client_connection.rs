//! A client connection that carries the client's credentials on every
//! call: a tonic [`Channel`] (plaintext, TLS or a UNIX socket, see
//! [`crate::channel`]) plus the `authorization` header of a token.
//!
//! Every generated gRPC client takes it where it takes a `Channel`
//! (`ContentAddressableStorageClient::new(connection)`), so no call site
//! has to remember to add the header: a client made from a
//! [`Connection`] cannot forget it.

use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{self, header::AUTHORIZATION};
use tonic::transport::Channel;

use crate::client_token::BearerToken;

/// A channel and, optionally, the token sent with each request on it.
/// Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    channel: Channel,
    token: Option<BearerToken>,
}

impl Connection {
    /// `channel`, sending `token` (when given) as `authorization` on
    /// every call.
    pub fn new(channel: Channel, token: Option<BearerToken>) -> Self {
        Connection { channel, token }
    }

    /// Whether calls carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

impl From<Channel> for Connection {
    /// A connection without credentials beyond the channel's own (a TLS
    /// client certificate, or the UNIX peer's uid).
    fn from(channel: Channel) -> Self {
        Connection::new(channel, None)
    }
}

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(token) = &self.token {
            // The connection's credential replaces anything a caller put
            // there: one identity per connection.
            request.headers_mut().insert(AUTHORIZATION, token.header());
        }
        self.channel.call(request)
    }
}
