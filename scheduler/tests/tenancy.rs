//! Tenants in the scheduler: one tenant's actions never run on another's
//! worker pool, neither clients nor workers can name a pool themselves,
//! and fair share is kept between tenants, not instance names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{config, Call, Farm, Spec};
use corral_proto::reapi;
use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;
use corral_scheduler::Tenancy;

/// Instances `a…` may use pool "pool-a", `b…` pool "pool-b"; workers join
/// the pools in the order they connect (the test connects them one by
/// one; a real policy maps their authenticated identity).
struct TwoTenants {
    next_pools: Mutex<Vec<&'static str>>,
}

impl Tenancy for TwoTenants {
    fn tenant_of(&self, instance: &str) -> Option<String> {
        instance.split('/').next().map(str::to_string)
    }
    fn pools_for(&self, instance: &str) -> Option<Vec<String>> {
        let tenant = instance.split('/').next().unwrap_or("");
        Some(vec![format!("pool-{tenant}")])
    }
    fn pools_of_worker(&self, _identity: &str) -> Vec<String> {
        self.next_pools
            .lock()
            .unwrap()
            .pop()
            .map(str::to_string)
            .into_iter()
            .collect()
    }
}

#[tokio::test]
async fn each_tenants_actions_run_only_on_its_pool() {
    let tenancy = Arc::new(TwoTenants {
        next_pools: Mutex::new(vec!["pool-b", "pool-a"]),
    });
    let farm = Farm::start_with_tenancy(config(), tenancy).await;
    let mut wa = farm.worker("wa", &[("OSFamily", "linux")], 1).await;
    let mut wb = farm.worker("wb", &[("OSFamily", "linux")], 1).await;

    // Tenant b's action, though worker a is idle and was there first.
    let digest = farm
        .action(Spec::new("for-b").prop("OSFamily", "Linux"))
        .await;
    let call = Call {
        instance: "b/ci".into(),
        ..Call::default()
    };
    let mut ops = farm.execute(&digest, call).await;
    let a = wb.assignment().await;
    assert!(wa.idle().await, "worker a must not get tenant b's action");
    wb.finish(&a, 0).await;
    ops.done().await;

    let digest = farm
        .action(Spec::new("for-a").prop("OSFamily", "Linux"))
        .await;
    let call = Call {
        instance: "a".into(),
        ..Call::default()
    };
    let mut ops = farm.execute(&digest, call).await;
    let a = wa.assignment().await;
    assert!(wb.idle().await, "worker b must not get tenant a's action");
    wa.finish(&a, 0).await;
    ops.done().await;
}

#[tokio::test]
async fn neither_an_action_nor_a_hello_may_name_a_pool() {
    let farm = Farm::start(config()).await;
    let digest = farm
        .action(Spec::new("sneaky").prop("corral.pool", "pool-a"))
        .await;
    let refused = farm
        .try_execute(&digest, Call::default())
        .await
        .expect_err("a client-named pool");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("corral.pool"), "{refused:?}");

    let hello = wire::Hello {
        name: "w".into(),
        slots: 1,
        platform: Some(reapi::Platform {
            properties: vec![reapi::platform::Property {
                name: "corral.pool".into(),
                value: "pool-a".into(),
            }],
        }),
        ..Default::default()
    };
    let refused = farm
        .try_worker(wire::worker_message::Kind::Hello(hello))
        .await;
    let status = match refused {
        Err(status) => status,
        Ok(_) => panic!("a worker naming its own pool was accepted"),
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("reserved"), "{status:?}");
}

#[tokio::test]
async fn a_tenant_with_many_instance_names_gets_no_larger_share() {
    let farm =
        Farm::start_with_tenancy(config(), Arc::new(common::FirstComponentTenants::default()))
            .await;
    let mut ops = Vec::new();
    for (instance, n) in [("a/x", 3), ("a/y", 3), ("b", 3)] {
        for i in 0..n {
            let tag = format!("{instance}-{i}");
            let digest = farm.action(Spec::new(&tag).prop("OSFamily", "Linux")).await;
            let call = Call {
                instance: instance.into(),
                ..Call::default()
            };
            ops.push(farm.execute(&digest, call).await);
        }
    }
    // One slot: the order of assignment is the order of service.
    let mut w = farm.worker("w", &[("OSFamily", "linux")], 1).await;
    let mut served = Vec::new();
    for _ in 0..4 {
        let a = w.assignment().await;
        served.push(common::SimWorker::tag(&a));
        w.finish(&a, 0).await;
    }
    let b = served.iter().filter(|t| t.starts_with("b-")).count();
    assert_eq!(b, 2, "tenant b must get every other slot: {served:?}");
}

#[tokio::test]
async fn a_tenant_at_its_concurrent_executions_quota_waits_while_others_run() {
    let farm = Farm::start_with_tenancy(
        config(),
        Arc::new(common::FirstComponentTenants {
            capped: vec![("a", 1)],
        }),
    )
    .await;
    let mut w1 = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let mut w2 = farm.worker("w2", &[("OSFamily", "linux")], 1).await;
    let mut w3 = farm.worker("w3", &[("OSFamily", "linux")], 1).await;
    let mut ops = Vec::new();
    for (instance, tag) in [("a/x", "a-0"), ("a/y", "a-1"), ("a/x", "a-2"), ("b", "b-0")] {
        let digest = farm.action(Spec::new(tag).prop("OSFamily", "Linux")).await;
        let call = Call {
            instance: instance.into(),
            ..Call::default()
        };
        ops.push(farm.execute(&digest, call).await);
    }
    // Three idle workers, four actions: tenant a gets one worker (its
    // quota, across both its instance names), tenant b another, and the
    // third stays idle although a has two actions queued.
    let first = w1.assignment().await;
    assert_eq!(common::SimWorker::tag(&first), "a-0");
    let second = w2.assignment().await;
    assert_eq!(common::SimWorker::tag(&second), "b-0");
    assert!(
        w3.idle().await,
        "tenant a must not run a second action at once"
    );
    assert!(w1.idle().await);
    // One of a's actions ends: the next starts, on any idle worker.
    w1.finish(&first, 0).await;
    ops[0].done().await;
    let next = tokio::select! {
        a = w1.assignment() => a,
        a = w3.assignment() => a,
    };
    assert_eq!(common::SimWorker::tag(&next), "a-1");
    w2.finish(&second, 0).await;
    ops[3].done().await;
    assert!(
        w2.idle().await,
        "still one action of tenant a at a time, though w2 is free"
    );
}
