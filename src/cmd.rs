//! One module per subcommand. Each builds its own runtime and wires crates.

pub mod authenticate;
pub mod bench;
pub mod defaults;
pub mod images;
pub mod listen;
pub mod runner;
pub mod security;
pub mod server;
pub mod up;
pub mod worker;
pub mod worker_listener;

const DEFAULT_LOG_FILTER: &str = "info,libcgroups=error,libcontainer=error";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// The variable that carries the log format to child processes.
const LOG_FORMAT_VAR: &str = "CORRAL_LOG_FORMAT";

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`, with
/// libcontainer's per-container chatter about cgroup controllers this host
/// lacks and about its own seccomp support, which Corral does not use,
/// kept to errors).
///
/// They are written through a private, close-on-exec copy of the stderr
/// descriptor rather than fd 2: libcontainer logs from inside a
/// container's init after fd 2 has become the action's stderr, and the
/// runner's log must never end up in an action's output.
pub fn init_logging(format: Option<LogFormat>) {
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => std::env::var(LOG_FORMAT_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("json")),
    };
    if json {
        // Called first thing in main, before any thread exists.
        std::env::set_var(LOG_FORMAT_VAR, "json");
    }
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Empty until `[tracing]` asks for export (`export_traces`).
    let (traces, handle) = tracing_subscriber::reload::Layer::new(None);
    let _ = TRACE_SLOT.set(handle);
    // A closed stderr (a supervisor that went away) must not turn a failed
    // log write into a panic of the whole farm.
    // Colours for a person at a terminal, none in a log file (the runner's
    // under a worker, `runner exec`'s service's).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .log_internal_errors(false)
        .with_ansi(ansi);
    let fmt = match (json, private_stderr()) {
        (true, Some(log)) => fmt.json().with_writer(std::sync::Arc::new(log)).boxed(),
        (true, None) => fmt.json().with_writer(std::io::stderr).boxed(),
        (false, Some(log)) => fmt.with_writer(std::sync::Arc::new(log)).boxed(),
        (false, None) => fmt.with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(fmt)
        .init();
}

/// The subscriber below the trace export's layer: the registry and the
/// `RUST_LOG` filter, so only spans the filter lets through are exported.
type Filtered =
    tracing_subscriber::layer::Layered<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;
/// Where the trace export's layer goes once `[tracing]` is read.
type TraceSlot = Option<Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync>>;
static TRACE_SLOT: std::sync::OnceLock<tracing_subscriber::reload::Handle<TraceSlot, Filtered>> =
    std::sync::OnceLock::new();

/// Starts exporting spans over OTLP as `[tracing]` says (nothing without
/// `otlp_endpoint`). The logging set up by [`init_logging`] gains the
/// export's layer; keep the returned export alive while serving and drop
/// it off the runtime's threads to flush the last spans. Call inside the
/// server's runtime.
pub fn export_traces(
    config: &corral_web::TracingConfig,
) -> anyhow::Result<Option<corral_web::TraceExport>> {
    use anyhow::Context as _;
    use tracing_subscriber::Layer as _;
    let Some(export) = corral_web::TraceExport::start(config)? else {
        return Ok(None);
    };
    TRACE_SLOT
        .get()
        .context("logging is not set up, so spans cannot be exported")?
        .reload(Some(export.layer::<Filtered>().boxed()))
        .context("adding the trace export to the logging")?;
    Ok(Some(export))
}

/// A close-on-exec duplicate of stderr numbered 100 or higher, where a
/// descriptor the process opens later will not land.
fn private_stderr() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).ok()?;
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}
