//! `corral images`.

use std::process::ExitCode;

/// Options of `corral images`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral images` is not built yet")
}
