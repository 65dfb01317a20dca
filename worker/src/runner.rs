//! The worker's runner: either a child process the worker starts
//! (`corral runner --socket DATA/runner.sock`) and starts again when it
//! dies, or a runner someone else runs, reached at a configured socket.
//!
//! The worker talks to it only through the runner protocol. When a `Run`
//! fails because the runner went away, only that action fails (INTERNAL,
//! saying the runner died); the runner is restarted for the next one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use corral_proto::runner::v1 as pb;
use corral_proto::runner::v1::runner_client::RunnerClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};

/// How long a runner may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a freshly started runner may take to answer `Ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the runner is reached.
#[derive(Clone, Debug)]
pub enum RunnerSpec {
    /// Start `program args… --socket SOCKET` and keep it running.
    Spawn {
        program: PathBuf,
        args: Vec<String>,
        socket: PathBuf,
    },
    /// Connect to a runner that is already listening on this socket.
    Connect { socket: PathBuf },
}

/// A runner the worker can send `Run` requests to.
pub struct Runner {
    spec: RunnerSpec,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    child: Option<Child>,
    client: Option<RunnerClient<Channel>>,
    ready: Option<pb::ReadyResponse>,
    restarts: u64,
}

impl Runner {
    pub fn new(spec: RunnerSpec) -> Self {
        Runner {
            spec,
            state: Mutex::new(State::default()),
        }
    }

    fn socket(&self) -> &Path {
        match &self.spec {
            RunnerSpec::Spawn { socket, .. } | RunnerSpec::Connect { socket } => socket,
        }
    }

    /// Starts the runner if needed and waits until it is ready; returns its
    /// `Ready` answer (limits, sandbox uid/gid).
    pub async fn ready(&self) -> Result<pb::ReadyResponse> {
        let mut state = self.state.lock().await;
        self.ensure(&mut state).await?;
        state
            .ready
            .clone()
            .ok_or_else(|| Error::Internal("runner ready without an answer".into()))
    }

    async fn ensure(&self, state: &mut State) -> Result<RunnerClient<Channel>> {
        let dead = match state.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => false,
        };
        if dead {
            state.restarts += 1;
            tracing::warn!(
                restarts = state.restarts,
                "the runner exited; starting it again"
            );
            state.child = None;
            state.client = None;
        }
        if let Some(client) = &state.client {
            return Ok(client.clone());
        }
        if let RunnerSpec::Spawn {
            program,
            args,
            socket,
        } = &self.spec
        {
            if state.child.is_none() {
                let _ = std::fs::remove_file(socket);
                let mut command = Command::new(program);
                command
                    .args(args)
                    .arg("--socket")
                    .arg(socket)
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                // A worker killed outright must not leave its runner (and
                // the runner's containers) behind: SIGTERM on our death,
                // which the runner handles as a shutdown. The signal follows
                // the spawning thread, a runtime worker that lives as long
                // as the worker.
                // SAFETY: prctl is async-signal-safe and touches no memory
                // of the parent, as a pre_exec hook must.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let child = command
                    .spawn()
                    .map_err(|e| Error::Runner(format!("starting {}: {e}", program.display())))?;
                tracing::info!(pid = child.id(), socket = %socket.display(), "runner started");
                state.child = Some(child);
            }
        }
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut last_error = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Some(child) = state.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    state.child = None;
                    return Err(Error::Runner(format!(
                        "the runner exited at start-up ({status})"
                    )));
                }
            }
            match connect(self.socket()).await {
                Ok(mut client) => match client.ready(pb::ReadyRequest {}).await {
                    Ok(r) if r.get_ref().ready => {
                        state.ready = Some(r.into_inner());
                        state.client = Some(client.clone());
                        return Ok(client);
                    }
                    Ok(_) => last_error = "not ready yet".into(),
                    Err(s) => last_error = s.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Runner(format!(
            "no runner answered on {} within {:?}: {last_error}",
            self.socket().display(),
            READY_TIMEOUT
        )))
    }

    /// Stops a runner the worker started: SIGTERM, then SIGKILL if it has
    /// not exited within a few seconds. A runner reached by socket is left
    /// alone.
    pub async fn stop(&self) {
        let mut state = self.state.lock().await;
        state.client = None;
        let Some(mut child) = state.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(Ok(status)) => tracing::info!(%status, "runner stopped"),
            _ => {
                tracing::warn!("the runner did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }

    /// Runs one request. A runner that dies during the call fails this
    /// request only; the next call starts it again.
    pub async fn run(&self, request: pb::RunRequest) -> Result<pb::RunResponse> {
        let mut client = {
            let mut state = self.state.lock().await;
            self.ensure(&mut state).await?
        };
        match client.run(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) if is_transport_failure(&status) => {
                let mut state = self.state.lock().await;
                state.client = None;
                Err(Error::Runner(format!(
                    "the runner went away while running the action ({}); it is being restarted",
                    status.message()
                )))
            }
            Err(status) => Err(Error::rpc("runner Run", status)),
        }
    }
}

fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// A client for the runner listening on `socket`.
async fn connect(socket: &Path) -> Result<RunnerClient<Channel>> {
    let socket = socket.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    let channel = Endpoint::from_static("http://runner.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| Error::Runner(format!("connecting to the runner socket: {e}")))?;
    Ok(RunnerClient::new(channel))
}
