//! Running one assignment: stage the input root, prepare the build
//! directory, have the runner run the command, capture and upload the
//! outputs (also when the command failed or timed out), and answer with
//! an `ExecuteResponse` whose metadata records every phase.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use corral_cas::{Digest, DigestFunction};
use corral_proto::protobuf::{Any, Timestamp};
use corral_proto::reapi;
use corral_proto::runner::v1 as pb;
use corral_proto::worker::v1::{Assignment, ResolvedImage, RootfsMode, Stage};
use prost::Message;

use crate::capture::{capture, Blob};
use crate::error::{Error, Result};
use crate::fsutil::remove_tree;
use crate::images::{self, Images};
use crate::merged::hash_file;
use crate::paths;
use crate::platform::{id_property, property};
use crate::prepare::prepare_upper;
use crate::runner::Runner;
use crate::stage::Stager;
use crate::status::{status, to_status};
use crate::upload::upload;
use tokio_util::sync::CancellationToken;

/// Settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// Worker name for ExecutedActionMetadata.
    pub name: String,
    /// Where per-action build directories are made.
    pub builds_dir: PathBuf,
    /// Sandbox profile passed to the runner ("" = its default).
    pub profile: String,
    /// Upload calls running at once.
    pub parallel_uploads: usize,
    /// Host uid/gid that directories made for the action are given.
    pub owner: Option<(u32, u32)>,
}

/// Runs assignments. Cheap to share (`Arc`).
pub struct Executor {
    options: ExecutorOptions,
    stager: Stager,
    runner: Arc<Runner>,
    images: Option<Arc<Images>>,
}

impl Executor {
    /// `images`: the image cache, or None if actions may not name a
    /// `container-image` here.
    pub fn new(
        options: ExecutorOptions,
        stager: Stager,
        runner: Arc<Runner>,
        images: Option<Arc<Images>>,
    ) -> Self {
        Executor {
            options,
            stager,
            runner,
            images,
        }
    }

    /// The `container-image` values whose images this worker holds.
    pub fn cached_images(&self) -> Vec<String> {
        self.images.as_ref().map(|i| i.cached()).unwrap_or_default()
    }

    pub fn stager(&self) -> &Stager {
        &self.stager
    }

