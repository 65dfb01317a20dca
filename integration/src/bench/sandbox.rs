//! `corral bench sandbox`: the cost of one trivial action (`/bin/true` in a
//! busybox root) in Corral's sandbox, next to bubblewrap with the same
//! namespaces and to a bare fork/exec, all measured in the same run,
//! sequentially and two at a time.
//!
//! Corral's figure goes through the runner's zygote, the path every worker
//! request takes (minus the gRPC hop): message to the zygote, fork, create,
//! start, wait and delete of a libcontainer container with the overlay,
//! seccomp and Landlock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_runner::zygote::Zygote;
use corral_runner::{Host, Limits, Profile, Rootfs, RunnerConfig, SandboxRequest, Stdio};

/// Options of `corral bench sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Actions per measurement (each of sequential and two-at-a-time).
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
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

/// p50 and p95 of a sample, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.95))
}

/// Runs `one` `runs` times, sequentially or two at a time; returns each
/// action's own latency.
fn measure_processes(
    runs: usize,
    pair: bool,
    mut spawn: impl FnMut() -> anyhow::Result<std::process::Child>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    let width = if pair { 2 } else { 1 };
    for _ in 0..runs.div_ceil(width) {
        let started = Instant::now();
        let mut children = Vec::new();
        for _ in 0..width {
            children.push(spawn()?);
        }
        for mut child in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("reference command failed: {status}");
            }
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

fn request(root: &Path, scratch: PathBuf, profile: &Profile) -> SandboxRequest {
    SandboxRequest {
        rootfs: Rootfs::InputRoot,
        input_root: root.to_path_buf(),
        scratch_dir: scratch,
        args: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/bin".into())],
        cwd: String::new(),
        stdin: Stdio::Null,
        stdout: Stdio::Null,
        stderr: Stdio::Null,
        profile: profile.clone(),
        network: false,
        limits: Limits::default(),
        uid: 0,
        gid: 0,
        read_only_subtrees: vec![],
        writable_subtrees: vec![],
        controlling_tty: false,
        hostname: "corral".into(),
    }
}

fn measure_corral(
    zygote: &Zygote,
    root: &Path,
    work: &Path,
    runs: usize,
    pair: bool,
) -> anyhow::Result<Vec<Duration>> {
    let profile = Profile::default_profile()?;
    // Scratch directories of this call only: the warm-up and every row
    // each get their own, so names never collide with an earlier call's.
    let work = tempfile::Builder::new().prefix("row-").tempdir_in(work)?;
    let work = work.path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::with_capacity(runs);
    let width = if pair { 2 } else { 1 };
    let mut n = 0;
    for _ in 0..runs.div_ceil(width) {
        let mut reqs = Vec::new();
        for _ in 0..width {
            n += 1;
            let scratch = work.join(format!("s{n}"));
            std::fs::create_dir(&scratch)?;
            reqs.push(request(root, scratch, &profile));
        }
        let started = Instant::now();
        let results = rt.block_on(async {
            let calls = reqs.into_iter().map(|r| {
                let z = zygote.clone();
                async move {
                    let o = z.run(r).await;
                    (o, started.elapsed())
                }
            });
            futures::future::join_all(calls).await
        });
        for (outcome, took) in results {
            let outcome = outcome?;
            if outcome.exit_code != Some(0) {
                bail!("/bin/true in Corral's sandbox ended with {outcome:?}");
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

/// `corral bench sandbox`. Must run before any thread exists (it forks the
/// runner's zygote first).
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs < 2 {
        bail!("--runs must be at least 2");
    }
    let host = Host::probe(&RunnerConfig::default())?;
    corral_runner::exec::wait_single_threaded(std::time::Duration::from_millis(500))?;
    // SAFETY: just checked that this process has a single thread, and
    // nothing between the check and the fork starts one.
    let zygote = unsafe { Zygote::spawn(host.clone()) }?;
    let tmp = tempfile::Builder::new()
        .prefix("corral-bench-sandbox-")
        .tempdir()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let root = tmp.path().join("root");
    busybox_root(&root)?;
    let work = tmp.path().join("work");
    std::fs::create_dir(&work)?;
    if Command::new("bwrap").arg("--version").output().is_err() {
        bail!("missing bwrap: install Debian's bubblewrap (integration/install-deps.sh)");
    }
    // Warm up caches (page cache, the zygote, bwrap's binary).
    measure_corral(&zygote, &root, &work, 3, false)?;
    measure_processes(3, false, || Ok(bwrap(&root).spawn()?))?;

    println!(
        "sandbox start-up: /bin/true in a busybox root, {} actions per row",
        args.runs
    );
    println!("enforced limits: {}", host.enforced_limits().join("; "));
    println!("{:<28} {:>10} {:>10}", "", "p50 ms", "p95 ms");
    for pair in [false, true] {
        let mode = if pair { "two at a time" } else { "sequential" };
        let rows = [
            (
                "corral (zygote, libcontainer)",
                measure_corral(&zygote, &root, &work, args.runs, pair)?,
            ),
            (
                "bwrap",
                measure_processes(args.runs, pair, || Ok(bwrap(&root).spawn()?))?,
            ),
            (
                "fork/exec",
                measure_processes(args.runs, pair, || {
                    Ok(Command::new(root.join("bin/true")).spawn()?)
                })?,
            ),
        ];
        println!("{mode}:");
        for (name, samples) in rows {
            let (p50, p95) = percentiles(samples);
            println!("  {name:<26} {p50:>10.2} {p95:>10.2}");
        }
    }
    Ok(())
}
