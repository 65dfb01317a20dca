//! `corral up`.

use std::process::ExitCode;

/// Options of `corral up`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`corral up` is not built yet")
}
