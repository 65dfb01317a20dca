//! `corral runner exec --action HASH/SIZE --remote URL`: run a remote
//! action here, the way the farm's worker ran it, to reproduce it.
//!
//! What a worker does, and this does too, with the worker's own code: fetch
//! the Action and its Command through a local CAS
//! ([`corral_worker::LocalCas`], filled from the remote with
//! [`corral_worker::RemoteCas`]), stage the input root by hardlinks and
//! pull the image if the action ran on one ([`corral_worker::inputs`]),
//! create the working directory and the outputs' parent directories in the
//! overlay's upper directory, and turn the run plan into the runner's
//! request ([`corral_worker::plan`]). The plan is the one the farm's worker
//! recorded with the action's result when the farm's action cache holds it
//! ([`super::recorded`]), so a farm's own rootfs, hostname, timeout,
//! limits, profile and image are reproduced as they ran; without a record,
//! the plan a farm with the default configuration would make
//! ([`super::farm_plan`]). The request runs through the same
//! [`corral_runner::exec::run`] that plain `runner exec` uses
//! ([`super::request`]). Outputs are read through the worker's output
//! capture, so `--outputs` holds what the farm would have uploaded.
//!
//! # One process, threads first, then none
//!
//! Fetching, staging and pulling need a tokio runtime, which means threads;
//! the sandbox needs a single-threaded caller, because it forks and
//! libcontainer clones its caller (a fork copies only the forking thread,
//! so a lock another thread held would stay locked forever in the copy).
//! So the work happens in two phases in this one process:
//!
//! 1. A current-thread runtime fetches, stages and pulls. Its only extra
//!    threads are the blocking pool's (file work, DNS); every task is
//!    awaited before the phase ends.
//! 2. The runtime is shut down with [`tokio::runtime::Runtime::shutdown_timeout`],
//!    which joins the blocking pool's threads; then
//!    [`corral_runner::exec::wait_single_threaded`] reads `Threads:` in
//!    `/proc/self/status` until it says 1 (a joined thread can be counted
//!    for a moment longer) and refuses with an error otherwise. Only then
//!    is the sandbox started, by the same [`corral_runner::exec::run`] that
//!    plain `runner exec` uses, which checks the thread count once more.
//!
//! Re-executing `corral` for the run was the alternative; it would need
//! the whole request passed on a command line or in a file, and a second
//! process to forward signals and exit codes through. The check above
//! makes a mistake (a library that leaves a thread behind) a clear error
//! instead of a rare deadlock, so the simpler design is also the safe one.
//!
//! # The cache
//!
//! `--cache DIR` (default `$XDG_CACHE_HOME/corral/exec`, else
//! `~/.cache/corral/exec`; as root `/var/cache/corral/exec`, since root's
//! home is closed to the sandbox's user) holds `cas/` (the local CAS, kept
//! between runs: a second reproduction downloads nothing), `trees/`
//! (staged input roots, rebuilt by hardlinks each run) and `images/` (the
//! image cache, as a worker's). One reproduction at a time uses a cache
//! directory (a `lock` file); another waits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use corral_cas::message::{self, BoundedMessage, MessageLimits};
use corral_cas::{Digest, DigestFunction, RequestContext};
use corral_images::ImagesConfig;
use corral_proto::reapi;
use corral_runner::RunnerConfig;
use corral_worker::fsutil::remove_tree;
use corral_worker::images::Images;
use corral_worker::inputs::{Inputs, PreparedInputs};
use corral_worker::plan::{PlannedRootfs, RunPlan, RunSite};
use corral_worker::prepare::prepare_upper;
use corral_worker::stage::StagerOptions;
use corral_worker::validate::SymlinkPolicy;
use corral_worker::{LocalCas, LocalCasOptions, RemoteCas, Stager};

use super::farm_plan::{self, Overrides};
use super::recorded;

use corral_worker::config::DEFAULT_MAX_CAS_BYTES;
/// How long connecting to the CAS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the runtime's threads get to finish once the fetch is done.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);
/// How long a joined thread may still be counted by the kernel.
const THREADS_PATIENCE: Duration = Duration::from_secs(2);

