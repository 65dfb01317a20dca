//! What the scheduler tells the people watching it: counters for
//! `/metrics` ([`crate::metrics`]), the recent executions the web pages
//! list, and a link to the action's page in every failed
//! `ExecuteResponse.message`.
//!
//! The [`Observer`] lives inside the core, behind its lock, and is told
//! about events as they happen (a deduplicated submission, a job started,
//! retried, finished); it never changes a scheduling decision. Everything
//! it keeps is bounded: the recent executions are a ring of
//! [`RECENT_EXECUTIONS`] entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use corral_cas::{Digest, DigestFunction};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::runner::v1 as runner;
use corral_proto::tonic::Code;
use tokio::sync::mpsc;

use crate::metrics::SchedulerMetrics;

/// Finished executions kept for the pages.
pub const RECENT_EXECUTIONS: usize = 2000;
/// Invocations whose cache hits are counted (the oldest is forgotten).
pub const COUNTED_INVOCATIONS: usize = 1000;

/// Type URL of the runner's answer among an action's auxiliary metadata.
const RUN_RESPONSE_URL: &str = "type.googleapis.com/corral.runner.v1.RunResponse";

/// How an execution ended, as metrics count it and pages filter by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The command ran and exited 0.
    Ok,
    /// The command ran and exited non-zero.
    Failed,
    /// The action ran past its timeout.
    TimedOut,
    /// The command was killed for exceeding its memory limit.
    Oom,
    /// The farm could not run it (missing inputs, lost workers, …).
    InfrastructureError,
    /// A client cancelled it.
    Cancelled,
    /// Served from the action cache without running.
    Cached,
}

impl Outcome {
    /// Every outcome, in the order pages list them.
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Oom,
        Outcome::InfrastructureError,
        Outcome::Cancelled,
        Outcome::Cached,
    ];

    /// The metric label and URL parameter value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Oom => "oom",
            Outcome::InfrastructureError => "infrastructure_error",
            Outcome::Cancelled => "cancelled",
            Outcome::Cached => "cached",
        }
    }

    /// The outcome named `label`.
    pub fn from_label(label: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.label() == label)
    }

    /// Whether this is a failure worth a link and a kept response.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::TimedOut | Outcome::Oom | Outcome::InfrastructureError
        )
    }

    /// Classifies an executed (not cached) action's response.
    pub fn of(response: &reapi::ExecuteResponse) -> Outcome {
        let code = response.status.as_ref().map_or(0, |s| s.code);
        if code == Code::DeadlineExceeded as i32 {
            return Outcome::TimedOut;
        }
        if run_response(response).is_some_and(|r| r.limit_hit() == runner::LimitHit::Memory) {
            return Outcome::Oom;
        }
        if code == Code::Cancelled as i32 {
            return Outcome::Cancelled;
        }
        if code != 0 {
            return Outcome::InfrastructureError;
        }
        match &response.result {
            Some(r) if r.exit_code == 0 => Outcome::Ok,
            Some(_) => Outcome::Failed,
            None => Outcome::InfrastructureError,
        }
    }
}

/// The runner's answer the worker recorded among the auxiliary metadata.
pub fn run_response(response: &reapi::ExecuteResponse) -> Option<runner::RunResponse> {
    let meta = response.result.as_ref()?.execution_metadata.as_ref()?;
    let any = meta
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url == RUN_RESPONSE_URL)?;
    runner::RunResponse::decode(any.value.as_slice()).ok()
}

/// One finished execution, as the pages show it.
#[derive(Clone, Debug)]
pub struct Execution {
    /// The operations that waited on it (deduplicated callers share one).
    pub operations: Vec<Arc<str>>,
    /// The REAPI instance name it ran under.
    pub instance_name: String,
    /// The Action's digest.
    pub action_digest: reapi::Digest,
    /// The digest function of the request (REAPI enum value).
    pub digest_function: i32,
    /// How it ended.
    pub outcome: Outcome,
    /// The worker that ran it last ("" if none did).
    pub worker: String,
    /// `RequestMetadata.tool_invocation_id` (what Bazel and BuildStream
    /// call a build).
    pub invocation: String,
    /// `RequestMetadata.action_mnemonic` and `target_id`, when sent.
    pub mnemonic: String,
    /// See `mnemonic`.
    pub target: String,
    /// From submission to its (last) start, or to its end if it never ran.
    pub queued_for: Duration,
    /// From its last start to its end, if it ran.
    pub ran_for: Option<Duration>,
    /// When it finished (wall clock).
    pub finished_at: SystemTime,
    /// The response of a failure (successes are in the action cache).
    pub response: Option<Arc<reapi::ExecuteResponse>>,
    /// Where that response was kept in the CAS, when keeping is on.
    pub response_digest: Option<reapi::Digest>,
}

