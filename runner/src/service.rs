//! The runner protocol (`corral.runner.v1.Runner`) on a unix socket: turns
//! a `RunRequest` into a [`SandboxRequest`], checks it so that mistakes come
//! back as INVALID_ARGUMENT naming the field, and hands it to the zygote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_proto::runner::v1 as pb;
use corral_proto::runner::v1::runner_server::{Runner, RunnerServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::host::{Host, RunnerConfig};
use crate::profile::Profile;
use crate::request::{LimitHit, Limits, Outcome, Rootfs, SandboxRequest, Stdio};
use crate::sandbox;
use crate::spec::Layout;
use crate::zygote::Zygote;

#[cfg(test)]
mod reuse_tests;
#[cfg(test)]
pub(crate) mod tests;

/// The gRPC service.
struct RunnerService {
    host: Host,
    zygote: Zygote,
}

impl RunnerService {
    fn new(host: Host, zygote: Zygote) -> RunnerService {
        RunnerService { host, zygote }
    }
}

fn status_of(err: Error) -> Status {
    match err {
        Error::MissingRootfs(_)
        | Error::MissingInputRoot(_)
        | Error::CommandNotFound { .. }
        | Error::BadWorkingDirectory(_)
        | Error::InvalidRequest(_)
        | Error::Profile { .. } => Status::invalid_argument(err.to_string()),
        Error::NetworkForbidden => Status::permission_denied(err.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn absolute(field: &str, value: &str) -> Result<PathBuf> {
    let path = PathBuf::from(value);
    if value.is_empty() || !path.is_absolute() || value.contains('\0') {
        return Err(Error::InvalidRequest(format!(
            "{field} must be an absolute path, got {value:?}"
        )));
    }
    Ok(path)
}

fn stdio(field: &str, value: &str) -> Result<Stdio> {
    if value.is_empty() {
        Ok(Stdio::Null)
    } else {
        Ok(Stdio::File(absolute(field, value)?))
    }
}

/// Converts and validates a protocol request.
pub(crate) fn to_sandbox_request(host: &Host, r: pb::RunRequest) -> Result<SandboxRequest> {
    let rootfs = match r.rootfs {
        Some(pb::run_request::Rootfs::InputRootAsRoot(_)) => Rootfs::InputRoot,
        Some(pb::run_request::Rootfs::Host(_)) => Rootfs::Host,
        Some(pb::run_request::Rootfs::Lower(l)) => Rootfs::Lower(
            l.dirs
                .iter()
                .map(|d| absolute("lower.dirs", d))
                .collect::<Result<_>>()?,
        ),
        None => return Err(Error::InvalidRequest("rootfs is required".into())),
    };
    let limits = r.limits.unwrap_or_default();
    let nonzero = |v: u64| (v > 0).then_some(v);
    Ok(SandboxRequest {
        rootfs,
        input_root: absolute("input_root", &r.input_root)?,
        scratch_dir: absolute("scratch_dir", &r.scratch_dir)?,
        args: r.arguments,
        env: r
            .environment
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect(),
        cwd: r.working_directory,
        stdin: Stdio::Null,
        stdout: stdio("stdout_path", &r.stdout_path)?,
        stderr: stdio("stderr_path", &r.stderr_path)?,
        profile: Profile::load(&r.profile, host.profile_dir.as_deref())?,
        network: r.network,
        limits: Limits {
            timeout: nonzero(limits.timeout_ms).map(Duration::from_millis),
            memory_bytes: nonzero(limits.memory_bytes),
            max_pids: nonzero(limits.max_pids),
            cpu_millis: nonzero(limits.cpu_millis),
            max_written_bytes: nonzero(limits.max_written_bytes),
        },
        uid: r.uid,
        gid: r.gid,
        read_only_subtrees: r.read_only_subtrees,
        writable_subtrees: r.writable_subtrees,
        controlling_tty: false,
        hostname: hostname(r.hostname)?,
        // A worker's scratch directory is made for the action, but the
        // runner cannot tell what its caller put there.
        upper_holds_only_directories: false,
        upper_watch: None,
    })
}

/// The requested hostname, or the default for an empty one.
fn hostname(requested: String) -> Result<String> {
    if requested.is_empty() {
        return Ok(corral_proto::hostname::DEFAULT.to_string());
    }
    corral_proto::hostname::check(&requested)
        .map_err(|reason| Error::InvalidRequest(format!("hostname {requested:?} {reason}")))?;
    Ok(requested)
}

/// Converts an outcome to the protocol's response.
fn to_response(o: &Outcome) -> pb::RunResponse {
    let limit_hit = match o.limit_hit {
        None => pb::LimitHit::None,
        Some(LimitHit::Timeout) => pb::LimitHit::Timeout,
        Some(LimitHit::Memory) => pb::LimitHit::Memory,
        Some(LimitHit::Pids) => pb::LimitHit::Pids,
        Some(LimitHit::WrittenBytes) => pb::LimitHit::WrittenBytes,
        Some(LimitHit::CpuTime) => pb::LimitHit::CpuTime,
    };
    pb::RunResponse {
        exit_code: o.exit_code.unwrap_or(-1),
        signal: o.signal.unwrap_or(0),
        timed_out: o.timed_out,
        limit_hit: limit_hit as i32,
        user_cpu_us: o.user_cpu.as_micros() as u64,
        system_cpu_us: o.system_cpu.as_micros() as u64,
        peak_memory_bytes: o.peak_memory_bytes,
        wall_time_us: o.wall_time.as_micros() as u64,
        upper_dir: o.upper_dir.display().to_string(),
    }
}

#[tonic::async_trait]
impl Runner for RunnerService {
    async fn run(
        &self,
        request: Request<pb::RunRequest>,
    ) -> std::result::Result<Response<pb::RunResponse>, Status> {
        let req = to_sandbox_request(&self.host, request.into_inner()).map_err(status_of)?;
        let layout = Layout::new(&self.host, &req).map_err(status_of)?;
        sandbox::check(&self.host, &req, &layout).map_err(status_of)?;
        tracing::info!(args = ?req.args, input_root = %req.input_root.display(), "run");
        let outcome = self.zygote.run(req).await.map_err(status_of)?;
        tracing::info!(exit = ?outcome.exit_code, signal = ?outcome.signal, limit = ?outcome.limit_hit, wall = ?outcome.wall_time, "done");
        Ok(Response::new(to_response(&outcome)))
    }

    async fn ready(
        &self,
        _request: Request<pb::ReadyRequest>,
    ) -> std::result::Result<Response<pb::ReadyResponse>, Status> {
        if !self.zygote.is_alive() {
            return Err(Status::unavailable("the container helper (zygote) exited"));
        }
        Ok(Response::new(pb::ReadyResponse {
            ready: true,
            enforced_limits: self.host.enforced_limits(),
            sandbox_uid: self.host.map_uid,
            sandbox_gid: self.host.map_gid,
        }))
    }
}

/// Binds `socket` (replacing a stale socket file, never another kind of
/// file) and serves until `shutdown` completes.
pub(crate) async fn serve(
    host: Host,
    zygote: Zygote,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(Error::InvalidRequest(format!(
                "{} exists and is not a socket; refusing to replace it",
                socket.display()
            )));
        }
        std::fs::remove_file(socket)
            .map_err(|e| Error::io(format!("remove {}", socket.display()), e))?;
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("bind {}", socket.display()), e))?;
    tracing::info!(socket = %socket.display(), "runner serving");
    tonic::transport::Server::builder()
        .add_service(RunnerServer::new(RunnerService::new(host, zygote)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::Container(format!("gRPC server: {e}")))
}

/// Probes the host, removes the cgroups dead runs left, and forks the
/// zygote while this process is still single-threaded: how `corral runner
/// --socket` and `runner exec`'s resident service both start. Refuses (an
/// error) if the process already has more than one thread.
pub(crate) fn start(config: &RunnerConfig) -> Result<(Host, Zygote)> {
    let host = Host::probe(config)?;
    for line in host.enforced_limits() {
        tracing::info!("limit {line}");
    }
    if host.rlimits_for_want_of_a_cgroup() {
        tracing::warn!(
            "no delegated cgroup: memory and pids limits are per-process rlimits; \
             on cgroup v1, `corral runner delegate --uid {}` as root enables cgroup limits; \
             on cgroup v2, start the runner inside a delegated subtree (docs/sandbox.md)",
            host.map_uid
        );
    }
    let stale = crate::cgroups::stale::remove_stale(host.limit_enforcer().as_ref());
    if !stale.is_empty() {
        tracing::info!(count = stale.len(), runs = ?stale, "removed the cgroups of runs whose process is gone");
    }
    crate::exec::wait_single_threaded(std::time::Duration::from_millis(500))?;
    // SAFETY: just checked that this process has a single thread, and
    // nothing between the check and the fork starts one.
    let zygote = unsafe { Zygote::spawn(host.clone()) }?;
    Ok((host, zygote))
}

/// Until SIGTERM or Ctrl-C.
pub(crate) async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `corral runner --socket PATH`: [`start`]s, then starts the runtime and
/// serves until SIGTERM or Ctrl-C.
pub fn serve_blocking(config: &RunnerConfig, socket: &Path) -> Result<()> {
    let (host, zygote) = start(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    runtime.block_on(serve(host, zygote, socket, async {
        terminated().await;
        tracing::info!("runner shutting down");
    }))
}
