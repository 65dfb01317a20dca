//! The farm seen after real Bazel 4.2.3 builds with remote execution on
//! `corral up`: `/metrics` moves as the builds say they should (RPCs per
//! method, executed actions by outcome, queue and execution histograms,
//! action-cache and CAS hits and misses, worker phases); the action page
//! linked from Bazel's own output for a failing genrule shows its command,
//! exit code and stderr in headless Chromium; and in Chromium driven
//! through chromedriver, an operator clicks Drain on the farm page,
//! confirms, sees the worker drained, and undrains it the same way.
//! Screenshots land in `$CARGO_TARGET_TMPDIR/observability-bazel/`.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod observability_support;

use corral_integration::bazel::Bazel;
use corral_integration::farm::CorralFarm;
use observability_support::{chromium, http, shots, value, webdriver::Browser};

fn remote_flags(farm: &CorralFarm) -> Vec<String> {
    Bazel::remote_execution_flags(&farm.grpc_url(), "main")
}

/// A scrape of the farm's `/metrics`.
fn scrape(farm: &CorralFarm) -> String {
    let (status, text) = http(farm.addr(), "GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    text
}

const EXECUTION: &str = "build.bazel.remote.execution.v2.Execution";
const CAS: &str = "build.bazel.remote.execution.v2.ContentAddressableStorage";
const AC: &str = "build.bazel.remote.execution.v2.ActionCache";

fn handled(service: &str, method: &str) -> String {
    format!(
        "corral_grpc_server_handled_total{{service=\"{service}\",method=\"{method}\",code=\"OK\"}}"
    )
}

fn rpc_seconds_count(service: &str, method: &str) -> String {
    format!(
        "corral_grpc_server_handling_seconds_count{{service=\"{service}\",method=\"{method}\"}}"
    )
}

/// How much `series` grew from `before` to `after`.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    value(after, series) - value(before, series)
}

