//! [`Scheduler`]: the scheduling core behind a lock, the CAS and action
//! cache it reads and writes, and the clock; the tonic services are thin
//! wrappers around it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use corral_cas::message::BoundedMessage;
use corral_cas::{ActionCache, BlobStore, BoundedStore, Caller, Digest, DigestFunction};
use corral_cas::{Authorization, Invocation, RequestContext};
use corral_proto::longrunning::operations_server::OperationsServer;
use corral_proto::reapi;
use corral_proto::reapi::execution_server::ExecutionServer;
use corral_proto::worker::v1::worker_service_server::WorkerServiceServer;

use crate::clock::Clock;
use crate::config::SchedulerConfig;
use crate::core::{Core, Stats, Submission, WorkerInfo};
use crate::error::{Error, Result};
use crate::operations::OpWatch;
use crate::service::{ExecutionService, OperationsService, WorkerService};
use crate::status::blob_subject;
use crate::tenancy::Tenancy;

/// The scheduler. Create one with [`Scheduler::new`], add its three
/// services to the server, turn on execution in Capabilities with
/// [`Scheduler::execution_capabilities`], and start
/// [`Scheduler::spawn_ticker`] inside the runtime.
pub struct Scheduler {
    core: Mutex<Core>,
    cas: BoundedStore,
    ac: Arc<dyn ActionCache>,
    clock: Arc<dyn Clock>,
    tick: Duration,
    tenancy: Arc<dyn Tenancy>,
    authorization: Authorization,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Checks `config` and builds a scheduler reading Actions and Commands
    /// from `cas` (within its message limits) and caching results in `ac`:
    /// both as [`corral_cas::factory`] builds them.
    pub fn new(
        config: SchedulerConfig,
        cas: BoundedStore,
        ac: Arc<dyn ActionCache>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        Self::with_tenancy(
            config,
            cas,
            ac,
            clock,
            Arc::new(crate::Unrestricted),
            Authorization::local(),
        )
    }

    /// [`Scheduler::new`] for a farm with tenants: each tenant's actions
    /// confined to its worker pools as `tenancy` says, and every call
    /// checked by `authorization` (Execute needs `execute`, reading an
    /// operation `operations.read`, cancelling it `operations.cancel`, a
    /// worker session `worker`).
    pub fn with_tenancy(
        config: SchedulerConfig,
        cas: BoundedStore,
        ac: Arc<dyn ActionCache>,
        clock: Arc<dyn Clock>,
        tenancy: Arc<dyn Tenancy>,
        authorization: Authorization,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let tick = Duration::from_millis(config.tick_ms);
        Ok(Arc::new(Scheduler {
            core: Mutex::new(Core::new(config, name_prefix())),
            cas,
            ac,
            clock,
            tick,
            tenancy,
            authorization,
        }))
    }

    /// The REAPI Execution service.
    pub fn execution_server(self: &Arc<Self>) -> ExecutionServer<ExecutionService> {
        ExecutionServer::new(ExecutionService::new(self.clone()))
    }

    /// The google.longrunning Operations service over the same operations.
    pub fn operations_server(self: &Arc<Self>) -> OperationsServer<OperationsService> {
        OperationsServer::new(OperationsService::new(self.clone()))
    }

