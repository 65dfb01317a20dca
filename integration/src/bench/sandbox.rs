//! `corral bench sandbox`: the cost of one trivial action (`/bin/true` in a
//! busybox root, or the root `--root` names) in Corral's sandbox, next to
//! bubblewrap with the same namespaces and to a bare fork/exec, all
//! measured in the same run, sequentially and two at a time.
//!
//! Seven rows, each measured back to back (`--runs` actions, after
//! `--warmup` untimed ones):
//! * **runner service**: a `corral runner --socket` process started for the
//!   run, called over its unix socket as a worker calls it (`Run`, input
//!   root as `/`); the time from sending the request to having the
//!   response. Each action's scratch directory is made before the clock
//!   starts, as a worker makes it.
//! * **`corral runner exec`**: `corral runner exec --root ROOT -- /bin/true`
//!   as a whole process, from spawn to exit: its command handed to the
//!   resident service the first (untimed) one started, in a runtime
//!   directory of the benchmark's own, so the service is this binary's and
//!   leaves with the benchmark. That `corral` is the small front program
//!   (src/front.rs) a person runs.
//! * **`runner exec` by `corral-farm`**: the same command given to the
//!   `corral-farm` beside it, which reaches the same service: what the
//!   front's smaller start saves (left out for a build without one).
//! * **`runner exec`, scratch on tmpfs**: the same with `TMPDIR=/dev/shm`,
//!   so that its service keeps its scratch directories on a tmpfs (where
//!   `/tmp` is one, as on many distributions, that is the default).
//! * **`runner exec --own-container`**: the same, making its own container.
//! * **bwrap**: bubblewrap with the same namespaces (user, PID, IPC, UTS,
//!   network, cgroup; the root bound read-only, fresh `/proc`, `/dev`,
//!   `/tmp` tmpfs, all capabilities dropped) as a whole process.
//! * **fork/exec**: `/bin/true` itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_proto::runner::v1 as pb;

use crate::server::corral_binary;

/// Options of `corral bench sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed actions per row (each of sequential and two-at-a-time).
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Untimed actions per row, run first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Keep the runner's log in this file (with `RUST_LOG=corral_runner=debug`,
    /// the phases of every run).
    #[arg(long, value_name = "FILE")]
    pub runner_log: Option<PathBuf>,
    /// Runner configuration for the service and `runner exec` (e.g.
    /// `warm_sandboxes = 0` to measure without containers made ahead).
    #[arg(long, value_name = "FILE")]
    pub runner_config: Option<PathBuf>,
    /// Also print where the request's part of the service's runs went, step
    /// by step inside the container (p50 and p95 over every service run,
    /// from the runner's debug log).
    #[arg(long)]
    pub phases: bool,
    /// Run `/bin/true` in this root instead of a busybox one (e.g. a copy
    /// of the BuildStream tests' Debian root, to measure at the size of a
    /// real root). bwrap creates `/proc`, `/dev` and `/tmp` in it where
    /// they are missing: give a copy.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Copies Debian's static busybox (`busybox-static`) into `dir/bin` and
/// adds one symlink per applet, plus the empty directories a root needs.
pub fn busybox_root(dir: &Path) -> anyhow::Result<()> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!(
            "missing /bin/busybox: install Debian's busybox-static (integration/install-deps.sh)"
        );
    }
    for d in ["bin", "tmp", "proc", "dev", "etc"] {
        std::fs::create_dir_all(dir.join(d)).with_context(|| format!("create {d} in the root"))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).context("copy busybox")?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        // Never link busybox onto itself.
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))
                .with_context(|| format!("link applet {applet}"))?;
        }
    }
    Ok(())
}

/// p50 and p95 of a sample, in milliseconds (nearest rank).
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.95))
}

