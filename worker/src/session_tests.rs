//! The session against a stand-in scheduler (a real gRPC server on
//! loopback that hands each stream to the test) and a scripted executor:
//! no runner, no CAS.

use std::time::Duration;

use corral_proto::worker::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::executor::fakes::{assignment, Scripted};

/// How long any one expected message may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// One worker stream, seen from the scheduler's side.
struct Peer {
    inbound: Streaming<WorkerMessage>,
    outbound: mpsc::UnboundedSender<std::result::Result<SchedulerMessage, Status>>,
}

impl Peer {
    /// The worker's next message that is not a keepalive (each keepalive
    /// is answered, as a scheduler does, so the worker never finds the
    /// stream silent).
    async fn next(&mut self) -> ToScheduler {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.inbound.message())
                .await
                .expect("the worker said nothing in time")
                .expect("the stream failed")
                .expect("the worker closed the stream");
            match message.kind {
                Some(ToScheduler::KeepAlive(_)) => {
                    self.send(FromScheduler::KeepAlive(wire::KeepAlive {}));
                }
                Some(kind) => return kind,
                None => panic!("an empty message"),
            }
        }
    }

    fn send(&self, kind: FromScheduler) {
        let _ = self
            .outbound
            .send(Ok(SchedulerMessage { kind: Some(kind) }));
    }

    /// Reads the Hello and welcomes the worker.
    async fn welcome(&mut self) -> wire::Hello {
        let ToScheduler::Hello(hello) = self.next().await else {
            panic!("the first message was not a hello");
        };
        self.send(FromScheduler::Welcome(wire::Welcome {
            session_id: "s1".into(),
            keepalive_interval_millis: 500,
        }));
        hello
    }

    async fn result(&mut self) -> wire::Result {
        loop {
            match self.next().await {
                ToScheduler::Result(r) => return r,
                ToScheduler::Progress(_) => continue,
                other => panic!("expected a result, got {other:?}"),
            }
        }
    }
}

struct FakeScheduler {
    streams: mpsc::UnboundedSender<Peer>,
}

