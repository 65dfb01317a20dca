//! The table of named operations: their stage, their watchers, and the
//! bounded retention of completed ones.
//!
//! Each operation owns a `watch` channel holding its current
//! `google.longrunning.Operation`; Execute and WaitExecution streams
//! subscribe to it. A keepalive is a re-send of the same value, which wakes
//! every open stream. `Operation.error` is never set: a failure of any kind
//! travels in `ExecuteResponse.status` (BuildStream treats `error` as a
//! protocol violation).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use corral_proto::prost::Message;
use corral_proto::reapi::execution_stage::Value as Stage;
use corral_proto::{longrunning, protobuf, reapi};
use tokio::sync::watch;

use crate::queue::JobId;

const METADATA_URL: &str =
    "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
const RESPONSE_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";

/// One named operation.
#[derive(Debug)]
pub struct OpRecord {
    /// The job this operation waits on; `None` once done.
    pub job: Option<JobId>,
    pub action_digest: reapi::Digest,
    pub digest_function: i32,
    pub stage: Stage,
    tx: watch::Sender<longrunning::Operation>,
    last_sent: Duration,
}

/// All operations the scheduler can still name.
#[derive(Debug)]
pub struct OpTable {
    ops: BTreeMap<String, OpRecord>,
    completed: VecDeque<(Duration, String)>,
    prefix: String,
    next: u64,
}

