//! The worker's side of the worker protocol: one stream to the scheduler
//! for the worker's whole life, opened again with backoff when it is lost.
//!
//! Each assignment runs in its own task; the scheduler decides how many run
//! at once from the slot count in `Hello`. A lost stream cancels whatever
//! runs (the scheduler has already requeued it, so a late result would only
//! be discarded), and shutdown is a drain: the worker says `Drain`, finishes
//! what it runs and leaves when the scheduler answers `Drained`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::reapi;
use corral_proto::worker::v1::scheduler_message::Kind as FromScheduler;
use corral_proto::worker::v1::worker_message::Kind as ToScheduler;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use corral_proto::worker::v1::{self as wire, Assignment, SchedulerMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::executor::ActionExecutor;

/// Largest message either side sends: an assignment holds a whole Action and
/// Command, a result a whole ActionResult.
const MAX_MESSAGE: usize = 64 << 20;

/// Who the worker says it is.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// `unix:/PATH`, `http://HOST:PORT` or `https://HOST:PORT` of the
    /// scheduler's worker service.
    pub scheduler_url: String,
    /// The worker's TLS settings and token for that connection (its
    /// identity is the client certificate, the token or its uid: never
    /// the name it says in its hello).
    pub connector: corral_cas::Connector,
    /// Stable name; a second session with the same name replaces the first.
    pub name: String,
    /// Platform properties offered to actions.
    pub platform: Vec<(String, String)>,
    /// Actions run at once.
    pub slots: u32,
    /// First and largest pause between connection attempts.
    pub backoff: (Duration, Duration),
}

/// How one stream ended.
enum Ended {
    /// The scheduler confirmed the drain: nothing runs, nothing will come.
    Drained,
    /// The stream broke or went silent.
    Lost(String),
}

/// Keeps a session to the scheduler until `shutdown` is cancelled and the
/// drain is complete (or, while shut down, the scheduler is unreachable).
pub async fn run(
    options: SessionOptions,
    executor: Arc<dyn ActionExecutor>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut pause = options.backoff.0;
    loop {
        let started = Instant::now();
        match stream_once(&options, &executor, &shutdown).await {
            Ok(Ended::Drained) => {
                tracing::info!("drained; leaving the scheduler");
                return Ok(());
            }
            Ok(Ended::Lost(reason)) => {
                tracing::warn!(%reason, "scheduler stream lost");
            }
            Err(e) => tracing::warn!(error = %e, "could not open a scheduler stream"),
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        // A stream that stayed up for a while was healthy: start over with
        // short pauses.
        if started.elapsed() > options.backoff.1 {
            pause = options.backoff.0;
        }
        let jittered = pause.mul_f64(0.5 + fastrand::f64() / 2.0);
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        pause = (pause * 2).min(options.backoff.1);
    }
}

fn send(tx: &mpsc::UnboundedSender<WorkerMessage>, kind: ToScheduler) {
    // A closed channel means the stream is gone; the loop notices that.
    let _ = tx.send(WorkerMessage { kind: Some(kind) });
}

async fn stream_once(
    options: &SessionOptions,
    executor: &Arc<dyn ActionExecutor>,
    shutdown: &CancellationToken,
) -> Result<Ended> {
    let channel = options
        .connector
        .connect(&options.scheduler_url)
        .await
        .map_err(|e| {
            Error::Unavailable(format!("the scheduler at {}: {e}", options.scheduler_url))
        })?;
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut images_reported = executor.cached_images();
    send(
        &tx,
        ToScheduler::Hello(wire::Hello {
            name: options.name.clone(),
            platform: Some(reapi::Platform {
                properties: options
                    .platform
                    .iter()
                    .map(|(name, value)| reapi::platform::Property {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            }),
            slots: options.slots,
            cached_images: images_reported.clone(),
        }),
    );
    let mut inbound = client
        .session(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|s| Error::rpc("WorkerService.Session", s))?
        .into_inner();
    let welcome = match inbound.message().await {
        Ok(Some(SchedulerMessage {
            kind: Some(FromScheduler::Welcome(w)),
        })) => w,
        Ok(other) => {
            return Ok(Ended::Lost(format!(
                "the scheduler's first message was not a welcome: {other:?}"
            )))
        }
        Err(s) => return Err(Error::rpc("WorkerService.Session hello", s)),
    };
    let interval = Duration::from_millis(welcome.keepalive_interval_millis.max(100));
    tracing::info!(session = %welcome.session_id, scheduler = %options.scheduler_url, slots = options.slots, "registered with the scheduler");

    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut drain_sent = false;
    let ended = loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break Ended::Lost("closed by the scheduler".into()),
                    Err(s) => break Ended::Lost(format!("stream failed: {s}")),
                };
                last_heard = Instant::now();
                match msg.kind {
                    Some(FromScheduler::Assignment(a)) => {
                        let token = CancellationToken::new();
                        running.insert(a.assignment_id.clone(), token.clone());
                        tasks.spawn(execute(executor.clone(), a, tx.clone(), token));
                    }
                    Some(FromScheduler::Cancel(c)) => {
                        tracing::info!(assignment = %c.assignment_id, reason = %c.reason, "cancel");
                        if let Some(token) = running.get(&c.assignment_id) {
                            token.cancel();
                        }
                    }
                    Some(FromScheduler::Drain(d)) => {
                        tracing::info!(reason = %d.reason, "the scheduler asked this worker to drain");
                    }
                    Some(FromScheduler::Drained(_)) => break Ended::Drained,
                    Some(FromScheduler::KeepAlive(_) | FromScheduler::Welcome(_)) | None => {}
                }
            }
            Some(done) = tasks.join_next() => {
                match done {
                    Ok(id) => { running.remove(&id); }
                    Err(e) => tracing::error!(error = %e, "an action task failed"),
                }
                // An action may have pulled an image (or a pull evicted
                // one): tell the scheduler, which prefers workers holding
                // an action's image.
                let images = executor.cached_images();
                if images != images_reported {
                    images_reported = images.clone();
                    send(&tx, ToScheduler::CachedImages(wire::CachedImages { images }));
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > interval * 4 {
                    break Ended::Lost(format!("nothing heard for {:?}", last_heard.elapsed()));
                }
                send(&tx, ToScheduler::KeepAlive(wire::KeepAlive {}));
            }
            () = shutdown.cancelled(), if !drain_sent => {
                drain_sent = true;
                tracing::info!(running = running.len(), "shutting down: draining");
                send(&tx, ToScheduler::Drain(wire::Drain { reason: "the worker is shutting down".into() }));
            }
        }
    };
    if !running.is_empty() {
        tracing::warn!(
            running = running.len(),
            "cancelling the actions of a lost stream"
        );
        for token in running.values() {
            token.cancel();
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(ended)
}

/// Runs one assignment and reports its result on the stream.
async fn execute(
    executor: Arc<dyn ActionExecutor>,
    a: Assignment,
    tx: mpsc::UnboundedSender<WorkerMessage>,
    cancel: CancellationToken,
) -> String {
    let id = a.assignment_id.clone();
    tracing::debug!(assignment = %id, attempt = a.attempt, "assignment");
    let progress_tx = tx.clone();
    let progress_id = id.clone();
    let progress = move |stage: wire::Stage| {
        send(
            &progress_tx,
            ToScheduler::Progress(wire::Progress {
                assignment_id: progress_id.clone(),
                stage: stage as i32,
            }),
        );
    };
    let response = executor.execute(&a, &cancel, &progress).await;
    send(
        &tx,
        ToScheduler::Result(wire::Result {
            assignment_id: id.clone(),
            response: Some(response),
        }),
    );
    id
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
