//! The ActionCache service: a thin edge over [`crate::ActionCache`] that
//! checks the request fields.

use std::sync::Arc;

use corral_proto::reapi;
use corral_proto::reapi::action_cache_server::ActionCache as ActionCacheApi;
use tonic::{Request, Response, Status};

use super::State;
use crate::context::Caller;
use crate::digest::{Digest, DigestFunction};
use crate::error::Error;

pub struct ActionCacheService {
    state: Arc<State>,
}

impl ActionCacheService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        ActionCacheService { state }
    }
}

#[tonic::async_trait]
impl ActionCacheApi for ActionCacheService {
    async fn get_action_result(
        &self,
        request: Request<reapi::GetActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let action =
            Digest::from_proto_field(function, req.action_digest.as_ref(), "action_digest")?;
        let ctx = caller.context(&req.instance_name, function);
        match self.state.action_cache.get(&ctx, &action).await? {
            Some(result) => Ok(Response::new(result)),
            None => Err(Error::NotFound(format!(
                "action result for {action} in instance {:?}",
                req.instance_name
            ))
            .into()),
        }
    }

    async fn update_action_result(
        &self,
        request: Request<reapi::UpdateActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let action =
            Digest::from_proto_field(function, req.action_digest.as_ref(), "action_digest")?;
        let result = req
            .action_result
            .ok_or_else(|| Error::invalid("action_result", "is missing"))?;
        let ctx = caller.context(&req.instance_name, function);
        self.state
            .action_cache
            .update(&ctx, &action, result.clone())
            .await?;
        Ok(Response::new(result))
    }
}
