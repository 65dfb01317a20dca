//! The server's share of a remote build: what the results a server stored
//! say about the time the actions spent on it (staging, execution,
//! upload), read back from Corral's action cache on disk or from
//! buildbox-casd's action cache, so the wall time of a build can be split
//! into the server's part and the client's.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use corral_proto::prost::Message;
use corral_proto::reapi;

use super::{nanos, system_nanos};
use crate::buildstream::BuildboxCasd;

/// The farm's share of one build, summed over the actions it ran (ms,
/// from each result's `ExecutedActionMetadata`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FarmShare {
    pub(super) actions: usize,
    /// Queued (the scheduler took the Execute) to worker completed.
    pub(super) on_farm: f64,
    /// Input fetch: staging the input root.
    pub(super) staging: f64,
    /// The runner call.
    pub(super) execution: f64,
    /// Output capture and upload.
    pub(super) upload: f64,
}

impl FarmShare {
    /// What `results` say about the actions a worker completed at or
    /// after `since`. The span on the server starts at the queued
    /// timestamp, or at the worker's start where there is none
    /// (buildbox-casd sets no queued timestamp).
    pub(super) fn of<'a>(
        results: impl IntoIterator<Item = &'a reapi::ActionResult>,
        since: SystemTime,
    ) -> Self {
        let since = system_nanos(since);
        let mut share = FarmShare::default();
        for result in results {
            let Some(m) = result.execution_metadata.as_ref() else {
                continue;
            };
            let ts = |t: &Option<corral_proto::protobuf::Timestamp>| nanos(t.as_ref());
            if ts(&m.worker_completed_timestamp).is_none_or(|done| done < since) {
                continue;
            }
            let gap = |a: &Option<corral_proto::protobuf::Timestamp>,
                       b: &Option<corral_proto::protobuf::Timestamp>| {
                match (ts(a), ts(b)) {
                    (Some(x), Some(y)) => (y - x) as f64 / 1e6,
                    _ => 0.0,
                }
            };
            let first = if m.queued_timestamp.is_some() {
                &m.queued_timestamp
            } else {
                &m.worker_start_timestamp
            };
            share.actions += 1;
            share.on_farm += gap(first, &m.worker_completed_timestamp);
            share.staging += gap(
                &m.input_fetch_start_timestamp,
                &m.input_fetch_completed_timestamp,
            );
            share.execution += gap(
                &m.execution_start_timestamp,
                &m.execution_completed_timestamp,
            );
            share.upload += gap(
                &m.output_upload_start_timestamp,
                &m.output_upload_completed_timestamp,
            );
        }
        share
    }
}

/// Every ActionResult stored in a Corral action cache directory
/// (`ac/<function>/<instance>/<hash>-<size>`; its `tmp/` left out), with
/// its action digest.
pub(super) fn stored_results(dir: &Path) -> Vec<(reapi::Digest, reapi::ActionResult)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() && entry.file_name() != "tmp" => {
                out.extend(stored_results(&entry.path()));
            }
            Ok(t) if t.is_file() => {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(digest) = name.split_once('-').and_then(|(hash, size)| {
                    Some(reapi::Digest {
                        hash: hash.to_string(),
                        size_bytes: size.parse().ok()?,
                    })
                }) else {
                    continue;
                };
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    if let Ok(result) = reapi::ActionResult::decode(bytes.as_slice()) {
                        out.push((digest, result));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The results buildbox-casd holds in its action cache for `actions`
/// (those it has none for are left out).
pub(super) fn casd_results(
    casd: &BuildboxCasd,
    actions: &[reapi::Digest],
) -> anyhow::Result<Vec<reapi::ActionResult>> {
    use corral_proto::reapi::action_cache_client::ActionCacheClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut client = ActionCacheClient::connect(casd.url())
            .await
            .context("connecting to buildbox-casd's action cache")?;
        let mut results = Vec::new();
        for action in actions {
            let request = reapi::GetActionResultRequest {
                instance_name: casd.instance().to_string(),
                action_digest: Some(action.clone()),
                ..Default::default()
            };
            match client.get_action_result(request).await {
                Ok(r) => results.push(r.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(anyhow::anyhow!("GetActionResult: {s}")),
            }
        }
        Ok(results)
    })
}

/// Whether a worker completed `result` at or after `since`.
pub(super) fn completed_since(result: &reapi::ActionResult, since: SystemTime) -> bool {
    result
        .execution_metadata
        .as_ref()
        .and_then(|m| nanos(m.worker_completed_timestamp.as_ref()))
        .is_some_and(|done| done >= system_nanos(since))
}
