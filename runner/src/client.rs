//! Connecting to a runner's unix socket with the generated gRPC client
//! (the worker has its own; `corral bench sandbox` uses this one).

use std::path::{Path, PathBuf};

use corral_proto::runner::v1::runner_client::RunnerClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};

/// A client for the runner listening on `socket`.
pub async fn connect(socket: &Path) -> Result<RunnerClient<Channel>> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    let channel = Endpoint::from_static("http://runner.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| Error::Zygote(format!("connect to the runner socket: {e}")))?;
    Ok(RunnerClient::new(channel))
}
