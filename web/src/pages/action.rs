//! The action page (`/action/{function}/{hash}/{size}?instance=…`): the
//! Action, its Command, its input root as a tree, its result, and the
//! command line that reruns it with `corral runner exec`.
//!
//! The result shown is, in this order: the kept ExecuteResponse the URL
//! names (`response=`, the link in a failed response's message), the
//! newest failed execution the scheduler remembers, else the action
//! cache's entry (only successes are cached).

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use corral_cas::{BlobStore, Digest, RequestContext};
use corral_proto::reapi;
use http::Extensions;
use prost::Message;

use super::render::{self, runner_exec_line, status};
use super::result::{result, Source};
use super::tree::{tree, Children};
use super::DigestQuery;
use crate::error::{PageError, PageResult};
use crate::html::{esc, time, Page};
use crate::links::{parse_dashed, parse_digest};
use crate::web::Web;

/// The largest kept ExecuteResponse read (the action-result cap again).
fn response_cap(cas: &corral_cas::BoundedStore) -> u64 {
    cas.limits()
        .limit(corral_cas::message::MessageKind::ActionResult)
}

/// A kept ExecuteResponse, bounded and decoded.
pub async fn kept_response(
    cas: &corral_cas::BoundedStore,
    ctx: &RequestContext,
    digest: &Digest,
) -> Result<reapi::ExecuteResponse, PageError> {
    let cap = response_cap(cas);
    if digest.size() > cap {
        return Err(PageError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the ExecuteResponse {digest} is {} bytes, more than the {cap} bytes a page reads",
                digest.size()
            ),
        ));
    }
    let bytes = cas
        .get(ctx, digest)
        .await
        .map_err(|e| PageError::storage("the kept ExecuteResponse", e))?;
    reapi::ExecuteResponse::decode(bytes).map_err(|e| {
        PageError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("the blob {digest} is not an ExecuteResponse: {e}"),
        )
    })
}

/// `GET /action/{function}/{hash}/{size}`.
pub async fn page(
    State(web): State<Web>,
    Path((function, hash, size)): Path<(String, String, String)>,
    Query(q): Query<DigestQuery>,
    extensions: Extensions,
) -> PageResult {
    let digest = parse_digest(&function, &hash, &size)?;
    let f = digest.function();
    let storage = web.storage()?;
    let ctx = web.context(&extensions, &q.instance, f)?;
    let cas = &storage.cas;
    let action: reapi::Action = cas
        .get_message(&ctx, &digest, "action")
        .await
        .map_err(|e| PageError::storage(&format!("the Action {digest}"), e))?;
    let d = digest.to_proto();
    let mut page = Page::new(format!("Action {}/{}", d.hash, d.size_bytes));
    let _ = write!(
        page,
        "<p>Instance <code>{}</code>. Rerun it here:</p><pre id=\"runner-exec\">{}</pre><h2>Result</h2>",
        esc(&q.instance),
        esc(&runner_exec_line(&q.instance, f, &d, web.grpc_url()))
    );
    let src = Source {
        cas,
        ctx: &ctx,
        instance: &q.instance,
        function: f,
    };
    shown_result(&mut page, &web, &src, &digest, &q).await?;
    page.push_html("<h2>Action</h2>");
    render::action(&mut page, &q.instance, f, &action);
    command(&mut page, &src, &action).await;
    input_root(&mut page, &src, &action).await;
    Ok(Html(page.finish()))
}

async fn command(page: &mut Page, src: &Source<'_>, action: &reapi::Action) {
    page.push_html("<h2>Command</h2>");
    let Some(d) = &action.command_digest else {
        page.push_html("<p class=\"error\">The Action names no Command.</p>");
        return;
    };
    let got = match Digest::from_proto(src.function, d) {
        Ok(digest) => {
            src.cas
                .get_message::<reapi::Command>(src.ctx, &digest, "command_digest")
                .await
        }
        Err(e) => Err(e),
    };
    match got {
        Ok(c) => render::command(page, &c),
        Err(e) => {
            let err = PageError::storage("the Command", e);
            let _ = write!(page, "<p class=\"error\">{}</p>", esc(&err.detail));
        }
    }
}

async fn input_root(page: &mut Page, src: &Source<'_>, action: &reapi::Action) {
    page.push_html("<h2>Input root</h2>");
    let Some(d) = &action.input_root_digest else {
        return;
    };
    let got = match Digest::from_proto(src.function, d) {
        Ok(digest) => {
            src.cas
                .get_message::<reapi::Directory>(src.ctx, &digest, "input_root_digest")
                .await
        }
        Err(e) => Err(e),
    };
    match got {
        Ok(root) => tree(page, src, &Children::Cas, &root).await,
        Err(e) => {
            let err = PageError::storage("the input root", e);
            let _ = write!(page, "<p class=\"error\">{}</p>", esc(&err.detail));
        }
    }
}

/// Finds and writes the result (see the module comment).
async fn shown_result(
    page: &mut Page,
    web: &Web,
    src: &Source<'_>,
    digest: &Digest,
    q: &DigestQuery,
) -> Result<(), PageError> {
    let mut response = None;
    if let Some(text) = &q.response {
        let kept = parse_dashed(digest.function(), text)?;
        response = Some((
            kept_response(src.cas, src.ctx, &kept).await?,
            "the kept ExecuteResponse".to_string(),
        ));
    } else if let Some(s) = web.scheduler_opt() {
        let d = digest.to_proto();
        response = s
            .recent_executions()
            .into_iter()
            .find(|e| e.instance_name == q.instance && e.action_digest == d && e.response.is_some())
            .and_then(|e| {
                let when = format!("its execution that finished {}", time(e.finished_at));
                e.response.map(|r| ((*r).clone(), when))
            });
    }
    if let Some((r, from)) = response {
        let _ = write!(page, "<p class=\"muted\">From {}.</p>", esc(&from));
        status(page, r.status.as_ref());
        if !r.message.is_empty() {
            let _ = write!(page, "<pre>{}</pre>", esc(&r.message));
        }
        if let Some(res) = &r.result {
            result(page, src, res).await;
        }
        return Ok(());
    }
    match web.storage()?.action_cache.get(src.ctx, digest).await {
        Ok(Some(r)) => {
            page.push_html("<p class=\"muted\">From the action cache.</p>");
            result(page, src, &r).await;
        }
        Ok(None) => page.push_html("<p class=\"muted\">No result is known: not in the action cache, and no failed run is remembered.</p>"),
        Err(e) => {
            let _ = write!(page, "<p class=\"error\">The action cache: {}</p>", esc(&e.to_string()));
        }
    }
    Ok(())
}
