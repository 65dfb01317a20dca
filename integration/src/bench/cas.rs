//! `corral bench cas`.

/// Options of `corral bench cas`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`corral bench cas` is not built yet")
}
