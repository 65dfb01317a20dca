//! `corral bench execute`.

/// Options of `corral bench execute`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`corral bench execute` is not built yet")
}
