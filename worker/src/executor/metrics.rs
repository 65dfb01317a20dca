//! The layer that measures each run for `/metrics`: time per phase, bytes
//! fetched and uploaded, the local CAS's hit ratio, the sandbox's own cost
//! and the limits actions hit.
//!
//! Coarse phases come from the stages the layers below report (as
//! [`super::Timestamped`] reads them); finer steps (image pull, staging,
//! output capture, upload) and byte counts are noted by the steps
//! themselves into a task-local record this layer installs
//! ([`super::probe`]). The sandbox's cost is the run call's time less the
//! command's own wall time, both of which the runner's answer (kept in
//! the auxiliary metadata) and the stage times give. Labels are closed
//! sets: phase, limit, result.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_proto::reapi;
use corral_proto::runner::v1 as pb;
use corral_proto::worker::v1::{Assignment, Stage};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::probe::{self, Noted, Probe, Step};
use super::{ActionExecutor, Progress};

/// Bucket bounds (seconds) of the phase histograms.
const TIME_BUCKETS: [f64; 15] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

/// Type URL of the runner's answer among the auxiliary metadata.
const RUN_RESPONSE_URL: &str = "type.googleapis.com/corral.runner.v1.RunResponse";

type Label = [(&'static str, &'static str); 1];

/// The `phase` label's values.
const PHASES: [&str; 7] = [
    "input_fetch",
    "image_pull",
    "staging",
    "execution",
    "output",
    "output_capture",
    "upload",
];

/// The worker's metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    phases: Family<Label, Histogram>,
    fetched_bytes: Counter,
    uploaded_bytes: Counter,
    local_cas: Family<Label, Counter>,
    sandbox_start: Histogram,
    limits: Family<Label, Counter>,
    actions: Family<Label, Counter>,
    running: Gauge,
}

impl WorkerMetrics {
    /// New metrics, registered in `registry` under `corral_worker_*`.
    pub fn register(registry: &mut Registry) -> WorkerMetrics {
        let m = WorkerMetrics {
            phases: Family::new_with_constructor(|| Histogram::new(TIME_BUCKETS)),
            fetched_bytes: Counter::default(),
            uploaded_bytes: Counter::default(),
            local_cas: Family::default(),
            sandbox_start: Histogram::new(TIME_BUCKETS),
            limits: Family::default(),
            actions: Family::default(),
            running: Gauge::default(),
        };
        for result in ["hit", "miss"] {
            m.local_cas.get_or_create_owned(&[("result", result)]);
        }
        for result in ["ok", "failed", "error"] {
            m.actions.get_or_create_owned(&[("result", result)]);
        }
        // Every series is there from the start, at zero.
        for limit in ["timeout", "memory", "pids", "written_bytes", "cpu_time"] {
            m.limits.get_or_create_owned(&[("limit", limit)]);
        }
        for phase in PHASES {
            m.phases.get_or_create_owned(&[("phase", phase)]);
        }
        let r = registry;
        r.register("corral_worker_phase_seconds", "Time per phase of a run: input_fetch (image pull and staging together), image_pull, staging, execution (the runner call), output (capture and upload), output_capture, upload", m.phases.clone());
        r.register(
            "corral_worker_fetched_bytes",
            "Bytes the local CAS fetched from the remote CAS for inputs",
            m.fetched_bytes.clone(),
        );
        r.register(
            "corral_worker_uploaded_bytes",
            "Bytes of outputs uploaded to the remote CAS",
            m.uploaded_bytes.clone(),
        );
        r.register(
            "corral_worker_local_cas_lookups",
            "Input blobs the local CAS held (hit) or fetched (miss)",
            m.local_cas.clone(),
        );
        r.register("corral_worker_sandbox_start_seconds", "Time of a runner call not spent in the command: making, starting and removing the sandbox", m.sandbox_start.clone());
        r.register(
            "corral_worker_limits_hit",
            "Runs stopped by a limit (timeout, memory, pids, written_bytes, cpu_time)",
            m.limits.clone(),
        );
        r.register(
            "corral_worker_actions",
            "Runs by result (ok: exit 0; failed: non-zero exit; error: no result)",
            m.actions.clone(),
        );
        r.register(
            "corral_worker_running_actions",
            "Runs in progress",
            m.running.clone(),
        );
        m
    }

