//! The local executor's steps end to end against a real CAS on loopback,
//! with a stand-in for the runner: staging, plan, build directory, capture
//! and upload, and the records in the result.

use std::sync::Mutex;

use corral_cas::BlobStore;
use corral_proto::worker::v1::{self as wire, RootfsMode};

use super::*;
use crate::localcas::{LocalCas, LocalCasOptions};
use crate::remote::RemoteCas;
use crate::stage::{Stager, StagerOptions};
use crate::testkit::{ctx, DirBuilder, LoopbackCas};
use crate::validate::SymlinkPolicy;

/// Does what a runner would to the files: writes stdout and `out/result`
/// in the upper directory, then answers as told.
pub(super) struct FakeSandbox {
    answer: Result<pb::RunResponse, String>,
    pub(super) requests: Mutex<Vec<pb::RunRequest>>,
}

impl Sandbox for FakeSandbox {
    fn run(&self, request: pb::RunRequest) -> BoxFuture<'_, Result<pb::RunResponse>> {
        Box::pin(async move {
            let upper = PathBuf::from(&request.scratch_dir).join("upper");
            std::fs::create_dir_all(upper.join("src/out")).unwrap();
            std::fs::write(upper.join("src/out/result"), "made\n").unwrap();
            std::fs::write(&request.stdout_path, "hello\n").unwrap();
            self.requests.lock().unwrap().push(request);
            self.answer.clone().map_err(crate::Error::Runner)
        })
    }
}