#[tonic::async_trait]
impl WorkerService for FakeScheduler {
    type SessionStream = UnboundedReceiverStream<std::result::Result<SchedulerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> std::result::Result<Response<Self::SessionStream>, Status> {
        let (outbound, rx) = mpsc::unbounded_channel();
        let _ = self.streams.send(Peer {
            inbound: request.into_inner(),
            outbound,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A stand-in scheduler, and a worker session to it.
struct World {
    streams: mpsc::UnboundedReceiver<Peer>,
    executor: Arc<Scripted>,
    shutdown: CancellationToken,
    session: JoinHandle<Result<()>>,
    server: JoinHandle<()>,
}

impl World {
    async fn start(executor: Scripted) -> World {
        let (tx, streams) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(FakeScheduler { streams: tx }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let executor = Arc::new(executor);
        let shutdown = CancellationToken::new();
        let options = SessionOptions {
            scheduler_url: url,
            connector: corral_cas::Connector::default(),
            name: "w1".into(),
            platform: vec![("OSFamily".into(), "linux".into())],
            slots: 2,
            backoff: (Duration::from_millis(10), Duration::from_millis(50)),
        };
        let session = tokio::spawn(run(options, executor.clone(), shutdown.clone()));
        World {
            streams,
            executor,
            shutdown,
            session,
            server,
        }
    }

    async fn peer(&mut self) -> Peer {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("the worker did not connect in time")
            .expect("the scheduler stopped")
    }

    /// Shuts the worker down through a drain and checks that it leaves.
    async fn drain(self, peer: &mut Peer) {
        self.shutdown.cancel();
        assert!(matches!(peer.next().await, ToScheduler::Drain(_)));
        peer.send(FromScheduler::Drained(wire::Drained {}));
        let ended = tokio::time::timeout(PATIENCE, self.session)
            .await
            .expect("the session did not end after Drained");
        assert!(ended.unwrap().is_ok());
        self.server.abort();
    }
}

#[tokio::test]
async fn an_assignment_in_gives_its_result_out() {
    let executor = Scripted::holding();
    *executor.images.lock().unwrap() = vec!["img:1".into()];
    let mut w = World::start(executor).await;
    let mut peer = w.peer().await;
    let hello = peer.welcome().await;
    assert_eq!(hello.name, "w1");
    assert_eq!(hello.slots, 2);
    assert_eq!(hello.cached_images, ["img:1"]);

    peer.send(FromScheduler::Assignment(assignment("a1")));
    let ToScheduler::Progress(p) = peer.next().await else {
        panic!("expected progress first");
    };
    assert_eq!(
        (p.assignment_id.as_str(), p.stage),
        ("a1", wire::Stage::Running as i32)
    );
    // The executor now holds another image: the scheduler hears of it.
    *w.executor.images.lock().unwrap() = vec!["img:1".into(), "img:2".into()];
    w.executor.release();
    let result = peer.result().await;
    assert_eq!(result.assignment_id, "a1");
    let response = result.response.unwrap();
    assert_eq!(response.result.unwrap().stdout_digest.unwrap().hash, "a1");
    let ToScheduler::CachedImages(images) = peer.next().await else {
        panic!("expected the new image list");
    };
    assert_eq!(images.images, ["img:1", "img:2"]);
    w.drain(&mut peer).await;
}

#[tokio::test]
async fn a_cancel_reaches_the_executor_and_a_result_still_comes() {
    let mut w = World::start(Scripted::holding()).await;
    let mut peer = w.peer().await;
    peer.welcome().await;
    peer.send(FromScheduler::Assignment(assignment("a1")));
    assert!(matches!(peer.next().await, ToScheduler::Progress(_)));
    peer.send(FromScheduler::Cancel(wire::Cancel {
        assignment_id: "a1".into(),
        reason: "the client went away".into(),
    }));
    let result = peer.result().await;
    assert_eq!(result.assignment_id, "a1");
    assert_eq!(
        result.response.unwrap().status.unwrap().code,
        tonic::Code::Cancelled as i32
    );
    assert_eq!(*w.executor.cancelled.lock().unwrap(), ["a1"]);
    w.drain(&mut peer).await;
}

#[tokio::test]
async fn a_drain_lets_running_actions_finish_first() {
    let mut w = World::start(Scripted::holding()).await;
    let mut peer = w.peer().await;
    peer.welcome().await;
    peer.send(FromScheduler::Assignment(assignment("a1")));
    assert!(matches!(peer.next().await, ToScheduler::Progress(_)));
    w.shutdown.cancel();
    assert!(matches!(peer.next().await, ToScheduler::Drain(_)));
    // Still running: its result comes after the drain began.
    w.executor.release();
    let result = peer.result().await;
    assert_eq!(result.assignment_id, "a1");
    assert!(result.response.unwrap().result.is_some());
    assert!(w.executor.cancelled.lock().unwrap().is_empty());
    peer.send(FromScheduler::Drained(wire::Drained {}));
    let ended = tokio::time::timeout(PATIENCE, w.session).await.unwrap();
    assert!(ended.unwrap().is_ok());
    w.server.abort();
}

#[tokio::test]
async fn a_lost_stream_cancels_what_runs_and_the_worker_comes_back() {
    let mut w = World::start(Scripted::holding()).await;
    let mut peer = w.peer().await;
    peer.welcome().await;
    peer.send(FromScheduler::Assignment(assignment("a1")));
    assert!(matches!(peer.next().await, ToScheduler::Progress(_)));
    // The scheduler's side of the stream ends.
    drop(peer);
    let mut again = w.peer().await;
    again.welcome().await;
    assert_eq!(*w.executor.cancelled.lock().unwrap(), ["a1"]);
    assert_eq!(*w.executor.started.lock().unwrap(), ["a1"]);
    w.drain(&mut again).await;
}
