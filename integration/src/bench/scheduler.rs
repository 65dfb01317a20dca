//! `corral bench scheduler`, the load generator: the real Execution
//! and WorkerService servers on loopback, a thousand simulated workers that
//! answer every assignment at once, and a hundred thousand trivial actions.
//!
//! Three phases, each measuring one thing:
//! 1. **memory**: every action is submitted with no worker connected and
//!    left queued; the growth of the process's resident set divided by the
//!    number of actions is the cost of one queued action (operation, job,
//!    queue entry, dedup key).
//! 2. **throughput**: the workers connect and drain that queue; assignments
//!    per second is actions over the time until the last one completed.
//! 3. **latency**: with the workers idle, fresh actions are submitted at a
//!    bounded concurrency; queue-to-assignment latency is the time from the
//!    Execute call to the worker receiving the assignment.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_cas::{
    BlobStore, Digest, DigestFunction, MemoryActionCache, MemoryStore, MessageLimits,
    RequestContext, Storage,
};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::tonic::transport::{Channel, Server};
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};

use anyhow::{bail, Context, Result};
use corral_scheduler::{Scheduler, SchedulerConfig, SystemClock};

/// Options of `corral bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated workers (one slot each) that answer every assignment at
    /// once.
    #[arg(long, default_value_t = 1_000)]
    workers: usize,
    /// Actions queued with no worker connected, then drained: the memory
    /// and throughput figures.
    #[arg(long, default_value_t = 100_000)]
    actions: usize,
    /// Further actions submitted to idle workers: the queue-to-assignment
    /// latency figures.
    #[arg(long, default_value_t = 10_000)]
    latency_actions: usize,
    /// Execute calls in flight at once while queueing (the latency phase
    /// uses at most 64).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// `corral bench scheduler`: runs the three phases and prints the report.
pub fn run(args: Args) -> Result<()> {
    if args.workers == 0 || args.actions == 0 || args.latency_actions == 0 {
        bail!("--workers, --actions and --latency-actions must be at least 1");
    }
    let options = BenchOptions {
        workers: args.workers,
        actions: args.actions,
        latency_actions: args.latency_actions,
        concurrency: args.concurrency.max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(measure(options))
        .context("scheduler benchmark")?;
    println!("{report}");
    Ok(())
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub workers: usize,
    pub actions: usize,
    /// Actions for the latency phase.
    pub latency_actions: usize,
    /// Execute calls in flight at once.
    pub concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            workers: 1_000,
            actions: 100_000,
            latency_actions: 10_000,
            concurrency: 256,
        }
    }
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub options: BenchOptions,
    pub queued_bytes_per_action: f64,
    pub drain_time: Duration,
    pub assignments_per_second: f64,
    /// CPU time the whole process (server and simulated workers) spent
    /// while draining: a figure that holds on a busy machine too.
    pub drain_cpu: Duration,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub peak_rss_kib: u64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "scheduler: {} workers, {} actions queued then drained, {} for latency",
            o.workers, o.actions, o.latency_actions
        )?;
        writeln!(
            f,
            "memory per queued action: {:.0} bytes",
            self.queued_bytes_per_action
        )?;
        writeln!(
            f,
            "assignments per second: {:.0} ({} in {:.2} s)",
            self.assignments_per_second,
            o.actions,
            self.drain_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "CPU per assignment (server and simulated workers together): {:.1} us, i.e. {:.0} assignments per CPU-second",
            self.drain_cpu.as_secs_f64() * 1e6 / o.actions.max(1) as f64,
            o.actions as f64 / self.drain_cpu.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "queue-to-assignment latency: p50 {:.3} ms, p99 {:.3} ms",
            self.latency_p50.as_secs_f64() * 1e3,
            self.latency_p99.as_secs_f64() * 1e3
        )?;
        write!(f, "peak resident memory: {} KiB", self.peak_rss_kib)
    }
}

/// Shared between the simulated workers and the phases.
struct Tally {
    start: Instant,
    assigned: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
    /// Per latency action: nanoseconds since `start` when it was submitted
    /// and when a worker received it.
    submitted: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
}

