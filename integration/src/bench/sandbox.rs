//! `corral bench sandbox`.

/// Options of `corral bench sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`corral bench sandbox` is not built yet")
}
