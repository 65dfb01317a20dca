//! Garbage protobufs are bad input, not server faults.
//!
//! tonic answers a request it cannot decode with `INTERNAL` (following
//! gRPC's status-code table). Corral's convention is that anything malformed
//! from the network is `INVALID_ARGUMENT` with a message naming the field,
//! and prost's decode errors already name it (`WriteRequest.data: invalid
//! wire type …`), so this wrapper only changes the code. Streamed requests
//! are decoded inside the handlers, which use [`from_stream_error`].

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::Status;

/// Prefix of tonic-prost's decode error messages.
///
/// Matching on text is a last resort, and this is one: tonic-prost turns a
/// `prost::DecodeError` into `Status::internal(error.to_string())` with no
/// source attached and no code of its own (tonic-prost 0.14
/// `codec.rs::from_decode_error`), and the REAPI servers' codec is chosen
/// by the `bazel-remote-apis` crate's generated code, so there is no
/// structural signal to test instead. Only the code changes on a match
/// (INTERNAL to INVALID_ARGUMENT); if the text ever changes, garbage is
/// answered with INTERNAL again, which `tests/garbage.rs` would catch.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// Wraps a generated tonic server.
#[derive(Clone)]
pub struct DecodeErrorsAsInvalid<S>(pub S);

impl<S: NamedService> NamedService for DecodeErrorsAsInvalid<S> {
    const NAME: &'static str = S::NAME;
}

fn is_decode_failure(status: &Status) -> bool {
    status.code() == tonic::Code::Internal && status.message().starts_with(DECODE_FAILURE)
}

/// Maps a decode failure seen while reading a request stream.
pub fn from_stream_error(status: Status, message: &str) -> crate::Error {
    if is_decode_failure(&status) {
        crate::Error::invalid(
            "request",
            format!("not a valid {message}: {}", status.message()),
        )
    } else {
        crate::Error::Remote(status)
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for DecodeErrorsAsInvalid<S>
where
    S: tonic::codegen::Service<
        http::Request<B>,
        Response = http::Response<Body>,
        Error = Infallible,
    >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await?;
            match response.extensions().get::<Status>() {
                Some(status) if is_decode_failure(status) => {
                    tracing::debug!(path, message = status.message(), "undecodable request");
                    let message = format!(
                        "request: not a valid request message for {path}: {}",
                        status.message()
                    );
                    Ok(Status::invalid_argument(message).into_http())
                }
                _ => Ok(response),
            }
        })
    }
}
