//! The HTTP routes: `/metrics`, `/healthz`, `/readyz` always, and the
//! pages (see [`crate::links`] for their URLs) unless turned off. Every
//! response carries a Content-Security-Policy that allows no script at
//! all: the pages need none, and an escape missed somewhere still could
//! not run one.

use axum::extract::State;
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::{HeaderValue, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::StatusCode;

use crate::error::PageError;
use crate::pages;
use crate::web::Web;

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The routes of `web`, ready to serve (see [`crate::dispatch`] for the
/// gRPC port, or `axum::serve` for a listener of their own).
pub fn router(web: Web) -> Router {
    let mut routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if web.pages() {
        routes = routes
            .route("/", get(pages::farm::page))
            .route("/executions", get(pages::executions::list))
            .route("/invocations", get(pages::executions::invocations))
            .route("/invocation", get(pages::executions::invocation))
            .route("/operation/{*name}", get(pages::operation::page))
            .route("/action/{function}/{hash}/{size}", get(pages::action::page))
            .route("/blob/{function}/{hash}/{size}", get(pages::cas::page))
            .route("/raw/{function}/{hash}/{size}", get(pages::cas::raw))
            .route("/admin/{verb}", post(pages::admin::post));
    }
    routes
        .fallback(not_found)
        .layer(map_response(protect))
        .with_state(web)
}

async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn metrics(State(web): State<Web>) -> Response {
    let text = web.metrics().encode();
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(web): State<Web>) -> Response {
    match web.health().ready().await {
        Ok(report) => (StatusCode::OK, report).into_response(),
        Err(report) => (StatusCode::SERVICE_UNAVAILABLE, report).into_response(),
    }
}

async fn not_found(uri: http::Uri) -> PageError {
    PageError::not_found(format!("no page at {}", uri.path()))
}