struct Setup {
    cas: LoopbackCas,
    executor: LocalExecutor,
    sandbox: Arc<FakeSandbox>,
    builds: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(answer: Result<pb::RunResponse, String>) -> Setup {
    let cas = LoopbackCas::start(None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (executor, sandbox, builds) = executor_over(&cas.url, dir.path(), answer).await;
    Setup {
        cas,
        executor,
        sandbox,
        builds,
        _dir: dir,
    }
}

/// A local executor with its data under `dir`, over the CAS at `url`,
/// running through a [`FakeSandbox`] that answers `answer`.
pub(super) async fn executor_over(
    url: &str,
    dir: &std::path::Path,
    answer: Result<pb::RunResponse, String>,
) -> (LocalExecutor, Arc<FakeSandbox>, PathBuf) {
    let remote = RemoteCas::connect(url, "").await.unwrap();
    let options = LocalCasOptions {
        max_bytes: 1 << 30,
        max_exec_bytes: 1 << 30,
        parallel_fetches: 2,
    };
    let local = LocalCas::open(&dir.join("cas"), &options, remote.clone()).unwrap();
    let stager = Stager::open(
        local,
        dir.join("trees"),
        StagerOptions {
            policy: SymlinkPolicy::default(),
            max_files: 1000,
            owner: None,
        },
    )
    .unwrap();
    let builds = dir.join("builds");
    let sandbox = Arc::new(FakeSandbox {
        answer,
        requests: Mutex::new(Vec::new()),
    });
    let executor = LocalExecutor::new(
        LocalOptions {
            builds_dir: builds.clone(),
            profile: "p".into(),
            owner: None,
        },
        Inputs::new(stager, None),
        sandbox.clone(),
        Outputs::new(remote, 2),
    );
    (executor, sandbox, builds)
}

async fn assignment(cas: &LoopbackCas, image: Option<&str>) -> Assignment {
    let input = cas.put(&b"in\n"[..]).await.unwrap();
    let src = DirBuilder::new()
        .file("input.txt", &input, false)
        .upload(cas)
        .await
        .unwrap();
    let root = DirBuilder::new()
        .dir("src", &src)
        .upload(cas)
        .await
        .unwrap();
    let properties = image
        .map(|v| reapi::platform::Property {
            name: "container-image".into(),
            value: v.into(),
        })
        .into_iter()
        .collect();
    Assignment {
        assignment_id: "a1".into(),
        digest_function: DigestFunction::Sha256.to_proto(),
        action: Some(reapi::Action {
            input_root_digest: Some(root.to_proto()),
            platform: Some(reapi::Platform { properties }),
            ..Default::default()
        }),
        command: Some(reapi::Command {
            arguments: vec!["build".into()],
            output_paths: vec!["out/result".into()],
            working_directory: "src".into(),
            ..Default::default()
        }),
        timeout_millis: 7_000,
        rootfs: RootfsMode::InputRoot as i32,
        hostname: "buildbox".into(),
        ..Default::default()
    }
}

pub(super) fn exited(code: i32) -> pb::RunResponse {
    pb::RunResponse {
        exit_code: code,
        ..Default::default()
    }
}

fn record<M: Message + Default>(meta: &reapi::ExecutedActionMetadata, name: &str) -> M {
    let any = meta
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url.ends_with(name))
        .unwrap_or_else(|| panic!("no {name} in {meta:?}"));
    M::decode(any.value.as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_plan_and_uploads_what_the_run_left() {
    let s = setup(Ok(exited(3))).await;
    let a = assignment(&s.cas, None).await;
    let stages = Mutex::new(Vec::new());
    let response = s
        .executor
        .execute(&a, &CancellationToken::new(), &|st| {
            stages.lock().unwrap().push(st)
        })
        .await;
    assert_eq!(
        response.status.as_ref().map(|s| s.code),
        Some(0),
        "{response:?}"
    );
    let result = response.result.unwrap();
    assert_eq!(result.exit_code, 3);
    assert_eq!(
        *stages.lock().unwrap(),
        [
            Stage::FetchingInputs,
            Stage::Running,
            Stage::UploadingOutputs
        ]
    );

    // The request is the plan's.
    let request = s.sandbox.requests.lock().unwrap()[0].clone();
    assert_eq!(request.hostname, "buildbox");
    assert_eq!(request.working_directory, "src");
    assert_eq!(request.profile, "p");
    assert_eq!(request.limits.unwrap().timeout_ms, 7_000);
    assert!(matches!(
        request.rootfs,
        Some(pb::run_request::Rootfs::InputRootAsRoot(_))
    ));

    // Outputs and stdout are in the CAS.
    let file = &result.output_files[0];
    assert_eq!(file.path, "out/result");
    let digest = Digest::from_proto(DigestFunction::Sha256, file.digest.as_ref().unwrap()).unwrap();
    assert_eq!(
        &s.cas.store.get(&ctx(), &digest).await.unwrap()[..],
        b"made\n"
    );
    let stdout = Digest::from_proto(
        DigestFunction::Sha256,
        result.stdout_digest.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(
        &s.cas.store.get(&ctx(), &stdout).await.unwrap()[..],
        b"hello\n"
    );

    // The records say how it ran.
    let meta = result.execution_metadata.unwrap();
    let plan: wire::RunPlan = record(&meta, "corral.worker.v1.RunPlan");
    assert_eq!(plan.rootfs, RootfsMode::InputRoot as i32);
    assert_eq!(plan.hostname, "buildbox");
    assert_eq!(plan.limits.unwrap().timeout_ms, 7_000);
    assert_eq!(plan.profile, "p");
    let answer: pb::RunResponse = record(&meta, "corral.runner.v1.RunResponse");
    assert_eq!(answer.exit_code, 3);

    // The build directory is gone.
    assert_eq!(std::fs::read_dir(&s.builds).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_keeps_the_partial_result_and_says_deadline_exceeded() {
    let response = pb::RunResponse {
        signal: 9,
        exit_code: -1,
        timed_out: true,
        ..Default::default()
    };
    let s = setup(Ok(response)).await;
    let a = assignment(&s.cas, None).await;
    let response = s
        .executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    let status = response.status.unwrap();
    assert_eq!(status.code, tonic::Code::DeadlineExceeded as i32);
    assert!(status.message.contains("7000 ms"), "{}", status.message);
    let result = response.result.unwrap();
    assert_eq!(result.exit_code, 128 + 9);
    assert_eq!(result.output_files.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_statuses_naming_the_cause() {
    // The runner went away.
    let s = setup(Err("the runner went away".into())).await;
    let a = assignment(&s.cas, None).await;
    let response = s
        .executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    assert!(response.result.is_none());
    assert_eq!(response.status.unwrap().code, tonic::Code::Internal as i32);
    assert!(
        response.message.contains("runner went away"),
        "{}",
        response.message
    );

    // An image on a worker that runs none.
    let a = assignment(&s.cas, Some("registry.example/x:1")).await;
    let response = s
        .executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    assert_eq!(
        response.status.unwrap().code,
        tonic::Code::FailedPrecondition as i32
    );
    assert!(
        response.message.contains("runs no images"),
        "{}",
        response.message
    );

    // An input root the CAS lacks.
    let mut a = assignment(&s.cas, None).await;
    let missing = Digest::of_bytes(DigestFunction::Sha256, b"not a directory");
    a.action.as_mut().unwrap().input_root_digest = Some(missing.to_proto());
    let response = s
        .executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    assert_eq!(
        response.status.unwrap().code,
        tonic::Code::FailedPrecondition as i32,
        "{}",
        response.message
    );
}