/// What to reproduce and how.
#[derive(Debug)]
pub struct Args {
    /// `HASH/SIZE` of the Action.
    pub action: String,
    /// The CAS and action cache, e.g. `http://127.0.0.1:8980`.
    pub remote: String,
    /// TLS settings and token for `remote` (`--tls-ca`, `--tls-cert`,
    /// `--tls-key`, `--token-file`).
    pub client: corral_cas::ClientFlags,
    /// REAPI instance name: for the CAS and action cache calls, and the
    /// default farm's choices when there is no record.
    pub instance: String,
    /// `sha256` or `blake3`.
    pub digest_function: String,
    /// Copy the outputs here (DIR stands for the input root).
    pub outputs: Option<PathBuf>,
    /// Cache directory (local CAS, staged trees, images).
    pub cache: Option<PathBuf>,
    pub config: RunnerConfig,
    /// What the command line changes in the farm's plan.
    pub overrides: Overrides,
    pub stats: bool,
    pub keep: bool,
}

/// What phase 1 produced.
struct Fetched {
    command: reapi::Command,
    plan: RunPlan,
    prepared: PreparedInputs,
    local: LocalCas,
    /// Keeps the staged tree's cache and the image cache alive until the
    /// run is over.
    _inputs: Inputs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let function = DigestFunction::from_name(&a.digest_function).with_context(|| {
        format!(
            "--digest-function {:?}: use sha256 or blake3",
            a.digest_function
        )
    })?;
    let digest = parse_digest(&a.action, function)?;
    if let Some(dir) = &a.outputs {
        check_outputs_dir(dir)?;
    }
    let host = corral_runner::Host::probe(&a.config)?;
    let owner = (host.map_uid, host.map_gid);
    let cache = match &a.cache {
        Some(dir) => dir.clone(),
        None => crate::cmd::defaults::exec_cache_dir().context("give --cache DIR")?,
    };
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let cache =
        fs::canonicalize(&cache).with_context(|| format!("resolving {}", cache.display()))?;
    corral_worker::fsutil::check_traversable(&cache, owner).context(
        "give --cache DIR on a path every user may traverse (e.g. /var/cache/corral/exec)",
    )?;
    let _lock = lock(&cache)?;

    // Phase 1: threads allowed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let fetched = quietly(|| runtime.block_on(fetch(&a, digest, &cache, owner)));
    runtime.shutdown_timeout(SHUTDOWN_PATIENCE);
    let fetched = fetched?;
    // Phase 2: none.
    corral_runner::exec::wait_single_threaded(THREADS_PATIENCE).context(
        "after fetching the action, threads are still running; not starting the sandbox",
    )?;

    let scratch = super::scratch::create(host.is_root)?;
    let outcome = run_fetched(&a, &fetched, &scratch, owner);
    drop(fetched);
    if a.keep {
        eprintln!(
            "corral: scratch directory kept at {} (upper/ holds what the action changed)",
            scratch.display()
        );
    } else if let Err(e) = remove_tree(&scratch) {
        eprintln!("corral: could not remove {}: {e}", scratch.display());
    }
    let status = outcome?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

/// Phase 2: prepares the scratch directory, runs the plan's request in the
/// sandbox, copies the outputs; returns the command's status.
fn run_fetched(
    a: &Args,
    fetched: &Fetched,
    scratch: &Path,
    owner: (u32, u32),
) -> anyhow::Result<i32> {
    let Fetched {
        command,
        plan,
        prepared,
        local,
        ..
    } = fetched;
    let staged = &prepared.staged;
    let image = prepared.image.as_ref().map(|i| &i.lease);
    let site = RunSite {
        input_root: staged.path.clone(),
        scratch_dir: scratch.to_path_buf(),
        // Unset: this process's.
        stdout: None,
        stderr: None,
        layer_dirs: image.map(|l| l.layer_dirs()).unwrap_or_default(),
        image_env: image.map(|l| l.env().to_vec()).unwrap_or_default(),
        read_only_subtrees: staged.read_only_subtrees.clone(),
        writable_subtrees: staged.writable_subtrees.clone(),
    };
    let request = plan.request(command, &site)?;
    prepare_upper(&scratch.join("upper"), &staged.tree, command, Some(owner))?;
    let opts = super::request::exec_options(&request, a.stats)?;
    let status = corral_runner::exec::run(&a.config, opts)?;
    if let Some(dir) = &a.outputs {
        let written = super::outputs::write_outputs(
            dir,
            command,
            &staged.tree,
            local,
            &scratch.join("upper"),
        )
        .with_context(|| format!("copying the outputs to {}", dir.display()))?;
        #[allow(deprecated)]
        let declared = command.output_paths.len()
            + command.output_files.len()
            + command.output_directories.len();
        if written == 0 && declared > 0 {
            eprintln!("corral: the action left none of its outputs");
        }
    }
    Ok(status)
}

/// Parses `HASH/SIZE`.
fn parse_digest(text: &str, function: DigestFunction) -> anyhow::Result<Digest> {
    let malformed = || {
        format!(
            "--action {text:?} is not a digest: expected HASH/SIZE (64 lower-case hex \
             digits, a slash, the size in bytes)"
        )
    };
    let (hash, size) = text.split_once('/').with_context(malformed)?;
    let hash = corral_cas::digest::parse_hash(hash).with_context(malformed)?;
    let size: u64 = size.parse().with_context(malformed)?;
    Ok(Digest::new(function, hash, size))
}

/// `--outputs DIR` must be new or empty: nothing there is overwritten.
fn check_outputs_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--outputs {}", dir.display())),
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "--outputs {} is not empty: give a new or empty directory",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// Takes the cache's lock, waiting (and saying so) if another run holds it.
fn lock(cache: &Path) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = cache.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            eprintln!(
                "corral: waiting for another `runner exec --action` using {} (or give --cache)",
                cache.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("locking {}", path.display()))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Runs `f` with corral's informational logs quieted (they would land in
/// the action's stderr), unless `RUST_LOG` asks for them. Warnings stay.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    if std::env::var_os("RUST_LOG").is_some() {
        return f();
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .finish();
    tracing::subscriber::with_default(subscriber, f)
}