    /// The worker protocol's service.
    pub fn worker_server(self: &Arc<Self>) -> WorkerServiceServer<WorkerService> {
        WorkerServiceServer::new(WorkerService::new(self.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Adds the client-facing services (Execution, Operations) to a tonic
    /// router. The worker protocol is not among them: workers are
    /// principals of their own and connect to a listener of their own (see
    /// [`Scheduler::add_worker_service_to`]), so no client can register as
    /// a worker and report results.
    pub fn add_to(self: &Arc<Self>, routes: &mut tonic::service::RoutesBuilder) {
        routes
            .add_service(self.execution_server())
            .add_service(self.operations_server());
    }

    /// Adds the worker protocol to the router of the workers' listener.
    pub fn add_worker_service_to(self: &Arc<Self>, routes: &mut tonic::service::RoutesBuilder) {
        routes.add_service(self.worker_server());
    }

    /// What Capabilities should advertise while this scheduler serves.
    pub fn execution_capabilities(&self) -> reapi::ExecutionCapabilities {
        reapi::ExecutionCapabilities {
            digest_function: DigestFunction::Sha256.to_proto(),
            exec_enabled: true,
            execution_priority_capabilities: Some(reapi::PriorityCapabilities {
                priorities: vec![reapi::priority_capabilities::PriorityRange {
                    min_priority: i32::MIN,
                    max_priority: i32::MAX,
                }],
            }),
            supported_node_properties: Vec::new(),
            digest_functions: DigestFunction::ALL.iter().map(|f| f.to_proto()).collect(),
        }
    }

    /// Applies timeouts, keepalives, grace periods and retention as of now.
    pub fn tick(&self) {
        let now = self.clock.now();
        self.lock().tick(now);
    }

    /// Calls [`Scheduler::tick`] every `tick_ms` until the scheduler is
    /// dropped. Needs a tokio runtime. Tests with a manual clock call `tick`
    /// themselves instead.
    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = self.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match weak.upgrade() {
                    Some(s) => s.tick(),
                    None => break,
                }
            }
        })
    }

    /// Asks the connected worker `name` to drain (finish what it runs, take
    /// nothing new).
    pub fn drain_worker(&self, name: &str, reason: &str) -> Result<()> {
        let now = self.clock.now();
        self.lock().drain_by_name(name, reason, now)
    }

    /// Every connected worker, by name: for status pages and tests.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let now = self.clock.now();
        self.lock().workers(now)
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the core as consistent as
        // the last completed step; keep serving rather than poison forever.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn authorization(&self) -> &Authorization {
        &self.authorization
    }

    /// Whether `caller` may see operation `name` (`operations.read` on the
    /// instance it was requested under). An operation of another tenant is
    /// NOT_FOUND, as one that does not exist: names are no oracle.
    pub(crate) fn check_operation(
        &self,
        caller: &Caller,
        name: &str,
        permission: corral_auth::Permission,
    ) -> Result<()> {
        let unknown = || Error::NotFound(format!("no operation named {name:?}"));
        let instance = self.lock().operation_instance(name).ok_or_else(unknown)?;
        let ctx = caller.context(&instance, DigestFunction::Sha256);
        if !self
            .authorization
            .may(&ctx, corral_auth::Permission::OperationsRead)
        {
            return Err(unknown());
        }
        self.authorization.check(&ctx, permission)?;
        Ok(())
    }

    /// Whether `caller` may read operations of `instance`.
    pub(crate) fn may_read_operations(&self, caller: &Caller, instance: &str) -> bool {
        let ctx = caller.context(instance, DigestFunction::Sha256);
        self.authorization
            .may(&ctx, corral_auth::Permission::OperationsRead)
    }

    /// A place in the tenant's `queued_operations` quota; over it,
    /// RESOURCE_EXHAUSTED saying when to retry.
    fn queue_permit(&self, ctx: &RequestContext) -> Result<Option<crate::tenancy::QueuePermit>> {
        let policy = self.authorization.policy();
        let Some(tenant) = policy.tenant_of(ctx.instance_name()) else {
            return Ok(None);
        };
        match self.authorization.quotas().try_enqueue(tenant) {
            Ok(permit) => Ok(Some(crate::tenancy::QueuePermit(permit))),
            Err(over) => Err(corral_cas::Error::from(over).into()),
        }
    }

    pub(crate) fn tenancy(&self) -> &dyn Tenancy {
        self.tenancy.as_ref()
    }

    pub(crate) fn cas(&self) -> &BoundedStore {
        &self.cas
    }

    pub(crate) fn action_cache(&self) -> &dyn ActionCache {
        self.ac.as_ref()
    }

    /// Execute: read and check the Action and Command, answer from the
    /// action cache when allowed, else queue.
    pub(crate) async fn execute(
        &self,
        req: reapi::ExecuteRequest,
        caller: &Caller,
    ) -> Result<OpWatch> {
        let function = DigestFunction::from_proto(req.digest_function)?;
        let ctx = caller.context(&req.instance_name, function);
        self.authorization
            .check(&ctx, corral_auth::Permission::Execute)?;
        let action_digest =
            Digest::from_proto_field(function, req.action_digest.as_ref(), "action_digest")?;
        let action: reapi::Action = self.read(&ctx, &action_digest, "action_digest").await?;
        let command_digest = Digest::from_proto_field(
            function,
            action.command_digest.as_ref(),
            "action.command_digest",
        )?;
        let input_root = Digest::from_proto_field(
            function,
            action.input_root_digest.as_ref(),
            "action.input_root_digest",
        )?;
        let command: reapi::Command = self
            .read(&ctx, &command_digest, "action.command_digest")
            .await?;
        if command.arguments.is_empty() {
            return Err(Error::invalid(
                "command.arguments",
                "the command has no arguments",
            ));
        }
        let missing = self.cas.find_missing(&ctx, &[input_root]).await?;
        if let Some(d) = missing.first() {
            return Err(Error::MissingBlobs {
                message: format!("the input root {d} (action.input_root_digest) is not in the CAS"),
                subjects: vec![blob_subject(&d.hash_hex(), d.to_proto().size_bytes)],
            });
        }
        if !req.skip_cache_lookup && !action.do_not_cache {
            match self.ac.get(&ctx, &action_digest).await {
                Ok(Some(result)) => {
                    let response = reapi::ExecuteResponse {
                        result: Some(result),
                        cached_result: true,
                        ..Default::default()
                    };
                    let now = self.now();
                    let mut core = self.lock();
                    let (_, rx) = core.completed(
                        ctx.instance_name(),
                        action_digest.to_proto(),
                        function.to_proto(),
                        response,
                        now,
                    );
                    let invocation = ctx.invocation().map(|i| i.tool_invocation_id.as_str());
                    core.observer_mut().cache_hit(invocation.unwrap_or(""));
                    return Ok(rx);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "action cache lookup failed; executing"),
            }
        }
        let permit = self.queue_permit(&ctx)?;
        let tenant = self.tenancy.tenant_of(ctx.instance_name());
        let sub = Submission {
            instance_name: req.instance_name,
            action_digest: action_digest.to_proto(),
            digest_function: function.to_proto(),
            action,
            command,
            priority: req.execution_policy.map(|p| p.priority).unwrap_or(0),
            metadata: ctx
                .invocation()
                .map(Invocation::to_proto)
                .unwrap_or_default(),
            requester: ctx.identity().principal_name(),
            pools: self.tenancy.pools_for(ctx.instance_name()),
            max_running: tenant.as_deref().and_then(|t| {
                let limit = self.tenancy.concurrent_executions(t)?;
                Some(usize::try_from(limit).unwrap_or(usize::MAX))
            }),
            tenant,
        };
        let now = self.now();
        let (name, rx) = self.lock().submit(sub, permit, now)?;
        tracing::debug!(operation = %name, action = %action_digest, "queued");
        Ok(rx)
    }

    /// Reads a message the request names in `field`: refused from its
    /// digest alone when over `[cas.message_limits]`, before any read.
    async fn read<M: BoundedMessage>(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        field: &str,
    ) -> Result<M> {
        match self.cas.get_message::<M>(ctx, digest, field).await {
            Ok(m) => Ok(m),
            Err(corral_cas::Error::NotFound(_)) => Err(Error::MissingBlobs {
                message: format!("the blob {digest} named by {field} is not in the CAS"),
                subjects: vec![blob_subject(
                    &digest.hash_hex(),
                    digest.to_proto().size_bytes,
                )],
            }),
            Err(corral_cas::Error::InvalidArgument { field, reason }) => {
                Err(Error::invalid(field, reason))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A per-process prefix for operation names, so names from before a restart
/// are never mistaken for new ones.
fn name_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
