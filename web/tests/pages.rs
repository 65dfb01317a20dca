//! The pages over HTTP on the gRPC port, against a real scheduler driven
//! over gRPC and a simulated worker: a failed action's page (reached by
//! the link in its ExecuteResponse), the CAS views, every bad input with
//! its status, hostile names and contents always escaped, admin actions
//! that ask first, and `/metrics` and health on the same port.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{done, Site, F};
use corral_cas::Digest;
use corral_proto::prost::Message;
use corral_proto::protobuf::{Any, Timestamp};
use corral_proto::reapi;
use corral_proto::runner::v1 as runner;

const CONTENT: &[u8] = b"<script>alert('content')</script>\n";
const NAME: &str = "<script>alert(\"name\")</script>.txt";
const ARG: &str = "echo <script>alert('arg')</script>";
const INSTANCE: &str = "team/<a>";

struct Hostile {
    action: reapi::Digest,
    root: reapi::Digest,
    file: reapi::Digest,
}

/// An action whose file names, arguments and environment hold markup.
async fn hostile(site: &Site) -> Hostile {
    let file = site.put(CONTENT).await;
    let inner = site.put(b"inside\n").await;
    let sub = site
        .put_message(&reapi::Directory {
            files: vec![reapi::FileNode {
                name: "inner.txt".into(),
                digest: Some(inner),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await;
    let root = site
        .put_message(&reapi::Directory {
            files: vec![reapi::FileNode {
                name: NAME.into(),
                digest: Some(file.clone()),
                ..Default::default()
            }],
            directories: vec![reapi::DirectoryNode {
                name: "sub".into(),
                digest: Some(sub),
            }],
            ..Default::default()
        })
        .await;
    let command = site
        .put_message(&reapi::Command {
            arguments: vec!["/bin/sh".into(), "-c".into(), ARG.into()],
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: "X".into(),
                value: "<b>bold</b>".into(),
            }],
            output_paths: vec!["out/<i>.txt".into()],
            ..Default::default()
        })
        .await;
    let action = site
        .put_message(&reapi::Action {
            command_digest: Some(command),
            input_root_digest: Some(root.clone()),
            ..Default::default()
        })
        .await;
    Hostile { action, root, file }
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// What a worker answers for a command that failed and ran out of memory.
async fn failure(site: &Site, file: &reapi::Digest) -> reapi::ExecuteResponse {
    let stdout = site.put(&vec![b'o'; 100 << 10]).await;
    let run = runner::RunResponse {
        exit_code: 1,
        limit_hit: runner::LimitHit::Memory as i32,
        peak_memory_bytes: 5 << 20,
        wall_time_us: 1_500_000,
        ..Default::default()
    };
    reapi::ExecuteResponse {
        result: Some(reapi::ActionResult {
            exit_code: 1,
            stderr_raw: b"boom <script>alert('stderr')</script>".to_vec(),
            stdout_digest: Some(stdout),
            output_files: vec![reapi::OutputFile {
                path: "out/<i>.txt".into(),
                digest: Some(file.clone()),
                ..Default::default()
            }],
            execution_metadata: Some(reapi::ExecutedActionMetadata {
                worker: "w1".into(),
                queued_timestamp: at(1_000),
                worker_start_timestamp: at(1_001),
                input_fetch_start_timestamp: at(1_001),
                input_fetch_completed_timestamp: at(1_002),
                execution_start_timestamp: at(1_002),
                execution_completed_timestamp: at(1_005),
                output_upload_start_timestamp: at(1_005),
                output_upload_completed_timestamp: at(1_006),
                worker_completed_timestamp: at(1_006),
                auxiliary_metadata: vec![Any {
                    type_url: "type.googleapis.com/corral.runner.v1.RunResponse".into(),
                    value: run.encode_to_vec(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn assert_no_markup_from_input(html: &str) {
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "unescaped script in\n{html}");
    assert!(!lower.contains("<b>bold"), "unescaped markup in\n{html}");
    assert!(!lower.contains("<i>.txt"), "unescaped markup in\n{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_action_is_shown_from_its_link_with_everything_escaped() {
    let site = Site::start().await;
    let h = hostile(&site).await;
    let mut w = site.worker("w1").await;
    let mut ops = site.execute(INSTANCE, &h.action, "build-42").await;
    let first = ops.message().await.unwrap().unwrap();
    let a = w.assignment().await;

    // While it runs, the farm page lists the worker with its action.
    let farm = site.get("/").await;
    assert_eq!(farm.status, 200);
    assert!(
        farm.body.contains("<td class=\"name\">w1</td>"),
        "{}",
        farm.body
    );
    assert!(farm.body.contains("executing"), "{}", farm.body);
    assert!(farm.body.contains(&h.action.hash));
    assert!(farm.body.contains("docker://example/&lt;img&gt;"));
    assert!(farm
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));

    w.respond(&a, failure(&site, &h.file).await).await;
    let response = done(ops).await;
    let (_, url) = response
        .message
        .rsplit_once("Corral: ")
        .expect("a link in the message");
    let path = url.strip_prefix(&format!("http://{}", site.addr)).unwrap();
    let page = site.get(path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let html = &page.body;
    assert_no_markup_from_input(html);
    assert!(
        html.contains("boom &lt;script&gt;alert(&#39;stderr&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("id=\"exit-code\">1<"), "{html}");
    let line = format!(
        "corral runner exec --action {}/{} --remote http://{} --instance &#39;team/&lt;a&gt;&#39;",
        h.action.hash, h.action.size_bytes, site.addr
    );
    assert!(
        html.contains(&line),
        "no runner exec line {line} in\n{html}"
    );
    assert!(html.contains("echo &lt;script&gt;alert(&#39;arg&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(
        html.contains("Only the first 64.0 KiB of 100.0 KiB"),
        "{html}"
    );
    assert!(html.contains("memory"), "the limit hit is shown");
    assert!(html.contains("5.0 MiB"), "the peak memory is shown");
    assert!(html.contains("class=\"timeline\""));
    // The input root as a tree, the subdirectory expanded.
    assert!(html.contains("&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;.txt"));
    assert!(html.contains("inner.txt"));

    // The operation's page.
    let op = site.get(&corral_web::links::operation(&first.name)).await;
    assert_eq!(op.status, 200, "{}", op.body);
    assert!(
        op.body.contains("COMPLETED") && op.body.contains("oom"),
        "{}",
        op.body
    );

    // The CAS: the root as a Directory, the hostile file as text and raw.
    let q = corral_web::links::query(INSTANCE);
    let dir = site
        .get(&format!(
            "/blob/sha256/{}/{}?instance={q}&view=directory",
            h.root.hash, h.root.size_bytes
        ))
        .await;
    assert_eq!(dir.status, 200);
    assert!(dir.body.contains("<details open>") && dir.body.contains("inner.txt"));
    assert_no_markup_from_input(&dir.body);
    let file_url = corral_web::links::blob(INSTANCE, F, &h.file, "file", Some(NAME));
    let file = site.get(&file_url).await;
    assert_eq!(file.status, 200);
    assert!(file
        .body
        .contains("&lt;script&gt;alert(&#39;content&#39;)&lt;/script&gt;"));
    assert_no_markup_from_input(&file.body);
    let raw = site
        .get(&corral_web::links::raw(
            INSTANCE,
            &Digest::from_proto(F, &h.file).unwrap(),
            Some(NAME),
        ))
        .await;
    assert_eq!(raw.bytes, CONTENT);
    let disposition = raw.header("content-disposition").unwrap();
    assert_eq!(disposition, "attachment; filename=\"script_.txt\"");

    // The lists.
    let failed = site.get("/executions?outcome=oom").await;
    assert!(failed.body.contains(&h.action.hash), "{}", failed.body);
    let ok = site.get("/executions?outcome=ok").await;
    assert!(!ok.body.contains(&h.action.hash));
    let invocations = site.get("/invocations").await;
    assert!(invocations.body.contains("build-42"));
    let invocation = site.get("/invocation?id=build-42").await;
    assert!(invocation.body.contains(&h.action.hash));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_page_with_the_right_status() {
    let site = Site::start().await;
    let absent = "ab".repeat(32);
    let junk = site.put(b"\xff\xfe not a protobuf message \x00\x01").await;
    let big_text = site.put(&vec![b'x'; 200 << 10]).await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("/action/sha256/zz/1".into(), 400, "digest"),
        (format!("/action/md5/{absent}/1"), 400, "md5"),
        (format!("/action/sha256/{absent}/x"), 400, "not a number"),
        (format!("/action/sha256/{absent}/10"), 404, "not in the CAS"),
        (
            format!("/blob/sha256/{absent}/5?view=directory"),
            404,
            "not in the CAS",
        ),
        (
            format!(
                "/blob/sha256/{}/{}?view=directory",
                junk.hash, junk.size_bytes
            ),
            422,
            "Directory",
        ),
        (
            format!("/blob/sha256/{absent}/{}?view=directory", 1u64 << 32),
            422,
            "limit",
        ),
        (
            format!("/blob/sha256/{}/{}?view=bogus", junk.hash, junk.size_bytes),
            400,
            "bogus",
        ),
        (
            format!(
                "/action/sha256/{}/{}?response=nodash",
                junk.hash, junk.size_bytes
            ),
            422,
            "Action",
        ),
        ("/operation/operations/nope".into(), 404, "nope"),
        ("/executions?outcome=weird".into(), 400, "weird"),
        ("/invocation".into(), 400, "id"),
        ("/no/such/page".into(), 404, "/no/such/page"),
    ];
    for (path, status, says) in cases {
        let answer = site.get(&path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(
            answer.body.contains(says),
            "{path} should say {says:?}: {}",
            answer.body
        );
        assert!(answer.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    // A large text blob is shown in part, never whole.
    let big = site
        .get(&format!(
            "/blob/sha256/{}/{}",
            big_text.hash, big_text.size_bytes
        ))
        .await;
    assert_eq!(big.status, 200);
    assert!(big.body.contains("Only the first 64.0 KiB are shown"));
    assert!(big.body.len() < 80 << 10, "{} bytes", big.body.len());
    // A kept response that is gone.
    let action = site
        .put_message(&reapi::Action {
            command_digest: Some(junk.clone()),
            ..Default::default()
        })
        .await;
    let gone = site
        .get(&format!(
            "/action/sha256/{}/{}?response={absent}-9",
            action.hash, action.size_bytes
        ))
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert!(gone.body.contains("kept ExecuteResponse"), "{}", gone.body);
}

fn token_in(html: &str) -> String {
    let at = html.find("name=\"token\" value=\"").expect("a token field") + 20;
    html[at..at + 64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_ask_first_and_act_only_on_the_signed_confirmation() {
    let site = Site::start().await;
    let _w = site.worker("w1").await;
    let held = |site: &Site| {
        site.scheduler.farm().workers[0].state == corral_scheduler::view::WorkerState::Held
    };
    // A POST without confirmation answers a question and does nothing.
    let ask = site
        .request("POST", "/admin/drain", Some("target=w1"))
        .await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("id=\"confirm-question\""), "{}", ask.body);
    assert!(!held(&site));
    // A forged confirmation (no or a wrong token) does nothing either.
    let forged = "target=w1&confirm=yes&token=".to_string() + &"0".repeat(64);
    let again = site.request("POST", "/admin/drain", Some(&forged)).await;
    assert!(again.body.contains("id=\"confirm-question\""));
    assert!(!held(&site));
    // The confirmation's own form acts.
    let confirmed = format!("target=w1&confirm=yes&token={}", token_in(&ask.body));
    let done = site.request("POST", "/admin/drain", Some(&confirmed)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(held(&site));
    let farm = site.get("/").await;
    assert!(
        farm.body.contains("drained by an operator"),
        "{}",
        farm.body
    );
    assert!(farm.body.contains("action=\"/admin/undrain\""));
    // A drain token does not undrain.
    let wrong = site
        .request("POST", "/admin/undrain", Some(&confirmed))
        .await;
    assert!(wrong.body.contains("id=\"confirm-question\""));
    assert!(held(&site));
    let ask = site
        .request("POST", "/admin/undrain", Some("target=w1"))
        .await;
    let confirmed = format!("target=w1&confirm=yes&token={}", token_in(&ask.body));
    site.request("POST", "/admin/undrain", Some(&confirmed))
        .await;
    assert!(!held(&site));
    // Bad forms and targets.
    assert_eq!(
        site.request("POST", "/admin/explode", Some("target=w1"))
            .await
            .status,
        404
    );
    assert_eq!(
        site.request("POST", "/admin/drain", Some("nothing=1"))
            .await
            .status,
        400
    );
    let ask = site
        .request("POST", "/admin/drain", Some("target=ghost"))
        .await;
    let confirmed = format!("target=ghost&confirm=yes&token={}", token_in(&ask.body));
    assert_eq!(
        site.request("POST", "/admin/drain", Some(&confirmed))
            .await
            .status,
        404
    );
    assert_eq!(site.get("/admin/drain").await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_policy_forbids_admin_actions() {
    let site = Site::start_with(Some(Arc::new(corral_web::NoAdmin))).await;
    let _w = site.worker("w1").await;
    let answer = site
        .request("POST", "/admin/drain", Some("target=w1"))
        .await;
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("turned off"), "{}", answer.body);
}

/// The farm's authorization with `policy`, auditing into the returned log.
fn audited(
    policy: corral_auth::Policy,
) -> (
    Arc<dyn corral_web::AdminPolicy>,
    Arc<corral_auth::MemoryAuditLog>,
) {
    let log = Arc::new(corral_auth::MemoryAuditLog::new());
    let authorization = corral_cas::Authorization::new(
        Arc::new(corral_auth::PolicyHandle::new(policy, None)),
        log.clone(),
        Arc::new(corral_auth::SystemClock::default()),
    );
    (
        Arc::new(corral_web::AuthorizedAdmin::new(authorization)),
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_and_refusals_are_audited() {
    use corral_auth::AuditKind;
    // The local farm: the caller may; the drain is one `admin` line.
    let (admin, log) = audited(corral_auth::Policy::local());
    let site = Site::start_with(Some(admin)).await;
    let _w = site.worker("w1").await;
    let ask = site
        .request("POST", "/admin/drain", Some("target=w1"))
        .await;
    assert!(log.events().is_empty(), "asking is not acting");
    let confirmed = format!("target=w1&confirm=yes&token={}", token_in(&ask.body));
    let done = site.request("POST", "/admin/drain", Some(&confirmed)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let events = log.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, AuditKind::Admin);
    assert!(
        events[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("drain \"w1\""),
        "{events:?}"
    );

    // A policy that gives an unauthenticated caller nothing: refused, and
    // the refusal is one `denied` line.
    let policy = corral_auth::Policy::from_toml(
        "[tenants.team-a]\ninstances = [\"team-a\"]\n",
        "a test policy",
    )
    .unwrap();
    let (admin, log) = audited(policy);
    let site = Site::start_with(Some(admin)).await;
    let _w = site.worker("w1").await;
    let refused = site
        .request("POST", "/admin/drain", Some("target=w1"))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let events = log.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, AuditKind::Denied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_share_the_grpc_port() {
    let site = Site::start().await;
    let action = site
        .put_message(&reapi::Action {
            command_digest: Some(site.put(b"not a command").await),
            input_root_digest: Some(site.put_message(&reapi::Directory::default()).await),
            ..Default::default()
        })
        .await;
    // An Execute that fails (the Command does not decode): counted.
    let mut request =
        corral_proto::reapi::execution_client::ExecutionClient::new(site.channel.clone());
    let refused = request
        .execute(reapi::ExecuteRequest {
            action_digest: Some(action),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let metrics = site.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        metrics.body.contains(
            "corral_grpc_server_handled_total{service=\"build.bazel.remote.execution.v2.Execution\",method=\"Execute\",code=\"INVALID_ARGUMENT\"} 1"
        ),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("corral_scheduler_queue_length 0"));
    assert!(metrics
        .body
        .contains("corral_cas_lookups_total{op=\"get\",result=\"hit\"}"));
    assert_eq!(site.get("/healthz").await.body, "ok\n");
    let ready = site.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains("storage: ok") && ready.body.contains("scheduler: ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_workers_listener_serves_metrics_and_health_only() {
    let metrics = corral_web::Metrics::new();
    let worker = metrics.register(runs_counter);
    worker.inc_by(7);
    let stop = stop_signal();
    let (addr, _task) =
        corral_web::serve::metrics_only("127.0.0.1:0".parse().unwrap(), metrics, stop.1)
            .await
            .unwrap();
    let site = common::Client { addr };
    let text = site.get("/metrics").await;
    assert!(
        text.body.contains("corral_test_worker_runs_total 7"),
        "{}",
        text.body
    );
    assert_eq!(site.get("/healthz").await.body, "ok\n");
    assert_eq!(site.get("/readyz").await.status, 200);
    assert_eq!(site.get("/").await.status, 404, "no pages there");
    let _ = stop.0.send(());
}

fn runs_counter(
    r: &mut prometheus_client::registry::Registry,
) -> prometheus_client::metrics::counter::Counter {
    let c = prometheus_client::metrics::counter::Counter::default();
    r.register("corral_test_worker_runs", "Runs", c.clone());
    c
}

/// A stop signal and the future that waits for it.
fn stop_signal() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cas_shows_trees_commands_and_results() {
    let site = Site::start().await;
    let leaf = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "leaf.o".into(),
            digest: Some(site.put(b"\x7fELF\x00\x01binary").await),
            is_executable: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let leaf_digest = Digest::of_message(F, &leaf).to_proto();
    let tree = reapi::Tree {
        root: Some(reapi::Directory {
            directories: vec![reapi::DirectoryNode {
                name: "obj".into(),
                digest: Some(leaf_digest),
            }],
            symlinks: vec![reapi::SymlinkNode {
                name: "latest".into(),
                target: "obj/<leaf>".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        children: vec![leaf],
    };
    let t = site.put_message(&tree).await;
    let page = site
        .get(&corral_web::links::blob("", F, &t, "tree", Some("out")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("obj/") && page.body.contains("leaf.o"),
        "{}",
        page.body
    );
    assert!(page.body.contains("executable"));
    assert!(
        page.body.contains("latest → <code>obj/&lt;leaf&gt;</code>"),
        "{}",
        page.body
    );
    // A binary file is offered as a download, not shown.
    let leaf_file = tree.children[0].files[0].digest.clone().unwrap();
    let binary = site
        .get(&corral_web::links::blob("", F, &leaf_file, "file", None))
        .await;
    assert!(binary.body.contains("Binary content"), "{}", binary.body);

    let c = site
        .put_message(&reapi::Command {
            arguments: vec!["gcc".into(), "-c".into(), "a b.c".into()],
            ..Default::default()
        })
        .await;
    let page = site
        .get(&corral_web::links::blob("", F, &c, "command", None))
        .await;
    assert!(
        page.body.contains("gcc -c &#39;a b.c&#39;"),
        "{}",
        page.body
    );

    let r = site
        .put_message(&reapi::ActionResult {
            exit_code: 42,
            stdout_raw: b"out".to_vec(),
            ..Default::default()
        })
        .await;
    let page = site
        .get(&corral_web::links::blob("", F, &r, "result", None))
        .await;
    assert!(page.body.contains("id=\"exit-code\">42<"), "{}", page.body);
    let to_action = site
        .get(&corral_web::links::blob("", F, &r, "action", None))
        .await;
    assert_eq!(to_action.status, 303);
    assert!(to_action
        .header("location")
        .unwrap()
        .starts_with("/action/sha256/"));
}
