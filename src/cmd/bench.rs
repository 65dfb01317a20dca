//! `corral bench …`: the harness lives in `corral-integration`.

use std::process::ExitCode;

use corral_integration::bench;

/// Options of `corral bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// CAS throughput: FindMissingBlobs, batch upload/download, ByteStream.
    Cas(bench::cas::Args),
    /// Sandbox start-up cost next to bubblewrap and a bare fork/exec.
    Sandbox(bench::sandbox::Args),
    /// Execute round trip of a trivial action, cache off.
    Execute(bench::execute::Args),
    /// Worker input staging of a 10,000-file input root, cold and warm.
    Staging(super::worker::BenchArgs),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.which {
        Which::Cas(a) => bench::cas::run(a),
        Which::Sandbox(a) => bench::sandbox::run(a),
        Which::Execute(a) => bench::execute::run(a),
        Which::Staging(a) => super::worker::bench(a),
    }?;
    Ok(ExitCode::SUCCESS)
}
