//! The worker protocol's service: one task per worker stream, turning its
//! messages into calls on the core. The outbound half is the channel the
//! core pushes assignments, cancels and keepalives into; when the core drops
//! the worker (timeout, replacement) the channel closes and so does the
//! stream.

use std::sync::Arc;

use corral_auth::AuditKind;
use corral_cas::action_cache::is_complete;
use corral_cas::action_cache::provenance::stamp;
use corral_cas::{Caller, Digest, DigestFunction, Identity, RequestContext};
use corral_proto::prost::Message;
use corral_proto::provenance::v1::Provenance;
use corral_proto::tonic::{self, Code, Request, Response, Status, Streaming};
use corral_proto::worker::v1::worker_message::Kind;
use corral_proto::worker::v1::worker_service_server::WorkerService as WorkerServiceTrait;
use corral_proto::worker::v1::RunPlan;
use corral_proto::worker::v1::{SchedulerMessage, WorkerMessage};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::core::{failure, Hello};
use crate::scheduler::Scheduler;
use crate::worker::WorkerId;

/// The type URL of the worker's run-plan record in `auxiliary_metadata`.
const RUN_PLAN_TYPE_URL: &str = "type.googleapis.com/corral.worker.v1.RunPlan";

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
        let caller = Caller::from_request(&request);
        let authorization = self.scheduler.authorization();
        authorization.check_farm(caller.identity(), corral_auth::Permission::Worker)?;
        // Who the connection proved the worker to be: its principal when
        // the listener authenticated it, else what the socket shows.
        let identity = match caller.identity() {
            Identity::Authenticated(p) => p.name().to_string(),
            _ => connection_identity(&request),
        };
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
        let name = hello.name.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let now = self.scheduler.now();
        let wid = self.scheduler.lock().connect_worker(
            Hello {
                name: name.clone(),
                pools: self.scheduler.tenancy().pools_of_worker(&identity),
                identity: identity.clone(),
                platform: hello.platform,
                slots: hello.slots,
                cached_images: hello.cached_images,
            },
            tx,
            now,
        )?;
        authorization.record(
            AuditKind::WorkerRegistered,
            caller.identity(),
            &format!("worker {:?} registered as {identity}", name),
        );
        let scheduler = self.scheduler.clone();
        let who = caller.identity().clone();
        tokio::spawn(async move {
            let reason = serve(&scheduler, wid, &mut inbound, &who).await;
            let now = scheduler.now();
            scheduler.lock().worker_lost(wid, &reason, now);
            scheduler.authorization().record(
                AuditKind::WorkerLost,
                &who,
                &format!("worker {name:?} ({identity}): {reason}"),
            );
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
    who: &Identity,
) -> String {
    let mut reloads = scheduler.authorization().policy_reloads();
    loop {
        let next = tokio::select! {
            next = inbound.message() => next,
            Ok(()) = reloads.changed() => {
                if let Some(reason) = revoked(scheduler, who) {
                    return reason;
                }
                continue;
            }
        };
        let msg = match next {
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
                let mut response = r.response.unwrap_or_else(|| {
                    failure(
                        Code::Internal,
                        "the worker sent a result without a response",
                    )
                });
                let write = scheduler
                    .lock()
                    .cache_write_for(wid, &r.assignment_id, &response);
                if let (Some(write), Some(result)) = (write, response.result.as_mut()) {
                    // The client gets the result as the cache will serve it.
                    let tenant = scheduler
                        .tenancy()
                        .tenant_of(&write.key.instance_name)
                        .unwrap_or_default();
                    let provenance = provenance(&write, &tenant, result);
                    stamp(result, &provenance);
                    store_result(scheduler, &write, result.clone()).await;
                }
                let now = scheduler.now();
                if let Err(e) = scheduler
                    .lock()
                    .worker_result(wid, &r.assignment_id, response, now)
                {
                    tracing::warn!(error = %e, "refused a worker's report");
                    scheduler.authorization().record(
                        AuditKind::ReportRefused,
                        who,
                        &format!("assignment {:?}: {e}", r.assignment_id),
                    );
                }
            }
        }
    }
}

