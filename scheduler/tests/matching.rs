//! Platform matching through the real services: where properties come
//! from, the per-key policies, the normalisation of OSFamily and ISA,
//! worker preference, and the FAILED_PRECONDITION for requests no worker
//! can satisfy.

mod common;

use std::time::Duration;

use common::{config, Call, Farm, SimWorker, Spec};
use corral_proto::reapi;
use corral_proto::tonic::Code;
use corral_scheduler::{PropertyPolicy, SchedulerConfig};

fn status(r: &reapi::ExecuteResponse) -> (Code, String) {
    let s = r.status.clone().unwrap_or_default();
    (Code::from_i32(s.code), s.message)
}

fn policies() -> SchedulerConfig {
    let mut c = config();
    c.property_policies
        .insert("cores".into(), PropertyPolicy::Minimum);
    c.property_policies
        .insert("pool".into(), PropertyPolicy::Ignore);
    c
}

#[tokio::test]
async fn properties_come_from_the_action_else_the_command() {
    let farm = Farm::start(config()).await;
    let mut arm = farm.worker("arm", &[("ISA", "arm64")], 1).await;
    let mut x86 = farm.worker("x86", &[("ISA", "x86_64")], 1).await;
    // Bazel 4 style: Command.platform only.
    let d = farm.action(Spec::new("cmd").prop("ISA", "aarch64")).await;
    let _o = farm.execute(&d, Call::default()).await;
    assert_eq!(SimWorker::tag(&arm.assignment().await), "cmd");
    // Action.platform wins over Command.platform.
    let mut spec = Spec::new("act").prop("ISA", "amd64");
    spec.in_action = true;
    let d = farm.action(spec).await;
    let _o = farm.execute(&d, Call::default()).await;
    assert_eq!(SimWorker::tag(&x86.assignment().await), "act");
}

#[tokio::test]
async fn os_family_ignores_case_and_isa_aliases_match() {
    let farm = Farm::start(config()).await;
    let mut w = farm
        .worker("w", &[("OSFamily", "Linux"), ("ISA", "x86-64")], 4)
        .await;
    for (os, isa) in [("linux", "x86_64"), ("LINUX", "amd64"), ("linux", "x86-64")] {
        let d = farm
            .action(Spec::new(isa).prop("OSFamily", os).prop("ISA", isa))
            .await;
        let _o = farm.execute(&d, Call::default()).await;
        assert_eq!(SimWorker::tag(&w.assignment().await), isa);
    }
}

#[tokio::test]
async fn any_policy_star_worker_takes_any_image_and_image_holders_are_preferred() {
    let farm = Farm::start(config()).await;
    let mut plain = farm.worker("plain", &[("container-image", "*")], 1).await;
    let mut holder = farm
        .worker_with_images(
            "holder",
            &[("container-image", "*")],
            1,
            &["docker://img:1"],
        )
        .await;
    let d = farm
        .action(Spec::new("img").prop("container-image", "docker://img:1"))
        .await;
    let _o = farm.execute(&d, Call::default()).await;
    assert_eq!(SimWorker::tag(&holder.assignment().await), "img");
    assert!(plain.idle().await);
    // Another image: the other idle worker (holding nothing) takes it.
    let d = farm
        .action(Spec::new("other").prop("container-image", "docker://other:2"))
        .await;
    let _o = farm.execute(&d, Call::default()).await;
    assert_eq!(SimWorker::tag(&plain.assignment().await), "other");
}

#[tokio::test]
async fn workers_that_recently_ran_the_invocation_are_preferred() {
    let farm = Farm::start(config()).await;
    let mut a = farm.worker("a", &[], 1).await;
    let mut b = farm.worker("b", &[], 1).await;
    // Fill a with invocation "x", b with "y", then free both.
    let d = farm.action(Spec::new("x1")).await;
    let _o = farm.execute(&d, Call::invocation("x")).await;
    let ax = a.assignment().await;
    let d = farm.action(Spec::new("y1")).await;
    let _o = farm.execute(&d, Call::invocation("y")).await;
    let by = b.assignment().await;
    a.finish(&ax, 0).await;
    b.finish(&by, 0).await;
    farm.settle("both idle", |s| s.stats().running == 0).await;
    // The next "y" action goes to b although a was first seen.
    let d = farm.action(Spec::new("y2")).await;
    let _o = farm.execute(&d, Call::invocation("y")).await;
    assert_eq!(SimWorker::tag(&b.assignment().await), "y2");
    assert!(a.idle().await);
}