/// `error` of connecting to `url`, saying plainly when the farm refused
/// this client's credentials (its policy wants a token or a certificate)
/// and which flag fixes it.
fn refused_credentials(
    url: &str,
    connector: &corral_cas::Connector,
    error: corral_worker::Error,
) -> anyhow::Error {
    match error.code() {
        tonic::Code::Unauthenticated => {
            let hint = if connector.has_token() {
                "the token of --token-file was not accepted"
            } else {
                "give --token-file FILE with a token the farm accepts"
            };
            anyhow::anyhow!(
                "UNAUTHENTICATED: {url} refused this client's credentials ({hint}): {error}"
            )
        }
        tonic::Code::PermissionDenied => {
            anyhow::anyhow!("PERMISSION_DENIED: {url} refused the call (check --instance): {error}")
        }
        _ => anyhow::Error::from(error),
    }
}

/// Phase 1: connect, fetch the Action and Command, read the farm's record
/// of its run, stage the input root and pull the image.
async fn fetch(
    a: &Args,
    digest: Digest,
    cache: &Path,
    owner: (u32, u32),
) -> anyhow::Result<Fetched> {
    let url = &a.remote;
    let connector = a
        .client
        .apply(corral_cas::ClientOptions::default())?
        .connector()?;
    let connect = RemoteCas::connect_with(url, &a.instance, &connector);
    let remote = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
        .and_then(|r| r.map_err(|e| refused_credentials(url, &connector, e)))
        .with_context(|| format!("cannot reach the CAS at {url}"))?;
    let options = LocalCasOptions {
        max_bytes: DEFAULT_MAX_CAS_BYTES,
        max_exec_bytes: DEFAULT_MAX_CAS_BYTES / 4,
        parallel_fetches: 8,
    };
    let local = LocalCas::open(&cache.join("cas"), &options, remote)?;
    let where_ = if a.instance.is_empty() {
        format!("the CAS at {url}")
    } else {
        format!("the CAS at {url} (instance {:?})", a.instance)
    };
    // The farm's calls for this action: under its instance name, so that
    // a namespaced instance's blobs are found.
    let ctx = RequestContext::internal(&a.instance, digest.function());
    let action: reapi::Action =
        get_message(&local, &ctx, &digest, &format!("action {digest}"), &where_)
            .await
            .context("reading the Action")?;
    let command_digest = Digest::from_proto_field(
        digest.function(),
        action.command_digest.as_ref(),
        "action.command_digest",
    )?;
    let command: reapi::Command = get_message(
        &local,
        &ctx,
        &command_digest,
        &format!("the action's command {command_digest}"),
        &where_,
    )
    .await
    .context("reading the Command")?;
    let channel = local.remote().store().channel().clone();
    let lookup = recorded::lookup(channel, &a.instance, &digest).await;
    let mut plan = farm_plan::plan(lookup, &a.instance, &action, &command)?;
    farm_plan::apply(&mut plan, &a.overrides);
    let root = Digest::from_proto_field(
        digest.function(),
        action.input_root_digest.as_ref(),
        "action.input_root_digest",
    )?;
    let inputs = open_inputs(local.clone(), cache, owner, plan.image_to_pull().is_some())?;
    let prepared = inputs
        .prepare(&ctx, root, plan.image_to_pull())
        .await
        .map_err(|e| {
            if e.is_missing_blob() {
                anyhow::anyhow!("the input root {root} is incomplete in {where_}: {e}")
            } else {
                anyhow::Error::from(e).context(format!("preparing the input root {root}"))
            }
        })?;
    check_image(&plan, &prepared)?;
    Ok(Fetched {
        command,
        plan,
        prepared,
        local,
        _inputs: inputs,
    })
}

