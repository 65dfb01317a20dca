//! gRPC and HTTP pages on one port: tonic's routes are an axum router
//! underneath, so one router can hand each request to the gRPC services
//! or to the pages by its content type. gRPC requests say
//! `content-type: application/grpc…`; everything else (a browser, a
//! Prometheus scrape, a health probe) is a page.

use std::convert::Infallible;

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::Request;
use tonic::service::Routes;
use tower::ServiceExt;

use crate::rpc::{RpcLayer, RpcMetrics};

/// Whether a request is a gRPC call.
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc` and `pages` behind one set of routes for tonic's server; gRPC
/// calls are counted by `rpc` when given. The server must accept HTTP/1
/// for browsers (`Server::accept_http1(true)`).
pub fn same_port(grpc: Routes, pages: axum::Router, rpc: Option<RpcMetrics>) -> Routes {
    same_port_with(
        grpc,
        pages,
        RpcLayer {
            metrics: rpc,
            spans: false,
        },
    )
}

/// [`same_port`] with gRPC calls counted and/or traced as `rpc` says.
pub fn same_port_with(grpc: Routes, pages: axum::Router, rpc: RpcLayer) -> Routes {
    let rpc = rpc.is_active().then_some(rpc);
    let grpc = grpc.prepare().into_axum_router();
    let pages = pages.with_state(());
    let split = tower::service_fn(move |request: Request<Body>| {
        let grpc = grpc.clone();
        let pages = pages.clone();
        let rpc = rpc.clone();
        async move {
            let response = if !is_grpc(&request) {
                pages.oneshot(request).await
            } else if let Some(m) = rpc {
                m.layer(grpc).oneshot(request).await
            } else {
                grpc.oneshot(request).await
            };
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    Routes::from(axum::Router::new().fallback_service(split))
}