/// Checks a connected worker's principal against a reloaded policy: one
/// the policy no longer lets be a worker is cut off (its running actions
/// go back to the queue) and audited as revoked. Returns why, if so.
fn revoked(scheduler: &Scheduler, who: &Identity) -> Option<String> {
    let authorization = scheduler.authorization();
    let denied = authorization
        .check_farm(who, corral_auth::Permission::Worker)
        .err()?;
    authorization.record(
        AuditKind::WorkerRevoked,
        who,
        &format!("disconnected after a policy reload: {denied}"),
    );
    Some(format!("credentials revoked: {denied}"))
}

/// Who a worker's connection proves it to be: the peer's uid on the
/// workers' UNIX socket, the peer address on a loopback TCP listener.
/// Never anything the worker says about itself.
fn connection_identity<T>(request: &Request<T>) -> String {
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        if let Some(cred) = info.peer_cred {
            return format!("uid:{}", cred.uid());
        }
    }
    match request.remote_addr() {
        Some(addr) => format!("tcp:{addr}"),
        None => "unknown".to_string(),
    }
}

/// Writes a successful result, stamped with its provenance, into the
/// action cache before the operation completes, so a client that sees
/// COMPLETED also finds it there; and only when every output it names is in the CAS:
/// a worker cannot make the cache promise blobs nobody uploaded. Failure to
/// cache is logged; the client still gets its result.
async fn store_result(
    scheduler: &Scheduler,
    write: &crate::core::CacheWrite,
    result: corral_proto::reapi::ActionResult,
) {
    let key = &write.key;
    let digest = DigestFunction::from_proto(key.digest_function).and_then(|f| {
        Digest::from_proto(
            f,
            &corral_proto::reapi::Digest {
                hash: key.hash.clone(),
                size_bytes: key.size_bytes,
            },
        )
    });
    let digest = match digest {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, instance = %key.instance_name, "not caching a result with a bad action digest");
            return;
        }
    };
    // The farm's own write of an executed result.
    let ctx = RequestContext::internal(&key.instance_name, digest.function());
    match is_complete(scheduler.cas(), &ctx, digest.function(), &result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(action = %digest, worker = %write.worker, identity = %write.worker_identity,
                "not caching a result whose outputs are not all in the CAS");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, action = %digest, "could not check a result's outputs; not caching it");
            return;
        }
    }
    if let Err(e) = scheduler.action_cache().update(&ctx, &digest, result).await {
        tracing::warn!(error = %e, instance = %key.instance_name, "could not store the result in the action cache");
        return;
    }
    let authorization = scheduler.authorization();
    let mut event = corral_auth::AuditEvent::new(AuditKind::AcWrite, authorization.now());
    event.tenant = scheduler.tenancy().tenant_of(&key.instance_name);
    authorization.audit().record(
        &event
            .instance(&key.instance_name)
            .digest(digest)
            .field("by", "farm")
            .field("requester", &write.requester)
            .field("worker", &write.worker)
            .field("worker_identity", &write.worker_identity),
    );
}

/// The provenance of a result: who asked, who ran it, under which profile.
fn provenance(
    write: &crate::core::CacheWrite,
    tenant: &str,
    result: &corral_proto::reapi::ActionResult,
) -> Provenance {
    Provenance {
        tenant: tenant.to_string(),
        principal: write.requester.clone(),
        worker: write.worker.clone(),
        worker_identity: write.worker_identity.clone(),
        sandbox_profile: sandbox_profile(result),
        corral_version: env!("CARGO_PKG_VERSION").to_string(),
        instance_name: write.key.instance_name.clone(),
    }
}

/// The profile the worker's run-plan record names ("default" when it
/// names none, the runner's default).
fn sandbox_profile(result: &corral_proto::reapi::ActionResult) -> String {
    let plan = result
        .execution_metadata
        .iter()
        .flat_map(|m| m.auxiliary_metadata.iter())
        .find(|any| any.type_url == RUN_PLAN_TYPE_URL)
        .and_then(|any| RunPlan::decode(any.value.as_slice()).ok());
    match plan {
        Some(p) if !p.profile.is_empty() => p.profile,
        _ => "default".to_string(),
    }
}
