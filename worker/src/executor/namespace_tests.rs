//! An action's CAS calls carry its instance name: against a real CAS whose
//! `team-a` prefix is a storage namespace of its own, an action of
//! `team-a` finds its inputs there and leaves its outputs there, and the
//! same action under another instance name finds nothing.

use std::collections::BTreeMap;

use corral_cas::service::Services;
use corral_cas::store::NamespacedStore;
use corral_cas::{BlobStore, Config, MemoryActionCache, MemoryStore, MessageLimits, Storage};
use tokio::task::JoinHandle;

use super::tests::{executor_over, exited};
use super::*;
use crate::testkit::{ctx, DirBuilder};

/// A CAS on loopback with the namespace `team-a` apart from the default.
struct TwoNamespaces {
    team_a: Arc<MemoryStore>,
    default: Arc<MemoryStore>,
    url: String,
    task: JoinHandle<()>,
}

impl Drop for TwoNamespaces {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_two_namespaces() -> TwoNamespaces {
    let (team_a, default) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
    let by_prefix: BTreeMap<String, Arc<dyn BlobStore>> =
        [("team-a".to_string(), team_a.clone() as Arc<dyn BlobStore>)].into();
    let routed = NamespacedStore::new(default.clone(), by_prefix);
    let storage = Storage::over(
        Arc::new(routed),
        Arc::new(MemoryActionCache::new()),
        MessageLimits::default(),
    );
    let services = Services::new(Config::default(), storage);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let routes = services.routes();
    let task = tokio::spawn(async move {
        let incoming = corral_cas::service::incoming(listener);
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    TwoNamespaces {
        team_a,
        default,
        url,
        task,
    }
}

/// Puts `data` straight into `store` (a namespace's backend).
async fn put(store: &MemoryStore, data: Vec<u8>) -> Digest {
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    store.put(&ctx(), &d, data.into()).await.unwrap();
    d
}

/// An action of `instance` whose input root is only in namespace `team-a`.
async fn assignment(cas: &TwoNamespaces, instance: &str) -> Assignment {
    let input = put(&cas.team_a, b"in\n".to_vec()).await;
    let src = DirBuilder::new().file("input.txt", &input, false).build();
    let src = put(&cas.team_a, src.encode_to_vec()).await;
    let root = DirBuilder::new().dir("src", &src).build();
    let root = put(&cas.team_a, root.encode_to_vec()).await;
    Assignment {
        assignment_id: "a1".into(),
        instance_name: instance.into(),
        digest_function: DigestFunction::Sha256.to_proto(),
        action: Some(reapi::Action {
            input_root_digest: Some(root.to_proto()),
            ..Default::default()
        }),
        command: Some(reapi::Command {
            arguments: vec!["build".into()],
            output_paths: vec!["out/result".into()],
            working_directory: "src".into(),
            ..Default::default()
        }),
        timeout_millis: 7_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_come_from_and_outputs_go_to_the_actions_namespace() {
    let cas = serve_two_namespaces().await;
    let dir = tempfile::tempdir().unwrap();
    let (executor, _, _) = executor_over(&cas.url, dir.path(), Ok(exited(0))).await;
    let a = assignment(&cas, "team-a/x").await;
    let response = executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    assert_eq!(
        response.status.as_ref().map(|s| s.code),
        Some(0),
        "{response:?}"
    );
    let result = response.result.unwrap();
    let output = Digest::from_proto(
        DigestFunction::Sha256,
        result.output_files[0].digest.as_ref().unwrap(),
    )
    .unwrap();
    let stdout = Digest::from_proto(
        DigestFunction::Sha256,
        result.stdout_digest.as_ref().unwrap(),
    )
    .unwrap();
    for (digest, bytes) in [(output, &b"made\n"[..]), (stdout, &b"hello\n"[..])] {
        assert_eq!(&cas.team_a.get(&ctx(), &digest).await.unwrap()[..], bytes);
        let missing = cas.default.find_missing(&ctx(), &[digest]).await.unwrap();
        assert_eq!(
            missing,
            [digest],
            "an output leaked into the default namespace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_action_does_not_find_the_inputs() {
    let cas = serve_two_namespaces().await;
    let dir = tempfile::tempdir().unwrap();
    // A worker of its own: its local CAS and staged trees are empty.
    let (executor, sandbox, _) = executor_over(&cas.url, dir.path(), Ok(exited(0))).await;
    let a = assignment(&cas, "team-b").await;
    let response = executor
        .execute(&a, &CancellationToken::new(), &|_| {})
        .await;
    let status = response.status.unwrap();
    assert_eq!(
        status.code,
        tonic::Code::FailedPrecondition as i32,
        "{status:?}"
    );
    assert!(sandbox.requests.lock().unwrap().is_empty(), "it ran");
}
