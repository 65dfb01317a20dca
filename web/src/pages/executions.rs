//! Recent executions (`/executions`, filterable by instance and outcome)
//! and invocations (`/invocations`, `/invocation?id=`): operations
//! grouped by the `tool_invocation_id` Bazel and BuildStream send, with
//! their counts, failures and slowest actions — a page per build without
//! a Build Event Service. Both read the scheduler's bounded memory of
//! recent executions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::response::Html;
use corral_scheduler::observer::{Execution, Outcome};
use serde::Deserialize;

use super::function_of;
use super::render::digest_link;
use crate::error::{PageError, PageResult};
use crate::html::{duration, esc, time, Page};
use crate::links;
use crate::web::Web;

/// `?instance=…&outcome=…&id=…`.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    instance: Option<String>,
    outcome: Option<String>,
    id: Option<String>,
}

/// The action page of an execution, with its kept response.
fn action_link(e: &Execution) -> String {
    let mut url = links::action(
        &e.instance_name,
        function_of(e.digest_function),
        &e.action_digest,
    );
    if let Some(k) = &e.response_digest {
        url.push_str(&format!(
            "&response={}-{}",
            links::query(&k.hash),
            k.size_bytes
        ));
    }
    digest_link(&url, &e.action_digest)
}

/// The executions as a table, one row each.
pub fn table(page: &mut Page, executions: &[&Execution]) {
    page.push_html(
        "<table id=\"executions\"><tr><th>finished</th><th>outcome</th><th>instance</th><th>action</th>\
         <th>mnemonic / target</th><th>worker</th><th>queued</th><th>ran</th><th>operation</th></tr>",
    );
    for e in executions {
        let class = if e.outcome.is_failure() {
            "failed"
        } else {
            "ok"
        };
        let op = e
            .operations
            .first()
            .map(|o| format!("<a href=\"{}\">{}</a>", esc(&links::operation(o)), esc(o)))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td><code>{}</code></td><td>{}</td>\
             <td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{op}</td></tr>",
            time(e.finished_at),
            e.outcome.label(),
            esc(&e.instance_name),
            action_link(e),
            esc(&e.mnemonic),
            esc(&e.target),
            esc(&e.worker),
            duration(e.queued_for),
            e.ran_for.map(duration).unwrap_or_else(|| "—".into()),
        );
    }
    page.push_html("</table>");
}

/// `GET /executions`.
pub async fn list(State(web): State<Web>, Query(f): Query<Filter>) -> PageResult {
    let scheduler = web.scheduler()?;
    let outcome = match f.outcome.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(label) => Some(
            Outcome::from_label(label)
                .ok_or_else(|| PageError::bad_request(format!("unknown outcome {label:?}")))?,
        ),
    };
    let all = scheduler.recent_executions();
    let shown: Vec<&Execution> = all
        .iter()
        .filter(|e| f.instance.as_ref().is_none_or(|i| &e.instance_name == i))
        .filter(|e| outcome.is_none_or(|o| e.outcome == o))
        .collect();
    let mut page = Page::new("Recent executions");
    page.push_html("<p>Outcome: ");
    let instance = f.instance.as_deref();
    let _ = write!(
        page,
        "<a href=\"{}\">all</a>",
        esc(&links::executions(instance, None))
    );
    for o in Outcome::ALL {
        let _ = write!(
            page,
            " · <a href=\"{}\">{}</a>",
            esc(&links::executions(instance, Some(o.label()))),
            o.label()
        );
    }
    let _ = write!(
        page,
        "</p><p>{} of the {} remembered.</p>",
        shown.len(),
        all.len()
    );
    table(&mut page, &shown);
    Ok(Html(page.finish()))
}

/// What one invocation did.
#[derive(Default)]
struct Summary {
    count: usize,
    failures: usize,
    cached: usize,
    ran: Duration,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

/// `GET /invocations`.
pub async fn invocations(State(web): State<Web>) -> PageResult {
    let scheduler = web.scheduler()?;
    let all = scheduler.recent_executions();
    let mut by: BTreeMap<&str, Summary> = BTreeMap::new();
    for e in all.iter().filter(|e| !e.invocation.is_empty()) {
        let s = by.entry(&e.invocation).or_default();
        s.count += 1;
        s.failures += usize::from(e.outcome.is_failure());
        s.cached += usize::from(e.outcome == Outcome::Cached);
        s.ran += e.ran_for.unwrap_or_default();
        s.first = Some(s.first.map_or(e.finished_at, |t| t.min(e.finished_at)));
        s.last = Some(s.last.map_or(e.finished_at, |t| t.max(e.finished_at)));
    }
    let mut page = Page::new("Invocations");
    page.push_html(
        "<table id=\"invocations\"><tr><th>invocation</th><th>actions</th><th>cache hits</th>\
         <th>failures</th><th>time running</th><th>first</th><th>last</th></tr>",
    );
    for (id, s) in &mut by {
        s.cached += usize::try_from(scheduler.cache_hits(id)).unwrap_or(usize::MAX);
        let _ = write!(
            page,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&links::invocation(id)),
            esc(id),
            s.count,
            s.cached,
            if s.failures > 0 { "failed" } else { "ok" },
            s.failures,
            duration(s.ran),
            s.first.map(time).unwrap_or_default(),
            s.last.map(time).unwrap_or_default()
        );
    }
    page.push_html("</table>");
    Ok(Html(page.finish()))
}

/// `GET /invocation?id=…`: its executions, slowest first.
pub async fn invocation(State(web): State<Web>, Query(f): Query<Filter>) -> PageResult {
    let scheduler = web.scheduler()?;
    let id =
        f.id.ok_or_else(|| PageError::bad_request("no invocation id (?id=…)"))?;
    let all = scheduler.recent_executions();
    let mut mine: Vec<&Execution> = all.iter().filter(|e| e.invocation == id).collect();
    if mine.is_empty() {
        return Err(PageError::not_found(format!(
            "no recent execution belongs to the invocation {id:?}"
        )));
    }
    mine.sort_by_key(|e| std::cmp::Reverse(e.ran_for.unwrap_or_default()));
    let mut page = Page::new(format!("Invocation {id}"));
    let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
    for e in &mine {
        *counts.entry(e.outcome).or_default() += 1;
    }
    let counted: Vec<String> = counts
        .iter()
        .map(|(o, n)| format!("{n} {}", o.label()))
        .collect();
    let _ = write!(
        page,
        "<p>{} actions: {}. Slowest first.</p>",
        mine.len(),
        counted.join(", ")
    );
    table(&mut page, &mine);
    Ok(Html(page.finish()))
}
