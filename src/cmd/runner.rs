//! `corral runner`.

use std::process::ExitCode;

/// Options of `corral runner`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral runner` is not built yet")
}
