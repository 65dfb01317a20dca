//! How the farm ran an action, as its worker recorded it: the
//! `corral.worker.v1.RunPlan` in the auxiliary metadata of the action's
//! result in the farm's action cache.
//!
//! The farm caches only successful results, so an action that failed (the
//! usual reason to reproduce one) has no record there; neither has a
//! result written by a client or by a worker older than the record.

use corral_cas::Connection;
use corral_cas::Digest;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;
use corral_proto::worker::v1 as wire;
use corral_worker::plan::RECORD_TYPE_URL;

/// Largest ActionResult accepted (one holds every output's digest).
const MAX_MESSAGE: usize = 64 << 20;

/// What the action cache says about an action.
pub enum Lookup {
    /// The worker's record of its run, and the worker's name.
    Found {
        plan: Box<wire::RunPlan>,
        worker: String,
    },
    /// The action cache holds no result for the action.
    NotCached,
    /// A result without a (readable) record.
    NoRecord,
    /// The action cache could not be asked; the reason.
    Failed(String),
}

/// Looks the action up in the action cache on `channel`.
pub async fn lookup(channel: Connection, instance: &str, action: &Digest) -> Lookup {
    let mut ac = ActionCacheClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let request = reapi::GetActionResultRequest {
        instance_name: instance.to_string(),
        action_digest: Some(action.to_proto()),
        digest_function: action.function().to_proto(),
        ..Default::default()
    };
    match ac.get_action_result(request).await {
        Ok(response) => record_in(response.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => Lookup::NotCached,
        Err(status) => Lookup::Failed(format!(
            "GetActionResult: {}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// The record in a result's metadata, if there is one that decodes.
fn record_in(result: reapi::ActionResult) -> Lookup {
    let Some(meta) = result.execution_metadata else {
        return Lookup::NoRecord;
    };
    let plan = meta
        .auxiliary_metadata
        .iter()
        .find(|any| any.type_url == RECORD_TYPE_URL)
        .and_then(|any| wire::RunPlan::decode(any.value.as_slice()).ok());
    match plan {
        Some(plan) => Lookup::Found {
            plan: Box::new(plan),
            worker: meta.worker,
        },
        None => Lookup::NoRecord,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::protobuf::Any;

    fn result_with(aux: Vec<Any>) -> reapi::ActionResult {
        reapi::ActionResult {
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                worker: "w1".into(),
                auxiliary_metadata: aux,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_record_is_found_among_the_others() {
        let plan = wire::RunPlan {
            hostname: "buildbox".into(),
            ..Default::default()
        };
        let aux = vec![
            Any {
                type_url: "type.googleapis.com/corral.runner.v1.RunResponse".into(),
                value: vec![8, 1],
            },
            Any {
                type_url: RECORD_TYPE_URL.into(),
                value: plan.encode_to_vec(),
            },
        ];
        match record_in(result_with(aux)) {
            Lookup::Found { plan, worker } => {
                assert_eq!(plan.hostname, "buildbox");
                assert_eq!(worker, "w1");
            }
            _ => panic!("the record was not found"),
        }
    }

    #[test]
    fn no_record_and_an_unreadable_one_are_alike() {
        assert!(matches!(
            record_in(reapi::ActionResult::default()),
            Lookup::NoRecord
        ));
        assert!(matches!(
            record_in(result_with(Vec::new())),
            Lookup::NoRecord
        ));
        let garbage = Any {
            type_url: RECORD_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(matches!(
            record_in(result_with(vec![garbage])),
            Lookup::NoRecord
        ));
    }
}
