//! The scheduler's metrics: counters and histograms the core's
//! [`crate::observer::Observer`] moves as events happen, and gauges read
//! from the core's state at each scrape ([`FarmCollector`]), so a queue
//! length can never drift from the queue.
//!
//! Labels are closed sets (outcome, worker state) except the queue gauges'
//! `instance` and `platform`, which name what operators configure and
//! clients send; they are bounded: at most [`MAX_QUEUE_SERIES`] queues are
//! reported by name (the rest add up under `instance="(other)"`), and a
//! platform longer than [`MAX_PLATFORM_LABEL`] characters is cut.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::observer::Outcome;
use crate::view::WorkerState;
use crate::Scheduler;

/// Queues reported by name; more add up under `instance="(other)"`.
pub const MAX_QUEUE_SERIES: usize = 100;
/// Longest `platform` label value, in characters.
pub const MAX_PLATFORM_LABEL: usize = 120;

/// Bucket bounds (seconds) of the queue and execution time histograms:
/// from a cache-warm genrule to an hour-long link.
const TIME_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

/// The event counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    pub(crate) queue_seconds: Histogram,
    pub(crate) execution_seconds: Histogram,
    pub(crate) dedup_hits: Counter,
    pub(crate) retries: Counter,
    outcomes: Family<[(&'static str, &'static str); 1], Counter>,
}

impl SchedulerMetrics {
    /// Registers the scheduler's metrics in `registry` and starts counting
    /// `scheduler`'s events. The gauges hold only a weak reference.
    pub fn register(registry: &mut Registry, scheduler: &Arc<Scheduler>) -> SchedulerMetrics {
        let m = SchedulerMetrics {
            queue_seconds: Histogram::new(TIME_BUCKETS),
            execution_seconds: Histogram::new(TIME_BUCKETS),
            dedup_hits: Counter::default(),
            retries: Counter::default(),
            outcomes: Family::default(),
        };
        for o in Outcome::ALL {
            // Every outcome is present from the start, at zero.
            m.outcomes.get_or_create_owned(&[("outcome", o.label())]);
        }
        registry.register(
            "corral_scheduler_queue_seconds",
            "Time an action waited in the queue before a worker took it",
            m.queue_seconds.clone(),
        );
        registry.register(
            "corral_scheduler_execution_seconds",
            "Time from an action's assignment to its worker's result",
            m.execution_seconds.clone(),
        );
        registry.register(
            "corral_scheduler_dedup_hits",
            "Execute requests that joined an identical action already queued or running",
            m.dedup_hits.clone(),
        );
        registry.register(
            "corral_scheduler_retries",
            "Actions requeued after their worker was lost",
            m.retries.clone(),
        );
        registry.register(
            "corral_scheduler_actions",
            "Finished operations by outcome (ok, failed, timed_out, oom, infrastructure_error, cancelled, cached)",
            m.outcomes.clone(),
        );
        registry.register_collector(Box::new(FarmCollector {
            scheduler: Arc::downgrade(scheduler),
            seen: Mutex::default(),
        }));
        scheduler.lock().observer_mut().set_metrics(m.clone());
        m
    }

    pub(crate) fn outcome(&self, outcome: Outcome) {
        self.outcomes
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
    }
}

/// Reads the gauges from the scheduler at each scrape.
#[derive(Debug)]
pub struct FarmCollector {
    scheduler: Weak<Scheduler>,
    /// Queues reported before, reported at 0 when empty so that a queue's
    /// series does not vanish while it is idle.
    seen: Mutex<BTreeSet<(String, String)>>,
}

type Labels = Vec<(&'static str, String)>;
type SecondsGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

impl FarmCollector {
    /// Queue lengths and oldest waits by (instance, platform), bounded.
    fn queues(
        &self,
        scheduler: &Scheduler,
    ) -> (Family<Labels, Gauge>, Family<Labels, SecondsGauge>) {
        let lengths = Family::<Labels, Gauge>::default();
        let oldest = Family::<Labels, SecondsGauge>::default();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let labels = |(instance, platform): &(String, String)| -> Labels {
            vec![
                ("instance", instance.clone()),
                ("platform", platform.clone()),
            ]
        };
        for key in seen.iter() {
            lengths.get_or_create(&labels(key)).set(0);
        }
        for q in scheduler.queues() {
            let platform: String = q.platform.chars().take(MAX_PLATFORM_LABEL).collect();
            let mut key = (q.instance_name, platform);
            if !seen.contains(&key) {
                if seen.len() < MAX_QUEUE_SERIES {
                    seen.insert(key.clone());
                } else {
                    key = ("(other)".to_string(), "(other)".to_string());
                }
            }
            let l = labels(&key);
            lengths.get_or_create(&l).inc_by(q.queued as i64);
            let wait = oldest.get_or_create(&l);
            wait.set(wait.get().max(q.oldest_wait.as_secs_f64()));
        }
        (lengths, oldest)
    }
}

impl Collector for FarmCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(scheduler) = self.scheduler.upgrade() else {
            return Ok(());
        };
        let (lengths, oldest) = self.queues(&scheduler);
        let farm = scheduler.farm();
        let total = Gauge::<i64>::default();
        total.set(farm.queues.iter().map(|q| q.queued as i64).sum());
        let workers = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        let slots = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        for state in ["idle", "executing", "draining"] {
            workers.get_or_create_owned(&[("state", state)]);
        }
        for w in &farm.workers {
            let state = match w.state {
                WorkerState::Idle => "idle",
                WorkerState::Executing => "executing",
                WorkerState::Draining | WorkerState::Held => "draining",
            };
            workers.get_or_create(&[("state", state)]).inc();
            slots
                .get_or_create(&[("state", "busy")])
                .inc_by(w.running.len() as i64);
            slots
                .get_or_create(&[("state", "free")])
                .inc_by(w.slots.saturating_sub(w.running.len()) as i64);
        }
        let metrics: [(&str, &str, &dyn EncodeMetric); 5] = [
            (
                "corral_scheduler_queued_operations",
                "Actions waiting in the queue, by instance name and platform queue",
                &lengths,
            ),
            (
                "corral_scheduler_queue_oldest_wait_seconds",
                "How long the oldest action of each queue has waited",
                &oldest,
            ),
            (
                "corral_scheduler_queue_length",
                "Actions waiting in every queue together",
                &total,
            ),
            (
                "corral_scheduler_workers",
                "Connected workers by state (idle, executing, draining)",
                &workers,
            ),
            (
                "corral_scheduler_worker_slots",
                "Slots of connected workers by state (busy, free)",
                &slots,
            ),
        ];
        for (name, help, metric) in metrics {
            let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(descriptor)?;
        }
        Ok(())
    }
}
