//! A small farm for the pages' tests: an in-memory storage stack and a
//! real scheduler, their gRPC services and the pages on ONE loopback port
//! (as `corral server` serves them), a plain HTTP/1.0 client, REAPI
//! clients, and a simulated worker speaking the worker protocol.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_cas::{BlobStore, Digest, DigestFunction, RequestContext, Storage};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::tonic::transport::{Channel, Server};
use corral_proto::tonic::{self, Streaming};
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use corral_scheduler::operations::response_of;
use corral_scheduler::{Scheduler, SchedulerConfig, SystemClock};
use corral_web::{AdminPolicy, Observability, Web};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Real-time bound on any wait.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const F: DigestFunction = DigestFunction::Sha256;

/// The farm under test.
pub struct Site {
    pub addr: SocketAddr,
    pub storage: Storage,
    pub scheduler: Arc<Scheduler>,
    pub channel: Channel,
    pub observability: Observability,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

impl Site {
    pub async fn start() -> Site {
        Site::start_with(None).await
    }

    /// With `admin` as the admin policy when given.
    pub async fn start_with(admin: Option<Arc<dyn AdminPolicy>>) -> Site {
        let observability = Observability::new();
        let storage = observability.instrument(Storage::in_memory());
        let scheduler = Scheduler::new(
            SchedulerConfig::default(),
            storage.cas.clone(),
            storage.action_cache.clone(),
            Arc::new(SystemClock::new()),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = corral_web::HttpConfig::default();
        observability.watch_scheduler(&scheduler, &http, addr);
        let mut builder = Web::builder(observability.metrics.clone())
            .storage(storage.clone())
            .scheduler(scheduler.clone())
            .grpc_url(format!("http://{addr}"));
        if let Some(policy) = admin {
            builder = builder.admin(policy);
        }
        let web = builder.build();
        let mut routes = tonic::service::RoutesBuilder::default();
        scheduler.add_to(&mut routes);
        // The tests drive workers through the same port.
        scheduler.add_worker_service_to(&mut routes);
        let routes = observability.routes(routes.routes(), &web, &http);
        tokio::spawn(async move {
            Server::builder()
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming(corral_cas::service::incoming(listener))
                .await
                .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Site {
            addr,
            storage,
            scheduler,
            channel,
            observability,
        }
    }

    /// Stores `data` in the CAS under instance "" and returns its digest.
    pub async fn put(&self, data: &[u8]) -> reapi::Digest {
        let d = Digest::of_bytes(F, data);
        let ctx = RequestContext::internal("", F);
        self.storage
            .cas
            .put(&ctx, &d, data.to_vec().into())
            .await
            .unwrap();
        d.to_proto()
    }

    pub async fn put_message<M: Message>(&self, m: &M) -> reapi::Digest {
        self.put(&m.encode_to_vec()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None).await
    }

    pub async fn request(&self, method: &str, path: &str, form: Option<&str>) -> Answer {
        Client { addr: self.addr }.request(method, path, form).await
    }

    /// Calls Execute under `instance` for `invocation` and returns the
    /// stream of Operation updates.
    pub async fn execute(
        &self,
        instance: &str,
        action: &reapi::Digest,
        invocation: &str,
    ) -> Streaming<corral_proto::longrunning::Operation> {
        let mut request = tonic::Request::new(reapi::ExecuteRequest {
            instance_name: instance.into(),
            action_digest: Some(action.clone()),
            skip_cache_lookup: true,
            ..Default::default()
        });
        let metadata = reapi::RequestMetadata {
            tool_invocation_id: invocation.into(),
            ..Default::default()
        };
        request.metadata_mut().insert_bin(
            corral_cas::context::REQUEST_METADATA_HEADER,
            tonic::metadata::MetadataValue::from_bytes(&metadata.encode_to_vec()),
        );
        ExecutionClient::new(self.channel.clone())
            .execute(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// A worker named `name` with one slot.
    pub async fn worker(&self, name: &str) -> SimWorker {
        let (tx, rx) = mpsc::channel(16);
        let hello = wire::Hello {
            name: name.into(),
            platform: None,
            slots: 1,
            cached_images: vec!["docker://example/<img>".into()],
        };
        tx.send(wire::WorkerMessage {
            kind: Some(wire::worker_message::Kind::Hello(hello)),
        })
        .await
        .unwrap();
        let inbound = WorkerServiceClient::new(self.channel.clone())
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut w = SimWorker { tx, inbound };
        assert!(matches!(
            w.next().await,
            wire::scheduler_message::Kind::Welcome(_)
        ));
        w
    }
}

/// A plain HTTP/1.0 client of one address.
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    /// Sends one HTTP/1.0 request and reads the whole answer.
    pub async fn request(&self, method: &str, path: &str, form: Option<&str>) -> Answer {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let body = form.unwrap_or("");
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        if form.is_some() {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
            .await
            .expect("an HTTP answer in time")
            .unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers end");
        let headers = String::from_utf8_lossy(&raw[..split]).to_string();
        let bytes = raw[split + 4..].to_vec();
        let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).to_string(),
            bytes,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None).await
    }
}

/// The last Operation of an Execute stream, decoded.
pub async fn done(
    mut ops: Streaming<corral_proto::longrunning::Operation>,
) -> reapi::ExecuteResponse {
    loop {
        let op = tokio::time::timeout(PATIENCE, ops.message())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream ends with a done operation");
        if op.done {
            return response_of(&op).unwrap();
        }
    }
}

/// A worker speaking the worker protocol over real gRPC.
pub struct SimWorker {
    tx: mpsc::Sender<wire::WorkerMessage>,
    inbound: Streaming<wire::SchedulerMessage>,
}

impl SimWorker {
    pub async fn next(&mut self) -> wire::scheduler_message::Kind {
        tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .kind
            .unwrap()
    }

    pub async fn assignment(&mut self) -> wire::Assignment {
        loop {
            match self.next().await {
                wire::scheduler_message::Kind::Assignment(a) => return a,
                wire::scheduler_message::Kind::KeepAlive(_) => continue,
                other => panic!("expected an assignment, got {other:?}"),
            }
        }
    }

    pub async fn respond(&mut self, a: &wire::Assignment, response: reapi::ExecuteResponse) {
        self.tx
            .send(wire::WorkerMessage {
                kind: Some(wire::worker_message::Kind::Result(wire::Result {
                    assignment_id: a.assignment_id.clone(),
                    response: Some(response),
                })),
            })
            .await
            .unwrap();
    }
}