    /// Runs `a` to completion. Never fails: every failure is a status in
    /// the response. `progress` hears each stage as it starts.
    pub async fn execute(
        &self,
        a: &Assignment,
        progress: &(dyn Fn(Stage) + Send + Sync),
        cancel: &CancellationToken,
    ) -> reapi::ExecuteResponse {
        let mut meta = reapi::ExecutedActionMetadata {
            worker: self.options.name.clone(),
            worker_start_timestamp: Some(now()),
            queued_timestamp: queued_at(a.queued_millis),
            ..Default::default()
        };
        let dir = self.options.builds_dir.join(format!(
            "{}-{:08x}",
            sanitize(&a.assignment_id),
            fastrand::u32(..)
        ));
        // Dropping the run on cancel closes the runner call, and the runner
        // kills the container; the build directory is removed below either way.
        let outcome = tokio::select! {
            outcome = self.execute_in(a, &dir, &mut meta, progress) => outcome,
            () = cancel.cancelled() => Err(Error::Cancelled("the scheduler cancelled the action".into())),
        };
        let removed = dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = remove_tree(&removed) {
                tracing::warn!(error = %e, "could not remove a build directory");
            }
        })
        .await;
        meta.worker_completed_timestamp = Some(now());
        match outcome {
            Ok((mut result, status)) => {
                result.execution_metadata = Some(meta);
                reapi::ExecuteResponse {
                    result: Some(result),
                    status: Some(status),
                    message: String::new(),
                    ..Default::default()
                }
            }
            Err(e) => {
                tracing::info!(assignment = %a.assignment_id, error = %e, "action failed in the worker");
                reapi::ExecuteResponse {
                    status: Some(to_status(&e)),
                    message: e.to_string(),
                    ..Default::default()
                }
            }
        }
    }

    async fn execute_in(
        &self,
        a: &Assignment,
        dir: &Path,
        meta: &mut reapi::ExecutedActionMetadata,
        progress: &(dyn Fn(Stage) + Send + Sync),
    ) -> Result<(reapi::ActionResult, corral_proto::rpc::Status)> {
        let function = DigestFunction::from_proto(a.digest_function)?;
        let action = a
            .action
            .as_ref()
            .ok_or_else(|| Error::invalid("action", "is missing"))?;
        let command = a
            .command
            .as_ref()
            .ok_or_else(|| Error::invalid("command", "is missing"))?;
        if command.arguments.is_empty() {
            return Err(Error::invalid("command.arguments", "is empty"));
        }
        let root = Digest::from_proto_field(
            function,
            action.input_root_digest.as_ref(),
            "action.input_root_digest",
        )?;

        progress(Stage::FetchingInputs);
        meta.input_fetch_start_timestamp = Some(now());
        // The image (if any) is pulled while the input root is staged.
        let image_wanted = property(action, command, images::PROPERTY).filter(|v| !v.is_empty());
        let (staged, image) = tokio::try_join!(self.stager.stage(function, root), async {
            match (image_wanted, &self.images) {
                (None, _) => Ok(None),
                (Some(value), Some(images)) => images.prepare(value).await.map(Some),
                (Some(value), None) => Err(Error::FailedPrecondition(format!(
                    "{} {value}: this worker runs no images",
                    images::PROPERTY
                ))),
            }
        })?;
        meta.input_fetch_completed_timestamp = Some(now());
        if let (Some(lease), Some(requested)) = (&image, image_wanted) {
            meta.auxiliary_metadata.push(Any {
                type_url: "type.googleapis.com/corral.worker.v1.ResolvedImage".into(),
                value: ResolvedImage {
                    requested: requested.to_string(),
                    reference: lease.reference().to_string(),
                    digest: lease.digest().to_string(),
                    manifest_digest: lease.manifest_digest().to_string(),
                }
                .encode_to_vec(),
            });
        }

        let scratch = dir.join("scratch");
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        {
            let (staged_for, scratch, owner, command) = (
                staged.staged.clone(),
                scratch.clone(),
                self.options.owner,
                command.clone(),
            );
            blocking(move || {
                prepare_upper(&scratch.join("upper"), &staged_for.tree, &command, owner)
            })
            .await?;
        }
        let request = pb::RunRequest {
            input_root: staged.path.display().to_string(),
            scratch_dir: scratch.display().to_string(),
            rootfs: Some(match &image {
                Some(lease) => pb::run_request::Rootfs::Lower(pb::LowerDirs {
                    dirs: lease
                        .layer_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect(),
                }),
                None => rootfs(a),
            }),
            arguments: command.arguments.clone(),
            environment: environment(image.as_ref().map(|l| l.env()).unwrap_or(&[]), command),
            working_directory: paths::working_directory(&command.working_directory)?.join("/"),
            stdout_path: stdout.display().to_string(),
            stderr_path: stderr.display().to_string(),
            profile: self.options.profile.clone(),
            network: false,
            limits: Some(pb::Limits {
                timeout_ms: a.timeout_millis,
                ..Default::default()
            }),
            uid: id_property(action, command, "unixUID")?,
            gid: id_property(action, command, "unixGID")?,
            read_only_subtrees: staged.read_only_subtrees.clone(),
            writable_subtrees: staged.writable_subtrees.clone(),
            hostname: a.hostname.clone(),
        };

        progress(Stage::Running);
        meta.execution_start_timestamp = Some(now());
        let response = self.runner.run(request).await?;
        meta.execution_completed_timestamp = Some(now());
        meta.auxiliary_metadata.push(Any {
            type_url: "type.googleapis.com/corral.runner.v1.RunResponse".into(),
            value: response.encode_to_vec(),
        });

        progress(Stage::UploadingOutputs);
        meta.output_upload_start_timestamp = Some(now());
        let upper = if response.upper_dir.is_empty() {
            scratch.join("upper")
        } else {
            PathBuf::from(&response.upper_dir)
        };
        let (tree, command_owned) = (staged.staged.clone(), command.clone());
        let (mut captured, std_digests) = blocking(move || {
            let mut captured = capture(&command_owned, &tree.tree, Some(upper))?;
            let mut digests = Vec::new();
            for p in [stdout, stderr] {
                let d = if p.exists() {
                    hash_file(function, &p)?
                } else {
                    Digest::of_bytes(function, b"")
                };
                captured.blobs.insert(d, Blob::File(p));
                digests.push(d);
            }
            Ok((captured, digests))
        })
        .await?;
        let remote = self.stager.cas().remote().clone();
        upload(&remote, &captured.blobs, self.options.parallel_uploads).await?;
        meta.output_upload_completed_timestamp = Some(now());

        let mut result = std::mem::take(&mut captured.result);
        result.exit_code = if response.signal != 0 {
            128 + response.signal
        } else {
            response.exit_code
        };
        result.stdout_digest = Some(std_digests[0].to_proto());
        result.stderr_digest = Some(std_digests[1].to_proto());
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

/// The rootfs the scheduler chose for the action's instance name.
fn rootfs(a: &Assignment) -> pb::run_request::Rootfs {
    use pb::run_request::Rootfs;
    match RootfsMode::try_from(a.rootfs) {
        Ok(RootfsMode::InputRoot) => Rootfs::InputRootAsRoot(pb::InputRootAsRoot {}),
        _ => Rootfs::Host(pb::HostRoot {}),
    }
}

/// The image's `Env` (`NAME=value`) as the base, the Command's variables
/// over it: REAPI's environment is what the action asked for, the image
/// only fills in what it did not set.
fn environment(image_env: &[String], command: &reapi::Command) -> Vec<pb::EnvironmentVariable> {
    let own = &command.environment_variables;
    let mut env: Vec<pb::EnvironmentVariable> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(name, _)| !own.iter().any(|v| v.name == *name))
        .map(|(name, value)| pb::EnvironmentVariable {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    env.extend(own.iter().map(|v| pb::EnvironmentVariable {
        name: v.name.clone(),
        value: v.value.clone(),
    }));
    env
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

fn now() -> Timestamp {
    timestamp(SystemTime::now())
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn queued_at(queued_millis: u64) -> Option<Timestamp> {
    SystemTime::now()
        .checked_sub(std::time::Duration::from_millis(queued_millis))
        .map(timestamp)
}

/// Assignment ids come from the scheduler; keep only safe characters for a
/// directory name.
fn sanitize(id: &str) -> String {
    let s: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if s.is_empty() {
        "action".into()
    } else {
        s
    }
}