/// Spawns `runs` processes from `spawn`, one or two at a time; returns each
/// one's latency from spawn to exit.
fn measure_processes(
    runs: usize,
    width: usize,
    mut spawn: impl FnMut() -> anyhow::Result<std::process::Child>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.div_ceil(width) {
        let started = Instant::now();
        let mut children = Vec::new();
        for _ in 0..width {
            children.push(spawn()?);
        }
        for mut child in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("a measured command failed: {status}");
            }
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// The runner protocol request of one action: `/bin/true`, the input root
/// as `/`, nothing else set (the runner's defaults apply).
fn run_request(root: &Path, scratch: &Path) -> pb::RunRequest {
    pb::RunRequest {
        input_root: root.display().to_string(),
        scratch_dir: scratch.display().to_string(),
        rootfs: Some(pb::run_request::Rootfs::InputRootAsRoot(
            pb::InputRootAsRoot {},
        )),
        arguments: vec!["/bin/true".into()],
        environment: vec![pb::EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        ..Default::default()
    }
}

/// The log filter of the measured `corral` processes unless `RUST_LOG`
/// says otherwise: warnings, and libcontainer's only when they are errors
/// (it warns about cgroup controllers it does not see, by design).
const LOG_FILTER: &str = "warn,libcgroups=error,libcontainer=error";

/// With `--phases`: the runner's per-run step times too.
const PHASES_FILTER: &str =
    "warn,corral_runner::sandbox::watch=debug,libcgroups=error,libcontainer=error";

fn log_filter(phases: bool) -> String {
    std::env::var("RUST_LOG")
        .unwrap_or_else(|_| if phases { PHASES_FILTER } else { LOG_FILTER }.to_string())
}

/// A `corral runner --socket` process for the run, stopped on drop. Its
/// log goes to `runner.log` beside the socket.
struct Runner {
    child: std::process::Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Runner {
    fn start(corral: &Path, dir: &Path, args: &Args) -> anyhow::Result<Runner> {
        let socket = dir.join("runner.sock");
        let log = args
            .runner_log
            .clone()
            .unwrap_or_else(|| dir.join("runner.log"));
        let file = std::fs::File::create(&log).context("create runner.log")?;
        let mut cmd = Command::new(corral);
        cmd.arg("runner").arg("--socket").arg(&socket);
        if let Some(config) = &args.runner_config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .env("RUST_LOG", log_filter(args.phases))
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("start corral runner")?;
        Ok(Runner { child, socket, log })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

type Client = pb::runner_client::RunnerClient<tonic::transport::Channel>;

/// Connects to the runner once it answers `Ready`; returns the client and
/// the limits it enforces.
async fn connect(socket: &Path) -> anyhow::Result<(Client, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut client) = corral_runner::client::connect(socket).await {
            if let Ok(ready) = client.ready(pb::ReadyRequest {}).await {
                return Ok((client, ready.into_inner().enforced_limits));
            }
        }
        if Instant::now() > deadline {
            bail!("the runner at {} did not become ready", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `runs` actions through the service, `width` at a time; returns
/// each one's latency from request to response.
async fn measure_service(
    client: &Client,
    root: &Path,
    work: &Path,
    runs: usize,
    width: usize,
) -> anyhow::Result<Vec<Duration>> {
    let work = tempfile::Builder::new().prefix("row-").tempdir_in(work)?;
    let mut samples = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs.div_ceil(width) {
        let mut requests = Vec::new();
        for _ in 0..width {
            n += 1;
            let scratch = work.path().join(format!("s{n}"));
            std::fs::create_dir(&scratch)?;
            requests.push(run_request(root, &scratch));
        }
        let started = Instant::now();
        let calls = requests.into_iter().map(|r| {
            let mut c = client.clone();
            async move { (c.run(r).await, started.elapsed()) }
        });
        for (response, took) in futures::future::join_all(calls).await {
            let response = response.context("runner Run")?.into_inner();
            if response.exit_code != 0 {
                bail!("/bin/true through the runner ended with {response:?}");
            }
            samples.push(took);
        }
    }
    Ok(samples)
}

fn bwrap(root: &Path) -> Command {
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup",
    ])
    .args([
        "--uid",
        "0",
        "--gid",
        "0",
        "--hostname",
        "corral",
        "--die-with-parent",
    ])
    .arg("--ro-bind")
    .arg(root)
    .arg("/")
    .args([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
    ])
    .args(["--clearenv", "--setenv", "PATH", "/bin", "/bin/true"]);
    c
}

/// How a `runner exec` row runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Exec {
    /// Handed to its service, scratch directories under the default
    /// `TMPDIR`.
    Served,
    /// The same, by the `corral-farm` beside `corral`.
    ServedByTheFarm,
    /// Handed to its service for `TMPDIR=/dev/shm` (the temporary
    /// directory names a service of its own), whose scratch directories
    /// are on that tmpfs.
    ServedOnTmpfs,
    /// In a container of its own.
    Own,
}

/// `corral runner exec` of `/bin/true` in `root`, its service's directory
/// under `runtime`, run as `how` says.
fn runner_exec(
    corral: &Path,
    root: &Path,
    config: Option<&Path>,
    runtime: &Path,
    how: Exec,
) -> Command {
    let mut c = match how {
        Exec::ServedByTheFarm => Command::new(corral.with_file_name("corral-farm")),
        _ => Command::new(corral),
    };
    c.args(["runner", "exec"]).env("XDG_RUNTIME_DIR", runtime);
    if how == Exec::ServedOnTmpfs {
        c.env("TMPDIR", "/dev/shm");
    }
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    if how == Exec::Own {
        c.arg("--own-container");
    }
    c.arg("--root")
        .arg(root)
        .args(["--", "/bin/true"])
        .env("RUST_LOG", log_filter(false));
    c
}

/// The request's part of the service's runs, step by step, from the
/// runner's log.
fn print_phases(log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("read the runner's log {}", log.display()))?;
    let (runs, steps) = super::init_phases::summarize(&text);
    if runs == 0 {
        bail!(
            "no `init phases` lines in {} (is RUST_LOG overriding the debug level?)",
            log.display()
        );
    }
    println!("the request's part of {runs} service runs, inside the container:");
    println!("  {:<30} {:>9} {:>9}", "step", "p50 µs", "p95 µs");
    for (step, p50, p95) in steps {
        println!("  {step:<30} {p50:>9.0} {p95:>9.0}");
    }
    Ok(())
}

/// One line of the machine's state, for the record.
fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs, kernel {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// `corral bench sandbox`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs < 2 {
        bail!("--runs must be at least 2");
    }
    if Command::new("bwrap").arg("--version").output().is_err() {
        bail!("missing bwrap: install Debian's bubblewrap (integration/install-deps.sh)");
    }
    let corral = corral_binary()?;
    let tmp = tempfile::Builder::new()
        .prefix("corral-bench-sandbox-")
        .tempdir()?;
    use std::os::unix::fs::PermissionsExt;
    // The sandbox's user (65534 when the runner is root) must reach it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let root = match &args.root {
        Some(dir) => {
            if !dir.join("bin/true").exists() {
                bail!("--root {}: it has no /bin/true", dir.display());
            }
            std::path::absolute(dir)?
        }
        None => {
            let root = tmp.path().join("root");
            busybox_root(&root)?;
            root
        }
    };
    let work = tmp.path().join("work");
    std::fs::create_dir(&work)?;
    let runtime = tmp.path().join("run");
    std::fs::create_dir(&runtime)?;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))?;
    let runner = Runner::start(&corral, tmp.path(), &args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (client, limits) = rt
        .block_on(connect(&runner.socket))
        .with_context(|| format!("the runner's log: {}", runner.log.display()))?;

    let which = match &args.root {
        Some(_) => format!("{}", root.display()),
        None => "a busybox root".into(),
    };
    println!(
        "sandbox: /bin/true in {which}, {} actions per row after {} untimed",
        args.runs, args.warmup
    );
    println!("machine at start: {}", machine());
    println!("runner enforces: {}", limits.join("; "));
    println!(
        "{:<32} {:>9} {:>9} {:>8} {:>10}",
        "", "p50 ms", "p95 ms", "p95/p50", "p50/bwrap"
    );
    for width in [1, 2] {
        let service = |runs| rt.block_on(measure_service(&client, &root, &work, runs, width));
        let config = args.runner_config.as_deref();
        let exec = |runs, how| {
            measure_processes(runs, width, || {
                Ok(runner_exec(&corral, &root, config, &runtime, how).spawn()?)
            })
        };
        let bw = |runs| measure_processes(runs, width, || Ok(bwrap(&root).spawn()?));
        let fork = |runs| {
            measure_processes(runs, width, || {
                Ok(Command::new(root.join("bin/true")).spawn()?)
            })
        };
        let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
        service(args.warmup)?;
        rows.push(("runner service (gRPC Run)", service(args.runs)?));
        exec(args.warmup, Exec::Served)?;
        rows.push((
            "corral runner exec (process)",
            exec(args.runs, Exec::Served)?,
        ));
        // A build from before the front has no `corral-farm`.
        if corral.with_file_name("corral-farm").is_file() {
            exec(args.warmup, Exec::ServedByTheFarm)?;
            rows.push((
                "runner exec by corral-farm",
                exec(args.runs, Exec::ServedByTheFarm)?,
            ));
        }
        exec(args.warmup, Exec::ServedOnTmpfs)?;
        rows.push((
            "runner exec, scratch on tmpfs",
            exec(args.runs, Exec::ServedOnTmpfs)?,
        ));
        exec(args.warmup, Exec::Own)?;
        rows.push(("runner exec --own-container", exec(args.runs, Exec::Own)?));
        bw(args.warmup)?;
        rows.push(("bwrap (process)", bw(args.runs)?));
        fork(args.warmup)?;
        rows.push(("fork/exec", fork(args.runs)?));
        println!(
            "{}:",
            if width == 1 {
                "sequential"
            } else {
                "two at a time"
            }
        );
        let bwrap_p50 = rows
            .iter()
            .find(|(name, _)| name.starts_with("bwrap"))
            .map(|(_, samples)| percentiles(samples.clone()).0)
            .unwrap_or(f64::NAN);
        for (name, samples) in rows {
            let (p50, p95) = percentiles(samples);
            println!(
                "  {name:<30} {p50:>9.2} {p95:>9.2} {:>8.2} {:>10.2}",
                p95 / p50,
                p50 / bwrap_p50
            );
        }
    }
    println!("machine at end: {}", machine());
    if args.phases {
        print_phases(&runner.log)?;
    }
    // The runner stops once its last connection is closed, which the
    // runtime's connection task does when the runtime goes.
    drop(client);
    drop(rt);
    drop(runner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentiles(samples), (50.0, 95.0));
    }
}
