//! The run plan `runner exec --action` reproduces: the one the farm's
//! worker recorded with the action's result when there is such a record,
//! else the plan a farm with the default configuration would make, then
//! with the command line's overrides.
//!
//! The plan says where it came from on stderr when stderr is a terminal;
//! when it is not (a script comparing the reproduction's output with the
//! farm's), the stream holds exactly the action's stderr and the note goes
//! to the log (`RUST_LOG=info`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use corral_proto::reapi;
use corral_proto::worker::v1::Assignment;
use corral_runner::Limits;
use corral_scheduler::{RootfsChoice, SchedulerConfig};
use corral_worker::plan::{PlannedRootfs, RunPlan};

use super::recorded::Lookup;

/// What the command line changes in the plan.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub rootfs: Option<RootfsChoice>,
    pub hostname: Option<String>,
    /// Empty: keep the plan's.
    pub profile: String,
    /// Set limits replace the plan's.
    pub limits: Limits,
}

/// The plan for `action` from what the action cache said, for `instance`.
pub fn plan(
    lookup: Lookup,
    instance: &str,
    action: &reapi::Action,
    command: &reapi::Command,
) -> anyhow::Result<RunPlan> {
    let why = match lookup {
        Lookup::Found { plan, worker } => {
            let plan = RunPlan::from_record(&plan)?;
            note(format!(
                "reproducing the run of worker {worker} as it recorded it: {plan}"
            ));
            return Ok(plan);
        }
        Lookup::NotCached => "the farm's action cache holds no result for this action \
                              (it keeps only successful ones)"
            .to_string(),
        Lookup::NoRecord => "the action's result in the farm's action cache carries no run \
                             plan (its worker predates the record, or a client wrote it)"
            .to_string(),
        Lookup::Failed(reason) => format!("the farm's action cache could not be asked ({reason})"),
    };
    let plan = RunPlan::for_assignment(&default_assignment(instance, action, command)?, "")?;
    note(format!(
        "{why}, so nothing says how the farm ran it; assuming a farm with the default \
         configuration: {plan}"
    ));
    Ok(plan)
}

/// The assignment a scheduler with the default configuration would send.
fn default_assignment(
    instance: &str,
    action: &reapi::Action,
    command: &reapi::Command,
) -> anyhow::Result<Assignment> {
    let config = SchedulerConfig::default();
    let requested = match &action.timeout {
        None => None,
        Some(t) if t.seconds < 0 || t.nanos < 0 => bail!("the action's timeout is negative"),
        Some(t) => Some(Duration::new(
            t.seconds.unsigned_abs(),
            t.nanos.unsigned_abs(),
        )),
    };
    Ok(Assignment {
        instance_name: instance.to_string(),
        action: Some(action.clone()),
        command: Some(command.clone()),
        timeout_millis: u64::try_from(config.effective_timeout(requested).as_millis())
            .unwrap_or(u64::MAX),
        rootfs: config.rootfs_for(instance).to_wire() as i32,
        hostname: config.hostname_for(instance).to_string(),
        ..Default::default()
    })
}

/// Applies the command line's choices.
pub fn apply(plan: &mut RunPlan, o: &Overrides) {
    if let Some(choice) = o.rootfs {
        if let Some(image) = plan.image_to_pull() {
            eprintln!(
                "corral: the action ran on image {image}; running it on the --rootfs you chose \
                 instead"
            );
        }
        plan.rootfs = match choice {
            RootfsChoice::InputRoot => PlannedRootfs::InputRoot,
            RootfsChoice::Host => PlannedRootfs::Host,
        };
    }
    if let Some(name) = &o.hostname {
        plan.hostname = name.clone();
    }
    if !o.profile.is_empty() {
        plan.profile = o.profile.clone();
    }
    let limits = &mut plan.limits;
    if let Some(t) = o.limits.timeout {
        limits.timeout_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
    }
    let fields = [
        (&mut limits.memory_bytes, o.limits.memory_bytes),
        (&mut limits.max_pids, o.limits.max_pids),
        (&mut limits.cpu_millis, o.limits.cpu_millis),
        (&mut limits.max_written_bytes, o.limits.max_written_bytes),
    ];
    for (field, given) in fields {
        if let Some(v) = given {
            *field = v;
        }
    }
}

/// Says something about the reproduction: on stderr when a person reads
/// it, in the log otherwise (see the module comment).
pub fn note(message: impl std::fmt::Display) {
    if std::io::stderr().is_terminal() {
        eprintln!("corral: {message}");
    } else {
        tracing::info!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::worker::v1 as wire;

    fn action(timeout: Option<i64>) -> reapi::Action {
        reapi::Action {
            timeout: timeout.map(|seconds| corral_proto::protobuf::Duration { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    fn command() -> reapi::Command {
        reapi::Command {
            arguments: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_record_wins_over_any_default() {
        let record = wire::RunPlan {
            rootfs: wire::RootfsMode::InputRoot as i32,
            hostname: "farmhost".into(),
            limits: Some(corral_proto::runner::v1::Limits {
                timeout_ms: 2_500,
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = Lookup::Found {
            plan: Box::new(record),
            worker: "w".into(),
        };
        let plan = plan(found, "main", &action(Some(60)), &command()).unwrap();
        assert_eq!(plan.rootfs, PlannedRootfs::InputRoot);
        assert_eq!(plan.hostname, "farmhost");
        assert_eq!(plan.limits.timeout_ms, 2_500);
    }

    #[test]
    fn without_a_record_a_default_farm_is_assumed() {
        let config = SchedulerConfig::default();
        let plan = plan(Lookup::NotCached, "buildstream", &action(None), &command()).unwrap();
        assert_eq!(plan.rootfs, PlannedRootfs::InputRoot);
        assert_eq!(plan.hostname, config.hostname_for("buildstream"));
        assert_eq!(
            u128::from(plan.limits.timeout_ms),
            config.effective_timeout(None).as_millis()
        );
        let plan = plan_for_main(Some(60));
        assert_eq!(plan.rootfs, PlannedRootfs::Host);
        assert_eq!(plan.limits.timeout_ms, 60_000);
        assert!(super::plan(Lookup::NoRecord, "main", &action(Some(-1)), &command()).is_err());
    }

    fn plan_for_main(timeout: Option<i64>) -> RunPlan {
        plan(
            Lookup::Failed("unreachable".into()),
            "main",
            &action(timeout),
            &command(),
        )
        .unwrap()
    }

    #[test]
    fn the_command_line_overrides_what_it_names() {
        let mut p = plan_for_main(Some(60));
        apply(
            &mut p,
            &Overrides {
                rootfs: Some(RootfsChoice::InputRoot),
                hostname: Some("mine".into()),
                profile: String::new(),
                limits: Limits {
                    timeout: Some(Duration::from_secs(2)),
                    memory_bytes: Some(1 << 20),
                    ..Default::default()
                },
            },
        );
        assert_eq!(p.rootfs, PlannedRootfs::InputRoot);
        assert_eq!(p.hostname, "mine");
        assert_eq!(p.limits.timeout_ms, 2_000);
        assert_eq!(p.limits.memory_bytes, 1 << 20);
        assert_eq!(p.limits.max_pids, 0);
        assert_eq!(p.profile, "");
    }
}
