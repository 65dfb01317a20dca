//! The scheduler added to the CAS services on one server, as
//! `corral server` wires it (see docs/scheduler.md): Capabilities advertise
//! execution, and an action uploaded through the real CAS service runs on a
//! worker that reached the worker protocol on its own listener (a UNIX
//! socket); the client port does not serve the worker protocol.

// Test code: a panic is the failure report.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use corral_cas::service::Services;
use corral_cas::{Digest, DigestFunction, Storage};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::tonic::transport::{Channel, Server};
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use corral_scheduler::operations::response_of;
use corral_scheduler::{ManualClock, Scheduler, SchedulerConfig};

const PATIENCE: Duration = Duration::from_secs(10);

fn blob<M: Message>(m: &M) -> (reapi::Digest, Vec<u8>) {
    let data = m.encode_to_vec();
    let d = Digest::of_bytes(DigestFunction::Sha256, &data).to_proto();
    (d, data)
}

#[tokio::test]
async fn scheduler_beside_the_cas_services_on_one_port_and_workers_on_their_own() {
    let storage = Storage::in_memory();
    let services = Services::new(corral_cas::Config::default(), storage.clone());
    let scheduler = Scheduler::new(
        SchedulerConfig::default(),
        storage.cas,
        storage.action_cache,
        Arc::new(ManualClock::new()),
    )
    .expect("default config is valid");
    services.set_execution_capabilities(Some(scheduler.execution_capabilities()));
    let mut routes = corral_proto::tonic::service::RoutesBuilder::default();
    services.add_to(&mut routes);
    scheduler.add_to(&mut routes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let routes = routes.routes();
    tokio::spawn(async move {
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(corral_cas::service::incoming(listener))
            .await
            .expect("server runs");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let sockets = tempfile::tempdir().expect("tempdir");
    let worker_channel = serve_workers(&scheduler, &sockets.path().join("workers.sock")).await;

    let caps = CapabilitiesClient::new(channel.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .expect("GetCapabilities")
        .into_inner();
    let exec = caps.execution_capabilities.expect("execution capabilities");
    assert!(exec.exec_enabled);
    assert_eq!(
        exec.digest_function,
        reapi::digest_function::Value::Sha256 as i32
    );

    // Upload as a client would, through BatchUpdateBlobs.
    #[allow(deprecated)]
    let command = reapi::Command {
        arguments: vec!["/bin/true".into()],
        platform: Some(reapi::Platform {
            properties: vec![reapi::platform::Property {
                name: "OSFamily".into(),
                value: "linux".into(),
            }],
        }),
        ..Default::default()
    };
    let (command_digest, command_data) = blob(&command);
    let (root_digest, root_data) = blob(&reapi::Directory::default());
    let action = reapi::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(root_digest.clone()),
        ..Default::default()
    };
    let (action_digest, action_data) = blob(&action);
    let requests = [
        (command_digest, command_data),
        (root_digest, root_data),
        (action_digest.clone(), action_data),
    ]
    .into_iter()
    .map(
        |(digest, data)| reapi::batch_update_blobs_request::Request {
            digest: Some(digest),
            data,
            ..Default::default()
        },
    )
    .collect();
    ContentAddressableStorageClient::new(channel.clone())
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
            requests,
            ..Default::default()
        })
        .await
        .expect("BatchUpdateBlobs");

    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Hello(wire::Hello {
            name: "w".into(),
            slots: 1,
            platform: Some(reapi::Platform {
                properties: vec![reapi::platform::Property {
                    name: "OSFamily".into(),
                    value: "Linux".into(),
                }],
            }),
            ..Default::default()
        })),
    })
    .await
    .expect("hello queued");
    // A client on the client port cannot register as a worker.
    let refused = WorkerServiceClient::new(channel.clone())
        .session(tokio_stream::iter(Vec::<wire::WorkerMessage>::new()))
        .await
        .expect_err("the client port must not serve the worker protocol");
    assert_eq!(refused.code(), corral_proto::tonic::Code::Unimplemented);

    let mut inbound = WorkerServiceClient::new(worker_channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("worker session")
        .into_inner();

    let mut ops = ExecutionClient::new(channel)
        .execute(reapi::ExecuteRequest {
            action_digest: Some(action_digest),
            ..Default::default()
        })
        .await
        .expect("Execute")
        .into_inner();
    let assignment = loop {
        let msg = tokio::time::timeout(PATIENCE, inbound.message())
            .await
            .expect("in time")
            .expect("healthy")
            .expect("open");
        if let Some(wire::scheduler_message::Kind::Assignment(a)) = msg.kind {
            break a;
        }
    };
    tx.send(wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Result(wire::Result {
            assignment_id: assignment.assignment_id,
            response: Some(reapi::ExecuteResponse {
                result: Some(reapi::ActionResult::default()),
                ..Default::default()
            }),
        })),
    })
    .await
    .expect("result queued");
    loop {
        let op = tokio::time::timeout(PATIENCE, ops.message())
            .await
            .expect("in time")
            .expect("healthy")
            .expect("open");
        if op.done {
            let response = response_of(&op).expect("a response");
            assert_eq!(response.result.map(|r| r.exit_code), Some(0));
            break;
        }
    }
}

/// Serves the worker protocol on a UNIX socket at `path`, as `corral
/// server` does, and connects to it as a worker would.
async fn serve_workers(scheduler: &Arc<Scheduler>, path: &std::path::Path) -> Channel {
    let mut routes = corral_proto::tonic::service::RoutesBuilder::default();
    scheduler.add_worker_service_to(&mut routes);
    let routes = routes.routes();
    let listener = tokio::net::UnixListener::bind(path).expect("bind the worker socket");
    tokio::spawn(async move {
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .expect("worker listener runs");
    });
    corral_cas::channel::connect(&format!("unix:{}", path.display()))
        .await
        .expect("connect to the worker socket")
}
