//! The run plan: every decision that turns an assignment into the runner's
//! `RunRequest`, made in this one place.
//!
//! Two programs need the same translation: the worker, for each
//! assignment, and `corral runner exec --action`, which runs an action
//! again on a developer's machine. When each had its own copy they
//! drifted (the reproduction used a default farm's rootfs and timeout, and
//! refused images), so a reproduction was not the run it claimed to be.
//! Now both build a [`RunPlan`], and the worker records the plan it used
//! in the result ([`RunPlan::record`], the `corral.worker.v1.RunPlan`
//! message), from which the reproduction rebuilds it
//! ([`RunPlan::from_record`]).
//!
//! A plan holds what the farm decided (rootfs, image, hostname, limits,
//! profile, ids, network); [`RunPlan::request`] adds what the Command says
//! and the host paths of one run ([`RunSite`]).

use std::fmt;
use std::path::{Path, PathBuf};

use corral_proto::reapi;
use corral_proto::runner::v1 as pb;
use corral_proto::worker::v1::{self as wire, Assignment, ResolvedImage, RootfsMode};

use crate::error::{Error, Result};
use crate::images::PROPERTY as IMAGE_PROPERTY;
use crate::paths;
use crate::platform::{id_property, property};

/// The type URL of a plan's record in `auxiliary_metadata`.
pub const RECORD_TYPE_URL: &str = "type.googleapis.com/corral.worker.v1.RunPlan";

/// What forms the sandbox's `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedRootfs {
    /// The staged input root itself (BuildStream).
    InputRoot,
    /// The host's system directories, the input root at the exec path.
    Host,
    /// An OCI image's layers, the input root at the exec path.
    Image {
        /// The `container-image` value as the client wrote it.
        requested: String,
        /// What it resolved to, once pulled (or as a record says).
        resolved: Option<ResolvedImage>,
    },
}

/// The sandbox a farm chose for one action, without host paths.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    /// What the container's `/` is.
    pub rootfs: PlannedRootfs,
    /// The sandbox's hostname; empty = the runner's default.
    pub hostname: String,
    /// `timeout_ms` is the assignment's deadline; 0 elsewhere = the
    /// runner's default.
    pub limits: pb::Limits,
    /// Sandbox profile; empty = the runner's default.
    pub profile: String,
    /// Ids of the command inside the sandbox.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Share the host network.
    pub network: bool,
}

/// Where one run's files are on this host: what a plan cannot know.
#[derive(Clone, Debug, Default)]
pub struct RunSite {
    /// The staged input root.
    pub input_root: PathBuf,
    /// The empty directory the runner lays the run out in.
    pub scratch_dir: PathBuf,
    /// Files for the command's stdout and stderr (None = the runner's
    /// choice: discard, or for `runner exec`, this process's).
    pub stdout: Option<PathBuf>,
    /// See `stdout`.
    pub stderr: Option<PathBuf>,
    /// The pulled image's layer directories, lowest first, and its `Env`.
    pub layer_dirs: Vec<PathBuf>,
    /// See `layer_dirs`.
    pub image_env: Vec<String>,
    /// `SubtreeReadOnly` regions of the staged tree and the writable
    /// exceptions inside them.
    pub read_only_subtrees: Vec<String>,
    /// See `read_only_subtrees`.
    pub writable_subtrees: Vec<String>,
}

impl RunPlan {
    /// The plan for an assignment: the image the action names, else the
    /// rootfs the scheduler chose; the scheduler's hostname and deadline;
    /// `unixUID`/`unixGID`; the worker's `profile`.
    pub fn for_assignment(a: &Assignment, profile: &str) -> Result<RunPlan> {
        let (action, command) = action_and_command(a)?;
        let rootfs = match property(action, command, IMAGE_PROPERTY).filter(|v| !v.is_empty()) {
            Some(requested) => PlannedRootfs::Image {
                requested: requested.to_string(),
                resolved: None,
            },
            None => match RootfsMode::try_from(a.rootfs) {
                Ok(RootfsMode::InputRoot) => PlannedRootfs::InputRoot,
                _ => PlannedRootfs::Host,
            },
        };
        Ok(RunPlan {
            rootfs,
            hostname: a.hostname.clone(),
            limits: pb::Limits {
                timeout_ms: a.timeout_millis,
                ..Default::default()
            },
            profile: profile.to_string(),
            uid: id_property(action, command, "unixUID")?,
            gid: id_property(action, command, "unixGID")?,
            network: false,
        })
    }

    /// The plan a worker recorded. An image is pinned to the digest that
    /// ran; a record whose image has no pinned reference is refused.
    pub fn from_record(record: &wire::RunPlan) -> Result<RunPlan> {
        let rootfs = match &record.image {
            Some(image) if image.reference.is_empty() => {
                return Err(Error::invalid(
                    "run plan image.reference",
                    "is empty: the record does not say which image ran",
                ))
            }
            Some(image) => PlannedRootfs::Image {
                requested: image.requested.clone(),
                resolved: Some(image.clone()),
            },
            None => match RootfsMode::try_from(record.rootfs) {
                Ok(RootfsMode::InputRoot) => PlannedRootfs::InputRoot,
                _ => PlannedRootfs::Host,
            },
        };
        Ok(RunPlan {
            rootfs,
            hostname: record.hostname.clone(),
            limits: record.limits.unwrap_or_default(),
            profile: record.profile.clone(),
            uid: record.uid,
            gid: record.gid,
            network: record.network,
        })
    }

