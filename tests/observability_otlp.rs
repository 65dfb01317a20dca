//! OpenTelemetry trace export, received for real: a tonic server in this
//! test implements the OTLP collector's TraceService and records what it
//! is sent; a `corral server` with `[tracing] otlp_endpoint` pointing at it
//! serves a few calls, and their spans arrive with the RPC's name, kind,
//! attributes and gRPC code, under the configured service name. An
//! endpoint that is no URL stops the server with a message naming it.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_cas::Digest;
use corral_integration::remote::FUNCTION;
use corral_integration::server::{CorralServer, ServerOptions};
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// A span as received: its service name (from the resource), name, kind
/// and attributes.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    attributes: Vec<KeyValue>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }
}

/// The collector: records every span of every export.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.clone()?.value? {
                    Value::StringValue(s) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        attributes: span.attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the collector on a loopback port; its address and what it got.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let spans = collector.spans.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, spans)
}

/// A FindMissingBlobs (OK) and a GetActionResult of an unknown action
/// (NOT_FOUND) on `server`.
async fn two_calls(server: &CorralServer) {
    let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
    let digest = Digest::of_bytes(FUNCTION, b"otlp test blob").to_proto();
    ContentAddressableStorageClient::new(channel.clone())
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            instance_name: "main".into(),
            blob_digests: vec![digest.clone()],
            digest_function: FUNCTION.to_proto(),
        })
        .await
        .unwrap();
    let missing = ActionCacheClient::new(channel)
        .get_action_result(reapi::GetActionResultRequest {
            instance_name: "main".into(),
            action_digest: Some(digest),
            digest_function: FUNCTION.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

fn start_server(config: &str) -> CorralServer {
    CorralServer::start_with(ServerOptions {
        config_toml: Some(config.to_string()),
        // Export batches every 100 ms rather than every 5 s.
        env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
        ..ServerOptions::default()
    })
    .unwrap()
}

const FIND_MISSING: &str =
    "build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs";
const GET_RESULT: &str = "build.bazel.remote.execution.v2.ActionCache/GetActionResult";

#[test]
fn rpc_spans_reach_an_otlp_collector() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, spans) = rt.block_on(collector());
    let server = start_server(&format!(
        "execution = false\n[tracing]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"corral-under-test\"\n"
    ));
    rt.block_on(two_calls(&server));

    let deadline = Instant::now() + Duration::from_secs(30);
    let (find, get) = loop {
        let got = spans.lock().unwrap().clone();
        let find = got.iter().find(|s| s.name == FIND_MISSING).cloned();
        let get = got.iter().find(|s| s.name == GET_RESULT).cloned();
        if let (Some(f), Some(g)) = (find, get) {
            break (f, g);
        }
        assert!(
            Instant::now() < deadline,
            "the spans never arrived; got {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for span in [&find, &get] {
        assert_eq!(span.service, "corral-under-test", "{span:?}");
        assert_eq!(span.kind, SpanKind::Server as i32, "{span:?}");
        assert_eq!(
            span.attribute("rpc.system"),
            Some(Value::StringValue("grpc".into()))
        );
    }
    assert_eq!(
        find.attribute("rpc.service"),
        Some(Value::StringValue(
            "build.bazel.remote.execution.v2.ContentAddressableStorage".into()
        ))
    );
    assert_eq!(
        find.attribute("rpc.method"),
        Some(Value::StringValue("FindMissingBlobs".into()))
    );
    assert_eq!(
        find.attribute("rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert_eq!(
        get.attribute("rpc.grpc.status_code"),
        Some(Value::IntValue(5)),
        "{get:?}"
    );
    // Nothing but spans of calls: no trace-level library spans.
    let got = spans.lock().unwrap().clone();
    assert!(
        got.iter()
            .all(|s| s.attribute("rpc.system").is_some() || s.name != "grpc"),
        "{got:#?}"
    );
    server.stop().unwrap();
}

#[test]
fn an_endpoint_that_is_no_url_stops_the_server_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("server.toml");
    std::fs::write(&config, "[tracing]\notlp_endpoint = \"127.0.0.1:4317\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[tracing] otlp_endpoint \"127.0.0.1:4317\""),
        "{stderr}"
    );
}
