//! What operators see of the scheduler: its metrics move with real
//! events, the views show queues, workers and operations, a held worker
//! gets nothing new until released, and a failed response links its page
//! and is kept in the CAS.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, Call, Farm, Spec};
use corral_cas::{BlobStore, Digest, DigestFunction, RequestContext};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_scheduler::metrics::SchedulerMetrics;
use corral_scheduler::observer::Outcome;
use corral_scheduler::view::WorkerState;
use prometheus_client::registry::Registry;

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_follow_queues_dedup_outcomes_and_retries() {
    let farm = Farm::start(config()).await;
    let mut registry = Registry::default();
    SchedulerMetrics::register(&mut registry, &farm.scheduler);

    let ok = farm.action(Spec::new("ok")).await;
    let bad = farm.action(Spec::new("bad")).await;
    let mut o1 = farm.execute(&ok, Call::default()).await;
    let mut o2 = farm.execute(&bad, Call::invocation("build-1")).await;
    let mut o3 = farm.execute(&bad, Call::invocation("build-1")).await;
    farm.settle("three operations", |s| s.stats().operations == 3)
        .await;
    let text = scrape(&registry);
    let platform = farm.scheduler.queues()[0].platform.clone();
    let queued =
        format!("corral_scheduler_queued_operations{{instance=\"\",platform=\"{platform}\"}}");
    // Two actions queued (the third call joined the second).
    assert_eq!(value(&text, &queued), 2.0);
    assert_eq!(value(&text, "corral_scheduler_queue_length"), 2.0);
    assert_eq!(value(&text, "corral_scheduler_dedup_hits_total"), 1.0);
    assert_eq!(
        value(&text, "corral_scheduler_workers{state=\"idle\"}"),
        0.0
    );

    let mut w = farm.worker("w1", &[], 1).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    let b = w.assignment().await;
    // The worker is lost while it runs the second action: a retry.
    w.hang_up();
    let mut w2 = farm.worker("w2", &[], 1).await;
    let b2 = w2.assignment().await;
    assert_eq!(b.action_digest, b2.action_digest);
    w2.finish(&b2, 3).await;
    assert_eq!(o1.done().await.result.unwrap().exit_code, 0);
    assert_eq!(o2.done().await.result.unwrap().exit_code, 3);
    assert_eq!(o3.done().await.result.unwrap().exit_code, 3);

    let text = scrape(&registry);
    // The queue's series stays, at zero, once it is empty.
    assert_eq!(value(&text, &queued), 0.0);
    assert_eq!(
        value(&text, "corral_scheduler_actions_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "corral_scheduler_actions_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "corral_scheduler_actions_total{outcome=\"oom\"}"),
        0.0
    );
    assert_eq!(value(&text, "corral_scheduler_retries_total"), 1.0);
    assert_eq!(value(&text, "corral_scheduler_queue_seconds_count"), 3.0);
    assert_eq!(
        value(&text, "corral_scheduler_execution_seconds_count"),
        2.0
    );
    assert_eq!(
        value(&text, "corral_scheduler_workers{state=\"idle\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "corral_scheduler_worker_slots{state=\"free\"}"),
        1.0
    );

    // The recent executions remember both, newest first, with the
    // invocation and the worker that ran it.
    let recent = farm.scheduler.recent_executions();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].outcome, Outcome::Failed);
    assert_eq!(recent[0].invocation, "build-1");
    assert_eq!(recent[0].worker, "w2");
    assert_eq!(recent[0].operations.len(), 2);
    assert!(recent[0].response.is_some());
    assert_eq!(recent[1].outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_held_worker_gets_nothing_new_until_released() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w1", &[], 2).await;
    farm.scheduler.hold_worker("w1", true).unwrap();
    let view = farm.scheduler.farm();
    assert_eq!(view.workers[0].state, WorkerState::Held);
    let d = farm.action(Spec::new("later")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    assert!(w.idle().await, "a held worker was given work");
    let farm_view = farm.scheduler.farm();
    assert_eq!(farm_view.queues.len(), 1);
    assert_eq!(farm_view.active.len(), 1);
    assert_eq!(farm_view.active[0].stage, Stage::Queued);
    // The operation's page view while it waits.
    let name = farm_view.active[0].name.clone();
    let op = farm.scheduler.operation_view(&name).unwrap();
    assert_eq!(op.stage, Stage::Queued);
    assert!(op.response.is_none());

    farm.scheduler.hold_worker("w1", false).unwrap();
    let a = w.assignment().await;
    let running = farm.scheduler.farm();
    assert_eq!(running.workers[0].state, WorkerState::Executing);
    assert_eq!(running.workers[0].running.len(), 1);
    assert_eq!(running.workers[0].running[0].operations, vec![name.clone()]);
    w.finish(&a, 0).await;
    ops.done().await;
    let done = farm.scheduler.operation_view(&name).unwrap();
    assert_eq!(done.stage, Stage::Completed);
    assert_eq!(done.execution.unwrap().worker, "w1");
    assert!(farm.scheduler.hold_worker("nobody", true).is_err());
}

#[tokio::test]
async fn a_failed_response_links_its_page_and_is_kept_in_the_cas() {
    let farm = Farm::start(config()).await;
    farm.scheduler
        .link_failures(Some("http://farm.example:8980".into()));
    let d = farm.action(Spec::new("fails")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    let mut w = farm.worker("w1", &[], 1).await;
    let a = w.assignment().await;
    w.finish(&a, 2).await;
    let response = ops.done().await;
    let url = format!(
        "http://farm.example:8980/action/sha256/{}/{}?instance=&response=",
        d.hash, d.size_bytes
    );
    assert!(response.message.contains(&url), "{}", response.message);
    let kept = farm.scheduler.recent_executions()[0]
        .response_digest
        .clone()
        .unwrap();
    assert!(response
        .message
        .ends_with(&format!("{}-{}", kept.hash, kept.size_bytes)));
    let digest = Digest::from_proto(DigestFunction::Sha256, &kept).unwrap();
    let ctx = RequestContext::internal("", DigestFunction::Sha256);
    let mut bytes = None;
    for _ in 0..100 {
        if let Ok(b) = farm.cas.get(&ctx, &digest).await {
            bytes = Some(b);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stored = reapi::ExecuteResponse::decode(bytes.expect("kept in the CAS")).unwrap();
    assert_eq!(stored.result.unwrap().exit_code, 2);
}
