//! The client side: Execute and WaitExecution, the action cache, dedup,
//! cancel, the Operations service, keepalives and retention.

mod common;

use std::time::Duration;

use common::{cached, config, Call, Farm, Ops, SimWorker, Spec};
use corral_proto::error_details::PreconditionFailure;
use corral_proto::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest,
};
use corral_proto::prost::Message;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::reapi::{self, WaitExecutionRequest};
use corral_proto::tonic::Code;
use corral_proto::{rpc, worker::v1 as wire};
use corral_scheduler::operations::stage_of;

fn code(r: &reapi::ExecuteResponse) -> Code {
    Code::from_i32(r.status.as_ref().map_or(0, |s| s.code))
}

#[tokio::test]
async fn runs_on_a_worker_caches_success_and_serves_the_cache() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w1", &[("OSFamily", "linux")], 1).await;
    let digest = farm
        .action(Spec::new("hello").prop("OSFamily", "Linux"))
        .await;
    let mut ops = farm.execute(&digest, Call::invocation("inv")).await;
    let first = ops.next().await;
    assert!(first.name.starts_with("operations/"), "{}", first.name);
    // An idle matching worker takes the action at once.
    assert_eq!(stage_of(&first), Some(Stage::Executing));
    let a = w.assignment().await;
    assert_eq!(a.action_digest.as_ref(), Some(&digest));
    assert_eq!(SimWorker::tag(&a), "hello");
    assert_eq!(a.attempt, 1);
    assert_eq!(
        a.request_metadata.as_ref().unwrap().tool_invocation_id,
        "inv"
    );
    assert!(a.action.is_some());
    w.finish(&a, 0).await;
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::Ok);
    assert!(!resp.cached_result);
    let result = resp.result.expect("a result");
    assert_eq!(result.exit_code, 0);
    // The result reached the action cache before the operation completed.
    assert_eq!(cached(&farm, "", &digest).await, Some(result.clone()));
    // A second Execute is answered from the cache, without the worker.
    let resp = farm.execute(&digest, Call::default()).await.done().await;
    assert!(resp.cached_result);
    assert_eq!(resp.result, Some(result));
    assert!(w.idle().await);
    // skip_cache_lookup runs it again.
    let call = Call {
        skip_cache_lookup: true,
        ..Call::default()
    };
    let mut ops = farm.execute(&digest, call).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    assert!(!ops.done().await.cached_result);
}