/// The stager over the local CAS and, if the plan has an image, the image
/// cache (`CACHE/images`).
fn open_inputs(
    local: LocalCas,
    cache: &Path,
    owner: (u32, u32),
    with_images: bool,
) -> anyhow::Result<Inputs> {
    let stager = Stager::open(
        local,
        cache.join("trees"),
        StagerOptions {
            policy: SymlinkPolicy::default(),
            max_files: 1_000_000,
            owner: Some(owner),
        },
    )?;
    let images = if with_images {
        let images = Images::open(&cache.join("images"), ImagesConfig::default())?;
        Some(Arc::new(images))
    } else {
        None
    };
    Ok(Inputs::new(stager, images))
}

/// A recorded image must be the one pulled: a registry serves a pinned
/// digest or nothing, but a cache could hold a stale record.
fn check_image(plan: &RunPlan, prepared: &PreparedInputs) -> anyhow::Result<()> {
    let (
        PlannedRootfs::Image {
            resolved: Some(recorded),
            ..
        },
        Some(pulled),
    ) = (&plan.rootfs, &prepared.image)
    else {
        return Ok(());
    };
    if recorded.digest != pulled.resolved.digest {
        bail!(
            "the farm ran image {} but pulling it gave {}",
            recorded.digest,
            pulled.resolved.digest
        );
    }
    Ok(())
}

/// Refuses a message whose digest claims more than the default limit of
/// its kind (the limit a farm with the default configuration applies).
fn check_limit<M: BoundedMessage>(digest: &Digest, what: &str, where_: &str) -> anyhow::Result<()> {
    MessageLimits::default()
        .check::<M>(digest, what)
        .with_context(|| format!("refusing {what} from {where_}"))
}

/// Fetches and decodes one message under `ctx`; a missing blob says what
/// and where. A digest claiming more than the default message limit is
/// refused before anything is fetched, as the farm would refuse it: the
/// digest comes from the command line or the remote, and decoding holds
/// the whole blob in memory.
async fn get_message<M: BoundedMessage>(
    local: &LocalCas,
    ctx: &RequestContext,
    digest: &Digest,
    what: &str,
    where_: &str,
) -> anyhow::Result<M> {
    check_limit::<M>(digest, what, where_)?;
    let data = match local.get(ctx, digest).await {
        Ok(data) => data,
        Err(e) if e.is_missing_blob() => bail!("{what} is not in {where_}"),
        Err(e) => return Err(e.into()),
    };
    message::decode(digest, what, data)
        .with_context(|| format!("{what} in {where_} does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_or_say_what_is_expected() {
        let hash = "a".repeat(64);
        let d = parse_digest(&format!("{hash}/12"), DigestFunction::Sha256).unwrap();
        assert_eq!(d.size(), 12);
        assert_eq!(d.hash_hex(), hash);
        for bad in [
            "nonsense".to_string(),
            hash.clone(),
            format!("{hash}/-1"),
            format!("{}/3", "A".repeat(64)),
            "abc/3".to_string(),
        ] {
            let e = parse_digest(&bad, DigestFunction::Sha256).unwrap_err();
            assert!(
                format!("{e:#}").contains("expected HASH/SIZE"),
                "{bad}: {e:#}"
            );
        }
    }

    /// An Action or Command whose digest claims more than the message
    /// limit is refused from the digest, naming the limit.
    #[test]
    fn an_oversized_action_or_command_is_refused_naming_the_limit() {
        let huge = Digest::new(DigestFunction::Sha256, [7; 32], 5 << 20);
        let e = check_limit::<reapi::Action>(&huge, "action x", "the CAS").unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("refusing action x from the CAS"), "{text}");
        assert!(text.contains("the Action"), "{text}");
        assert!(
            text.contains("more than the limit of 4194304 bytes"),
            "{text}"
        );
        let e = check_limit::<reapi::Command>(&huge, "command x", "the CAS").unwrap_err();
        assert!(format!("{e:#}").contains("the Command"), "{e:#}");
        let small = Digest::new(DigestFunction::Sha256, [7; 32], 4 << 20);
        assert!(check_limit::<reapi::Command>(&small, "command x", "the CAS").is_ok());
    }
}
