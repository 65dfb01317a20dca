//! `corral server`.

use std::process::ExitCode;

/// Options of `corral server`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral server` is not built yet")
}
