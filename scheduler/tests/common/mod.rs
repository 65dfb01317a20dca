//! A farm on loopback for the scheduler's tests: the real Execution,
//! Operations and WorkerService servers over an in-memory CAS and action
//! cache, a manual clock, REAPI clients, and simulated workers that speak
//! the worker protocol over real gRPC streams.
//!
//! Time moves only through [`Farm::advance`]; nothing in these tests sleeps
//! to make time pass. Waiting for a message is bounded by a real-time limit
//! so that a broken rule fails the test instead of hanging it.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use corral_cas::{
    ActionCache, BlobStore, Digest, DigestFunction, MemoryActionCache, MemoryStore, MessageLimits,
    RequestContext, Storage,
};
use corral_proto::longrunning::operations_client::OperationsClient;
use corral_proto::longrunning::{self, Operation};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::tonic::transport::{Channel, Server};
use corral_proto::tonic::{self, Streaming};
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use corral_scheduler::operations::{response_of, stage_of};
use corral_scheduler::{ManualClock, Scheduler, SchedulerConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Real-time bound on any single wait in a test.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(200);

pub struct Farm {
    pub scheduler: Arc<Scheduler>,
    pub clock: Arc<ManualClock>,
    pub cas: Arc<MemoryStore>,
    pub ac: Arc<MemoryActionCache>,
    pub channel: Channel,
}

/// A config for tests: small, round numbers.
pub fn config() -> SchedulerConfig {
    SchedulerConfig {
        client_keepalive_ms: 10_000,
        worker_keepalive_ms: 5_000,
        worker_timeout_ms: 30_000,
        max_retries: 2,
        default_timeout_s: 600,
        max_timeout_s: 3_600,
        timeout_grace_ms: 10_000,
        unsatisfiable_grace_ms: 20_000,
        lost_worker_memory_ms: 60_000,
        completed_retention_ms: 120_000,
        max_completed_operations: 1_000,
        ..SchedulerConfig::default()
    }
}

/// Options of one test action.
#[derive(Clone, Default)]
pub struct Spec {
    pub args: Vec<String>,
    /// Put in `Command.platform` (Bazel 4 style) unless `in_action`.
    pub platform: Vec<(String, String)>,
    pub in_action: bool,
    pub timeout_s: Option<i64>,
    pub do_not_cache: bool,
}

impl Spec {
    pub fn new(tag: &str) -> Self {
        Spec {
            args: vec!["/bin/echo".into(), tag.into()],
            ..Default::default()
        }
    }

    pub fn prop(mut self, k: &str, v: &str) -> Self {
        self.platform.push((k.into(), v.into()));
        self
    }
}

/// Options of one Execute call.
#[derive(Clone, Default)]
pub struct Call {
    pub instance: String,
    pub invocation: String,
    pub priority: i32,
    pub skip_cache_lookup: bool,
}

impl Call {
    pub fn invocation(id: &str) -> Self {
        Call {
            invocation: id.into(),
            ..Default::default()
        }
    }
}

impl Farm {
    pub async fn start(config: SchedulerConfig) -> Farm {
        Farm::start_with_tenancy(config, Arc::new(corral_scheduler::Unrestricted)).await
    }

    pub async fn start_with_tenancy(
        config: SchedulerConfig,
        tenancy: Arc<dyn corral_scheduler::Tenancy>,
    ) -> Farm {
        let clock = Arc::new(ManualClock::new());
        let cas = Arc::new(MemoryStore::new());
        let ac = Arc::new(MemoryActionCache::new());
        let storage = Storage::over(cas.clone(), ac.clone(), MessageLimits::default());
        let scheduler = Scheduler::with_tenancy(
            config,
            storage.cas,
            storage.action_cache,
            clock.clone(),
            tenancy,
            corral_cas::Authorization::local(),
        )
        .expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut routes = tonic::service::RoutesBuilder::default();
        scheduler.add_to(&mut routes);
        // The tests drive both sides through one port.
        scheduler.add_worker_service_to(&mut routes);
        let routes = routes.routes();
        tokio::spawn(async move {
            Server::builder()
                .add_routes(routes)
                .serve_with_incoming(corral_cas::service::incoming(listener))
                .await
                .expect("server runs");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to loopback server");
        Farm {
            scheduler,
            clock,
            cas,
            ac,
            channel,
        }
    }

    /// Moves the manual clock and applies the time-driven rules.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.scheduler.tick();
    }

    /// Waits (in real time, bounded) until the scheduler's state satisfies
    /// `cond`: the way a test knows a message it sent has been handled.
    pub async fn settle(&self, what: &str, cond: impl Fn(&Scheduler) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !cond(&self.scheduler) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "scheduler never reached: {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the scheduler has heard from `worker` at the current
    /// (manual) time.
    pub async fn heard(&self, worker: &str) {
        self.settle(&format!("{worker} heard from"), |s| {
            s.workers()
                .iter()
                .any(|w| w.name == worker && w.silent_for.is_zero())
        })
        .await;
    }

    pub fn execution(&self) -> ExecutionClient<Channel> {
        ExecutionClient::new(self.channel.clone())
    }

    pub fn operations(&self) -> OperationsClient<Channel> {
        OperationsClient::new(self.channel.clone())
    }

    async fn put<M: Message>(&self, m: &M) -> reapi::Digest {
        let data = m.encode_to_vec();
        let d = Digest::of_bytes(DigestFunction::Sha256, &data);
        self.cas
            .put(&RequestContext::internal("", d.function()), &d, data.into())
            .await
            .expect("put blob");
        d.to_proto()
    }

    /// Uploads a Command, an empty input root and an Action; returns the
    /// Action's digest.
    pub async fn action(&self, spec: Spec) -> reapi::Digest {
        let platform = reapi::Platform {
            properties: spec
                .platform
                .iter()
                .map(|(n, v)| reapi::platform::Property {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        #[allow(deprecated)]
        let command = reapi::Command {
            arguments: spec.args.clone(),
            platform: (!spec.in_action).then(|| platform.clone()),
            ..Default::default()
        };
        let command_digest = self.put(&command).await;
        let root = self.put(&reapi::Directory::default()).await;
        let action = reapi::Action {
            command_digest: Some(command_digest),
            input_root_digest: Some(root),
            timeout: spec.timeout_s.map(|s| corral_proto::protobuf::Duration {
                seconds: s,
                nanos: 0,
            }),
            do_not_cache: spec.do_not_cache,
            platform: spec.in_action.then_some(platform),
            ..Default::default()
        };
        self.put(&action).await
    }

    /// Calls Execute and returns the open stream of Operation updates.
    pub async fn execute(&self, digest: &reapi::Digest, call: Call) -> Ops {
        let result = self.try_execute(digest, call).await;
        Ops(result.expect("Execute accepted"))
    }

    pub async fn try_execute(
        &self,
        digest: &reapi::Digest,
        call: Call,
    ) -> Result<Streaming<Operation>, tonic::Status> {
        let mut req = tonic::Request::new(reapi::ExecuteRequest {
            instance_name: call.instance.clone(),
            action_digest: Some(digest.clone()),
            skip_cache_lookup: call.skip_cache_lookup,
            execution_policy: Some(reapi::ExecutionPolicy {
                priority: call.priority,
            }),
            digest_function: reapi::digest_function::Value::Sha256 as i32,
            ..Default::default()
        });
        let meta = reapi::RequestMetadata {
            tool_invocation_id: call.invocation.clone(),
            ..Default::default()
        };
        req.metadata_mut().insert_bin(
            "build.bazel.remote.execution.v2.requestmetadata-bin",
            tonic::metadata::MetadataValue::from_bytes(&meta.encode_to_vec()),
        );
        self.execution().execute(req).await.map(|r| r.into_inner())
    }

    /// Connects a simulated worker and waits for its Welcome.
    pub async fn worker(&self, name: &str, props: &[(&str, &str)], slots: u32) -> SimWorker {
        self.worker_with_images(name, props, slots, &[]).await
    }

    pub async fn worker_with_images(
        &self,
        name: &str,
        props: &[(&str, &str)],
        slots: u32,
        images: &[&str],
    ) -> SimWorker {
        let hello = wire::Hello {
            name: name.into(),
            platform: Some(reapi::Platform {
                properties: props
                    .iter()
                    .map(|(n, v)| reapi::platform::Property {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            }),
            slots,
            cached_images: images.iter().map(|s| s.to_string()).collect(),
        };
        let mut w = self
            .try_worker(wire::worker_message::Kind::Hello(hello))
            .await
            .expect("worker accepted");
        match w.next().await {
            wire::scheduler_message::Kind::Welcome(_) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Opens a worker stream whose first message is `first`.
    pub async fn try_worker(
        &self,
        first: wire::worker_message::Kind,
    ) -> Result<SimWorker, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(wire::WorkerMessage { kind: Some(first) })
            .await
            .expect("queue hello");
        let mut client = WorkerServiceClient::new(self.channel.clone());
        let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        Ok(SimWorker {
            tx: Some(tx),
            inbound,
        })
    }
}

/// The client's view of one Execute or WaitExecution stream.
pub struct Ops(pub Streaming<Operation>);

impl Ops {
    /// The next update; asserts the protocol rule that `error` is never set.
    pub async fn next(&mut self) -> Operation {
        let op = tokio::time::timeout(PATIENCE, self.0.message())
            .await
            .expect("an operation update in time")
            .expect("stream healthy")
            .expect("stream still open");
        assert_no_error(&op);
        op
    }

    /// Reads updates until the operation is done; returns its response.
    pub async fn done(&mut self) -> reapi::ExecuteResponse {
        loop {
            let op = self.next().await;
            if op.done {
                assert_eq!(stage_of(&op), Some(Stage::Completed));
                return response_of(&op).expect("a done operation carries an ExecuteResponse");
            }
        }
    }

    /// Reads updates until `stage` (or done) is seen.
    pub async fn until(&mut self, stage: Stage) -> Operation {
        loop {
            let op = self.next().await;
            if stage_of(&op) == Some(stage) || op.done {
                return op;
            }
        }
    }

    /// True if nothing arrives within [`QUIET`] but keepalive re-sends of
    /// an unfinished operation.
    pub async fn pending(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.0.message()).await {
                Err(_) => return true,
                Ok(Ok(Some(op))) => {
                    assert_no_error(&op);
                    if op.done {
                        return false;
                    }
                }
                Ok(_) => return false,
            }
        }
    }

    /// Whether no update arrives within [`QUIET`].
    pub async fn quiet(&mut self) -> bool {
        tokio::time::timeout(QUIET, self.0.message()).await.is_err()
    }
}

pub fn assert_no_error(op: &Operation) {
    assert!(
        !matches!(op.result, Some(longrunning::operation::Result::Error(_))),
        "Operation.error must never be set: {op:?}"
    );
}

/// A worker that exists only as a gRPC stream driven by the test.
pub struct SimWorker {
    tx: Option<mpsc::Sender<wire::WorkerMessage>>,
    inbound: Streaming<wire::SchedulerMessage>,
}

impl SimWorker {
    /// The next message from the scheduler, whatever it is.
    pub async fn next(&mut self) -> wire::scheduler_message::Kind {
        tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("a scheduler message in time")
            .expect("worker stream healthy")
            .expect("worker stream still open")
            .kind
            .expect("message has a kind")
    }

    /// The next message that is not a keepalive.
    pub async fn next_real(&mut self) -> wire::scheduler_message::Kind {
        loop {
            match self.next().await {
                wire::scheduler_message::Kind::KeepAlive(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn assignment(&mut self) -> wire::Assignment {
        match self.next_real().await {
            wire::scheduler_message::Kind::Assignment(a) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    pub async fn cancel(&mut self) -> wire::Cancel {
        match self.next_real().await {
            wire::scheduler_message::Kind::Cancel(c) => c,
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    /// True if no message other than keepalives arrives within [`QUIET`].
    pub async fn idle(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Err(_) => return true,
                Ok(Ok(Some(m))) => {
                    if !matches!(m.kind, Some(wire::scheduler_message::Kind::KeepAlive(_))) {
                        return false;
                    }
                }
                Ok(_) => return false,
            }
        }
    }

    /// Whether the scheduler closed the stream.
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(PATIENCE, self.inbound.message()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return true,
            }
        }
    }

    pub async fn send(&mut self, kind: wire::worker_message::Kind) {
        if let Some(tx) = &self.tx {
            tx.send(wire::WorkerMessage { kind: Some(kind) })
                .await
                .expect("worker stream open");
        }
    }

    /// Reports a result with this exit code.
    pub async fn finish(&mut self, a: &wire::Assignment, exit_code: i32) {
        let response = reapi::ExecuteResponse {
            result: Some(reapi::ActionResult {
                exit_code,
                stdout_raw: format!("ran {}", a.assignment_id).into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.respond(a, response).await;
    }

    pub async fn respond(&mut self, a: &wire::Assignment, response: reapi::ExecuteResponse) {
        self.send(wire::worker_message::Kind::Result(wire::Result {
            assignment_id: a.assignment_id.clone(),
            response: Some(response),
        }))
        .await;
    }

    /// Ends the stream from the worker's side, as a crashed worker would.
    pub fn hang_up(&mut self) {
        self.tx = None;
    }

    /// The first argument after the program: the tag given to [`Spec::new`].
    pub fn tag(a: &wire::Assignment) -> String {
        a.command
            .as_ref()
            .and_then(|c| c.arguments.get(1).cloned())
            .unwrap_or_default()
    }
}

/// The action cache entry for `digest`, if any.
pub async fn cached(
    farm: &Farm,
    instance: &str,
    digest: &reapi::Digest,
) -> Option<reapi::ActionResult> {
    let d = Digest::from_proto(DigestFunction::Sha256, digest).expect("valid digest");
    farm.ac
        .get(&RequestContext::internal(instance, d.function()), &d)
        .await
        .expect("action cache answers")
}

/// Tenants by the first `/` component of the instance name, with no
/// pools; `capped` tenants may run that many actions at once.
#[derive(Default)]
pub struct FirstComponentTenants {
    pub capped: Vec<(&'static str, u64)>,
}

impl corral_scheduler::Tenancy for FirstComponentTenants {
    fn tenant_of(&self, instance: &str) -> Option<String> {
        instance.split('/').next().map(str::to_string)
    }
    fn pools_for(&self, _: &str) -> Option<Vec<String>> {
        None
    }
    fn pools_of_worker(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn concurrent_executions(&self, tenant: &str) -> Option<u64> {
        self.capped
            .iter()
            .find(|(t, _)| *t == tenant)
            .map(|(_, n)| *n)
    }
}
