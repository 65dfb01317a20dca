//! The last step of a run: capture the outputs from the overlay's upper
//! directory (a file the action did not touch keeps the digest the input
//! tree gave it), hash stdout and stderr, upload whatever the remote CAS
//! lacks, and answer with the ActionResult's output fields.

use std::path::PathBuf;

use corral_cas::{Digest, RequestContext};
use corral_proto::reapi;

use crate::capture::{capture, Blob};
use crate::error::{Error, Result};
use crate::executor::probe::{self, timed, Step};
use crate::merged::hash_file;
use crate::remote::RemoteCas;
use crate::stage::StagedInput;
use crate::upload::upload;

/// Captures and uploads outputs.
#[derive(Clone)]
pub struct Outputs {
    remote: RemoteCas,
    parallel_uploads: usize,
}

/// Where one run left what it produced.
pub struct RunLeftovers {
    /// The overlay's upper directory: what the action changed.
    pub upper: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Outputs {
    pub fn new(remote: RemoteCas, parallel_uploads: usize) -> Self {
        Outputs {
            remote,
            parallel_uploads: parallel_uploads.max(1),
        }
    }

    /// The result's output fields and stdout/stderr digests (exit code and
    /// metadata left to the caller), every blob they name uploaded under
    /// `ctx` (the action's instance name and digest function).
    pub async fn collect(
        &self,
        ctx: &RequestContext,
        command: &reapi::Command,
        staged: &StagedInput,
        left: RunLeftovers,
    ) -> Result<reapi::ActionResult> {
        let function = ctx.digest_function();
        let (tree, command) = (staged.staged.clone(), command.clone());
        let capturing = tokio::task::spawn_blocking(move || {
            let mut captured = capture(&command, &tree.tree, Some(left.upper))?;
            let mut digests = [Digest::of_bytes(function, b""); 2];
            for (slot, path) in digests.iter_mut().zip([left.stdout, left.stderr]) {
                if path.exists() {
                    *slot = hash_file(function, &path)?;
                }
                captured.blobs.insert(*slot, Blob::File(path));
            }
            Ok::<_, Error>((captured, digests))
        });
        let (mut captured, [stdout, stderr]) = timed(Step::OutputCapture, capturing)
            .await
            .map_err(|e| Error::Internal(format!("output capture task failed: {e}")))??;
        let sent = timed(
            Step::Upload,
            upload(&self.remote, ctx, &captured.blobs, self.parallel_uploads),
        )
        .await?;
        probe::note(|n| n.uploaded_bytes += sent.sent_bytes);
        let mut result = std::mem::take(&mut captured.result);
        result.stdout_digest = Some(stdout.to_proto());
        result.stderr_digest = Some(stderr.to_proto());
        Ok(result)
    }
}
