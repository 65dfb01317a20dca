//! Admin actions: drain or undrain a worker, cancel an operation. Each is
//! a POST that first answers a confirmation page and does nothing; only
//! the confirmation's own form, which carries a token signed by this
//! process for exactly that action and target, does it. Another site
//! cannot read the token, so it cannot post a confirmed action in a
//! visitor's name. Every POST is first put to the [`crate::AdminPolicy`].

use std::fmt::Write;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use http::Extensions;
use serde::Deserialize;

use crate::access::AdminAction;
use crate::error::PageError;
use crate::html::{esc, Page};
use crate::links;
use crate::web::Web;

/// The form of every admin POST.
#[derive(Debug, Deserialize)]
pub struct AdminForm {
    /// The worker or operation name.
    target: Option<String>,
    /// `yes` on the confirmation's form.
    confirm: Option<String>,
    /// The confirmation's signature.
    token: Option<String>,
}

/// `POST /admin/{drain|undrain|cancel}`.
pub async fn post(
    State(web): State<Web>,
    Path(verb): Path<String>,
    extensions: Extensions,
    form: Result<Form<AdminForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|e| PageError::bad_request(format!("the form: {e}")))?;
    let target = form
        .target
        .ok_or_else(|| PageError::bad_request("the form names no target"))?;
    let action = AdminAction::parse(&verb, target)
        .ok_or_else(|| PageError::not_found(format!("no admin action {verb:?}")))?;
    let scheduler = web.scheduler()?;
    let instance = match &action {
        AdminAction::Cancel(op) => scheduler
            .operation_view(op)
            .map(|o| o.instance_name)
            .unwrap_or_default(),
        _ => String::new(),
    };
    web.authorize(&extensions, &action, &instance)?;
    let token = web.token(&action);
    let confirmed =
        form.confirm.as_deref() == Some("yes") && form.token.as_deref() == Some(token.as_str());
    if !confirmed {
        return Ok(confirmation(&action, &token).into_response());
    }
    let (done, back) = match &action {
        AdminAction::Drain(w) => (scheduler.hold_worker(w, true), "/".to_string()),
        AdminAction::Undrain(w) => (scheduler.hold_worker(w, false), "/".to_string()),
        AdminAction::Cancel(op) => (scheduler.cancel_operation(op), links::operation(op)),
    };
    match done {
        Ok(()) => {
            web.taken(&extensions, &action, &instance);
            tracing::info!(
                action = action.verb(),
                target = action.target(),
                "admin action taken through the web pages"
            );
            Ok(Redirect::to(&back).into_response())
        }
        Err(corral_scheduler::Error::NotFound(m)) => Err(PageError::not_found(m)),
        Err(e) => Err(PageError::bad_request(e.to_string())),
    }
}

/// The page that asks before anything is done.
fn confirmation(action: &AdminAction, token: &str) -> Html<String> {
    let (question, button) = match action {
        AdminAction::Drain(_) => (
            "Drain worker",
            "Yes, drain it: it finishes what it runs and gets nothing new",
        ),
        AdminAction::Undrain(_) => ("Undrain worker", "Yes, let it take work again"),
        AdminAction::Cancel(_) => ("Cancel operation", "Yes, cancel it"),
    };
    let mut page = Page::new(format!("{question}?"));
    let _ = write!(
        page,
        "<p id=\"confirm-question\">{question} <code>{}</code>? Nothing has been done yet.</p>\
         <form method=\"post\" action=\"/admin/{}\">\
         <input type=\"hidden\" name=\"target\" value=\"{}\">\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\" id=\"confirm\">{button}</button></form>\
         <p><a href=\"/\">No, back to the farm</a></p>",
        esc(action.target()),
        action.verb(),
        esc(action.target()),
        esc(token)
    );
    Html(page.finish())
}
