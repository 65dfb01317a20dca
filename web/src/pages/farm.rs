//! The farm page (`/`): queues per instance and platform with their
//! lengths and oldest waits, workers with their platform, slots, current
//! actions, cached images and state, and the operations queued or running;
//! drain and undrain buttons for workers and cancel buttons for
//! operations (each leads to a confirmation first).

use std::fmt::Write;

use axum::extract::State;
use axum::response::Html;
use corral_scheduler::view::{FarmView, WorkerState};

use super::function_of;
use super::render::digest_link;
use crate::error::PageResult;
use crate::html::{duration, esc, Page};
use crate::links;
use crate::web::Web;

/// Finished executions the farm page lists (the rest are on
/// `/executions`).
const RECENT_SHOWN: usize = 20;

/// `GET /`.
pub async fn page(State(web): State<Web>) -> PageResult {
    let mut page = Page::new("Farm");
    let Some(scheduler) = web.scheduler_opt() else {
        page.push_html(
            "<p>This server runs no scheduler: storage only. <a href=\"/metrics\">Metrics</a>.</p>",
        );
        return Ok(Html(page.finish()));
    };
    let farm = scheduler.farm();
    let s = farm.stats;
    let _ = write!(
        page,
        "<p>{} queued, {} running, {} workers, {} operations known, {} assignments so far. \
         <a href=\"{}\">Failed executions</a></p>",
        s.queued,
        s.running,
        s.workers,
        s.operations,
        s.assignments,
        esc(&links::executions(None, Some("failed")))
    );
    queues(&mut page, &farm);
    workers(&mut page, &farm);
    active(&mut page, &farm);
    let recent = scheduler.recent_executions();
    page.push_html("<h2>Recently finished</h2>");
    if recent.is_empty() {
        page.push_html("<p class=\"muted\">Nothing yet.</p>");
    } else {
        let newest: Vec<_> = recent.iter().take(RECENT_SHOWN).collect();
        super::executions::table(&mut page, &newest);
        let _ = write!(
            page,
            "<p><a href=\"{}\">All {} remembered</a></p>",
            esc(&links::executions(None, None)),
            recent.len()
        );
    }
    Ok(Html(page.finish()))
}

fn queues(page: &mut Page, farm: &FarmView) {
    page.push_html("<h2>Queues</h2>");
    if farm.queues.is_empty() {
        page.push_html("<p class=\"muted\">Nothing is waiting.</p>");
        return;
    }
    page.push_html("<table id=\"queues\"><tr><th>instance</th><th>platform</th><th>queued</th><th>oldest waiting</th></tr>");
    for q in &farm.queues {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&q.instance_name),
            esc(&q.platform),
            q.queued,
            duration(q.oldest_wait)
        );
    }
    page.push_html("</table>");
}

/// A POST button that leads to the confirmation of `verb` on `target`.
pub fn button(verb: &str, target: &str, label: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/admin/{verb}\">\
         <input type=\"hidden\" name=\"target\" value=\"{}\">\
         <button type=\"submit\" name=\"ask\" value=\"{verb}\">{label}</button></form>",
        esc(target)
    )
}

fn workers(page: &mut Page, farm: &FarmView) {
    page.push_html("<h2>Workers</h2>");
    if farm.workers.is_empty() {
        page.push_html("<p class=\"muted\">No worker is connected.</p>");
        return;
    }
    page.push_html(
        "<table id=\"workers\"><tr><th>name</th><th>state</th><th>slots</th><th>running</th>\
         <th>platform</th><th>cached images</th><th>last heard</th><th></th></tr>",
    );
    for w in &farm.workers {
        let mut running = String::new();
        for r in &w.running {
            let f = function_of(r.digest_function);
            let action = links::action(&r.instance_name, f, &r.action_digest);
            let _ = write!(
                running,
                "{} for {}",
                digest_link(&action, &r.action_digest),
                duration(r.running_for)
            );
            for op in &r.operations {
                let _ = write!(
                    running,
                    " <a href=\"{}\">operation</a>",
                    esc(&links::operation(op))
                );
            }
            running.push_str("<br>");
        }
        let images: Vec<String> = w
            .images
            .iter()
            .map(|i| format!("<code>{}</code>", esc(i)))
            .collect();
        let action = match w.state {
            WorkerState::Held => button("undrain", &w.name, "Undrain"),
            _ => button("drain", &w.name, "Drain"),
        };
        let _ = write!(
            page,
            "<tr class=\"worker\"><td class=\"name\">{}</td><td class=\"state\">{}</td><td>{} / {}</td>\
             <td>{running}</td><td><code>{}</code></td><td>{}</td><td>{} ago</td><td>{action}</td></tr>",
            esc(&w.name),
            w.state.label(),
            w.running.len(),
            w.slots,
            esc(&w.platform),
            images.join("<br>"),
            duration(w.silent_for),
        );
    }
    page.push_html("</table>");
}

fn active(page: &mut Page, farm: &FarmView) {
    page.push_html("<h2>Queued and running operations</h2>");
    if farm.active.is_empty() {
        page.push_html("<p class=\"muted\">None.</p>");
        return;
    }
    page.push_html(
        "<table id=\"operations\"><tr><th>operation</th><th>stage</th><th>instance</th><th>action</th>\
         <th>worker</th><th>age</th><th>invocation</th><th></th></tr>",
    );
    for a in &farm.active {
        let f = function_of(a.digest_function);
        let action = links::action(&a.instance_name, f, &a.action_digest);
        let _ = write!(
            page,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&links::operation(&a.name)),
            esc(&a.name),
            a.stage.as_str_name(),
            esc(&a.instance_name),
            digest_link(&action, &a.action_digest),
            esc(a.worker.as_deref().unwrap_or("")),
            duration(a.age),
            esc(&a.invocation),
            button("cancel", &a.name, "Cancel")
        );
    }
    page.push_html("</table>");
}