#[tokio::test]
async fn failed_action_is_a_normal_response_and_is_not_cached() {
    let farm = Farm::start(config()).await;
    let mut w = farm.worker("w1", &[], 1).await;
    let digest = farm.action(Spec::new("fails")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    w.finish(&a, 3).await;
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::Ok);
    assert_eq!(resp.result.unwrap().exit_code, 3);
    assert_eq!(cached(&farm, "", &digest).await, None);

    // An infrastructure failure travels in ExecuteResponse.status.
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    let failure = reapi::ExecuteResponse {
        status: Some(rpc::Status {
            code: Code::FailedPrecondition as i32,
            message: "input blob missing".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    w.respond(&a, failure).await;
    let resp = ops.done().await;
    assert_eq!(code(&resp), Code::FailedPrecondition);
    assert_eq!(cached(&farm, "", &digest).await, None);
}

#[tokio::test]
async fn do_not_cache_neither_reads_nor_writes_the_cache_nor_dedups() {
    let farm = Farm::start(config()).await;
    let mut spec = Spec::new("volatile");
    spec.do_not_cache = true;
    let digest = farm.action(spec).await;
    let mut a_ops = farm.execute(&digest, Call::default()).await;
    let mut b_ops = farm.execute(&digest, Call::default()).await;
    let mut w = farm.worker("w1", &[], 2).await;
    let a = w.assignment().await;
    let b = w.assignment().await;
    assert_ne!(a.assignment_id, b.assignment_id);
    w.finish(&a, 0).await;
    w.finish(&b, 0).await;
    a_ops.done().await;
    b_ops.done().await;
    assert_eq!(cached(&farm, "", &digest).await, None);
}

#[tokio::test]
async fn identical_actions_in_flight_run_once_and_everyone_gets_the_result() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("shared")).await;
    let mut first = farm.execute(&digest, Call::invocation("a")).await;
    let mut second = farm.execute(&digest, Call::invocation("b")).await;
    let n1 = first.next().await.name;
    let n2 = second.next().await.name;
    assert_ne!(n1, n2, "each caller gets its own operation");
    // Another instance name is another action.
    let other = Call {
        instance: "other".into(),
        ..Call::default()
    };
    let mut third = farm.execute(&digest, other).await;
    let mut w = farm.worker("w1", &[], 4).await;
    let a = w.assignment().await;
    let c = w.assignment().await;
    assert!(w.idle().await, "the shared action was assigned once");
    let mut ids = [a.instance_name.clone(), c.instance_name.clone()];
    ids.sort();
    assert_eq!(ids, ["".to_string(), "other".to_string()]);
    // Joining while it runs also shares it.
    let mut late = farm.execute(&digest, Call::default()).await;
    assert_eq!(stage_of(&late.next().await), Some(Stage::Executing));
    let (shared, separate) = if a.instance_name.is_empty() {
        (&a, &c)
    } else {
        (&c, &a)
    };
    w.finish(shared, 0).await;
    for ops in [&mut first, &mut second, &mut late] {
        let resp = ops.done().await;
        assert_eq!(resp.result.unwrap().exit_code, 0);
    }
    w.finish(separate, 7).await;
    assert_eq!(third.done().await.result.unwrap().exit_code, 7);
}

#[tokio::test]
async fn cancel_removes_queued_work_and_kills_running_work() {
    let farm = Farm::start(config()).await;
    let run = farm.action(Spec::new("running")).await;
    let wait = farm.action(Spec::new("waiting")).await;
    let mut w = farm.worker("w1", &[], 1).await;
    let mut running = farm.execute(&run, Call::default()).await;
    let a = w.assignment().await;
    let mut waiting = farm.execute(&wait, Call::default()).await;
    let waiting_name = waiting.next().await.name;
    let running_name = running.next().await.name;
    let mut client = farm.operations();

    // Cancel the queued one: done with CANCELLED, never assigned.
    client
        .cancel_operation(CancelOperationRequest {
            name: waiting_name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(code(&waiting.done().await), Code::Cancelled);

    // Cancel the running one: the worker is told to stop.
    client
        .cancel_operation(CancelOperationRequest {
            name: running_name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(code(&running.done().await), Code::Cancelled);
    let c = w.cancel().await;
    assert_eq!(c.assignment_id, a.assignment_id);
    // The slot is busy until the worker reports; its result is discarded.
    let again = farm.action(Spec::new("after")).await;
    let mut after = farm.execute(&again, Call::default()).await;
    assert!(w.idle().await);
    w.finish(&a, 0).await;
    let b = w.assignment().await;
    assert_eq!(SimWorker::tag(&b), "after");
    assert_eq!(cached(&farm, "", &run).await, None);
    w.finish(&b, 0).await;
    after.done().await;

    let err = client
        .cancel_operation(CancelOperationRequest {
            name: "operations/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn cancelling_one_of_two_callers_keeps_the_action_running() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("shared")).await;
    let mut w = farm.worker("w1", &[], 1).await;
    let mut one = farm.execute(&digest, Call::default()).await;
    let mut two = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    let name = one.next().await.name;
    farm.operations()
        .cancel_operation(CancelOperationRequest { name })
        .await
        .unwrap();
    assert_eq!(code(&one.done().await), Code::Cancelled);
    assert!(w.idle().await, "no cancel sent while another caller waits");
    w.finish(&a, 0).await;
    assert_eq!(two.done().await.result.unwrap().exit_code, 0);
}

#[tokio::test]
async fn operations_service_get_list_wait_delete_and_retention() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("op")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let name = ops.next().await.name;
    let mut client = farm.operations();
    let got = client
        .get_operation(GetOperationRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stage_of(&got), Some(Stage::Queued));
    assert!(!got.done);
    let list = client
        .list_operations(ListOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.operations.len(), 1);
    let err = client
        .list_operations(ListOperationsRequest {
            filter: "done=true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("filter"), "{}", err.message());

    // WaitExecution resumes the operation on a new stream.
    drop(ops);
    let mut resumed = Ops(farm
        .execution()
        .wait_execution(WaitExecutionRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner());
    assert_eq!(resumed.next().await.name, name);
    let mut w = farm.worker("w1", &[], 1).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    resumed.done().await;

    // Completed operations stay reachable for the retention period.
    farm.advance(Duration::from_secs(60));
    let mut again = Ops(farm
        .execution()
        .wait_execution(WaitExecutionRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner());
    assert!(again.next().await.done);
    farm.advance(Duration::from_secs(61));
    let err = client
        .get_operation(GetOperationRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = farm
        .execution()
        .wait_execution(WaitExecutionRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Delete forgets an operation at once.
    let done = farm.execute(&digest, Call::default()).await.done().await;
    assert!(done.cached_result);
    let list = client
        .list_operations(ListOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let last = list.operations.last().unwrap().name.clone();
    client
        .delete_operation(DeleteOperationRequest { name: last.clone() })
        .await
        .unwrap();
    let err = client
        .get_operation(GetOperationRequest { name: last })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn retention_is_bounded_in_count() {
    let mut cfg = config();
    cfg.max_completed_operations = 2;
    let farm = Farm::start(cfg).await;
    let digest = farm.action(Spec::new("cached")).await;
    let mut w = farm.worker("w1", &[], 1).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let a = w.assignment().await;
    w.finish(&a, 0).await;
    ops.done().await;
    for _ in 0..4 {
        assert!(
            farm.execute(&digest, Call::default())
                .await
                .done()
                .await
                .cached_result
        );
    }
    farm.advance(Duration::from_millis(1));
    assert_eq!(farm.scheduler.stats().operations, 2);
}

#[tokio::test]
async fn open_streams_get_keepalive_updates() {
    let farm = Farm::start(config()).await;
    let digest = farm.action(Spec::new("slow")).await;
    let mut ops = farm.execute(&digest, Call::default()).await;
    let first = ops.next().await;
    assert!(ops.quiet().await);
    farm.advance(Duration::from_secs(9));
    assert!(ops.quiet().await, "no keepalive before the interval");
    farm.advance(Duration::from_secs(1));
    let again = ops.next().await;
    assert_eq!(again.name, first.name);
    assert!(!again.done);
    assert_eq!(stage_of(&again), Some(Stage::Queued));
}

#[tokio::test]
async fn bad_requests_are_refused_with_named_fields() {
    let farm = Farm::start(config()).await;
    let mut client = farm.execution();
    let err = client
        .execute(reapi::ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("action_digest"), "{}", err.message());

    let absent = reapi::Digest {
        hash: "0".repeat(64),
        size_bytes: 12,
    };
    let err = farm
        .try_execute(&absent, Call::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let status = rpc::Status::decode(err.details()).expect("status details");
    let failure = PreconditionFailure::decode(status.details[0].value.as_slice()).unwrap();
    assert_eq!(failure.violations[0].r#type, "MISSING");
    assert_eq!(
        failure.violations[0].subject,
        format!("blobs/{}/12", "0".repeat(64))
    );

    let bad = reapi::Digest {
        hash: "xyz".into(),
        size_bytes: 1,
    };
    let err = farm.try_execute(&bad, Call::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("action_digest"), "{}", err.message());

    // A minimum-policy property that is not a number names the property.
    let mut cfg = config();
    cfg.property_policies
        .insert("cores".into(), corral_scheduler::PropertyPolicy::Minimum);
    let farm = Farm::start(cfg).await;
    let digest = farm.action(Spec::new("x").prop("cores", "many")).await;
    let err = farm
        .try_execute(&digest, Call::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("cores"), "{}", err.message());

    let err = farm
        .try_worker(wire::worker_message::Kind::KeepAlive(wire::KeepAlive {}))
        .await
        .err()
        .expect("a stream that does not start with hello is refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hello"), "{}", err.message());
}
