//! What the scheduler knows about one connected worker.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use corral_proto::worker::v1::SchedulerMessage;
use tokio::sync::mpsc;

use crate::platform::{Offer, Requirements};
use crate::queue::{ClassId, JobId};

/// Identifies one worker session (a reconnect is a new session).
pub type WorkerId = u64;

/// How many recent invocation ids a worker remembers for affinity.
const RECENT_INVOCATIONS: usize = 8;

/// One connected worker.
#[derive(Debug)]
pub struct Worker {
    pub id: WorkerId,
    pub name: String,
    /// What the worker's connection proved (e.g. `uid:0`), recorded in the
    /// provenance of every result it produces.
    pub identity: String,
    pub offer: Offer,
    pub slots: usize,
    /// Assignment id → job, for everything the worker holds a slot for
    /// (including cancelled work whose result has not come back yet).
    pub running: HashMap<String, JobId>,
    /// Budget of `minimum` keys consumed by running actions.
    pub used: BTreeMap<String, u64>,
    pub draining: bool,
    /// Held by an operator (crate::view): connected, given nothing new.
    pub held: bool,
    /// `Drained` was sent; nothing more to say.
    pub drained_sent: bool,
    pub images: HashSet<String>,
    pub recent_invocations: VecDeque<String>,
    /// Cached "could this worker ever run that class" answers.
    pub class_match: HashMap<ClassId, bool>,
    pub last_heard: Duration,
    pub last_sent: Duration,
    pub tx: mpsc::UnboundedSender<SchedulerMessage>,
}

impl Worker {
    pub fn free_slots(&self) -> usize {
        self.slots.saturating_sub(self.running.len())
    }

    /// Whether the worker may be given new work at all.
    pub fn accepting(&self) -> bool {
        !self.draining && !self.held && self.free_slots() > 0
    }

    /// Whether the rest of the worker's budgets cover `reqs` now.
    pub fn fits(&self, reqs: &Requirements) -> bool {
        reqs.budgets().all(|(key, amount)| {
            let total = self.offer.budgets.get(key).copied().unwrap_or(0);
            let used = self.used.get(key).copied().unwrap_or(0);
            total.saturating_sub(used) >= amount
        })
    }

    /// Static match, cached per class.
    pub fn can_ever_run(&mut self, class: ClassId, reqs: &Requirements) -> bool {
        *self
            .class_match
            .entry(class)
            .or_insert_with(|| self.offer.satisfies_all(reqs))
    }

    pub fn consume(&mut self, reqs: &Requirements) {
        for (key, amount) in reqs.budgets() {
            *self.used.entry(key.to_string()).or_default() += amount;
        }
    }

    pub fn release(&mut self, reqs: &Requirements) {
        for (key, amount) in reqs.budgets() {
            if let Some(u) = self.used.get_mut(key) {
                *u = u.saturating_sub(amount);
            }
        }
    }

    pub fn ran_invocation(&mut self, invocation: &str) {
        if invocation.is_empty() {
            return;
        }
        if let Some(at) = self.recent_invocations.iter().position(|i| i == invocation) {
            self.recent_invocations.remove(at);
        }
        self.recent_invocations.push_front(invocation.to_string());
        self.recent_invocations.truncate(RECENT_INVOCATIONS);
    }

    /// Preference among idle matching workers: higher is better.
    pub fn affinity(&self, image: Option<&str>, invocation: &str) -> (u8, u8, usize) {
        let has_image = image.is_some_and(|i| self.images.contains(i));
        let ran = !invocation.is_empty() && self.recent_invocations.iter().any(|i| i == invocation);
        (u8::from(has_image), u8::from(ran), self.free_slots())
    }

    /// Sends a message; a closed stream is noticed by the session itself.
    pub fn send(&mut self, msg: SchedulerMessage, now: Duration) {
        self.last_sent = now;
        let _ = self.tx.send(msg);
    }
}
