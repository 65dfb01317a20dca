//! Queue order through the real services: REAPI priority, fair share
//! between invocations and between instance names, FIFO inside one.

mod common;

use common::{config, Call, Farm, Ops, SimWorker, Spec};
use corral_proto::worker::v1 as wire;

/// Occupies the worker's only slot so later Executes queue up; returns the
/// blocker's assignment.
async fn block(farm: &Farm, w: &mut SimWorker) -> (wire::Assignment, Ops) {
    let d = farm.action(Spec::new("blocker")).await;
    let mut ops = farm.execute(&d, Call::invocation("blocker")).await;
    ops.next().await;
    (w.assignment().await, ops)
}

/// Finishes each assignment as it comes and returns the tags in order.
async fn drain_in_order(w: &mut SimWorker, first: wire::Assignment, n: usize) -> Vec<String> {
    let mut order = Vec::new();
    w.finish(&first, 0).await;
    for _ in 0..n {
        let a = w.assignment().await;
        order.push(SimWorker::tag(&a));
        w.finish(&a, 0).await;
    }
    order
}

async fn queue(farm: &Farm, tag: &str, call: Call) -> Ops {
    let d = farm.action(Spec::new(tag)).await;
    let mut ops = farm.execute(&d, call).await;
    // The first update means the action is queued.
    ops.next().await;
    ops
}

#[tokio::test]
async fn smaller_priority_value_runs_first_fifo_within_a_priority() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w", &[], 1).await;
    let (blocker, _b) = block(&farm, &mut w).await;
    let mut keep = Vec::new();
    for (tag, priority) in [
        ("p5", 5),
        ("p0-a", 0),
        ("m10", -10),
        ("p0-b", 0),
        ("p5-b", 5),
    ] {
        let call = Call {
            priority,
            invocation: "same".into(),
            ..Call::default()
        };
        keep.push(queue(&farm, tag, call).await);
    }
    let order = drain_in_order(&mut w, blocker, 5).await;
    assert_eq!(order, ["m10", "p0-a", "p0-b", "p5", "p5-b"]);
}

#[tokio::test]
async fn a_small_build_is_not_starved_by_a_large_one() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w", &[], 1).await;
    let (blocker, _b) = block(&farm, &mut w).await;
    let mut keep = Vec::new();
    for i in 0..5 {
        keep.push(queue(&farm, &format!("big{i}"), Call::invocation("big")).await);
    }
    for i in 0..2 {
        keep.push(queue(&farm, &format!("small{i}"), Call::invocation("small")).await);
    }
    let order = drain_in_order(&mut w, blocker, 7).await;
    assert_eq!(
        order,
        ["big0", "small0", "big1", "small1", "big2", "big3", "big4"]
    );
}

#[tokio::test]
async fn fair_share_counts_running_actions() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w", &[], 3).await;
    // "big" fills all three slots.
    let mut keep = Vec::new();
    let mut running = Vec::new();
    for i in 0..3 {
        keep.push(queue(&farm, &format!("big{i}"), Call::invocation("big")).await);
        running.push(w.assignment().await);
    }
    keep.push(queue(&farm, "big3", Call::invocation("big")).await);
    keep.push(queue(&farm, "small0", Call::invocation("small")).await);
    keep.push(queue(&farm, "small1", Call::invocation("small")).await);
    // One slot frees: small has none running, so it goes first.
    w.finish(&running[0], 0).await;
    let a = w.assignment().await;
    assert_eq!(SimWorker::tag(&a), "small0");
    // Next slot: big and small have 1 running each; big was served less
    // recently.
    w.finish(&running[1], 0).await;
    assert_eq!(SimWorker::tag(&w.assignment().await), "big3");
    // Big has big2 and big3 running, small has small0: small goes.
    keep.push(queue(&farm, "big4", Call::invocation("big")).await);
    w.finish(&running[2], 0).await;
    let b = w.assignment().await;
    assert_eq!(SimWorker::tag(&b), "small1");
    w.finish(&a, 0).await;
    assert_eq!(SimWorker::tag(&w.assignment().await), "big4");
}

#[tokio::test]
async fn instance_names_share_before_invocations_do() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w", &[], 1).await;
    let (blocker, _b) = block(&farm, &mut w).await;
    let call = |instance: &str, invocation: &str| Call {
        instance: instance.into(),
        invocation: invocation.into(),
        ..Call::default()
    };
    let mut keep = Vec::new();
    // Instance "a" has three invocations, instance "b" one.
    for (tag, inst, inv) in [
        ("a1", "a", "a1"),
        ("a2", "a", "a2"),
        ("a3", "a", "a3"),
        ("b1", "b", "b1"),
        ("b2", "b", "b1"),
    ] {
        keep.push(queue(&farm, tag, call(inst, inv)).await);
    }
    let order = drain_in_order(&mut w, blocker, 5).await;
    assert_eq!(order, ["a1", "b1", "a2", "b2", "a3"]);
}
