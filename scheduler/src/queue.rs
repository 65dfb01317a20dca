//! The wait queue: REAPI priority first, then fair share between instance
//! names and between invocations, FIFO inside an invocation.
//!
//! Shape: priority level → instance name → invocation id → platform class →
//! FIFO of entries. Splitting by platform class lets a worker skip, in one
//! step, every action it could never run, so a queue full of actions for
//! other platforms costs nothing per assignment.
//!
//! Fair share: inside a priority level the instance with the fewest running
//! actions goes first, then inside it the invocation with the fewest running
//! actions; ties go to whoever was served least recently. A large build thus
//! gets one slot in turn with a small one instead of starving it.
//!
//! A tenant may be capped at a number of running actions (its
//! `concurrent_executions` quota): while it runs that many, its entries
//! are passed over and wait, and the other tenants' go first.
//!
//! Entries are removed lazily: the caller's check says when an entry is
//! stale (cancelled, already running), and stale entries are dropped when
//! they reach the head.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Identifies a job (one action to run) inside the scheduler.
pub type JobId = u64;
/// Identifies a set of equal platform requirements.
pub type ClassId = u64;

/// What the caller says about the head entry of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The entry no longer stands for a queued job: drop it.
    Stale,
    /// Live, but this worker cannot take it (platform or budget).
    Skip,
    /// Live, and this worker can take it.
    Take,
}

#[derive(Debug, Default)]
struct Invocation {
    classes: BTreeMap<ClassId, VecDeque<(u64, JobId)>>,
}

#[derive(Debug, Default)]
struct Instance {
    invocations: BTreeMap<String, Invocation>,
}

/// A tenant's standing for fair share. Kept while the tenant has anything
/// running or queued, so that a build submitting one action at a time does
/// not look new (and win every tie) each time.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    running: usize,
    last_served: u64,
}

/// The fair priority queue. See the module comment.
#[derive(Debug, Default)]
pub struct FairQueue {
    levels: BTreeMap<i32, BTreeMap<String, Instance>>,
    instances: HashMap<String, Share>,
    invocations: HashMap<(String, String), Share>,
    serial: u64,
    entries: usize,
    /// Running actions allowed per instance (tenant) with a cap.
    limits: HashMap<String, usize>,
}

