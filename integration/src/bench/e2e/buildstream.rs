//! The BuildStream workloads: `bst build` of `hello.bst` and of the
//! element this harness adds, on Corral, on buildbox-casd's execution
//! service and in bst's local sandbox, each build in a fresh bst state.

use std::time::SystemTime;

use anyhow::{bail, Context};
use corral_proto::reapi;

use super::farm_share::{casd_results, completed_since, stored_results, FarmShare};
use super::{farm_options, load_average, report, Args, Sample, Series, BST_LOCAL, CASD, CORRAL};
use crate::buildstream::{self, BstProject, BuildboxCasd, Sandbox};
use crate::farm::CorralFarm;

/// The element this harness adds to the scratch project.
pub const FILES_ELEMENT: &str = "corral-bench-files.bst";

/// Its text: `hello.bst`'s artifact staged under it (a second action after
/// hello's), 200 small files written in `/tmp` and installed.
const FILES_ELEMENT_YAML: &str = "\
kind: manual
description: Written by corral bench e2e. A second action on top of hello.bst, with 200 small outputs.
build-depends:
- base.bst
- hello.bst
config:
  build-commands:
  - test -f /share/hello/greeting
  - mkdir -p /tmp/gen
  - 'for i in $(seq 1 200); do echo \"file $i\" > /tmp/gen/f$i; done'
  install-commands:
  - mkdir -p %{install-root}/share/files
  - cp /tmp/gen/* %{install-root}/share/files/
  - ls %{install-root}/share/files | wc -l > %{install-root}/share/files-count
";

const HELLO_ELEMENT: &str = "hello.bst";

/// The project, the elements timed, and every element file a salt goes
/// into (all those the timed builds run, so none is a cache hit).
struct Workload {
    project: BstProject,
    timed: Vec<&'static str>,
    salted: Vec<(std::path::PathBuf, String)>,
}

impl Workload {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let (project, timed, salted): (_, Vec<&str>, Vec<&str>) = if args.debian {
            let elements = ["greet-lib.bst", "hello-c.bst", "report.bst"];
            (BstProject::debian()?, vec!["report.bst"], elements.to_vec())
        } else if args.hello_only {
            (BstProject::new()?, vec![HELLO_ELEMENT], vec![HELLO_ELEMENT])
        } else {
            let project = BstProject::new()?;
            let files = project.dir().join("elements").join(FILES_ELEMENT);
            std::fs::write(&files, FILES_ELEMENT_YAML).context("writing the second element")?;
            let both = vec![HELLO_ELEMENT, FILES_ELEMENT];
            (project, both.clone(), both)
        };
        let salted = salted
            .into_iter()
            .map(|element| {
                let path = project.dir().join("elements").join(element);
                let yaml = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((path, yaml))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Workload {
            project,
            timed,
            salted,
        })
    }

    /// Writes the elements, salted when the servers stay up: a variable in
    /// the environment changes every Command, so no action is in a server's
    /// cache, while the input roots (and so the staging) stay the same.
    fn write_elements(&self, salt: Option<&str>) -> anyhow::Result<()> {
        for (path, yaml) in &self.salted {
            let text = match salt {
                Some(salt) => format!("{yaml}environment:\n  CORRAL_BENCH_SALT: '{salt}'\n"),
                None => yaml.clone(),
            };
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

pub(super) fn buildstream_series(args: &Args) -> anyhow::Result<Vec<Series>> {
    let workload = Workload::new(args)?;
    let project = &workload.project;
    let elements = &workload.timed;
    let write_elements = |salt: Option<&str>| workload.write_elements(salt);
    let servers = if args.warm {
        let farm = CorralFarm::start_with(farm_options())?;
        let casd = BuildboxCasd::start_with_instance(&args.instance)?;
        // One untimed build per server: the farm's runner, local CAS and
        // staged base root, and casd's CAS, are warm from then on.
        write_elements(Some("warm-up"))?;
        for element in elements {
            for sandbox in [Sandbox::remote(farm.url(), &args.instance), casd.sandbox()] {
                let out = project.session(sandbox)?.build(element)?;
                check_bst(&out, true).context("warm-up build")?;
            }
        }
        Some((farm, casd))
    } else {
        None
    };
    let targets = [CORRAL, CASD, BST_LOCAL];
    let mut series: Vec<Series> = elements
        .iter()
        .flat_map(|e| {
            targets
                .iter()
                .map(move |t| Series::new(&format!("bst build {e}"), t))
        })
        .collect();
    for rep in 1..=args.runs {
        for (e, element) in elements.iter().enumerate() {
            if args.warm {
                // Per element too: the second element builds hello.bst
                // again, which must not be a hit either.
                write_elements(Some(&format!("run {rep} {element}")))?;
            }
            // The actions of this element's Corral build: bst sends the
            // same actions to every server, so buildbox-casd's results for
            // them can be read back after its build.
            let mut actions = Vec::new();
            for (t, target) in targets.iter().enumerate() {
                let warm = servers.as_ref().map(|(farm, casd)| (farm, casd));
                let sample =
                    bst_build(project, element, target, &args.instance, warm, &mut actions)
                        .with_context(|| format!("bst build {element} on {target}, run {rep}"))?;
                let s = &mut series[e * targets.len() + t];
                report(rep, args.runs, &s.workload, target, &sample);
                s.samples.push(sample);
            }
        }
    }
    if let Some((farm, casd)) = servers {
        drop(casd);
        let status = farm.stop()?;
        if !status.success() {
            bail!("corral up exited with {status}");
        }
    }
    write_elements(None)?;
    Ok(series)
}

/// One `bst build ELEMENT` in a fresh session, on the `warm` servers if
/// given, else on a fresh server started (and stopped) for it, outside the
/// timed span. On Corral, `actions` gets the digests of the actions the
/// build ran; on buildbox-casd, the results for them are read back.
fn bst_build(
    project: &BstProject,
    element: &str,
    target: &str,
    instance: &str,
    warm: Option<(&CorralFarm, &BuildboxCasd)>,
    actions: &mut Vec<reapi::Digest>,
) -> anyhow::Result<Sample> {
    match target {
        CORRAL => {
            let fresh = match warm {
                Some(_) => None,
                None => Some(CorralFarm::start_with(farm_options())?),
            };
            let farm = warm
                .map(|(farm, _)| farm)
                .or(fresh.as_ref())
                .context("no farm")?;
            let session = project.session(Sandbox::remote(farm.url(), instance))?;
            let load = load_average();
            let since = SystemTime::now();
            let out = session.build(element)?;
            check_bst(&out, true)?;
            // Every result the farm stored since the start is an action
            // this build ran (on a fresh farm, every result).
            let stored = stored_results(&farm.data_dir().join("server/ac"));
            let recent: Vec<_> = stored
                .into_iter()
                .filter(|(_, r)| completed_since(r, since))
                .collect();
            let share = FarmShare::of(recent.iter().map(|(_, r)| r), since);
            *actions = recent.into_iter().map(|(d, _)| d).collect();
            if let Some(fresh) = fresh {
                drop(session);
                let status = fresh.stop()?;
                if !status.success() {
                    bail!("corral up exited with {status}");
                }
            }
            Ok(Sample {
                wall: out.wall,
                executed: Some(share.actions),
                load,
                farm: Some(share),
            })
        }
        CASD => {
            let fresh = match warm {
                Some(_) => None,
                None => Some(BuildboxCasd::start_with_instance(instance)?),
            };
            let casd = warm
                .map(|(_, casd)| casd)
                .or(fresh.as_ref())
                .context("no casd")?;
            let session = project.session(casd.sandbox())?;
            let before = casd.execute_requests();
            let load = load_average();
            let since = SystemTime::now();
            let out = session.build(element)?;
            check_bst(&out, true)?;
            let results = casd_results(casd, actions)?;
            let share = FarmShare::of(&results, since);
            Ok(Sample {
                wall: out.wall,
                executed: Some(casd.execute_requests() - before),
                load,
                farm: (share.actions > 0).then_some(share),
            })
        }
        _ => {
            let session = project.session(Sandbox::Local)?;
            let load = load_average();
            let out = session.build(element)?;
            check_bst(&out, false)?;
            Ok(Sample {
                wall: out.wall,
                executed: None,
                load,
                farm: None,
            })
        }
    }
}

fn check_bst(out: &buildstream::BstOutput, remote: bool) -> anyhow::Result<()> {
    if !out.success {
        bail!("bst failed ({:?}):\n{}", out.exit_code, out.log);
    }
    if remote && !out.log.contains("Waiting for the remote build to complete") {
        bail!("bst did not build remotely:\n{}", out.log);
    }
    Ok(())
}
