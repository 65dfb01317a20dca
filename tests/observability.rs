//! Seeing a real farm (`corral up`) after real work: its `/metrics`
//! passes `promtool check metrics` and its counts move as actions run and
//! hit the cache; its pages, on the gRPC port, show the worker, a failed
//! action reached through the link in its ExecuteResponse (stderr, the
//! `corral runner exec` line) and the CAS, in headless Chromium, with a
//! hostile file name escaped in the DOM; an admin POST without its
//! confirmation does nothing. Screenshots land in
//! `$CARGO_TARGET_TMPDIR/observability/` for people to look at.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod observability_support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use corral_integration::farm::CorralFarm;
use corral_integration::remote::{command, BusyboxRoot, RemoteExec};
use corral_proto::reapi;
use observability_support::{chromium, first_line, http, shots, value};

const APPLETS: &[&str] = &["sh", "cat", "echo", "true"];
const HOSTILE: &str = "<script>alert(1)<script>.txt";

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian `prometheus`; bash integration/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `corral_…` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("corral_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every metric family the farm exposes is in docs/observability.md, and
/// every metric the example dashboard queries is exposed.
fn documented_and_dashboarded(scrape: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/observability.md")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("docs/grafana/corral.json")).unwrap();
    let families: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 30, "{families:?}");
    for family in families {
        assert!(
            docs.contains(&format!("`{family}`")),
            "{family} is not in docs/observability.md"
        );
    }
    for name in metric_names(&dashboard) {
        let base = name.trim_end_matches("_bucket");
        assert!(
            scrape.contains(base),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}

#[test]
fn http_on_a_listener_of_its_own_and_json_logs() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("server.toml");
    std::fs::write(
        &config,
        "execution = false\n[http]\nlisten = \"127.0.0.1:0\"\non_grpc_port = false\n",
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "--log-format",
            "json",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every log line is a JSON object; the HTTP listener names its port.
    let http_addr: SocketAddr = first_line(server.stderr.take().unwrap(), |line| {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
        assert!(line.contains("\"level\":"), "{line}");
        let (_, rest) = line.split_once("\"bound\":\"")?;
        rest.split('"').next()?.parse().ok()
    });
    let grpc_addr: SocketAddr = first_line(server.stdout.take().unwrap(), |line| {
        line.strip_prefix("corral server listening on http://")?
            .parse()
            .ok()
    });
    let (status, metrics) = http(http_addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(metrics.contains("corral_cas_lookups_total"), "{metrics}");
    let (status, ready) = http(http_addr, "GET", "/readyz", None);
    assert_eq!((status, ready.as_str()), (200, "storage: ok\nready\n"));
    // Off the gRPC port, as configured.
    assert_eq!(http(grpc_addr, "GET", "/metrics", None).0, 404);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_real_farm_is_seen_through_metrics_and_pages() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let addr = farm.addr();
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&farm.url(), "buildstream"))?;
    let root = BusyboxRoot::with_applets(APPLETS)?.with_file(
        &format!("data/{HOSTILE}"),
        "<script>alert('content')</script>\n",
        false,
    )?;
    rt.block_on(client.upload(&root.blobs))?;
    let run = |cmd: reapi::Command, skip_cache: bool| {
        let action = rt.block_on(client.upload_action(root.root, cmd, Vec::new(), false, None))?;
        rt.block_on(client.execute(action, skip_cache))
            .map(|r| (action, r))
    };
    let env = [("PATH", "/bin")];
    let ok = command(["sh", "-c", "echo fine"], &env);
    let bad = command(
        ["sh", "-c", "echo 'to stderr <b>bold</b>' >&2; exit 3"],
        &env,
    );

    let (_, first) = run(ok.clone(), false)?;
    assert_eq!(first.result.unwrap().exit_code, 0);
    let (bad_action, failed) = run(bad, true)?;
    assert_eq!(failed.result.as_ref().unwrap().exit_code, 3);
    let (status, before) = http(addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    promtool_check(&before);
    let executed = "corral_scheduler_actions_total{outcome=\"ok\"}";
    assert_eq!(value(&before, executed), 1.0, "{before}");
    assert_eq!(
        value(
            &before,
            "corral_scheduler_actions_total{outcome=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &before,
            "corral_worker_phase_seconds_count{phase=\"execution\"}"
        ),
        2.0
    );
    assert!(
        value(
            &before,
            "corral_worker_local_cas_lookups_total{result=\"miss\"}"
        ) > 0.0
    );
    assert!(value(&before, "corral_worker_fetched_bytes_total") > 0.0);
    assert!(value(&before, "corral_worker_uploaded_bytes_total") > 0.0);
    assert!(value(&before, "corral_cas_stored_bytes_total") > 0.0);
    assert_eq!(
        value(&before, "corral_action_cache_updates_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&before, "corral_scheduler_workers{state=\"idle\"}"),
        1.0
    );
    let execute_ok = "corral_grpc_server_handled_total{service=\"build.bazel.remote.execution.v2.Execution\",method=\"Execute\",code=\"OK\"}";
    assert_eq!(value(&before, execute_ok), 2.0, "{before}");

    // The same action again is a cache hit: the counts move accordingly.
    let (_, cached) = run(ok, false)?;
    assert!(cached.cached_result);
    let (_, after) = http(addr, "GET", "/metrics", None);
    promtool_check(&after);
    assert_eq!(
        value(&after, "corral_scheduler_actions_total{outcome=\"cached\"}"),
        1.0
    );
    assert_eq!(value(&after, executed), 1.0, "nothing new ran");
    let hits = "corral_action_cache_lookups_total{result=\"hit\"}";
    assert_eq!(value(&after, hits), value(&before, hits) + 1.0);
    assert_eq!(value(&after, execute_ok), 3.0);
    documented_and_dashboarded(&after);

    // The farm page lists the worker.
    let (status, farm_page) = http(addr, "GET", "/", None);
    assert_eq!(status, 200);
    let worker = farm_page
        .split("<td class=\"name\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("a worker row")
        .to_string();
    let dir = shots("observability");
    let dom = chromium(&format!("http://{addr}/"), &dir.join("farm.png"));
    assert!(
        dom.contains(&format!("<td class=\"name\">{worker}</td>")),
        "{dom}"
    );
    assert!(dom.contains("idle"));

    // The failed action's page, through the link in its response.
    let (_, link) = failed.message.rsplit_once("Corral: ").expect("a link");
    let dom = chromium(link, &dir.join("failed-action.png"));
    assert!(dom.contains("to stderr &lt;b&gt;bold&lt;/b&gt;"), "{dom}");
    let line = format!(
        "corral runner exec --action {}/{} --remote http://{addr} --instance buildstream",
        bad_action.hash_hex(),
        bad_action.size()
    );
    assert!(dom.contains(&line), "no `{line}` in {dom}");
    assert!(dom.contains("id=\"exit-code\">3<"), "{dom}");
    // Its input root, as a tree, with the hostile name escaped.
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;script&gt;.txt"),
        "{dom}"
    );
    assert!(
        !dom.to_lowercase().contains("<script"),
        "script in the DOM: {dom}"
    );

    // The CAS page of the input root Directory shows its tree.
    let root_url = format!(
        "http://{addr}/blob/sha256/{}/{}?instance=buildstream&view=directory",
        root.root.hash_hex(),
        root.root.size()
    );
    let dom = chromium(&root_url, &dir.join("input-root.png"));
    for entry in [
        "bin/",
        "sh",
        "data/",
        "&lt;script&gt;alert(1)&lt;script&gt;.txt",
    ] {
        assert!(dom.contains(entry), "no {entry} in {dom}");
    }
    assert!(
        !dom.to_lowercase().contains("<script"),
        "script in the DOM: {dom}"
    );

    // An admin POST without its confirmation does nothing.
    let (status, question) = http(
        addr,
        "POST",
        "/admin/drain",
        Some(&format!("target={worker}")),
    );
    assert_eq!(status, 200);
    assert!(question.contains("Nothing has been done yet"), "{question}");
    let (_, farm_page) = http(addr, "GET", "/", None);
    assert!(!farm_page.contains("drained by an operator"));
    assert!(farm_page.contains("action=\"/admin/drain\""));

    let status = farm.stop()?;
    assert!(status.success(), "corral up exited with {status}");
    Ok(())
}