impl FairQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held, stale ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Queues `job`. `seq` orders jobs inside an invocation (smaller first);
    /// a requeued job keeps its original `seq` and so its place.
    pub fn push(
        &mut self,
        priority: i32,
        instance: &str,
        invocation: &str,
        class: ClassId,
        seq: u64,
        job: JobId,
    ) {
        let fifo = self
            .levels
            .entry(priority)
            .or_default()
            .entry(instance.to_string())
            .or_default()
            .invocations
            .entry(invocation.to_string())
            .or_default()
            .classes
            .entry(class)
            .or_default();
        // Keep the FIFO sorted by seq; requeued jobs go back near the front.
        let at = fifo.partition_point(|(s, _)| *s < seq);
        fifo.insert(at, (seq, job));
        self.entries += 1;
    }

    /// Caps the running actions of `instance` (a tenant's share); `None`
    /// lifts the cap.
    pub fn set_limit(&mut self, instance: &str, limit: Option<usize>) {
        match limit {
            Some(n) => {
                self.limits.insert(instance.to_string(), n);
            }
            None => {
                self.limits.remove(instance);
            }
        }
    }

    /// Whether `instance` runs as many actions as its cap allows.
    pub fn at_limit(&self, instance: &str) -> bool {
        let running = self.instances.get(instance).map_or(0, |s| s.running);
        self.limits
            .get(instance)
            .is_some_and(|&limit| running >= limit)
    }

    /// A job of this tenant started running (counts towards fair share).
    pub fn started(&mut self, instance: &str, invocation: &str) {
        self.instances
            .entry(instance.to_string())
            .or_default()
            .running += 1;
        self.invocations
            .entry((instance.to_string(), invocation.to_string()))
            .or_default()
            .running += 1;
    }

    /// A job of this tenant stopped running.
    pub fn finished(&mut self, instance: &str, invocation: &str) {
        if let Some(s) = self.instances.get_mut(instance) {
            s.running = s.running.saturating_sub(1);
        }
        let key = (instance.to_string(), invocation.to_string());
        if let Some(s) = self.invocations.get_mut(&key) {
            s.running = s.running.saturating_sub(1);
        }
        self.forget_idle(instance, invocation);
    }

    /// Drops the standing of a tenant with nothing running or queued.
    fn forget_idle(&mut self, instance: &str, invocation: &str) {
        let key = (instance.to_string(), invocation.to_string());
        let queued_inv = self.levels.values().any(|l| {
            l.get(instance)
                .is_some_and(|i| i.invocations.contains_key(invocation))
        });
        if !queued_inv && self.invocations.get(&key).is_some_and(|s| s.running == 0) {
            self.invocations.remove(&key);
        }
        let queued_inst = self.levels.values().any(|l| l.contains_key(instance));
        if !queued_inst && self.instances.get(instance).is_some_and(|s| s.running == 0) {
            self.instances.remove(instance);
        }
    }

    /// Removes and returns the first job, in queue order, for which `check`
    /// says [`Verdict::Take`]. `check(priority, class, job)` is asked about
    /// the head of each class; stale heads are dropped and the next one is
    /// asked. The priority lets the caller recognise the stale entry a job
    /// leaves behind when it moves to a more urgent level.
    pub fn pop(&mut self, mut check: impl FnMut(i32, ClassId, JobId) -> Verdict) -> Option<JobId> {
        let levels: Vec<i32> = self.levels.keys().copied().collect();
        for priority in levels {
            if let Some(job) = self.pop_level(priority, &mut check) {
                return Some(job);
            }
        }
        None
    }

    fn pop_level(
        &mut self,
        priority: i32,
        check: &mut impl FnMut(i32, ClassId, JobId) -> Verdict,
    ) -> Option<JobId> {
        let level = self.levels.get_mut(&priority)?;
        let limits = &self.limits;
        let shares = &self.instances;
        let mut instances: Vec<(usize, u64, String)> = level
            .keys()
            .filter(|name| {
                limits
                    .get(*name)
                    .is_none_or(|&limit| shares.get(*name).map_or(0, |s| s.running) < limit)
            })
            .map(|name| {
                let s = shares.get(name).copied().unwrap_or_default();
                (s.running, s.last_served, name.clone())
            })
            .collect();
        instances.sort();
        let mut found = None;
        'instances: for (_, _, instance_name) in &instances {
            let Some(instance) = level.get_mut(instance_name) else {
                continue;
            };
            let mut invocations: Vec<(usize, u64, String)> = instance
                .invocations
                .keys()
                .map(|id| {
                    let s = self
                        .invocations
                        .get(&(instance_name.clone(), id.clone()))
                        .copied()
                        .unwrap_or_default();
                    (s.running, s.last_served, id.clone())
                })
                .collect();
            invocations.sort();
            for (_, _, invocation_id) in &invocations {
                let Some(inv) = instance.invocations.get_mut(invocation_id) else {
                    continue;
                };
                let (job, dropped) = take_from(inv, &mut |class, job| check(priority, class, job));
                self.entries -= dropped;
                if let Some(job) = job {
                    self.entries -= 1;
                    self.serial += 1;
                    let serial = self.serial;
                    self.instances
                        .entry(instance_name.clone())
                        .or_default()
                        .last_served = serial;
                    self.invocations
                        .entry((instance_name.clone(), invocation_id.clone()))
                        .or_default()
                        .last_served = serial;
                    found = Some((job, instance_name.clone(), invocation_id.clone()));
                }
                if inv.classes.is_empty() {
                    instance.invocations.remove(invocation_id);
                }
                if found.is_some() {
                    break 'instances;
                }
            }
        }
        level.retain(|_, i| !i.invocations.is_empty());
        if level.is_empty() {
            self.levels.remove(&priority);
        }
        let (job, instance, invocation) = found?;
        self.forget_idle(&instance, &invocation);
        Some(job)
    }
}