#[tokio::test]
async fn minimum_policy_is_a_budget_consumed_by_running_actions() {
    let farm = Farm::start(policies()).await;
    let mut w = farm.worker("w", &[("cores", "6")], 4).await;
    let d1 = farm.action(Spec::new("four-a").prop("cores", "4")).await;
    let d2 = farm.action(Spec::new("four-b").prop("cores", "4")).await;
    let d3 = farm.action(Spec::new("two").prop("cores", "2")).await;
    let _o1 = farm.execute(&d1, Call::default()).await;
    let _o2 = farm.execute(&d2, Call::default()).await;
    let _o3 = farm.execute(&d3, Call::default()).await;
    let first = w.assignment().await;
    assert_eq!(SimWorker::tag(&first), "four-a");
    // 2 cores left: four-b waits, two fits.
    assert_eq!(SimWorker::tag(&w.assignment().await), "two");
    assert!(w.idle().await);
    w.finish(&first, 0).await;
    assert_eq!(SimWorker::tag(&w.assignment().await), "four-b");
    // `ignore` keys play no part; 9 cores can never fit.
    let d = farm
        .action(Spec::new("ignored").prop("pool", "whatever"))
        .await;
    let _o = farm.execute(&d, Call::default()).await;
    assert_eq!(SimWorker::tag(&w.assignment().await), "ignored");
    let d = farm.action(Spec::new("nine").prop("cores", "9")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(20));
    let (code, msg) = status(&ops.done().await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("cores>=9"), "{msg}");
    assert!(msg.contains("cores=6"), "{msg}");
}

#[tokio::test]
async fn unsatisfiable_requests_fail_after_the_grace_period_naming_the_property() {
    let farm = Farm::start(config()).await;
    let _x = farm
        .worker("x1", &[("OSFamily", "linux"), ("ISA", "x86-64")], 1)
        .await;
    let _y = farm
        .worker("x2", &[("OSFamily", "linux"), ("ISA", "x86-64")], 1)
        .await;
    let d = farm
        .action(
            Spec::new("riscv")
                .prop("ISA", "riscv64")
                .prop("OSFamily", "linux"),
        )
        .await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(19));
    assert!(ops.pending().await, "still within the grace period");
    farm.advance(Duration::from_secs(1));
    let (code, msg) = status(&ops.done().await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("ISA=riscv64"), "{msg}");
    assert!(
        msg.contains("[ISA=x86-64, OSFamily=linux] (2 workers)"),
        "{msg}"
    );

    // An unknown property is not dropped: it fails the same way.
    let d = farm.action(Spec::new("gpu").prop("gpu", "a100")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(20));
    let (_, msg) = status(&ops.done().await);
    assert!(msg.contains("gpu=a100"), "{msg}");

    // Each property offered somewhere, but not together.
    let _m = farm
        .worker("mac", &[("OSFamily", "macos"), ("ISA", "aarch64")], 1)
        .await;
    let d = farm
        .action(
            Spec::new("mix")
                .prop("OSFamily", "macos")
                .prop("ISA", "x86-64"),
        )
        .await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(20));
    let (_, msg) = status(&ops.done().await);
    assert!(msg.contains("no single worker"), "{msg}");
}

#[tokio::test]
async fn a_worker_connecting_within_the_grace_period_takes_the_action() {
    let farm = Farm::start(config()).await;
    let d = farm
        .action(Spec::new("early").prop("OSFamily", "linux"))
        .await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(15));
    let mut w = farm.worker("late", &[("OSFamily", "linux")], 1).await;
    let a = w.assignment().await;
    farm.advance(Duration::from_secs(15));
    w.finish(&a, 0).await;
    assert_eq!(ops.done().await.result.unwrap().exit_code, 0);
}

#[tokio::test]
async fn with_no_worker_at_all_the_message_says_so_and_recent_workers_count() {
    let farm = Farm::start(config()).await;
    let d = farm.action(Spec::new("lonely")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(20));
    let (code, msg) = status(&ops.done().await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(msg.contains("no worker is connected"), "{msg}");

    // A worker seen recently (restarting) keeps the request waiting.
    let mut w = farm.worker("flaky", &[], 1).await;
    w.hang_up();
    assert!(w.closed().await);
    let d = farm.action(Spec::new("patient")).await;
    let mut ops = farm.execute(&d, Call::default()).await;
    ops.next().await;
    farm.advance(Duration::from_secs(30));
    assert!(
        ops.pending().await,
        "a recently seen worker could come back"
    );
    // Once it has been gone longer than lost_worker_memory (60 s), the
    // request fails after its grace period.
    farm.advance(Duration::from_secs(30));
    farm.advance(Duration::from_secs(20));
    let (code, _) = status(&ops.done().await);
    assert_eq!(code, Code::FailedPrecondition);
}
