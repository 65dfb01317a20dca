//! The worker side: retries of a lost worker's actions, silent workers,
//! drain, timeouts, keepalives and session rules.

mod common;

use std::time::Duration;

use common::{config, Call, Farm, SimWorker, Spec};
use corral_proto::reapi;
use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;
use wire::scheduler_message::Kind as Down;
use wire::worker_message::Kind as Up;

fn code(r: &reapi::ExecuteResponse) -> Code {
    Code::from_i32(r.status.as_ref().map_or(0, |s| s.code))
}

fn message(r: &reapi::ExecuteResponse) -> String {
    r.status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_lost_workers_action_is_retried_elsewhere_then_fails_clearly() {
    let mut cfg = config();
    cfg.max_retries = 1;
    let farm = Farm::start(cfg).await;
    let digest = farm.action(Spec::new("fragile")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let mut w1 = farm.worker("w1", &[], 1).await;
    let a1 = w1.assignment().await;
    assert_eq!(a1.attempt, 1);
    let mut w2 = farm.worker("w2", &[], 1).await;
    w1.hang_up();
    let a2 = w2.assignment().await;
    assert_eq!(a2.attempt, 2);
    assert_eq!(SimWorker::tag(&a2), "fragile");
    assert_ne!(a1.assignment_id, a2.assignment_id);
    // A result for the first attempt, had it arrived, is not the answer.
    w2.hang_up();
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::Unavailable);
    let msg = message(&resp);
    assert!(msg.contains("lost with its worker 2 times"), "{msg}");
    assert!(msg.contains("w2"), "{msg}");
    assert!(msg.contains("1 retries"), "{msg}");
}

#[tokio::test]
async fn a_retried_action_keeps_its_place_in_the_queue() {
    let farm = Farm::start(config()).await;
    let first = farm.action(Spec::new("first")).await;
    let second = farm.action(Spec::new("second")).await;
    let mut w1 = farm.worker("w1", &[], 1).await;
    let _o1 = farm.execute(&first, Call::invocation("i")).await;
    let a = w1.assignment().await;
    assert_eq!(SimWorker::tag(&a), "first");
    let _o2 = farm.execute(&second, Call::invocation("i")).await;
    w1.hang_up();
    assert!(w1.closed().await);
    let mut w2 = farm.worker("w2", &[], 1).await;
    let b = w2.assignment().await;
    assert_eq!(SimWorker::tag(&b), "first");
    assert_eq!(b.attempt, 2);
}

#[tokio::test]
async fn a_silent_worker_is_dropped_and_its_work_requeued() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("stuck")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let mut silent = farm.worker("silent", &[], 1).await;
    let a = silent.assignment().await;
    let mut chatty = farm.worker("chatty", &[], 1).await;
    // The scheduler keeps both streams alive with keepalives.
    farm.advance(Duration::from_secs(5));
    assert!(matches!(silent.next().await, Down::KeepAlive(_)));
    assert!(matches!(chatty.next().await, Down::KeepAlive(_)));
    // Only one of them answers in kind.
    for _ in 0..5 {
        chatty.send(Up::Progress(wire::Progress::default())).await;
        chatty.send(Up::KeepAlive(wire::KeepAlive {})).await;
        farm.heard("chatty").await;
        farm.advance(Duration::from_secs(5));
    }
    assert!(
        silent.closed().await,
        "the silent worker's stream is closed"
    );
    let b = chatty.assignment().await;
    assert_eq!(b.action_digest, a.action_digest);
    assert_eq!(b.attempt, 2);
    chatty.finish(&b, 0).await;
    assert_eq!(ops.done().await.result.unwrap().exit_code, 0);
}

#[tokio::test]
async fn a_worker_reconnecting_under_the_same_name_replaces_the_old_session() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("x")).await;
    let _ops = farm.execute(&digest, Call::default()).await;
    let mut old = farm.worker("w", &[], 1).await;
    let a = old.assignment().await;
    let mut new = farm.worker("w", &[], 1).await;
    assert!(old.closed().await);
    let b = new.assignment().await;
    assert_eq!(b.action_digest, a.action_digest);
    assert_eq!(farm.scheduler.stats().workers, 1);
}