/// Takes the earliest takeable head among an invocation's classes. Returns
/// the job and how many stale entries were dropped on the way.
fn take_from(
    inv: &mut Invocation,
    check: &mut impl FnMut(ClassId, JobId) -> Verdict,
) -> (Option<JobId>, usize) {
    let mut dropped = 0;
    let mut best: Option<(u64, ClassId)> = None;
    for (&class, fifo) in inv.classes.iter_mut() {
        while let Some(&(seq, job)) = fifo.front() {
            match check(class, job) {
                Verdict::Stale => {
                    fifo.pop_front();
                    dropped += 1;
                }
                Verdict::Skip => break,
                Verdict::Take => {
                    if best.is_none_or(|(s, _)| seq < s) {
                        best = Some((seq, class));
                    }
                    break;
                }
            }
        }
    }
    let job = best.and_then(|(_, class)| {
        inv.classes
            .get_mut(&class)
            .and_then(|fifo| fifo.pop_front())
            .map(|(_, job)| job)
    });
    inv.classes.retain(|_, fifo| !fifo.is_empty());
    (job, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(_: i32, _: ClassId, _: JobId) -> Verdict {
        Verdict::Take
    }

    #[test]
    fn smaller_priority_value_goes_first() {
        let mut q = FairQueue::new();
        q.push(5, "", "a", 0, 1, 1);
        q.push(-1, "", "a", 0, 2, 2);
        q.push(0, "", "a", 0, 3, 3);
        assert_eq!(q.pop(take_all), Some(2));
        assert_eq!(q.pop(take_all), Some(3));
        assert_eq!(q.pop(take_all), Some(1));
        assert_eq!(q.pop(take_all), None);
        assert!(q.is_empty());
    }

    #[test]
    fn fifo_inside_an_invocation_and_requeue_keeps_place() {
        let mut q = FairQueue::new();
        q.push(0, "", "a", 0, 10, 10);
        q.push(0, "", "a", 1, 11, 11);
        q.push(0, "", "a", 0, 12, 12);
        q.push(0, "", "a", 0, 5, 5); // requeued with its old seq
        let order: Vec<_> = std::iter::from_fn(|| q.pop(take_all)).collect();
        assert_eq!(order, vec![5, 10, 11, 12]);
    }

    #[test]
    fn invocations_share_fairly_by_running_count() {
        let mut q = FairQueue::new();
        for j in 0..100 {
            q.push(0, "", "big", 0, j, j);
        }
        q.push(0, "", "small", 0, 1000, 1000);
        q.push(0, "", "small", 0, 1001, 1001);
        // big has 3 running already, small none: small goes first.
        for _ in 0..3 {
            q.started("", "big");
        }
        assert_eq!(q.pop(take_all), Some(1000));
        q.started("", "small");
        assert_eq!(q.pop(take_all), Some(1001));
        q.started("", "small");
        // small has 2 running, big 3, nothing else queued for small.
        assert_eq!(q.pop(take_all), Some(0));
    }

    #[test]
    fn instances_share_before_invocations() {
        let mut q = FairQueue::new();
        // Instance "x" has two invocations, instance "y" one.
        q.push(0, "x", "a", 0, 1, 1);
        q.push(0, "x", "b", 0, 2, 2);
        q.push(0, "y", "c", 0, 3, 3);
        q.push(0, "x", "a", 0, 4, 4);
        q.push(0, "y", "c", 0, 5, 5);
        let mut order = Vec::new();
        while let Some(j) = q.pop(take_all) {
            order.push(j);
            let (inst, inv) = match j {
                1 | 4 => ("x", "a"),
                2 => ("x", "b"),
                _ => ("y", "c"),
            };
            q.started(inst, inv);
        }
        // x and y alternate while both have work.
        assert_eq!(order, vec![1, 3, 2, 5, 4]);
    }

    #[test]
    fn a_capped_instance_waits_while_others_run() {
        let mut q = FairQueue::new();
        q.set_limit("x", Some(1));
        q.push(0, "x", "a", 0, 1, 1);
        q.push(0, "x", "a", 0, 2, 2);
        q.push(0, "y", "c", 0, 3, 3);
        assert!(!q.at_limit("x"));
        assert_eq!(q.pop(take_all), Some(1));
        q.started("x", "a");
        assert!(q.at_limit("x"));
        // x is at its cap: y's job goes, and then nothing.
        assert_eq!(q.pop(take_all), Some(3));
        q.started("y", "c");
        assert_eq!(q.pop(take_all), None);
        assert_eq!(q.len(), 1);
        q.finished("x", "a");
        assert!(!q.at_limit("x"));
        assert_eq!(q.pop(take_all), Some(2));
        // Lifting the cap.
        q.set_limit("x", None);
        assert!(!q.at_limit("x"));
    }

    #[test]
    fn skipped_classes_and_stale_entries() {
        let mut q = FairQueue::new();
        q.push(0, "", "a", 7, 1, 1);
        q.push(0, "", "a", 8, 2, 2);
        q.push(0, "", "a", 8, 3, 3);
        // Class 7 is not runnable here; job 2 was cancelled.
        let got = q.pop(|_, class, job| match (class, job) {
            (7, _) => Verdict::Skip,
            (_, 2) => Verdict::Stale,
            _ => Verdict::Take,
        });
        assert_eq!(got, Some(3));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(|_, _, _| Verdict::Skip), None);
        assert_eq!(q.pop(take_all), Some(1));
        assert!(q.is_empty());
    }
}
