//! The worker's local CAS: a corral-cas [`DiskStore`] on the same file
//! system as the build directories, filled from the remote CAS on demand.
//!
//! * Blob files are read-only and hardlinked into build directories;
//!   executable inputs come from [`ExecVariants`], never from a chmod.
//! * A blob wanted by several actions at once is fetched once: the first
//!   caller registers it as in flight, the others wait for its outcome.
//! * Small blobs are fetched together with BatchReadBlobs, up to the
//!   server's batch limit per call; large ones are streamed with
//!   ByteStream. Up to `parallel_fetches` calls run at once.
//! * Everything fetched goes through a [`VerifyingStore`] over the disk
//!   store, so a wrong or short blob from the remote is refused before it
//!   is renamed into place; the bytes are hashed once, there.
//! * A blob is fetched under the instance name of the action that needs it
//!   (the context given to [`LocalCas::ensure`]), so it comes from that
//!   instance's storage namespace. Once here it is shared: the local store
//!   is content-addressed and has no instance names, so an action of
//!   another instance finds it local and fetches nothing (docs/worker.md).
//!   Fetches in flight are shared only within one instance name: a blob
//!   missing from one namespace may still be in another's.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use corral_cas::{BlobStore, Digest, DigestFunction, DiskStore, RequestContext, VerifyingStore};
use futures::StreamExt;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::exec_variants::ExecVariants;
use crate::remote::RemoteCas;

/// Why an in-flight fetch failed, as its waiters see it: whether the blob
/// was missing is kept as a variant, so that a waiter reports it as
/// [`Error::MissingBlob`] without reading the message.
#[derive(Clone, Debug)]
enum Failure {
    Missing,
    Other(String),
}

impl Failure {
    fn of(e: &Error) -> Self {
        if e.is_missing_blob() {
            Failure::Missing
        } else {
            Failure::Other(e.to_string())
        }
    }
}

/// Outcome of one in-flight fetch, as its waiters see it (None: not yet).
type Outcome = Option<std::result::Result<(), Failure>>;

/// A fetch in flight: the instance name it is made under, and the blob.
type FetchKey = (String, Digest);

/// The local CAS. Cheap to clone.
#[derive(Clone)]
pub struct LocalCas {
    inner: Arc<Inner>,
}

struct Inner {
    store: DiskStore,
    /// `store` under the layer that verifies what is written to it.
    verified: VerifyingStore,
    exec: ExecVariants,
    remote: RemoteCas,
    inflight: Mutex<HashMap<FetchKey, watch::Receiver<Outcome>>>,
    parallel_fetches: usize,
}

/// Settings of the local CAS.
#[derive(Clone, Debug)]
pub struct LocalCasOptions {
    /// Bound of the plain blob store.
    pub max_bytes: u64,
    /// Bound of the executable copies.
    pub max_exec_bytes: u64,
    /// Fetch calls (batches or streams) running at once.
    pub parallel_fetches: usize,
}

impl LocalCas {
    /// Opens the local CAS under `dir` (`dir/blobs`, `dir/exec`). Blocking.
    pub fn open(dir: &Path, options: &LocalCasOptions, remote: RemoteCas) -> Result<Self> {
        let store = DiskStore::open(dir.join("blobs"), options.max_bytes)?;
        let exec = ExecVariants::open(dir.join("exec"), options.max_exec_bytes)?;
        Ok(LocalCas {
            inner: Arc::new(Inner {
                verified: VerifyingStore::new(Arc::new(store.clone())),
                store,
                exec,
                remote,
                inflight: Mutex::new(HashMap::new()),
                parallel_fetches: options.parallel_fetches.max(1),
            }),
        })
    }

    /// The plain blob store.
    pub fn store(&self) -> &DiskStore {
        &self.inner.store
    }

    /// The remote CAS behind this one.
    pub fn remote(&self) -> &RemoteCas {
        &self.inner.remote
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<FetchKey, watch::Receiver<Outcome>>> {
        // Updated in single statements; a poisoned map is still consistent.
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure every blob of `digests` is held locally, fetching the
    /// missing ones from the remote CAS under `ctx` (the action's instance
    /// name and digest function). A blob neither CAS holds is
    /// [`Error::MissingBlob`].
    pub async fn ensure(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<()> {
        let unique: Vec<Digest> = digests
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let missing = self
            .inner
            .store
            .find_missing(&local(ctx.digest_function()), &unique)
            .await?;
        crate::executor::probe::note(|n| {
            n.local_misses += missing.len() as u64;
            n.local_hits += (unique.len() - missing.len()) as u64;
        });
        if missing.is_empty() {
            return Ok(());
        }
        let instance = ctx.instance_name();
        let mut mine = Vec::new();
        let mut waits = Vec::new();
        {
            let mut inflight = self.inflight();
            for d in missing {
                let key = (instance.to_string(), d);
                if let Some(rx) = inflight.get(&key) {
                    waits.push((d, rx.clone()));
                } else {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key, rx);
                    mine.push((d, tx));
                }
            }
        }
        let guard = InflightGuard {
            cas: self,
            keys: mine
                .iter()
                .map(|(d, _)| (instance.to_string(), *d))
                .collect(),
        };
        let bytes: u64 = mine.iter().map(|(d, _)| d.size()).sum();
        let fetched = self.fetch(ctx, mine).await;
        drop(guard);
        fetched?;
        crate::executor::probe::note(|n| n.fetched_bytes += bytes);
        for (d, rx) in waits {
            self.wait_for(ctx, d, rx).await?;
        }
        Ok(())
    }

    /// Waits for another caller's fetch of `d` (under the same instance
    /// name), fetching it here if that caller was cancelled.
    async fn wait_for(
        &self,
        ctx: &RequestContext,
        d: Digest,
        mut rx: watch::Receiver<Outcome>,
    ) -> Result<()> {
        // Copy the outcome out: the watch guard must not live across an
        // await (it is not Send).
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map(|o| o.as_ref().and_then(|r| r.as_ref().err().cloned()));
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(Failure::Missing)) => Err(Error::MissingBlob(d.to_string())),
            Ok(Some(Failure::Other(message))) => Err(Error::Internal(format!(
                "fetching {d} for another action failed: {message}"
            ))),
            // The fetching caller was cancelled: fetch it ourselves.
            Err(_) => Box::pin(self.ensure(ctx, &[d])).await,
        }
    }

