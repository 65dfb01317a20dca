//! What runs a `RunRequest`: the runner, over the runner protocol, in a
//! worker; a stand-in in tests, so that the executor's steps are tested
//! without a sandbox.

use corral_proto::runner::v1 as pb;
use futures::future::BoxFuture;

use crate::error::Result;
use crate::runner::Runner;

/// Runs one command in a sandbox, as the runner protocol's `Run` does.
pub trait Sandbox: Send + Sync {
    fn run(&self, request: pb::RunRequest) -> BoxFuture<'_, Result<pb::RunResponse>>;
}

impl Sandbox for Runner {
    fn run(&self, request: pb::RunRequest) -> BoxFuture<'_, Result<pb::RunResponse>> {
        Box::pin(Runner::run(self, request))
    }
}