#[tokio::test]
async fn drain_finishes_running_work_takes_nothing_new() {
    let farm = Farm::start(config()).await;
    let one = farm.action(Spec::new("one")).await;
    let two = farm.action(Spec::new("two")).await;
    let mut w = farm.worker("w", &[], 2).await;
    let mut ops1 = farm.execute(&one, Call::default()).await;
    let a = w.assignment().await;
    w.send(Up::Drain(wire::Drain {
        reason: "upgrade".into(),
    }))
    .await;
    farm.settle("w draining", |s| s.workers()[0].draining).await;
    let mut ops2 = farm.execute(&two, Call::default()).await;
    assert!(w.idle().await, "a draining worker gets nothing new");
    w.finish(&a, 0).await;
    assert!(matches!(w.next_real().await, Down::Drained(_)));
    ops1.done().await;
    // The queued action goes to the next worker.
    let mut w2 = farm.worker("w2", &[], 1).await;
    let b = w2.assignment().await;
    assert_eq!(SimWorker::tag(&b), "two");
    w2.finish(&b, 0).await;
    ops2.done().await;

    // An operator can drain a worker by name; an idle one is drained at once.
    farm.scheduler.drain_worker("w2", "maintenance").unwrap();
    assert!(matches!(w2.next_real().await, Down::Drain(d) if d.reason == "maintenance"));
    assert!(matches!(w2.next_real().await, Down::Drained(_)));
    let err = farm.scheduler.drain_worker("nobody", "x").unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
}

#[tokio::test]
async fn timeout_is_the_actions_own_else_default_capped_at_max() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w", &[], 3).await;
    let mut own = Spec::new("own");
    own.timeout_s = Some(30);
    let mut huge = Spec::new("huge");
    huge.timeout_s = Some(100_000);
    let mut timeouts = Vec::new();
    for spec in [own, Spec::new("default"), huge] {
        let d = farm.action(spec).await;
        let _ops = farm.execute(&d, Call::default()).await;
        let a = w.assignment().await;
        timeouts.push((SimWorker::tag(&a), a.timeout_millis));
    }
    assert_eq!(
        timeouts,
        vec![
            ("own".to_string(), 30_000),
            ("default".to_string(), 600_000),
            ("huge".to_string(), 3_600_000),
        ]
    );
}

#[tokio::test]
async fn an_action_past_its_timeout_is_stopped_with_deadline_exceeded() {
    let farm = Farm::start(config()).await;
    let mut spec = Spec::new("sleepy");
    spec.timeout_s = Some(30);
    let digest = farm.action(spec).await;
    let mut w = farm.worker("w", &[], 1).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    // The worker gets the timeout plus grace (10 s) to enforce it itself.
    for _ in 0..7 {
        w.send(Up::KeepAlive(wire::KeepAlive {})).await;
        farm.heard("w").await;
        farm.advance(Duration::from_millis(5_500));
    }
    // 38.5 s: still within timeout plus grace.
    assert_eq!(farm.scheduler.stats().running, 1);
    farm.advance(Duration::from_millis(1_500));
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::DeadlineExceeded);
    assert!(message(&resp).contains("30 s"), "{}", message(&resp));
    assert_eq!(w.cancel().await.assignment_id, a.assignment_id);

    // A worker that enforces the timeout itself reports DEADLINE_EXCEEDED
    // with the partial result; it is passed on as is and not cached.
    let mut ops = farm
        .execute(
            &digest,
            Call {
                skip_cache_lookup: true,
                ..Call::default()
            },
        )
        .await;
    w.finish(&a, 0).await; // the late result of the stopped attempt
    let b = w.assignment().await;
    let partial = reapi::ExecuteResponse {
        result: Some(reapi::ActionResult {
            exit_code: 0,
            stdout_raw: b"partial".to_vec(),
            ..Default::default()
        }),
        status: Some(corral_proto::rpc::Status {
            code: Code::DeadlineExceeded as i32,
            message: "killed after 30 s".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    w.respond(&b, partial).await;
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::DeadlineExceeded);
    assert_eq!(resp.result.unwrap().stdout_raw, b"partial");
    assert_eq!(common::cached(&farm, "", &digest).await, None);
}

#[tokio::test]
async fn bad_hellos_are_refused_with_the_field_named() {
    let farm = Farm::start(config()).await;
    let cases = [
        (
            wire::Hello {
                name: "w".into(),
                slots: 0,
                ..Default::default()
            },
            "hello.slots",
        ),
        (
            wire::Hello {
                name: " ".into(),
                slots: 1,
                ..Default::default()
            },
            "hello.name",
        ),
    ];
    for (hello, field) in cases {
        let err = farm
            .try_worker(Up::Hello(hello))
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    let mut cfg = config();
    cfg.property_policies
        .insert("cores".into(), corral_scheduler::PropertyPolicy::Minimum);
    let farm = Farm::start(cfg).await;
    let hello = wire::Hello {
        name: "w".into(),
        slots: 1,
        platform: Some(reapi::Platform {
            properties: vec![reapi::platform::Property {
                name: "cores".into(),
                value: "eight".into(),
            }],
        }),
        ..Default::default()
    };
    let err = farm
        .try_worker(Up::Hello(hello))
        .await
        .err()
        .expect("refused");
    assert!(err.message().contains("cores"), "{}", err.message());
}
