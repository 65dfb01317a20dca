//! The operation page (`/operation/{name}`): its live stage (the page
//! reloads itself every two seconds until the operation is done), the
//! worker, the phases' timestamps drawn as a timeline, and the
//! ExecuteResponse.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::Html;
use corral_proto::reapi::execution_stage::Value as Stage;

use super::farm::button;
use super::function_of;
use super::render::{digest_link, status, timeline};
use crate::error::{PageError, PageResult};
use crate::html::{duration, esc, time, Page};
use crate::links;
use crate::web::Web;

/// `GET /operation/{name}`.
pub async fn page(State(web): State<Web>, Path(name): Path<String>) -> PageResult {
    let scheduler = web.scheduler()?;
    let op = scheduler.operation_view(&name).ok_or_else(|| {
        PageError::not_found(format!(
            "the scheduler knows no operation {name:?} (never created, or forgotten after its retention)"
        ))
    })?;
    let mut page = Page::new(format!("Operation {name}"));
    let f = function_of(op.digest_function);
    let mut url = links::action(&op.instance_name, f, &op.action_digest);
    if let Some(kept) = op
        .execution
        .as_ref()
        .and_then(|e| e.response_digest.as_ref())
    {
        url.push_str(&format!(
            "&response={}-{}",
            links::query(&kept.hash),
            kept.size_bytes
        ));
    }
    let _ = write!(
        page,
        "<table><tr><th>Stage</th><td id=\"stage\">{}</td></tr>\
         <tr><th>Instance</th><td><code>{}</code></td></tr><tr><th>Action</th><td>{}</td></tr>",
        op.stage.as_str_name(),
        esc(&op.instance_name),
        digest_link(&url, &op.action_digest)
    );
    if let Some(a) = &op.active {
        let _ = write!(
            page,
            "<tr><th>Worker</th><td>{}</td></tr><tr><th>Age</th><td>{}</td></tr>\
             <tr><th>Invocation</th><td>{}</td></tr></table><p>{}</p>",
            esc(a.worker.as_deref().unwrap_or("(waiting for one)")),
            duration(a.age),
            esc(&a.invocation),
            button("cancel", &op.name, "Cancel this operation")
        );
    } else {
        page.push_html("</table>");
    }
    if let Some(e) = &op.execution {
        let _ = write!(
            page,
            "<p>Outcome: <span class=\"{}\">{}</span>; worker <code>{}</code>; queued {}{}; finished {}.</p>",
            if e.outcome.is_failure() { "failed" } else { "ok" },
            e.outcome.label(),
            esc(&e.worker),
            duration(e.queued_for),
            e.ran_for.map(|r| format!(", ran {}", duration(r))).unwrap_or_default(),
            time(e.finished_at)
        );
    }
    match &op.response {
        Some(response) => {
            page.push_html("<h2>ExecuteResponse</h2>");
            status(&mut page, response.status.as_ref());
            let _ = write!(
                page,
                "<p>Served from the cache: {}</p>",
                if response.cached_result { "yes" } else { "no" }
            );
            if !response.message.is_empty() {
                let _ = write!(page, "<pre>{}</pre>", esc(&response.message));
            }
            if let Some(result) = &response.result {
                let _ = write!(page, "<p>Exit code: {}</p>", result.exit_code);
                if let Some(m) = &result.execution_metadata {
                    timeline(&mut page, m);
                }
            }
        }
        None if op.stage != Stage::Completed => page.refresh(2),
        None => {}
    }
    Ok(Html(page.finish()))
}