/// A failed response to store in the CAS, so its page works after the
/// operation is forgotten.
#[derive(Debug)]
pub struct KeptResponse {
    /// Instance name to store it under.
    pub instance_name: String,
    /// Its digest (under the action's digest function).
    pub digest: Digest,
    /// The encoded ExecuteResponse.
    pub bytes: Vec<u8>,
}

/// See the module comment. `Default` observes nothing but the ring.
#[derive(Debug, Default)]
pub struct Observer {
    metrics: Option<SchedulerMetrics>,
    recent: VecDeque<Execution>,
    /// The web pages' external URL, for links in failed responses.
    link_base: Option<String>,
    keep: Option<mpsc::UnboundedSender<KeptResponse>>,
    /// Cache hits per `tool_invocation_id`, and those ids oldest first.
    cache_hits: HashMap<String, u64>,
    cache_order: VecDeque<String>,
}

impl Observer {
    /// Counts into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: SchedulerMetrics) {
        self.metrics = Some(metrics);
    }

    /// Links failed responses to pages under `base` (e.g.
    /// `http://farm:8980`), and sends each to `keep` for the CAS.
    pub fn link_failures(
        &mut self,
        base: Option<String>,
        keep: Option<mpsc::UnboundedSender<KeptResponse>>,
    ) {
        self.link_base = base.map(|b| b.trim_end_matches('/').to_string());
        self.keep = keep;
    }

    /// An Execute joined an identical action in flight.
    pub fn dedup_hit(&self) {
        if let Some(m) = &self.metrics {
            m.dedup_hits.inc();
        }
    }

    /// A job starts on a worker after waiting `queued`.
    pub fn started(&self, queued: Duration) {
        if let Some(m) = &self.metrics {
            m.queue_seconds.observe(queued.as_secs_f64());
        }
    }

    /// A job lost with its worker goes back to the queue.
    pub fn retried(&self) {
        if let Some(m) = &self.metrics {
            m.retries.inc();
        }
    }

    /// An operation ended without running: served from the cache, or
    /// cancelled by its client.
    pub fn ended_early(&self, outcome: Outcome) {
        if let Some(m) = &self.metrics {
            m.outcome(outcome);
        }
    }

    /// An Execute of `invocation` was answered from the action cache.
    pub fn cache_hit(&mut self, invocation: &str) {
        if invocation.is_empty() {
            return;
        }
        if let Some(n) = self.cache_hits.get_mut(invocation) {
            *n += 1;
            return;
        }
        if self.cache_order.len() >= COUNTED_INVOCATIONS {
            if let Some(oldest) = self.cache_order.pop_front() {
                self.cache_hits.remove(&oldest);
            }
        }
        self.cache_order.push_back(invocation.to_string());
        self.cache_hits.insert(invocation.to_string(), 1);
    }

    /// Cache hits counted for `invocation`.
    pub fn cache_hits(&self, invocation: &str) -> u64 {
        self.cache_hits.get(invocation).copied().unwrap_or(0)
    }

    /// A job ended; `execution.response` holds its response until this
    /// decides what to keep. Returns the response to send, with a link to
    /// the action's page in the message of a failure.
    pub fn finished(
        &mut self,
        mut execution: Execution,
        mut response: reapi::ExecuteResponse,
    ) -> reapi::ExecuteResponse {
        if let Some(m) = &self.metrics {
            m.outcome(execution.outcome);
            if let Some(ran) = execution.ran_for {
                m.execution_seconds.observe(ran.as_secs_f64());
            }
        }
        if execution.outcome.is_failure() {
            self.keep_failure(&mut execution, &mut response);
            execution.response = Some(Arc::new(response.clone()));
        }
        if self.recent.len() >= RECENT_EXECUTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(execution);
        response
    }

    /// Keeps a failed response in the CAS (when asked to) and links its
    /// page from the message.
    fn keep_failure(&self, execution: &mut Execution, response: &mut reapi::ExecuteResponse) {
        let function =
            DigestFunction::from_proto(execution.digest_function).unwrap_or(DigestFunction::Sha256);
        let mut kept = None;
        if let Some(keep) = &self.keep {
            let bytes = response.encode_to_vec();
            let digest = Digest::of_bytes(function, &bytes);
            execution.response_digest = Some(digest.to_proto());
            kept = Some(digest);
            let _ = keep.send(KeptResponse {
                instance_name: execution.instance_name.clone(),
                digest,
                bytes,
            });
        }
        if let Some(base) = &self.link_base {
            let url = action_url(base, execution, function, kept.as_ref());
            if !response.message.is_empty() {
                response.message.push('\n');
            }
            response.message.push_str(&format!("Corral: {url}"));
        }
    }

    /// The recent executions, oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Execution> {
        self.recent.iter()
    }
}

