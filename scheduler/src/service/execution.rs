//! REAPI `Execution`: Execute and WaitExecution.

use std::sync::Arc;

use corral_auth::Permission;
use corral_cas::Caller;
use corral_proto::reapi;
use corral_proto::reapi::execution_server::Execution;
use corral_proto::tonic::{self, Request, Response, Status};

use super::{operation_stream, OperationStream};
use crate::scheduler::Scheduler;

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

#[tonic::async_trait]
impl Execution for ExecutionService {
    type ExecuteStream = OperationStream;
    type WaitExecutionStream = OperationStream;

    async fn execute(
        &self,
        request: Request<reapi::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        // Identity and RequestMetadata come from the connection and the
        // headers, read before the body is taken.
        let caller = Caller::from_request(&request);
        let rx = self
            .scheduler
            .execute(request.into_inner(), &caller)
            .await?;
        Ok(Response::new(operation_stream(rx)))
    }

    async fn wait_execution(
        &self,
        request: Request<reapi::WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        let caller = Caller::from_request(&request);
        let name = request.into_inner().name;
        self.scheduler
            .check_operation(&caller, &name, Permission::OperationsRead)?;
        let rx = self
            .scheduler
            .lock()
            .subscribe(&name)
            .ok_or_else(|| Status::not_found(format!("no operation named {name:?}")))?;
        Ok(Response::new(operation_stream(rx)))
    }
}
