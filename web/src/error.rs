//! The error pages: every bad input (a digest that does not parse, an
//! operation the scheduler does not know, a blob that is gone or is not
//! the message asked for) answers a page that says what was wrong, with
//! the HTTP status that fits. Never a panic, never raw input in the page
//! unescaped.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;

use crate::html::{esc, Page};

/// An error page: its status and what to tell the reader.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct PageError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The explanation, shown escaped.
    pub detail: String,
}

impl PageError {
    /// 400: the URL or form is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404: nothing by that name.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 403: the caller may not.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// Any status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        PageError {
            status,
            detail: detail.into(),
        }
    }

    /// A storage error met while reading `what`.
    pub fn storage(what: &str, e: corral_cas::Error) -> Self {
        use corral_cas::Error as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::InvalidArgument { .. } | E::MessageTooLarge { .. } | E::DigestMismatch { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            E::OutOfRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            E::PermissionDenied(_) => StatusCode::FORBIDDEN,
            E::ResourceExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match &e {
            E::NotFound(_) => format!(
                "{what}: not in the CAS (never uploaded under this instance name, or evicted since)"
            ),
            _ => format!("{what}: {e}"),
        };
        Self::new(status, detail)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let mut page = Page::new(format!("{} {title}", self.status.as_u16()));
        page.push_html(&format!("<p class=\"error\">{}</p>", esc(&self.detail)));
        (self.status, Html(page.finish())).into_response()
    }
}

/// What a page handler returns.
pub type PageResult = Result<Html<String>, PageError>;
