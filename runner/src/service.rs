//! Placeholder replaced below.
use std::path::Path;

use crate::host::RunnerConfig;

pub fn serve_blocking(_config: &RunnerConfig, _socket: &Path) -> crate::Result<()> {
    Err(crate::Error::Zygote("not yet".into()))
}
