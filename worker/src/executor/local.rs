//! The executor that does the work, as separate steps: prepare the inputs
//! (stage the input root, pull the image), make the run plan and the build
//! directory, run the command through the runner protocol, collect the
//! outputs (captured also when the command failed or timed out), and
//! answer with the ActionResult and the records of how it ran.

use std::path::PathBuf;
use std::sync::Arc;

use corral_cas::{Digest, DigestFunction, Invocation, RequestContext};
use corral_proto::protobuf::Any;
use corral_proto::reapi;
use corral_proto::runner::v1 as pb;
use corral_proto::worker::v1::{Assignment, Stage};
use futures::future::BoxFuture;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::{failed, ActionExecutor, Progress};
use crate::build_dir::BuildDir;
use crate::error::Result;
use crate::inputs::{Inputs, PreparedInputs};
use crate::outputs::Outputs;
use crate::plan::{action_and_command, RunPlan, RunSite, RECORD_TYPE_URL};
use crate::sandbox::Sandbox;
use crate::status::status;

/// Settings of the [`LocalExecutor`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Where per-action build directories are made.
    pub builds_dir: PathBuf,
    /// Sandbox profile passed to the runner ("" = its default).
    pub profile: String,
    /// Host uid/gid that directories made for the action are given.
    pub owner: Option<(u32, u32)>,
}

/// Runs assignments here, through a [`Sandbox`].
pub struct LocalExecutor {
    options: LocalOptions,
    inputs: Inputs,
    sandbox: Arc<dyn Sandbox>,
    outputs: Outputs,
}

/// What a finished run answers with.
type Ran = (reapi::ActionResult, corral_proto::rpc::Status);

impl LocalExecutor {
    pub fn new(
        options: LocalOptions,
        inputs: Inputs,
        sandbox: Arc<dyn Sandbox>,
        outputs: Outputs,
    ) -> Self {
        LocalExecutor {
            options,
            inputs,
            sandbox,
            outputs,
        }
    }

    async fn run(&self, a: &Assignment, progress: &Progress<'_>) -> Result<Ran> {
        let function = DigestFunction::from_proto(a.digest_function)?;
        let ctx = context(a, function);
        let (action, command) = action_and_command(a)?;
        let root = Digest::from_proto_field(
            function,
            action.input_root_digest.as_ref(),
            "action.input_root_digest",
        )?;
        let mut plan = RunPlan::for_assignment(a, &self.options.profile)?;

        progress(Stage::FetchingInputs);
        let inputs = self
            .inputs
            .prepare(&ctx, root, plan.image_to_pull())
            .await?;
        if let Some(image) = &inputs.image {
            plan.pin_image(image.resolved.clone());
        }
        let dir = BuildDir::new(&self.options.builds_dir, &a.assignment_id);
        dir.prepare(&inputs.staged, command, self.options.owner)
            .await?;
        let request = plan.request(command, &site(&dir, &inputs))?;

        progress(Stage::Running);
        let response = self.sandbox.run(request).await?;

        progress(Stage::UploadingOutputs);
        let collected = self
            .outputs
            .collect(
                &ctx,
                command,
                &inputs.staged,
                dir.leftovers(&response.upper_dir),
            )
            .await;
        dir.remove().await;
        let mut result = collected?;
        result.exit_code = if response.signal != 0 {
            128 + response.signal
        } else {
            response.exit_code
        };
        result.execution_metadata = Some(records(&plan, &inputs, &response));
        let st = if response.timed_out {
            status(
                tonic::Code::DeadlineExceeded,
                format!("the action ran past its {} ms timeout", a.timeout_millis),
            )
        } else {
            status(tonic::Code::Ok, "")
        };
        Ok((result, st))
    }
}

/// Cancellation is the [`super::Cancellable`] layer's: it drops this
/// future, which is all that stopping a run takes.
impl ActionExecutor for LocalExecutor {
    fn execute<'a>(
        &'a self,
        assignment: &'a Assignment,
        _cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse> {
        Box::pin(async move {
            match self.run(assignment, progress).await {
                Ok((result, status)) => reapi::ExecuteResponse {
                    result: Some(result),
                    status: Some(status),
                    ..Default::default()
                },
                Err(e) => {
                    tracing::info!(assignment = %assignment.assignment_id, error = %e, "action failed in the worker");
                    failed(&e)
                }
            }
        })
    }

    fn cached_images(&self) -> Vec<String> {
        self.inputs.cached_images()
    }
}

/// The context of the worker's CAS calls for assignment `a`: the farm
/// acting for the action, under its instance name (which selects the
/// storage namespace its inputs are in and its outputs go to) and with the
/// client's RequestMetadata, for the CAS's logs.
fn context(a: &Assignment, function: DigestFunction) -> RequestContext {
    let invocation = a.request_metadata.clone().map(Invocation::from_proto);
    RequestContext::new(
        corral_cas::Identity::Farm,
        invocation,
        &a.instance_name,
        function,
    )
}

/// The host paths of a run in `dir` on `inputs`.
fn site(dir: &BuildDir, inputs: &PreparedInputs) -> RunSite {
    let image = inputs.image.as_ref().map(|i| &i.lease);
    RunSite {
        input_root: inputs.staged.path.clone(),
        scratch_dir: dir.scratch(),
        stdout: Some(dir.stdout()),
        stderr: Some(dir.stderr()),
        layer_dirs: image.map(|l| l.layer_dirs()).unwrap_or_default(),
        image_env: image.map(|l| l.env().to_vec()).unwrap_or_default(),
        read_only_subtrees: inputs.staged.read_only_subtrees.clone(),
        writable_subtrees: inputs.staged.writable_subtrees.clone(),
    }
}

/// The auxiliary records of a run: the image that ran (if any), the plan
/// the runner was given, and the runner's answer.
fn records(
    plan: &RunPlan,
    inputs: &PreparedInputs,
    response: &pb::RunResponse,
) -> reapi::ExecutedActionMetadata {
    let mut aux = Vec::new();
    if let Some(image) = &inputs.image {
        aux.push(any("corral.worker.v1.ResolvedImage", &image.resolved));
    }
    aux.push(Any {
        type_url: RECORD_TYPE_URL.into(),
        value: plan.record().encode_to_vec(),
    });
    aux.push(any("corral.runner.v1.RunResponse", response));
    reapi::ExecutedActionMetadata {
        auxiliary_metadata: aux,
        ..Default::default()
    }
}

fn any(name: &str, message: &impl Message) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod namespace_tests;