/// Runs the benchmark. Needs a multi-threaded tokio runtime.
pub async fn measure(options: BenchOptions) -> Result<BenchReport> {
    let cas = Arc::new(MemoryStore::new());
    let storage = Storage::over(
        cas.clone(),
        Arc::new(MemoryActionCache::new()),
        MessageLimits::default(),
    );
    let config = SchedulerConfig {
        worker_timeout_ms: 600_000,
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(
        config,
        storage.cas,
        storage.action_cache,
        Arc::new(SystemClock::new()),
    )?;
    let _ticker = scheduler.spawn_ticker();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| bench_err(format!("bind loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| bench_err(format!("local address: {e}")))?;
    let server = Server::builder()
        .add_service(scheduler.execution_server())
        .add_service(scheduler.worker_server())
        .serve_with_incoming(corral_cas::service::incoming(listener));
    tokio::spawn(server);
    let uri = format!("http://{addr}");
    let channels = connect(&uri, 8).await?;

    let total = options.actions + options.latency_actions;
    let digests = upload(cas.as_ref(), total).await?;
    let tally = Arc::new(Tally {
        start: Instant::now(),
        assigned: AtomicUsize::new(0),
        target: AtomicUsize::new(options.actions),
        done: Notify::new(),
        submitted: (0..total).map(|_| AtomicU64::new(0)).collect(),
        received: (0..total).map(|_| AtomicU64::new(0)).collect(),
    });

    // Phase 1: queue everything with no worker connected.
    let before = rss_kib("VmRSS")?;
    submit(
        &channels,
        &digests[..options.actions],
        0,
        options.concurrency,
        &tally,
    )
    .await?;
    let after = rss_kib("VmRSS")?;
    let queued_bytes_per_action =
        (after.saturating_sub(before) as f64 * 1024.0) / options.actions.max(1) as f64;

    // Phase 2: workers connect and drain the queue.
    let started = Instant::now();
    let cpu_before = cpu_time()?;
    let done = tally.done.notified();
    for i in 0..options.workers {
        let channel = channels[i % channels.len()].clone();
        tokio::spawn(worker(channel, format!("sim-{i}"), tally.clone()));
    }
    done.await;
    let drain_time = started.elapsed();
    let drain_cpu = cpu_time()?.saturating_sub(cpu_before);

    // Phase 3: latency with idle workers.
    tally
        .target
        .store(options.actions + options.latency_actions, Ordering::SeqCst);
    let done = tally.done.notified();
    submit(
        &channels,
        &digests[options.actions..],
        options.actions,
        options.concurrency.min(64),
        &tally,
    )
    .await?;
    if tally.assigned.load(Ordering::SeqCst) < total {
        done.await;
    }
    let mut latencies: Vec<u64> = (options.actions..total)
        .map(|i| {
            tally.received[i]
                .load(Ordering::SeqCst)
                .saturating_sub(tally.submitted[i].load(Ordering::SeqCst))
        })
        .collect();
    latencies.sort_unstable();
    let pick = |q: f64| {
        let at = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        Duration::from_nanos(latencies.get(at).copied().unwrap_or(0))
    };
    Ok(BenchReport {
        queued_bytes_per_action,
        drain_time,
        assignments_per_second: options.actions as f64 / drain_time.as_secs_f64(),
        drain_cpu,
        latency_p50: pick(0.50),
        latency_p99: pick(0.99),
        peak_rss_kib: rss_kib("VmHWM")?,
        options,
    })
}

fn bench_err(message: String) -> anyhow::Error {
    anyhow::anyhow!("bench: {message}")
}

async fn connect(uri: &str, n: usize) -> Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let channel = Channel::from_shared(uri.to_string())
            .map_err(|e| bench_err(e.to_string()))?
            .connect()
            .await
            .map_err(|e| bench_err(format!("connect {uri}: {e}")))?;
        out.push(channel);
    }
    Ok(out)
}

/// Stores `n` distinct trivial actions; the index is the command's second
/// argument so workers can tell which one they got.
async fn upload(cas: &MemoryStore, n: usize) -> Result<Vec<reapi::Digest>> {
    let root = put(cas, &reapi::Directory::default()).await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let command = reapi::Command {
            arguments: vec!["true".into(), i.to_string()],
            ..Default::default()
        };
        let action = reapi::Action {
            command_digest: Some(put(cas, &command).await?),
            input_root_digest: Some(root.clone()),
            ..Default::default()
        };
        out.push(put(cas, &action).await?);
    }
    Ok(out)
}

