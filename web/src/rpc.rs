//! RPC metrics: a tower layer over the gRPC services that counts every
//! call by service, method and gRPC code, and times it from its request
//! to the end of its response stream (a streaming call's whole life).
//!
//! The code is read where gRPC puts it: the response headers for an
//! immediate error, else the trailers after the last message. A call
//! whose stream is dropped before its trailers (the client went away)
//! counts as `CANCELLED`. The service and method come from the request
//! path, but only names of [`KNOWN`] services are used as labels; any
//! other path counts as `other`, so a client cannot make new series.
//!
//! With trace export on ([`crate::trace_export`]), the same layer makes one
//! `tracing` span per call, named `Service/Method` (`otel.name`), with the
//! OpenTelemetry RPC attributes (`rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`); it lasts as long as the call is
//! timed, and the service's own spans and events run inside it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

/// The gRPC services and methods Corral serves (and its neighbours may),
/// the only ones named in labels.
pub const KNOWN: &[(&str, &[&str])] = &[
    (
        "build.bazel.remote.execution.v2.Execution",
        &["Execute", "WaitExecution"],
    ),
    (
        "build.bazel.remote.execution.v2.ActionCache",
        &["GetActionResult", "UpdateActionResult"],
    ),
    (
        "build.bazel.remote.execution.v2.ContentAddressableStorage",
        &[
            "FindMissingBlobs",
            "BatchUpdateBlobs",
            "BatchReadBlobs",
            "GetTree",
            "SplitBlob",
            "SpliceBlob",
        ],
    ),
    (
        "build.bazel.remote.execution.v2.Capabilities",
        &["GetCapabilities"],
    ),
    (
        "google.bytestream.ByteStream",
        &["Read", "Write", "QueryWriteStatus"],
    ),
    (
        "google.longrunning.Operations",
        &[
            "ListOperations",
            "GetOperation",
            "DeleteOperation",
            "CancelOperation",
            "WaitOperation",
        ],
    ),
    (
        "build.bazel.remote.asset.v1.Fetch",
        &["FetchBlob", "FetchDirectory"],
    ),
    (
        "build.bazel.remote.asset.v1.Push",
        &["PushBlob", "PushDirectory"],
    ),
    ("corral.worker.v1.WorkerService", &["Session"]),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
];

/// Latency buckets (seconds): a cached FindMissingBlobs to a long stream.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
    1800.0,
];

type Labels = [(&'static str, &'static str); 3];

/// The RPC counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    calls: Family<Labels, Counter>,
    seconds: Family<[(&'static str, &'static str); 2], Histogram>,
}

impl RpcMetrics {
    /// Registers `corral_grpc_server_*` in `registry`.
    pub fn register(registry: &mut Registry) -> RpcMetrics {
        let m = RpcMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        };
        registry.register(
            "corral_grpc_server_handled",
            "gRPC calls finished, by service, method and gRPC code",
            m.calls.clone(),
        );
        registry.register(
            "corral_grpc_server_handling_seconds",
            "Time from a gRPC call's request to the end of its response stream, by service and method",
            m.seconds.clone(),
        );
        m
    }

    /// Wraps a gRPC service so that its calls are counted.
    pub fn layer<S>(&self, inner: S) -> MeteredRpc<S> {
        RpcLayer {
            metrics: Some(self.clone()),
            spans: false,
        }
        .layer(inner)
    }

    fn record(&self, call: &Call, code: &'static str) {
        let (service, method) = (call.service, call.method);
        self.calls
            .get_or_create(&[("service", service), ("method", method), ("code", code)])
            .inc();
        self.seconds
            .get_or_create(&[("service", service), ("method", method)])
            .observe(call.started.elapsed().as_secs_f64());
    }
}

/// What [`MeteredRpc`] does per call: count it (`metrics`), make a span
/// of it (`spans`), or both.
#[derive(Clone, Debug, Default)]
pub struct RpcLayer {
    /// Count calls into these metrics.
    pub metrics: Option<RpcMetrics>,
    /// Make one `tracing` span per call.
    pub spans: bool,
}

impl RpcLayer {
    /// Whether the layer does anything at all.
    pub fn is_active(&self) -> bool {
        self.metrics.is_some() || self.spans
    }

