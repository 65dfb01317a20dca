//! The tonic services: thin translations between gRPC and [`Scheduler`].

mod execution;
mod operations;
mod worker;

pub use execution::ExecutionService;
pub use operations::OperationsService;
pub use worker::WorkerService;

use corral_proto::longrunning::Operation;
use corral_proto::tonic::Status;
use futures::stream::BoxStream;

use crate::operations::OpWatch;

/// A stream of Operation updates for Execute and WaitExecution.
pub type OperationStream = BoxStream<'static, Result<Operation, Status>>;

/// Streams an operation: its current state at once, then every change and
/// every keepalive re-send, ending after the update that says `done`. If the
/// operation is forgotten (deleted) while watched, the stream just ends.
pub(crate) fn operation_stream(watch: OpWatch) -> OperationStream {
    let stream = futures::stream::unfold(
        (watch, false, true),
        |(mut watch, finished, first)| async move {
            if finished {
                return None;
            }
            if !first && watch.rx.changed().await.is_err() {
                return None;
            }
            let op = watch.current();
            let done = op.done;
            Some((Ok(op), (watch, done, false)))
        },
    );
    Box::pin(stream)
}
