//! Attempts to forge or replace executed results through the real
//! ActionCache service, and the revocation of a worker's results.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_status, TestServer};
use corral_cas::action_cache::provenance::{provenance_of, stamp};
use corral_cas::{Config, Digest, DigestFunction, RequestContext};
use corral_proto::provenance::v1::Provenance;
use corral_proto::reapi;
use tonic::Code;

const F: DigestFunction = DigestFunction::Sha256;

fn farm_result(worker_identity: &str, exit_code: i32) -> reapi::ActionResult {
    let mut result = reapi::ActionResult {
        exit_code,
        ..Default::default()
    };
    stamp(
        &mut result,
        &Provenance {
            worker: "w1".into(),
            worker_identity: worker_identity.into(),
            corral_version: "test".into(),
            instance_name: "i".into(),
            ..Default::default()
        },
    );
    result
}

fn update(action: &Digest, result: reapi::ActionResult) -> reapi::UpdateActionResultRequest {
    reapi::UpdateActionResultRequest {
        instance_name: "i".into(),
        action_digest: Some(action.to_proto()),
        action_result: Some(result),
        digest_function: F.to_proto(),
        ..Default::default()
    }
}

fn get(action: &Digest) -> reapi::GetActionResultRequest {
    reapi::GetActionResultRequest {
        instance_name: "i".into(),
        action_digest: Some(action.to_proto()),
        digest_function: F.to_proto(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_cannot_write_a_result_that_claims_the_farm_ran_it() {
    let server = TestServer::start(Config::default()).await;
    let action = Digest::of_bytes(F, b"forged");
    assert_status(
        server
            .ac()
            .update_action_result(update(&action, farm_result("uid:0", 0)))
            .await,
        Code::PermissionDenied,
        "provenance",
    );
    assert_status(
        server.ac().get_action_result(get(&action)).await,
        Code::NotFound,
        "action result",
    );
}

#[tokio::test]
async fn a_client_cannot_replace_a_result_the_farm_wrote() {
    let server = TestServer::start(Config::default()).await;
    let action = Digest::of_bytes(F, b"executed");
    let ac = server.services.action_cache();
    let farm = RequestContext::internal("i", F);
    ac.update(&farm, &action, farm_result("uid:0", 0))
        .await
        .unwrap();

    let poisoned = reapi::ActionResult {
        exit_code: 0,
        stdout_raw: b"poisoned".to_vec(),
        ..Default::default()
    };
    assert_status(
        server
            .ac()
            .update_action_result(update(&action, poisoned))
            .await,
        Code::PermissionDenied,
        "produced by the farm",
    );
    let served = server
        .ac()
        .get_action_result(get(&action))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(provenance_of(&served).unwrap().worker_identity, "uid:0");
    assert!(served.stdout_raw.is_empty());

    // A client's own entry (no provenance) may be replaced by the client,
    // and by the farm once it runs the action.
    let other = Digest::of_bytes(F, b"client-made");
    let mine = reapi::ActionResult {
        exit_code: 1,
        ..Default::default()
    };
    server
        .ac()
        .update_action_result(update(&other, mine.clone()))
        .await
        .unwrap();
    server
        .ac()
        .update_action_result(update(&other, mine))
        .await
        .unwrap();
    ac.update(&farm, &other, farm_result("uid:0", 0))
        .await
        .unwrap();
}

#[tokio::test]
async fn results_of_a_revoked_worker_are_no_longer_served() {
    let server = TestServer::start(Config::default()).await;
    let ac = server.services.action_cache();
    let farm = RequestContext::internal("i", F);
    let by_bad = Digest::of_bytes(F, b"by-bad");
    let by_good = Digest::of_bytes(F, b"by-good");
    ac.update(&farm, &by_bad, farm_result("cert:bad-worker", 0))
        .await
        .unwrap();
    ac.update(&farm, &by_good, farm_result("cert:good-worker", 0))
        .await
        .unwrap();
    server.services.revoked_workers().revoke("cert:bad-worker");
    assert_status(
        server.ac().get_action_result(get(&by_bad)).await,
        Code::NotFound,
        "action result",
    );
    server.ac().get_action_result(get(&by_good)).await.unwrap();
}