#[test]
fn a_bazel_build_moves_the_metrics_as_it_should() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let bazel = Bazel::new("workspace")?;
    let flags = remote_flags(&farm);

    let before = scrape(&farm);
    let first = bazel.build(&["//:hello"], &flags)?;
    let after = scrape(&farm);
    let summary = first.processes().expect("no process summary");
    let remote = summary.count("remote") as f64;
    assert!(remote >= 3.0, "{summary:?}\n{}", first.stderr);
    let d = |series: &str| delta(&before, &after, series);

    // Every remote process was one Execute and one executed action.
    assert_eq!(d(&handled(EXECUTION, "Execute")), remote, "{after}");
    assert_eq!(d(&rpc_seconds_count(EXECUTION, "Execute")), remote);
    assert_eq!(
        d("corral_scheduler_actions_total{outcome=\"ok\"}"),
        remote,
        "{after}"
    );
    assert_eq!(d("corral_scheduler_actions_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(d("corral_scheduler_actions_total{outcome=\"cached\"}"), 0.0);
    assert_eq!(d("corral_scheduler_queue_seconds_count"), remote);
    assert_eq!(d("corral_scheduler_execution_seconds_count"), remote);
    // The worker ran each one through its phases.
    for phase in ["input_fetch", "execution", "output"] {
        let series = format!("corral_worker_phase_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(d(&series), remote, "{series} in {after}");
    }
    assert_eq!(d("corral_worker_actions_total{result=\"ok\"}"), remote);
    assert!(d("corral_worker_uploaded_bytes_total") > 0.0);
    // Bazel uploaded its inputs after FindMissingBlobs found them missing,
    // and the action cache missed every action before it ran (the
    // scheduler's lookup of each Execute).
    assert!(d(&handled(CAS, "FindMissingBlobs")) >= 1.0, "{after}");
    assert!(
        d("corral_cas_lookups_total{op=\"find_missing\",result=\"miss\"}") >= 1.0,
        "{after}"
    );
    assert!(d("corral_cas_find_missing_batch_size_count") >= 1.0);
    assert!(d("corral_cas_stored_bytes_total") > 0.0);
    assert!(
        d("corral_action_cache_lookups_total{result=\"miss\"}") >= remote,
        "{after}"
    );
    assert_eq!(d("corral_action_cache_lookups_total{result=\"hit\"}"), 0.0);
    assert_eq!(
        d("corral_action_cache_updates_total{result=\"ok\"}"),
        remote
    );
    assert_eq!(
        value(&after, "corral_scheduler_workers{state=\"idle\"}"),
        1.0
    );
    assert_eq!(value(&after, "corral_scheduler_queue_length"), 0.0);

    // After `bazel clean` every action is a remote cache hit: the action
    // cache's hits move, nothing executes, and Bazel reads the outputs.
    bazel.clean()?;
    let cached = bazel.build(&["//:hello"], &flags)?;
    let again = scrape(&farm);
    let hits = cached
        .processes()
        .expect("no process summary")
        .count("remote cache hit") as f64;
    assert!(hits >= 3.0, "{}", cached.stderr);
    let d = |series: &str| delta(&after, &again, series);
    assert!(
        d("corral_action_cache_lookups_total{result=\"hit\"}") >= hits,
        "{again}"
    );
    assert!(d(&handled(AC, "GetActionResult")) >= hits, "{again}");
    assert_eq!(d("corral_scheduler_actions_total{outcome=\"ok\"}"), 0.0);
    assert_eq!(d("corral_scheduler_queue_seconds_count"), 0.0);
    assert_eq!(
        d("corral_worker_phase_seconds_count{phase=\"execution\"}"),
        0.0
    );
    let reads = d("corral_cas_lookups_total{op=\"read\",result=\"hit\"}")
        + d("corral_cas_lookups_total{op=\"get\",result=\"hit\"}");
    assert!(reads >= 1.0, "Bazel read the cached outputs: {again}");

    drop(bazel);
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

#[test]
fn a_failed_bazel_action_is_one_click_away_and_a_worker_is_drained_in_chromium(
) -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let bazel = Bazel::new("workspace")?;
    let mut args = Bazel::offline_flags();
    args.extend(remote_flags(&farm));
    args.push("//:fails".into());
    let failed = bazel.run("build", &args)?;
    assert!(!failed.success, "the failing genrule built");
    let output = format!("{}\n{}", failed.stdout, failed.stderr);
    // Bazel prints the ExecuteResponse's message, which ends with the link.
    let link = output
        .split("Corral: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no action page link in Bazel's output:\n{output}"))
        .to_string();
    assert!(
        link.starts_with(&format!("{}/action/", farm.url())),
        "{link}"
    );
    let dir = shots("observability-bazel");
    let dom = chromium(&link, &dir.join("failed-bazel-action.png"));
    assert!(dom.contains("corral-bazel-failure-marker"), "{dom}");
    assert!(dom.contains("id=\"exit-code\">7<"), "no exit code 7: {dom}");
    // The genrule's command, as Bazel sent it (escaped in the DOM).
    assert!(
        dom.contains("echo corral-bazel-failure-marker &gt;&amp;2; exit 7"),
        "no failing command in {dom}"
    );
    drop(bazel);

    drain_and_undrain(&farm, &dir)?;
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// Drives Chromium through chromedriver: Drain on the farm page, the
/// confirmation, the worker shown drained (and its metric), then Undrain.
fn drain_and_undrain(farm: &CorralFarm, dir: &std::path::Path) -> anyhow::Result<()> {
    let browser = Browser::start()?;
    let farm_url = format!("{}/", farm.url());
    browser.open(&farm_url)?;
    let state = browser.text("#workers tr.worker td.state")?;
    assert_eq!(state, "idle");
    browser.click("#workers form[action='/admin/drain'] button")?;
    let question = browser.text("#confirm-question")?;
    assert!(question.contains("Nothing has been done yet"), "{question}");
    assert_eq!(browser.url()?, format!("{farm_url}admin/drain"));
    browser.click("#confirm")?;
    // The confirmed POST redirects to the farm page.
    browser.wait_for_url(&farm_url)?;
    assert_eq!(
        browser.text("#workers tr.worker td.state")?,
        "drained by an operator"
    );
    std::fs::write(dir.join("farm-drained.png"), browser.screenshot()?)?;
    let metrics = scrape(farm);
    assert_eq!(
        value(&metrics, "corral_scheduler_workers{state=\"draining\"}"),
        1.0,
        "{metrics}"
    );

    browser.click("#workers form[action='/admin/undrain'] button")?;
    assert!(browser.text("#confirm-question")?.contains("Undrain"));
    browser.click("#confirm")?;
    browser.wait_for_url(&farm_url)?;
    assert_eq!(browser.text("#workers tr.worker td.state")?, "idle");
    std::fs::write(dir.join("farm-undrained.png"), browser.screenshot()?)?;
    Ok(())
}
