//! The worker protocol's service: one task per worker stream, turning its
//! messages into calls on the core. The outbound half is the channel the
//! core pushes assignments, cancels and keepalives into; when the core drops
//! the worker (timeout, replacement) the channel closes and so does the
//! stream.

use std::sync::Arc;

use corral_cas::{Digest, DigestFunction, RequestContext};
use corral_proto::tonic::{self, Code, Request, Response, Status, Streaming};
use corral_proto::worker::v1::worker_message::Kind;
use corral_proto::worker::v1::worker_service_server::WorkerService as WorkerServiceTrait;
use corral_proto::worker::v1::{SchedulerMessage, WorkerMessage};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::core::{failure, Hello};
use crate::scheduler::Scheduler;
use crate::worker::WorkerId;

/// The worker service; see [`Scheduler::worker_server`].
#[derive(Debug, Clone)]
pub struct WorkerService {
    scheduler: Arc<Scheduler>,
}

impl WorkerService {
    pub(crate) fn new(scheduler: Arc<Scheduler>) -> Self {
        WorkerService { scheduler }
    }
}

#[tonic::async_trait]
impl WorkerServiceTrait for WorkerService {
    type SessionStream = BoxStream<'static, Result<SchedulerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before a hello"))?;
        let Some(Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "hello: the first message of a worker stream must be a hello",
            ));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let now = self.scheduler.now();
        let wid = self.scheduler.lock().connect_worker(
            Hello {
                name: hello.name,
                platform: hello.platform,
                slots: hello.slots,
                cached_images: hello.cached_images,
            },
            tx,
            now,
        )?;
        let scheduler = self.scheduler.clone();
        tokio::spawn(async move {
            let reason = serve(&scheduler, wid, &mut inbound).await;
            let now = scheduler.now();
            scheduler.lock().worker_lost(wid, &reason, now);
        });
        let out = UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

/// Handles a worker's messages until its stream ends; returns why it ended.
async fn serve(
    scheduler: &Scheduler,
    wid: WorkerId,
    inbound: &mut Streaming<WorkerMessage>,
) -> String {
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "stream closed by the worker".to_string(),
            Err(e) => return format!("stream failed: {e}"),
        };
        let now = scheduler.now();
        {
            let mut core = scheduler.lock();
            if !core.worker_alive(wid) {
                return "session no longer registered".to_string();
            }
            core.worker_heard(wid, now);
        }
        match msg.kind {
            None | Some(Kind::KeepAlive(_)) => {}
            Some(Kind::Hello(_)) => {
                return "protocol violation: a second hello on one stream".to_string();
            }
            Some(Kind::Progress(p)) => {
                tracing::trace!(assignment = %p.assignment_id, stage = p.stage, "progress");
            }
            Some(Kind::Drain(d)) => {
                tracing::info!(reason = %d.reason, "worker asked to drain");
                scheduler.lock().worker_drain(wid, now);
            }
            Some(Kind::CachedImages(c)) => scheduler.lock().worker_images(wid, c.images),
            Some(Kind::Result(r)) => {
                let response = r.response.unwrap_or_else(|| {
                    failure(
                        Code::Internal,
                        "the worker sent a result without a response",
                    )
                });
                let key = scheduler
                    .lock()
                    .cache_key_for(wid, &r.assignment_id, &response);
                if let (Some(key), Some(result)) = (key, response.result.as_ref()) {
                    store_result(scheduler, &key, result.clone()).await;
                }
                let now = scheduler.now();
                if let Err(e) = scheduler
                    .lock()
                    .worker_result(wid, &r.assignment_id, response, now)
                {
                    tracing::warn!(error = %e, "ignoring worker message");
                }
            }
        }
    }
}

/// Writes a successful result into the action cache before the operation
/// completes, so a client that sees COMPLETED also finds it there. Failure
/// to cache is logged; the client still gets its result.
async fn store_result(
    scheduler: &Scheduler,
    key: &crate::core::ActionKey,
    result: corral_proto::reapi::ActionResult,
) {
    let digest = DigestFunction::from_proto(key.digest_function).and_then(|f| {
        Digest::from_proto(
            f,
            &corral_proto::reapi::Digest {
                hash: key.hash.clone(),
                size_bytes: key.size_bytes,
            },
        )
    });
    let outcome = match digest {
        Ok(d) => {
            // The farm's own write of an executed result.
            let ctx = RequestContext::internal(&key.instance_name, d.function());
            scheduler.action_cache().update(&ctx, &d, result).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, instance = %key.instance_name, "could not store the result in the action cache");
    }
}