/// The action page of `execution`, with its kept response if there is one.
fn action_url(
    base: &str,
    execution: &Execution,
    function: DigestFunction,
    kept: Option<&Digest>,
) -> String {
    let d = &execution.action_digest;
    let mut url = format!(
        "{base}/action/{}/{}/{}?instance={}",
        function.name(),
        d.hash,
        d.size_bytes,
        query_escape(&execution.instance_name)
    );
    if let Some(k) = kept {
        url.push_str(&format!("&response={}-{}", k.hash_hex(), k.size()));
    }
    url
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::protobuf::Any;
    use corral_proto::rpc::Status;

    fn response(
        code: Code,
        exit: Option<i32>,
        limit: Option<runner::LimitHit>,
    ) -> reapi::ExecuteResponse {
        let aux = limit.map(|l| Any {
            type_url: RUN_RESPONSE_URL.into(),
            value: runner::RunResponse {
                limit_hit: l as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        });
        reapi::ExecuteResponse {
            status: Some(Status {
                code: code as i32,
                ..Default::default()
            }),
            result: exit.map(|e| reapi::ActionResult {
                exit_code: e,
                execution_metadata: Some(reapi::ExecutedActionMetadata {
                    auxiliary_metadata: aux.into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_are_told_apart() {
        assert_eq!(Outcome::of(&response(Code::Ok, Some(0), None)), Outcome::Ok);
        assert_eq!(
            Outcome::of(&response(Code::Ok, Some(2), None)),
            Outcome::Failed
        );
        let oom = response(Code::Ok, Some(137), Some(runner::LimitHit::Memory));
        assert_eq!(Outcome::of(&oom), Outcome::Oom);
        let late = response(Code::DeadlineExceeded, Some(137), None);
        assert_eq!(Outcome::of(&late), Outcome::TimedOut);
        let lost = response(Code::FailedPrecondition, None, None);
        assert_eq!(Outcome::of(&lost), Outcome::InfrastructureError);
        assert_eq!(
            Outcome::of(&response(Code::Cancelled, None, None)),
            Outcome::Cancelled
        );
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_label(o.label()), Some(o));
        }
    }

    fn execution(outcome: Outcome) -> Execution {
        Execution {
            operations: vec!["operations/x-1".into()],
            instance_name: "team a/<b>".into(),
            action_digest: reapi::Digest {
                hash: "ab".repeat(32),
                size_bytes: 140,
            },
            digest_function: DigestFunction::Sha256.to_proto(),
            outcome,
            worker: "w1".into(),
            invocation: "inv".into(),
            mnemonic: String::new(),
            target: String::new(),
            queued_for: Duration::ZERO,
            ran_for: Some(Duration::from_millis(5)),
            finished_at: SystemTime::now(),
            response: None,
            response_digest: None,
        }
    }

    #[test]
    fn a_failure_links_its_page_and_is_kept() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut o = Observer::default();
        o.link_failures(Some("http://farm:8980/".into()), Some(tx));
        let mut failed = response(Code::Ok, Some(1), None);
        failed.message = "exit 1".into();
        let sent = o.finished(execution(Outcome::Failed), failed);
        let kept = rx.try_recv().unwrap();
        assert_eq!(kept.instance_name, "team a/<b>");
        assert_eq!(
            Digest::of_bytes(DigestFunction::Sha256, &kept.bytes),
            kept.digest
        );
        let expected = format!(
            "exit 1\nCorral: http://farm:8980/action/sha256/{}/140?instance=team%20a/%3Cb%3E&response={}-{}",
            "ab".repeat(32),
            kept.digest.hash_hex(),
            kept.digest.size()
        );
        assert_eq!(sent.message, expected);
        let recent: Vec<_> = o.recent().collect();
        assert_eq!(recent.len(), 1);
        assert!(recent[0].response.is_some());
        assert_eq!(recent[0].response_digest, Some(kept.digest.to_proto()));

        // A success is neither linked nor kept, and keeps no response.
        let ok = o.finished(execution(Outcome::Ok), response(Code::Ok, Some(0), None));
        assert!(ok.message.is_empty());
        assert!(rx.try_recv().is_err());
        assert!(o.recent().last().unwrap().response.is_none());
    }

    #[test]
    fn cache_hits_are_counted_per_invocation_and_bounded() {
        let mut o = Observer::default();
        o.cache_hit("a");
        o.cache_hit("a");
        o.cache_hit("");
        assert_eq!(o.cache_hits("a"), 2);
        for i in 0..COUNTED_INVOCATIONS {
            o.cache_hit(&i.to_string());
        }
        assert_eq!(o.cache_hits("a"), 0, "the oldest invocation was forgotten");
        assert_eq!(o.cache_hits("5"), 1);
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut o = Observer::default();
        for _ in 0..RECENT_EXECUTIONS + 5 {
            o.finished(execution(Outcome::Ok), reapi::ExecuteResponse::default());
        }
        assert_eq!(o.recent().count(), RECENT_EXECUTIONS);
    }
}
