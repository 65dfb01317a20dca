//! The core's one call into its [`crate::observer::Observer`] that needs
//! the job's details: a job ended.

use std::time::{Duration, SystemTime};

use corral_proto::reapi;

use super::{Core, JobState};
use crate::observer::{Execution, Outcome};
use crate::queue::JobId;

impl Core {
    /// Tells the observer that `jid` ended with `response` (before its
    /// waiters are completed); returns the response to send them, which
    /// for a failure carries a link to the action's page.
    pub(super) fn observe_finished(
        &mut self,
        jid: JobId,
        response: reapi::ExecuteResponse,
        now: Duration,
    ) -> reapi::ExecuteResponse {
        let Some(job) = self.jobs.get(&jid) else {
            return response;
        };
        let (worker, started) = match &job.state {
            JobState::Running {
                worker, started, ..
            } => (Some(worker), Some(*started)),
            JobState::Abandoned { worker, .. } => (Some(worker), None),
            JobState::Queued => (None, None),
        };
        let worker = worker
            .and_then(|w| self.workers.get(w))
            .map(|w| w.name.clone())
            .unwrap_or_default();
        let meta = job.metadata.as_deref();
        let field =
            |f: fn(&reapi::RequestMetadata) -> &String| meta.map(f).cloned().unwrap_or_default();
        let execution = Execution {
            operations: job.waiters.clone(),
            instance_name: job.instance_name.clone(),
            action_digest: job.action_digest.clone(),
            digest_function: job.digest_function,
            outcome: Outcome::of(&response),
            worker,
            invocation: field(|m| &m.tool_invocation_id),
            mnemonic: field(|m| &m.action_mnemonic),
            target: field(|m| &m.target_id),
            queued_for: started.unwrap_or(now).saturating_sub(job.enqueued_at),
            ran_for: started.map(|s| now.saturating_sub(s)),
            finished_at: SystemTime::now(),
            response: None,
            response_digest: None,
        };
        self.observer.finished(execution, response)
    }
}
