//! `google.longrunning.Operations` over the scheduler's operations: Get,
//! List, Cancel (a running action is killed on its worker), Delete, Wait.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::longrunning::operations_server::Operations;
use corral_proto::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest,
    ListOperationsResponse, Operation, WaitOperationRequest,
};
use corral_proto::protobuf::Empty;
use corral_proto::tonic::{self, Request, Response, Status};

use corral_auth::Permission;
use corral_cas::Caller;

use crate::scheduler::Scheduler;

/// Largest page ListOperations returns.
const MAX_PAGE: usize = 1000;
/// How long WaitOperation waits when the request gives no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The Operations service; see [`Scheduler::operations_server`].
#[derive(Debug, Clone)]
pub struct OperationsService {
    scheduler: Arc<Scheduler>,
}

impl OperationsService {
    pub(crate) fn new(scheduler: Arc<Scheduler>) -> Self {
        OperationsService { scheduler }
    }

    fn unknown(name: &str) -> Status {
        Status::not_found(format!("no operation named {name:?}"))
    }
}

#[tonic::async_trait]
impl Operations for OperationsService {
    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        if !req.filter.is_empty() {
            return Err(Status::invalid_argument(
                "filter: filtering operations is not supported; send an empty filter",
            ));
        }
        let limit = match usize::try_from(req.page_size) {
            Ok(0) => MAX_PAGE,
            Ok(n) => n.min(MAX_PAGE),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {} is negative",
                    req.page_size
                )))
            }
        };
        let (operations, next) =
            self.scheduler
                .lock()
                .list_operations(&req.page_token, limit, &|instance| {
                    self.scheduler.may_read_operations(&caller, instance)
                });
        Ok(Response::new(ListOperationsResponse {
            operations,
            next_page_token: next.unwrap_or_default(),
            unreachable: Vec::new(),
        }))
    }

    async fn get_operation(
        &self,
        request: Request<GetOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = Caller::from_request(&request);
        let name = request.into_inner().name;
        self.scheduler
            .check_operation(&caller, &name, Permission::OperationsRead)?;
        let op = self.scheduler.lock().operation(&name);
        op.map(Response::new).ok_or_else(|| Self::unknown(&name))
    }

    async fn delete_operation(
        &self,
        request: Request<DeleteOperationRequest>,
    ) -> Result<Response<Empty>, Status> {
        let caller = Caller::from_request(&request);
        let name = request.into_inner().name;
        self.scheduler
            .check_operation(&caller, &name, Permission::OperationsCancel)?;
        self.scheduler.lock().delete(&name)?;
        Ok(Response::new(Empty {}))
    }

    async fn cancel_operation(
        &self,
        request: Request<CancelOperationRequest>,
    ) -> Result<Response<Empty>, Status> {
        let caller = Caller::from_request(&request);
        let name = request.into_inner().name;
        self.scheduler
            .check_operation(&caller, &name, Permission::OperationsCancel)?;
        let now = self.scheduler.now();
        self.scheduler.lock().cancel(&name, now)?;
        Ok(Response::new(Empty {}))
    }

    async fn wait_operation(
        &self,
        request: Request<WaitOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        self.scheduler
            .check_operation(&caller, &req.name, Permission::OperationsRead)?;
        let wait = match req.timeout {
            None => DEFAULT_WAIT,
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Status::invalid_argument("timeout: is negative"))
            }
            Some(t) => Duration::new(t.seconds as u64, t.nanos as u32),
        };
        let mut watch = self
            .scheduler
            .lock()
            .subscribe(&req.name)
            .ok_or_else(|| Self::unknown(&req.name))?;
        // Timing out (or the operation being deleted) just returns the
        // operation as it stands, as WaitOperation specifies.
        let _ = tokio::time::timeout(wait, watch.rx.wait_for(|s| s.response.is_some())).await;
        Ok(Response::new(watch.current()))
    }
}
