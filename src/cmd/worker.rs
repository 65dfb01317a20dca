//! `corral worker`.

use std::process::ExitCode;

/// Options of `corral worker`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral worker` is not built yet")
}