async fn put<M: Message>(cas: &MemoryStore, m: &M) -> Result<reapi::Digest> {
    let data = m.encode_to_vec();
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    cas.put(&RequestContext::internal("", d.function()), &d, data.into())
        .await?;
    Ok(d.to_proto())
}

/// Calls Execute for each digest, `concurrency` at a time, and returns once
/// each call's first update (the operation is queued) has arrived.
async fn submit(
    channels: &[Channel],
    digests: &[reapi::Digest],
    first_index: usize,
    concurrency: usize,
    tally: &Tally,
) -> Result<()> {
    let calls = digests.iter().enumerate().map(|(i, d)| {
        let mut client = ExecutionClient::new(channels[i % channels.len()].clone());
        let request = reapi::ExecuteRequest {
            action_digest: Some(d.clone()),
            skip_cache_lookup: true,
            ..Default::default()
        };
        let index = first_index + i;
        async move {
            tally.submitted[index].store(nanos(tally.start), Ordering::SeqCst);
            let mut stream = client
                .execute(request)
                .await
                .map_err(|e| bench_err(format!("Execute: {e}")))?
                .into_inner();
            stream
                .message()
                .await
                .map_err(|e| bench_err(format!("Execute stream: {e}")))?;
            Ok::<(), anyhow::Error>(())
        }
    });
    let mut results = futures::stream::iter(calls).buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// A worker that answers every assignment at once with exit code 0.
async fn worker(channel: Channel, name: String, tally: Arc<Tally>) {
    let (tx, rx) = mpsc::channel(16);
    let hello = wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Hello(wire::Hello {
            name,
            slots: 1,
            ..Default::default()
        })),
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    let mut client = WorkerServiceClient::new(channel);
    let Ok(response) = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut inbound = response.into_inner();
    while let Ok(Some(msg)) = inbound.message().await {
        let Some(wire::scheduler_message::Kind::Assignment(a)) = msg.kind else {
            continue;
        };
        let index = a
            .command
            .as_ref()
            .and_then(|c| c.arguments.get(1))
            .and_then(|s| s.parse::<usize>().ok());
        if let Some(slot) = index.and_then(|i| tally.received.get(i)) {
            slot.store(nanos(tally.start), Ordering::SeqCst);
        }
        let result = wire::WorkerMessage {
            kind: Some(wire::worker_message::Kind::Result(wire::Result {
                assignment_id: a.assignment_id,
                response: Some(reapi::ExecuteResponse {
                    result: Some(reapi::ActionResult::default()),
                    ..Default::default()
                }),
            })),
        };
        if tx.send(result).await.is_err() {
            return;
        }
        let n = tally.assigned.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= tally.target.load(Ordering::SeqCst) {
            tally.done.notify_one();
        }
    }
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// User plus system CPU time of the whole process so far.
fn cpu_time() -> Result<Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage =
        getrusage(UsageWho::RUSAGE_SELF).map_err(|e| bench_err(format!("getrusage: {e}")))?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
    };
    Ok(tv(usage.user_time()) + tv(usage.system_time()))
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn rss_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| bench_err(format!("read /proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| bench_err(format!("no {field} in /proc/self/status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_run_measures_every_figure() {
        let report = measure(BenchOptions {
            workers: 20,
            actions: 500,
            latency_actions: 200,
            concurrency: 32,
        })
        .await
        .unwrap();
        assert!(report.assignments_per_second > 0.0);
        assert!(report.latency_p99 >= report.latency_p50);
        assert!(report.latency_p50 > Duration::ZERO);
        assert!(report.peak_rss_kib > 0);
        let text = report.to_string();
        assert!(text.contains("assignments per second"), "{text}");
    }
}
