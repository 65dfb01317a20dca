//! Only the farm writes executed results, and it vouches for them: every
//! cached result carries its provenance, a result naming outputs nobody
//! uploaded is not cached, and a worker cannot report for an action it
//! does not hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cached, config, Call, Farm, Spec};
use corral_cas::action_cache::provenance::provenance_of;
use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;
use corral_proto::worker::v1 as wire;

#[tokio::test]
async fn a_cached_result_names_who_asked_and_which_worker_ran_it() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let digest = farm.action(Spec::new("p").prop("OSFamily", "Linux")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    let response = ops.done().await;
    let stored = cached(&farm, "", &digest).await.expect("cached");
    assert_eq!(response.result.as_ref(), Some(&stored));
    let p = provenance_of(&stored).expect("a provenance record");
    assert_eq!(p.worker, "w1");
    // The test workers connect over loopback TCP: the identity is the
    // peer address the connection showed, not anything the hello said.
    assert!(p.worker_identity.starts_with("tcp:127.0.0.1:"), "{p:?}");
    assert_eq!(p.principal, "anonymous");
    assert_eq!(p.sandbox_profile, "default");
    assert_eq!(p.corral_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_result_naming_outputs_not_in_the_cas_is_not_cached() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let digest = farm.action(Spec::new("q").prop("OSFamily", "Linux")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    let never_uploaded = Digest::of_bytes(DigestFunction::Sha256, b"not uploaded");
    let response = reapi::ExecuteResponse {
        result: Some(reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out".into(),
                digest: Some(never_uploaded.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    w.respond(&a, response).await;
    let done = ops.done().await;
    assert_eq!(done.result.map(|r| r.output_files.len()), Some(1));
    assert_eq!(cached(&farm, "", &digest).await, None);
}

#[tokio::test]
async fn a_worker_cannot_report_an_action_another_worker_holds() {
    let farm = Farm::start(config()).await;
    let mut w1 = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let digest = farm.action(Spec::new("r").prop("OSFamily", "Linux")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w1.assignment().await;
    // A second worker learns (or guesses) the assignment id and reports a
    // poisoned result for it.
    let mut w2 = farm.worker("w2", &[("OSFamily", "linux")], 1).await;
    w2.send(wire::worker_message::Kind::Result(wire::Result {
        assignment_id: a.assignment_id.clone(),
        response: Some(reapi::ExecuteResponse {
            result: Some(reapi::ActionResult {
                stdout_raw: b"poisoned".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }))
    .await;
    farm.heard("w2").await;
    assert_eq!(cached(&farm, "", &digest).await, None);
    assert!(ops.pending().await, "the operation must still wait for w1");
    // The worker that holds it reports; that result is the one cached.
    w1.finish(&a, 0).await;
    let result = ops.done().await.result.expect("a result");
    assert_ne!(result.stdout_raw, b"poisoned".to_vec());
    assert_eq!(cached(&farm, "", &digest).await, Some(result));
}

#[tokio::test]
async fn a_cached_result_names_the_tenant_it_belongs_to() {
    let farm = Farm::start_with_tenancy(
        config(),
        std::sync::Arc::new(common::FirstComponentTenants::default()),
    )
    .await;
    let mut w = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let digest = farm.action(Spec::new("t").prop("OSFamily", "Linux")).await;
    let call = Call {
        instance: "team-a/ci".into(),
        ..Call::default()
    };
    let mut ops = farm.execute(&digest, call).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    ops.done().await;
    let stored = cached(&farm, "team-a/ci", &digest).await.expect("cached");
    let p = provenance_of(&stored).expect("a provenance record");
    assert_eq!(p.tenant, "team-a");
    assert_eq!(p.instance_name, "team-a/ci");
}
