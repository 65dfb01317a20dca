//! The Bazel workload: `bazel build //:hello` of the `workspace` fixture
//! on Corral and locally with `linux-sandbox` and
//! `processwrapper-sandbox`, one Bazel server per target.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context};

use super::farm_share::{stored_results, FarmShare};
use super::{
    farm_options, load_average, report, Args, Sample, Series, CORRAL, LINUX_SANDBOX, PROCESSWRAPPER,
};
use crate::bazel::Bazel;
use crate::farm::CorralFarm;

/// One Bazel server building in its own workspace copy with fixed flags.
struct BazelTarget {
    name: &'static str,
    bazel: Bazel,
    flags: Vec<String>,
    /// How Bazel's process summary must name the three spawns.
    kind: &'static str,
}

pub(super) fn bazel_series(args: &Args) -> anyhow::Result<Vec<Series>> {
    let workload = "bazel build //:hello";
    // The farm serves the whole Bazel series: `--remote_accept_cached=false`
    // keeps its action cache out of the way.
    let farm = CorralFarm::start_with(farm_options())?;
    let local = |strategy: &str| {
        vec![
            format!("--spawn_strategy={strategy}"),
            format!("--genrule_strategy={strategy}"),
        ]
    };
    let mut targets = vec![
        BazelTarget {
            name: CORRAL,
            bazel: Bazel::new("workspace")?,
            flags: [
                Bazel::remote_execution_flags(&farm.grpc_url(), &args.bazel_instance),
                vec!["--remote_accept_cached=false".into()],
            ]
            .concat(),
            kind: "remote",
        },
        BazelTarget {
            name: LINUX_SANDBOX,
            bazel: Bazel::new("workspace")?,
            flags: local("linux-sandbox"),
            kind: "linux-sandbox",
        },
        BazelTarget {
            name: PROCESSWRAPPER,
            bazel: Bazel::new("workspace")?,
            flags: local("processwrapper-sandbox"),
            kind: "processwrapper-sandbox",
        },
    ];
    for t in &targets {
        println!(
            "e2e: bazel on {}: bazel build {} //:hello",
            t.name,
            t.flags.join(" ")
        );
        // Starts the Bazel server and fills its external repositories.
        t.bazel
            .build(&["//:hello"], &t.flags)
            .with_context(|| format!("warm-up build on {}", t.name))?;
    }
    let mut series: Vec<Series> = targets
        .iter()
        .map(|t| Series::new(workload, t.name))
        .collect();
    let ac_dir = farm.data_dir().join("server/ac");
    for rep in 1..=args.runs {
        for (t, s) in targets.iter_mut().zip(series.iter_mut()) {
            let sample =
                bazel_build(t, &ac_dir).with_context(|| format!("{workload} on {}", t.name))?;
            report(rep, args.runs, workload, t.name, &sample);
            s.samples.push(sample);
        }
    }
    drop(targets);
    let status = farm.stop()?;
    if !status.success() {
        bail!("corral up exited with {status}");
    }
    Ok(series)
}

/// A clean, then a timed build. On the farm the same three actions run
/// every time (their results overwrite the last ones), so the results
/// completed after the start are this build's.
fn bazel_build(t: &BazelTarget, ac_dir: &Path) -> anyhow::Result<Sample> {
    t.bazel.clean()?;
    let load = load_average();
    let since = SystemTime::now();
    let started = std::time::Instant::now();
    let run = t.bazel.build(&["//:hello"], &t.flags)?;
    let wall = started.elapsed();
    let summary = run
        .processes()
        .with_context(|| format!("no process summary:\n{}", run.stderr))?;
    let ran = summary.count(t.kind) as usize;
    if ran < 3 || summary.count("remote cache hit") > 0 {
        bail!(
            "expected 3 spawns run by {} and no cache hit, got {summary:?}:\n{}",
            t.kind,
            run.stderr
        );
    }
    let remote = t.kind == "remote";
    Ok(Sample {
        wall,
        executed: remote.then_some(ran),
        load,
        farm: remote.then(|| {
            let stored = stored_results(ac_dir);
            FarmShare::of(stored.iter().map(|(_, r)| r), since)
        }),
    })
}