    /// Fetches the blobs this caller owns, publishing each outcome.
    async fn fetch(
        &self,
        ctx: &RequestContext,
        mine: Vec<(Digest, watch::Sender<Outcome>)>,
    ) -> Result<()> {
        let limit = self.inner.remote.batch_limit();
        let mut senders: HashMap<Digest, watch::Sender<Outcome>> = HashMap::new();
        let mut small: Vec<Digest> = Vec::new();
        let mut calls: Vec<Vec<Digest>> = Vec::new();
        for (d, tx) in mine {
            senders.insert(d, tx);
            if d.size() > limit {
                calls.push(vec![d]);
            } else {
                small.push(d);
            }
        }
        calls.extend(batches(small, limit));
        let mut results = futures::stream::iter(calls.into_iter().map(|call| async move {
            let outcome = self.fetch_call(ctx, &call).await;
            (call, outcome)
        }))
        .buffer_unordered(self.inner.parallel_fetches);
        let mut first_error = None;
        while let Some((call, outcome)) = results.next().await {
            let published: Outcome = Some(outcome.as_ref().map(|_| ()).map_err(Failure::of));
            for d in &call {
                if let Some(tx) = senders.remove(d) {
                    tx.send_replace(published.clone());
                }
            }
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One batch read, or one stream for a single large blob.
    async fn fetch_call(&self, ctx: &RequestContext, call: &[Digest]) -> Result<()> {
        let remote = &self.inner.remote;
        if let [d] = call {
            if d.size() > remote.batch_limit() {
                let writer = self.inner.verified.write(&local(d.function()), d).await?;
                return remote.read_into(ctx, d, writer).await;
            }
        }
        let blobs = remote.batch_read(ctx, call).await?;
        for (d, data) in blobs {
            self.inner
                .verified
                .put(&local(d.function()), &d, data)
                .await?;
        }
        Ok(())
    }

    /// A small blob's bytes (Directory messages, say), fetched under `ctx`
    /// if needed.
    pub async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        let here = local(digest.function());
        match self.inner.store.get(&here, digest).await {
            Ok(b) => Ok(b),
            Err(e) if e.code() == tonic::Code::NotFound => {
                self.ensure(ctx, &[*digest]).await?;
                Ok(self.inner.store.get(&here, digest).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The file to hardlink for `digest` (the executable copy if
    /// `executable`), marking it recently used. The blob must have been
    /// [`ensure`](Self::ensure)d; it may still be evicted before the link
    /// is made, which the caller sees as a missing source and answers by
    /// ensuring again.
    pub async fn link_source(&self, digest: &Digest, executable: bool) -> Result<PathBuf> {
        let plain = match self.inner.store.file_for_link(digest).await {
            Ok(p) => p,
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Err(Error::MissingBlob(digest.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        if !executable {
            return Ok(plain);
        }
        let cas = self.clone();
        let d = *digest;
        tokio::task::spawn_blocking(move || cas.inner.exec.get_or_make(&d, &plain))
            .await
            .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }
}

/// The context of the worker's calls to its own local store (which has no
/// instance names).
fn local(function: DigestFunction) -> RequestContext {
    RequestContext::internal("", function)
}

/// Removes a caller's in-flight entries when it finishes or is cancelled,
/// so that waiters never hang on a fetch nobody performs.
struct InflightGuard<'a> {
    cas: &'a LocalCas,
    keys: Vec<FetchKey>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self.cas.inflight();
        for k in &self.keys {
            inflight.remove(k);
        }
    }
}

/// Packs small blobs into batches of at most `limit` bytes, largest first.
fn batches(mut small: Vec<Digest>, limit: u64) -> Vec<Vec<Digest>> {
    small.sort_by_key(|d| std::cmp::Reverse(d.size()));
    let mut calls = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for d in small {
        if !batch.is_empty() && batch_bytes + d.size() > limit {
            calls.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += d.size();
        batch.push(d);
    }
    if !batch.is_empty() {
        calls.push(batch);
    }
    calls
}