    /// The record of this plan, for the result's auxiliary metadata.
    pub fn record(&self) -> wire::RunPlan {
        let (rootfs, image) = match &self.rootfs {
            PlannedRootfs::InputRoot => (RootfsMode::InputRoot, None),
            PlannedRootfs::Host => (RootfsMode::Host, None),
            PlannedRootfs::Image {
                requested,
                resolved,
            } => (
                RootfsMode::Unspecified,
                Some(resolved.clone().unwrap_or_else(|| ResolvedImage {
                    requested: requested.clone(),
                    ..Default::default()
                })),
            ),
        };
        wire::RunPlan {
            rootfs: rootfs as i32,
            image,
            hostname: self.hostname.clone(),
            limits: Some(self.limits),
            profile: self.profile.clone(),
            uid: self.uid,
            gid: self.gid,
            network: self.network,
        }
    }

    /// The image reference to pull: the pinned one when the plan knows
    /// what ran, else the value the client wrote. None without an image.
    pub fn image_to_pull(&self) -> Option<&str> {
        match &self.rootfs {
            PlannedRootfs::Image {
                resolved: Some(r), ..
            } => Some(&r.reference),
            PlannedRootfs::Image { requested, .. } => Some(requested),
            _ => None,
        }
    }

    /// Records what the image resolved to once it is pulled.
    pub fn pin_image(&mut self, image: ResolvedImage) {
        if let PlannedRootfs::Image { resolved, .. } = &mut self.rootfs {
            *resolved = Some(image);
        }
    }

    /// The runner's request for `command` at `site`.
    pub fn request(&self, command: &reapi::Command, site: &RunSite) -> Result<pb::RunRequest> {
        use pb::run_request::Rootfs;
        let rootfs = match &self.rootfs {
            PlannedRootfs::InputRoot => Rootfs::InputRootAsRoot(pb::InputRootAsRoot {}),
            PlannedRootfs::Host => Rootfs::Host(pb::HostRoot {}),
            PlannedRootfs::Image { requested, .. } if site.layer_dirs.is_empty() => {
                return Err(Error::Internal(format!(
                    "the image {requested} was not pulled before the run"
                )))
            }
            PlannedRootfs::Image { .. } => Rootfs::Lower(pb::LowerDirs {
                dirs: site.layer_dirs.iter().map(|d| display(d)).collect(),
            }),
        };
        if command.arguments.is_empty() {
            return Err(Error::invalid("command.arguments", "is empty"));
        }
        Ok(pb::RunRequest {
            input_root: display(&site.input_root),
            scratch_dir: display(&site.scratch_dir),
            rootfs: Some(rootfs),
            arguments: command.arguments.clone(),
            environment: environment(&site.image_env, command),
            working_directory: paths::working_directory(&command.working_directory)?.join("/"),
            stdout_path: site.stdout.as_deref().map(display).unwrap_or_default(),
            stderr_path: site.stderr.as_deref().map(display).unwrap_or_default(),
            profile: self.profile.clone(),
            network: self.network,
            limits: Some(self.limits),
            uid: self.uid,
            gid: self.gid,
            read_only_subtrees: site.read_only_subtrees.clone(),
            writable_subtrees: site.writable_subtrees.clone(),
            hostname: self.hostname.clone(),
        })
    }
}

/// One line for people: `rootfs host, hostname corral, timeout 60 s, …`.
impl fmt::Display for RunPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rootfs {
            PlannedRootfs::InputRoot => write!(f, "rootfs input-root")?,
            PlannedRootfs::Host => write!(f, "rootfs host")?,
            PlannedRootfs::Image {
                resolved: Some(r), ..
            } => write!(f, "image {}", r.reference)?,
            PlannedRootfs::Image { requested, .. } => write!(f, "image {requested}")?,
        }
        let hostname = match self.hostname.as_str() {
            "" => corral_proto::hostname::DEFAULT,
            name => name,
        };
        write!(f, ", hostname {hostname}")?;
        match self.limits.timeout_ms {
            0 => write!(f, ", the runner's default timeout")?,
            ms => write!(f, ", timeout {}", humane_millis(ms))?,
        }
        if !self.profile.is_empty() {
            write!(f, ", profile {}", self.profile)?;
        }
        if (self.uid, self.gid) != (0, 0) {
            write!(f, ", uid {} gid {}", self.uid, self.gid)?;
        }
        Ok(())
    }
}

fn humane_millis(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The Action and Command of an assignment, which the scheduler always
/// sends; their absence is a malformed assignment.
pub fn action_and_command(a: &Assignment) -> Result<(&reapi::Action, &reapi::Command)> {
    let action = a
        .action
        .as_ref()
        .ok_or_else(|| Error::invalid("action", "is missing"))?;
    let command = a
        .command
        .as_ref()
        .ok_or_else(|| Error::invalid("command", "is missing"))?;
    Ok((action, command))
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

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