impl OpTable {
    /// `prefix` keeps names unique across restarts of the process.
    pub fn new(prefix: String) -> Self {
        OpTable {
            ops: BTreeMap::new(),
            completed: VecDeque::new(),
            prefix,
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Creates a QUEUED operation waiting on `job`.
    pub fn create(
        &mut self,
        job: Option<JobId>,
        action_digest: reapi::Digest,
        digest_function: i32,
        now: Duration,
    ) -> (String, watch::Receiver<longrunning::Operation>) {
        self.next += 1;
        let name = format!("operations/{}-{:012}", self.prefix, self.next);
        let op = build(&name, Stage::Queued, &action_digest, digest_function, None);
        let (tx, rx) = watch::channel(op);
        self.ops.insert(
            name.clone(),
            OpRecord {
                job,
                action_digest,
                digest_function,
                stage: Stage::Queued,
                tx,
                last_sent: now,
            },
        );
        (name, rx)
    }

    pub fn get(&self, name: &str) -> Option<&OpRecord> {
        self.ops.get(name)
    }

    /// The operation as clients see it now.
    pub fn snapshot(&self, name: &str) -> Option<longrunning::Operation> {
        self.ops.get(name).map(|r| r.tx.borrow().clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<longrunning::Operation>> {
        self.ops.get(name).map(|r| r.tx.subscribe())
    }

    /// Moves a running operation to `stage` (no-op once done).
    pub fn set_stage(&mut self, name: &str, stage: Stage, now: Duration) {
        let Some(r) = self.ops.get_mut(name) else {
            return;
        };
        if r.job.is_none() || r.stage == stage {
            return;
        }
        r.stage = stage;
        let op = build(name, stage, &r.action_digest, r.digest_function, None);
        r.tx.send_replace(op);
        r.last_sent = now;
    }

    /// Completes an operation with `response`; it is then kept for the
    /// retention period.
    pub fn complete(&mut self, name: &str, response: reapi::ExecuteResponse, now: Duration) {
        let Some(r) = self.ops.get_mut(name) else {
            return;
        };
        if r.job.is_none() && r.stage == Stage::Completed {
            return;
        }
        r.job = None;
        r.stage = Stage::Completed;
        let op = build(
            name,
            Stage::Completed,
            &r.action_digest,
            r.digest_function,
            Some(&response),
        );
        r.tx.send_replace(op);
        r.last_sent = now;
        self.completed.push_back((now, name.to_string()));
    }

    /// Forgets an operation (Operations.DeleteOperation).
    pub fn remove(&mut self, name: &str) -> Option<OpRecord> {
        self.ops.remove(name)
    }

    /// Re-sends the current state of every unfinished operation that has an
    /// open stream and has been silent for `interval`.
    pub fn keepalive(&mut self, now: Duration, interval: Duration) {
        for r in self.ops.values_mut() {
            if r.job.is_some()
                && r.tx.receiver_count() > 0
                && now.saturating_sub(r.last_sent) >= interval
            {
                r.tx.send_modify(|_| {});
                r.last_sent = now;
            }
        }
    }

    /// Drops completed operations older than `retention`, and the oldest
    /// ones beyond `max`.
    pub fn evict(&mut self, now: Duration, retention: Duration, max: usize) {
        while let Some((at, name)) = self.completed.front() {
            let done = self
                .ops
                .get(name)
                .is_some_and(|r| r.job.is_none() && r.stage == Stage::Completed);
            if !done {
                // Deleted already.
                self.completed.pop_front();
                continue;
            }
            if now.saturating_sub(*at) >= retention || self.completed.len() > max {
                self.ops.remove(name);
                self.completed.pop_front();
            } else {
                break;
            }
        }
    }

    /// A page of operations in name order, starting after `after`.
    pub fn list(&self, after: &str, limit: usize) -> (Vec<longrunning::Operation>, Option<String>) {
        use std::ops::Bound;
        let start = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after.to_string())
        };
        let mut out = Vec::new();
        let mut iter = self.ops.range((start, Bound::Unbounded));
        for (_, r) in iter.by_ref().take(limit) {
            out.push(r.tx.borrow().clone());
        }
        let next = if iter.next().is_some() {
            out.last().map(|o| o.name.clone())
        } else {
            None
        };
        (out, next)
    }
}

/// Builds the Operation message for a stage, with the response when done.
pub fn build(
    name: &str,
    stage: Stage,
    action_digest: &reapi::Digest,
    digest_function: i32,
    response: Option<&reapi::ExecuteResponse>,
) -> longrunning::Operation {
    let metadata = reapi::ExecuteOperationMetadata {
        stage: stage as i32,
        action_digest: Some(action_digest.clone()),
        digest_function,
        ..Default::default()
    };
    longrunning::Operation {
        name: name.to_string(),
        metadata: Some(protobuf::Any {
            type_url: METADATA_URL.to_string(),
            value: metadata.encode_to_vec(),
        }),
        done: response.is_some(),
        result: response.map(|r| {
            longrunning::operation::Result::Response(protobuf::Any {
                type_url: RESPONSE_URL.to_string(),
                value: r.encode_to_vec(),
            })
        }),
    }
}

/// Decodes the stage from an Operation's metadata (for tests and clients).
pub fn stage_of(op: &longrunning::Operation) -> Option<Stage> {
    let any = op.metadata.as_ref()?;
    let m = reapi::ExecuteOperationMetadata::decode(any.value.as_slice()).ok()?;
    Stage::try_from(m.stage).ok()
}

/// Decodes the ExecuteResponse of a finished Operation.
pub fn response_of(op: &longrunning::Operation) -> Option<reapi::ExecuteResponse> {
    match op.result.as_ref()? {
        longrunning::operation::Result::Response(any) => {
            reapi::ExecuteResponse::decode(any.value.as_slice()).ok()
        }
        longrunning::operation::Result::Error(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> reapi::Digest {
        reapi::Digest {
            hash: "ab".repeat(32),
            size_bytes: 3,
        }
    }

    #[test]
    fn retention_by_age_and_count() {
        let mut t = OpTable::new("t".into());
        let mut names = Vec::new();
        for i in 0..5 {
            let (n, _) = t.create(Some(i), digest(), 1, Duration::ZERO);
            t.complete(
                &n,
                reapi::ExecuteResponse::default(),
                Duration::from_secs(i),
            );
            names.push(n);
        }
        t.evict(Duration::from_secs(4), Duration::from_secs(100), 3);
        assert_eq!(t.len(), 3);
        assert!(t.get(&names[0]).is_none() && t.get(&names[2]).is_some());
        t.evict(Duration::from_secs(103), Duration::from_secs(100), 3);
        assert_eq!(t.len(), 1);
        assert!(t.get(&names[4]).is_some());
    }

    #[test]
    fn completed_operation_has_response_never_error() {
        let mut t = OpTable::new("t".into());
        let (n, rx) = t.create(Some(1), digest(), 1, Duration::ZERO);
        assert_eq!(stage_of(&rx.borrow()), Some(Stage::Queued));
        t.set_stage(&n, Stage::Executing, Duration::ZERO);
        assert_eq!(stage_of(&rx.borrow()), Some(Stage::Executing));
        let resp = reapi::ExecuteResponse {
            status: Some(crate::status::rpc_status(
                corral_proto::tonic::Code::DeadlineExceeded,
                "late",
            )),
            ..Default::default()
        };
        t.complete(&n, resp.clone(), Duration::ZERO);
        let op = rx.borrow().clone();
        assert!(op.done);
        assert_eq!(response_of(&op), Some(resp));
        assert!(!matches!(
            op.result,
            Some(longrunning::operation::Result::Error(_))
        ));
    }

    #[test]
    fn list_pages_in_name_order() {
        let mut t = OpTable::new("t".into());
        for i in 0..5 {
            t.create(Some(i), digest(), 1, Duration::ZERO);
        }
        let (page, next) = t.list("", 2);
        assert_eq!(page.len(), 2);
        let (page2, next2) = t.list(next.as_deref().unwrap(), 10);
        assert_eq!(page2.len(), 3);
        assert!(next2.is_none());
        assert!(page[1].name < page2[0].name);
    }
}