    fn phase(&self, phase: &'static str, took: Duration) {
        self.phases
            .get_or_create(&[("phase", phase)])
            .observe(took.as_secs_f64());
    }

    /// Records one finished run.
    fn record(
        &self,
        stages: &[(Stage, Instant)],
        end: Instant,
        noted: &Noted,
        response: &reapi::ExecuteResponse,
    ) {
        let mut execution = None;
        for (i, (stage, start)) in stages.iter().enumerate() {
            let stop = stages.get(i + 1).map_or(end, |(_, next)| *next);
            let took = stop.saturating_duration_since(*start);
            match stage {
                Stage::FetchingInputs => self.phase("input_fetch", took),
                Stage::Running => {
                    self.phase("execution", took);
                    execution = Some(took);
                }
                Stage::UploadingOutputs => self.phase("output", took),
                Stage::Unspecified => {}
            }
        }
        for (step, took) in &noted.steps {
            self.phase(step_label(*step), *took);
        }
        self.fetched_bytes.inc_by(noted.fetched_bytes);
        self.uploaded_bytes.inc_by(noted.uploaded_bytes);
        self.local_cas
            .get_or_create(&[("result", "hit")])
            .inc_by(noted.local_hits);
        self.local_cas
            .get_or_create(&[("result", "miss")])
            .inc_by(noted.local_misses);
        if let Some(run) = run_response(response) {
            if let Some(label) = limit_label(run.limit_hit()) {
                self.limits.get_or_create(&[("limit", label)]).inc();
            }
            if let Some(took) = execution {
                let command = Duration::from_micros(run.wall_time_us);
                self.sandbox_start
                    .observe(took.saturating_sub(command).as_secs_f64());
            }
        }
        let code = response.status.as_ref().map_or(0, |s| s.code);
        let late = tonic::Code::DeadlineExceeded as i32;
        let result = match &response.result {
            Some(r) if code == 0 && r.exit_code == 0 => "ok",
            Some(_) if code == 0 || code == late => "failed",
            _ => "error",
        };
        self.actions.get_or_create(&[("result", result)]).inc();
    }
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::ImagePull => "image_pull",
        Step::Staging => "staging",
        Step::OutputCapture => "output_capture",
        Step::Upload => "upload",
    }
}

fn limit_label(limit: pb::LimitHit) -> Option<&'static str> {
    match limit {
        pb::LimitHit::None => None,
        pb::LimitHit::Timeout => Some("timeout"),
        pb::LimitHit::Memory => Some("memory"),
        pb::LimitHit::Pids => Some("pids"),
        pb::LimitHit::WrittenBytes => Some("written_bytes"),
        pb::LimitHit::CpuTime => Some("cpu_time"),
    }
}

fn run_response(response: &reapi::ExecuteResponse) -> Option<pb::RunResponse> {
    let meta = response.result.as_ref()?.execution_metadata.as_ref()?;
    let any = meta
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url == RUN_RESPONSE_URL)?;
    pb::RunResponse::decode(any.value.as_slice()).ok()
}

/// Measures every run of the inner executor.
pub struct Metered<E> {
    inner: E,
    metrics: WorkerMetrics,
}

impl<E> Metered<E> {
    /// Measures `inner`'s runs into `metrics`.
    pub fn new(inner: E, metrics: WorkerMetrics) -> Self {
        Metered { inner, metrics }
    }
}

