//! REAPI `Execution`: Execute and WaitExecution.

use std::sync::Arc;

use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_server::Execution;
use corral_proto::tonic::{self, Request, Response, Status};

use super::{operation_stream, OperationStream};
use crate::scheduler::Scheduler;

/// Header in which REAPI clients send `RequestMetadata`.
const REQUEST_METADATA: &str = "build.bazel.remote.execution.v2.requestmetadata-bin";

/// The Execution service; see [`Scheduler::execution_server`].
#[derive(Debug, Clone)]
pub struct ExecutionService {
    scheduler: Arc<Scheduler>,
}

impl ExecutionService {
    pub(crate) fn new(scheduler: Arc<Scheduler>) -> Self {
        ExecutionService { scheduler }
    }
}

/// Reads `RequestMetadata` from its header. A malformed header is logged
/// and treated as absent: it only steers fairness, never correctness.
pub(crate) fn request_metadata(headers: &tonic::metadata::MetadataMap) -> reapi::RequestMetadata {
    let Some(value) = headers.get_bin(REQUEST_METADATA) else {
        return reapi::RequestMetadata::default();
    };
    match value
        .to_bytes()
        .ok()
        .and_then(|b| reapi::RequestMetadata::decode(b).ok())
    {
        Some(m) => m,
        None => {
            tracing::warn!("ignoring malformed {REQUEST_METADATA} header");
            reapi::RequestMetadata::default()
        }
    }
}

#[tonic::async_trait]
impl Execution for ExecutionService {
    type ExecuteStream = OperationStream;
    type WaitExecutionStream = OperationStream;

    async fn execute(
        &self,
        request: Request<reapi::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let metadata = request_metadata(request.metadata());
        let rx = self
            .scheduler
            .execute(request.into_inner(), metadata)
            .await?;
        Ok(Response::new(operation_stream(rx)))
    }

    async fn wait_execution(
        &self,
        request: Request<reapi::WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        let name = request.into_inner().name;
        let rx = self
            .scheduler
            .lock()
            .subscribe(&name)
            .ok_or_else(|| Status::not_found(format!("no operation named {name:?}")))?;
        Ok(Response::new(operation_stream(rx)))
    }
}