    /// Wraps a gRPC service.
    pub fn layer<S>(&self, inner: S) -> MeteredRpc<S> {
        MeteredRpc {
            inner,
            layer: self.clone(),
        }
    }
}

/// The labels of a request path: a known service and method, or `other`.
pub fn resolve(path: &str) -> (&'static str, &'static str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    KNOWN
        .iter()
        .find(|(s, _)| *s == service)
        .and_then(|(s, methods)| methods.iter().find(|m| **m == method).map(|m| (*s, *m)))
        .unwrap_or(("other", "other"))
}

/// The canonical name of a gRPC code (`OK`, `NOT_FOUND`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    let code: i32 = value.parse().ok()?;
    Some(code_name(Code::from_i32(code)))
}

/// The number of a canonical code name (`NOT_FOUND` is 5); 2 (`UNKNOWN`)
/// for a name that is none.
fn code_number(name: &str) -> i64 {
    (0..=16)
        .find(|&n| code_name(Code::from_i32(n)) == name)
        .map_or(2, i64::from)
}

/// One call being timed.
struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
    /// The call's span, ended when the call is recorded.
    span: Option<tracing::Span>,
}

impl Call {
    /// A call of `path`, with its span when `spans`.
    fn start(path: &str, spans: bool) -> Call {
        let (service, method) = resolve(path);
        let span = spans.then(|| {
            tracing::info_span!(
                target: "corral::rpc",
                "grpc",
                otel.name = format!("{service}/{method}"),
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        });
        Call {
            service,
            method,
            started: Instant::now(),
            span,
        }
    }

    /// Counts the call and ends its span with `code`.
    fn finish(self, metrics: Option<&RpcMetrics>, code: &'static str) {
        if let Some(m) = metrics {
            m.record(&self, code);
        }
        if let Some(span) = self.span {
            span.record("rpc.grpc.status_code", code_number(code));
            if code != "OK" {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// A gRPC service whose calls are counted; see the module comment.
#[derive(Clone)]
pub struct MeteredRpc<S> {
    inner: S,
    layer: RpcLayer,
}

impl<S> tower::Service<Request<Body>> for MeteredRpc<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let call = Call::start(request.uri().path(), self.layer.spans);
        let metrics = self.layer.metrics.clone();
        let span = call.span.clone().unwrap_or_else(tracing::Span::none);
        let future = span.in_scope(|| self.inner.call(request));
        let future = async move {
            let response = future.await?;
            let early = status_in(response.headers());
            Ok(response.map(|body| {
                Body::new(CountedBody {
                    inner: body,
                    pending: Some((metrics, call)),
                    early,
                })
            }))
        };
        Box::pin(tracing::Instrument::instrument(future, span))
    }
}

/// A response body that records its call when its trailers arrive, when
/// it ends, or when it is dropped unfinished.
struct CountedBody {
    inner: Body,
    pending: Option<(Option<RpcMetrics>, Call)>,
    early: Option<&'static str>,
}

impl CountedBody {
    fn finish(&mut self, code: &'static str) {
        if let Some((metrics, call)) = self.pending.take() {
            call.finish(metrics.as_ref(), code);
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_in(trailers).or(self.early).unwrap_or("UNKNOWN");
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("INTERNAL"),
            Poll::Ready(None) => {
                let code = self.early.unwrap_or("UNKNOWN");
                self.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        // A trailers-only answer (an error) has an empty body that the
        // server may never poll: its code was in the headers.
        let code = self.early.unwrap_or("CANCELLED");
        self.finish(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_services_and_methods_become_labels() {
        assert_eq!(
            resolve("/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"),
            (
                "build.bazel.remote.execution.v2.ContentAddressableStorage",
                "FindMissingBlobs"
            )
        );
        assert_eq!(
            resolve("/build.bazel.remote.execution.v2.ContentAddressableStorage/Made-Up"),
            ("other", "other")
        );
        assert_eq!(resolve("/evil.Service/x"), ("other", "other"));
        assert_eq!(resolve(""), ("other", "other"));
        assert_eq!(code_name(Code::from_i32(5)), "NOT_FOUND");
        assert_eq!(code_number("NOT_FOUND"), 5);
        assert_eq!(code_number("OK"), 0);
        assert_eq!(code_number("made up"), 2);
    }
}