/// Keeps the running gauge right however a run ends (a dropped run too).
struct Running(Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<E: ActionExecutor> ActionExecutor for Metered<E> {
    fn execute<'a>(
        &'a self,
        assignment: &'a Assignment,
        cancel: &'a CancellationToken,
        progress: &'a Progress<'a>,
    ) -> BoxFuture<'a, reapi::ExecuteResponse> {
        Box::pin(async move {
            self.metrics.running.inc();
            let _running = Running(self.metrics.running.clone());
            let stages: Mutex<Vec<(Stage, Instant)>> = Mutex::new(Vec::new());
            let noting = |stage: Stage| {
                if let Ok(mut seen) = stages.lock() {
                    seen.push((stage, Instant::now()));
                }
                progress(stage);
            };
            let probe = Arc::new(Probe::default());
            let run = self.inner.execute(assignment, cancel, &noting);
            let response = probe::measured(probe.clone(), run).await;
            let end = Instant::now();
            let stages = stages.into_inner().unwrap_or_else(|p| p.into_inner());
            self.metrics.record(&stages, end, &probe.noted(), &response);
            response
        })
    }

    fn cached_images(&self) -> Vec<String> {
        self.inner.cached_images()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::fakes::assignment;
    use corral_proto::protobuf::Any;

    /// Goes through every stage, notes what real steps note, and answers
    /// as a run killed for its memory would.
    struct OutOfMemory;

    impl ActionExecutor for OutOfMemory {
        fn execute<'a>(
            &'a self,
            _: &'a Assignment,
            _: &'a CancellationToken,
            progress: &'a Progress<'a>,
        ) -> BoxFuture<'a, reapi::ExecuteResponse> {
            Box::pin(async move {
                progress(Stage::FetchingInputs);
                probe::timed(Step::Staging, async {
                    probe::note(|n| {
                        n.local_hits += 3;
                        n.local_misses += 1;
                        n.fetched_bytes += 4096;
                    });
                })
                .await;
                progress(Stage::Running);
                tokio::time::sleep(Duration::from_millis(30)).await;
                progress(Stage::UploadingOutputs);
                probe::note(|n| n.uploaded_bytes += 10);
                let run = pb::RunResponse {
                    exit_code: 137,
                    limit_hit: pb::LimitHit::Memory as i32,
                    wall_time_us: 10_000,
                    ..Default::default()
                };
                let meta = reapi::ExecutedActionMetadata {
                    auxiliary_metadata: vec![Any {
                        type_url: RUN_RESPONSE_URL.into(),
                        value: run.encode_to_vec(),
                    }],
                    ..Default::default()
                };
                reapi::ExecuteResponse {
                    result: Some(reapi::ActionResult {
                        exit_code: 137,
                        execution_metadata: Some(meta),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_run_is_measured_phase_by_phase() {
        let mut registry = Registry::default();
        let metrics = WorkerMetrics::register(&mut registry);
        let layer = Metered::new(OutOfMemory, metrics);
        let heard = Mutex::new(Vec::new());
        let progress = |s: Stage| heard.lock().unwrap().push(s);
        let response = layer
            .execute(&assignment("a1"), &CancellationToken::new(), &progress)
            .await;
        assert_eq!(response.result.unwrap().exit_code, 137);
        assert_eq!(
            heard.lock().unwrap().len(),
            3,
            "stages still reach the session"
        );

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for phase in ["input_fetch", "execution", "output", "staging"] {
            let series = format!("corral_worker_phase_seconds_count{{phase=\"{phase}\"}}");
            assert_eq!(value(&text, &series), 1.0, "{phase}");
        }
        let run = value(
            &text,
            "corral_worker_phase_seconds_sum{phase=\"execution\"}",
        );
        assert!(run >= 0.03, "{run}");
        // The run call took 30 ms or more; the command 10 ms of it.
        let overhead = value(&text, "corral_worker_sandbox_start_seconds_sum");
        assert!(overhead >= 0.02 && overhead < run, "{overhead} of {run}");
        assert_eq!(
            value(&text, "corral_worker_limits_hit_total{limit=\"memory\"}"),
            1.0
        );
        assert_eq!(value(&text, "corral_worker_fetched_bytes_total"), 4096.0);
        assert_eq!(value(&text, "corral_worker_uploaded_bytes_total"), 10.0);
        assert_eq!(
            value(
                &text,
                "corral_worker_local_cas_lookups_total{result=\"hit\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "corral_worker_local_cas_lookups_total{result=\"miss\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "corral_worker_actions_total{result=\"failed\"}"),
            1.0
        );
        assert_eq!(value(&text, "corral_worker_running_actions"), 0.0);
    }
}
