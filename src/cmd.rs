//! One module per subcommand. Each builds its own runtime and wires crates.

pub mod bench;
pub mod images;
pub mod runner;
pub mod server;
pub mod up;
pub mod worker;

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
