//! Builds the storage stack from configuration: backends from `[cas.store]`,
//! `[cas.stores.*]` and `[action_cache]`, with the layers every stack gets
//! whatever the backends are.
//!
//! ```text
//! CAS:           BoundedStore ▸ NamespacedStore ▸ VerifyingStore ▸ backend
//!                (NamespacedStore only when [cas] namespaces is set; then one
//!                 VerifyingStore ▸ backend per namespace)
//! action cache:  CompletenessChecking ▸ ProvenanceGuard ▸ ValidatingActionCache ▸ backend
//!                (completeness is checked against the CAS stack above)
//! backend:       disk | memory | remote | sharded(backend, …)
//! ```
//!
//! `corral server` and `corral up` only call [`build`]; tests that need a
//! handle on the backend use [`Storage::over`], which adds the same layers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::action_cache::{
    ActionCache, AuthorizingActionCache, CompletenessChecking, DiskActionCache, GrpcActionCache,
    MemoryActionCache, ProvenanceGuard, RevokedWorkers, ValidatingActionCache,
};
use crate::authorization::Authorization;
use crate::client_connection::Connection;
use crate::config::{ActionCacheSpec, Config, DiskSpec, RemoteSpec, StoreSpec, DEFAULT_NAMESPACE};
use crate::error::{Error, Result};
use crate::message::{MessageKind, MessageLimits};
use crate::store::disk::{SizeBound, DEFAULT_FREE_SPACE_PERCENT};
use crate::store::metrics::EvictionMetrics;
use crate::store::{
    AuthorizingStore, BlobStore, BoundedStore, NamespacedStore, OwnershipIndex, ShardedStore,
    TenantOf, TenantVisibility, VerifyingStore,
};
use crate::{DiskStore, GrpcStore, MemoryStore};

/// A storage stack: the CAS and the action cache, with every layer.
#[derive(Clone)]
pub struct Storage {
    /// The CAS as services, scheduler and action cache use it.
    pub cas: BoundedStore,
    /// The action cache, checking completeness against `cas`.
    pub action_cache: Arc<dyn ActionCache>,
    /// Workers whose results the action cache no longer serves.
    pub revoked_workers: RevokedWorkers,
    /// The action cache below its completeness check (provenance guard ▸
    /// validating ▸ backend), for [`Storage::confine`] to check again
    /// against what a tenant may see.
    pub(crate) entries: Arc<dyn ActionCache>,
}

impl Storage {
    /// The standard layers over one trusted backend (no namespaces): for
    /// tests and tools that build their own backend.
    pub fn over(
        cas_backend: Arc<dyn BlobStore>,
        ac_backend: Arc<dyn ActionCache>,
        limits: MessageLimits,
    ) -> Storage {
        let verified: Arc<dyn BlobStore> = Arc::new(VerifyingStore::new(cas_backend));
        let cas = BoundedStore::new(verified, limits);
        let revoked_workers = RevokedWorkers::default();
        let (action_cache, entries) =
            wrap_action_cache(ac_backend, cas.clone(), revoked_workers.clone());
        Storage {
            cas,
            action_cache,
            revoked_workers,
            entries,
        }
    }

    /// Memory backends with the standard layers and default limits.
    pub fn in_memory() -> Storage {
        Storage::over(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryActionCache::new()),
            MessageLimits::default(),
        )
    }
}

/// completeness ▸ provenance guard ▸ validating ▸ backend. The guard sits
/// below the completeness check so that "was this written by the farm?"
/// is asked of the stored entry itself, even when its outputs were evicted.
/// What [`Storage::confine`] adds for a farm with tenants.
pub struct Confinement {
    /// Checks every call against the policy.
    pub authorization: Authorization,
    /// Tenants' blob ownership, when the policy names tenants.
    pub visibility: Option<(Arc<dyn TenantOf>, Arc<OwnershipIndex>)>,
}

impl Storage {
    /// The same storage with every call authorized and, with visibility,
    /// each tenant seeing only its own blobs:
    ///
    /// ```text
    /// CAS:           bounded ▸ authorizing ▸ tenant visibility ▸ (the stack below bounded)
    /// action cache:  authorizing ▸ completeness (against the visible CAS) ▸ provenance guard ▸ …
    /// ```
    ///
    /// Completeness is checked against what the caller's tenant may see,
    /// so a result naming another tenant's blob is a miss, not an oracle
    /// for that blob's existence.
    pub fn confine(self, confinement: Confinement) -> Result<Storage> {
        let Confinement {
            authorization,
            visibility,
        } = confinement;
        let limits = self.cas.limits().clone();
        let mut below: Arc<dyn BlobStore> = self.cas.inner().clone();
        if let Some((tenants, index)) = visibility {
            below = Arc::new(TenantVisibility::new(below, tenants, index)?);
        }
        let visible = BoundedStore::new(below.clone(), limits.clone());
        let authorized: Arc<dyn BlobStore> =
            Arc::new(AuthorizingStore::new(below, authorization.clone()));
        let checked: Arc<dyn ActionCache> =
            Arc::new(CompletenessChecking::new(self.entries.clone(), visible));
        Ok(Storage {
            cas: BoundedStore::new(authorized, limits),
            action_cache: Arc::new(AuthorizingActionCache::new(checked, authorization)),
            revoked_workers: self.revoked_workers,
            entries: self.entries,
        })
    }
}

/// Returns the whole stack and the part below the completeness check.
fn wrap_action_cache(
    backend: Arc<dyn ActionCache>,
    cas: BoundedStore,
    revoked: RevokedWorkers,
) -> (Arc<dyn ActionCache>, Arc<dyn ActionCache>) {
    let validated: Arc<dyn ActionCache> = Arc::new(ValidatingActionCache::new(backend));
    let guarded: Arc<dyn ActionCache> = Arc::new(ProvenanceGuard::new(validated, revoked));
    (
        Arc::new(CompletenessChecking::new(guarded.clone(), cas)),
        guarded,
    )
}

/// Builds the stack `cas` and `action_cache` describe, with relative paths
/// under `data`. Opens disk stores (blocking work, done on the blocking
/// pool) and connects remote ones. Logs the stack as built.
pub async fn build(cas: &Config, action_cache: &ActionCacheSpec, data: &Path) -> Result<Storage> {
    build_observed(cas, action_cache, data, None).await
}

/// [`build`], with every disk store of the CAS counting its evictions
/// into `evictions` (the metrics layers go on top with
/// [`crate::store::metrics::instrument`]).
pub async fn build_observed(
    cas: &Config,
    action_cache: &ActionCacheSpec,
    data: &Path,
    evictions: Option<EvictionMetrics>,
) -> Result<Storage> {
    cas.validate()?;
    let mut builder = Builder {
        data: data.to_path_buf(),
        disk_paths: HashSet::new(),
        evictions,
    };
    let mut default_spec = cas.default_store();
    if let (StoreSpec::Disk(disk), Some(max)) = (&mut default_spec, cas.max_cas_bytes) {
        disk.max_bytes = Some(max);
    }
    let (default, default_text) = builder.namespace(&default_spec, Path::new("cas")).await?;
    let mut description = format!("bounded ▸ {default_text}");
    let mut routed: Arc<dyn BlobStore> = default.clone();
    if !cas.namespaces.is_empty() {
        let mut by_name: HashMap<&str, Arc<dyn BlobStore>> = HashMap::new();
        by_name.insert(DEFAULT_NAMESPACE, default.clone());
        let mut texts = vec![format!("default: {default_text}")];
        for (name, spec) in &cas.stores {
            let (store, text) = builder
                .namespace(spec, Path::new(&format!("cas-{name}")))
                .await?;
            texts.push(format!("{name}: {text}"));
            by_name.insert(name, store);
        }
        let mut by_prefix = BTreeMap::new();
        for (prefix, name) in &cas.namespaces {
            let store = by_name.get(name.as_str()).ok_or_else(|| {
                Error::invalid(format!("cas.namespaces.{prefix:?}"), "unknown namespace")
            })?;
            by_prefix.insert(prefix.clone(), store.clone());
        }
        routed = Arc::new(NamespacedStore::new(default, by_prefix));
        description = format!(
            "bounded ▸ namespaced {:?} ▸ {{ {} }}",
            cas.namespaces,
            texts.join("; ")
        );
    }
    let cas_stack = BoundedStore::new(routed, cas.message_limits.clone());
    let (ac_backend, ac_text) = builder
        .action_cache(action_cache, &cas.message_limits)
        .await?;
    tracing::info!(cas = %description, action_cache = %format!("completeness ▸ provenance guard ▸ validating ▸ {ac_text}"), "storage stack built");
    let revoked_workers = RevokedWorkers::default();
    let (action_cache, entries) =
        wrap_action_cache(ac_backend, cas_stack.clone(), revoked_workers.clone());
    Ok(Storage {
        action_cache,
        cas: cas_stack,
        revoked_workers,
        entries,
    })
}

/// What building needs across the tree of specs.
struct Builder {
    data: PathBuf,
    /// Every disk store's directory, so two cannot share one.
    disk_paths: HashSet<PathBuf>,
    /// Where disk stores count their evictions, if anywhere.
    evictions: Option<EvictionMetrics>,
}

impl Builder {
    /// One namespace: the backend of `spec` under a [`VerifyingStore`]
    /// (which also verifies reads when the backend is another process).
    async fn namespace(
        &mut self,
        spec: &StoreSpec,
        default_path: &Path,
    ) -> Result<(Arc<dyn BlobStore>, String)> {
        let (backend, text, remote) = self.backend(spec, default_path).await?;
        let verified = if remote {
            VerifyingStore::verifying_reads(backend)
        } else {
            VerifyingStore::new(backend)
        };
        let what = if remote {
            "verifying (reads too)"
        } else {
            "verifying"
        };
        Ok((Arc::new(verified), format!("{what} ▸ {text}")))
    }

    /// A backend, its description, and whether it (or a shard of it) is
    /// another process whose reads must be verified.
    async fn backend(
        &mut self,
        spec: &StoreSpec,
        default_path: &Path,
    ) -> Result<(Arc<dyn BlobStore>, String, bool)> {
        match spec {
            StoreSpec::Disk(d) => {
                let (store, text) = self.disk(d, default_path).await?;
                Ok((store, text, false))
            }
            StoreSpec::Memory(_) => Ok((Arc::new(MemoryStore::new()), "memory".into(), false)),
            StoreSpec::Remote(r) => {
                let (store, text) = remote_store(r).await?;
                Ok((store, text, true))
            }
            StoreSpec::Sharded(s) => {
                let mut shards = Vec::new();
                let mut texts = Vec::new();
                let mut any_remote = false;
                for (i, shard) in s.shards.iter().enumerate() {
                    let path = default_path.join(format!("shard-{i}"));
                    let (store, text, remote) = Box::pin(self.backend(shard, &path)).await?;
                    shards.push(store);
                    texts.push(text);
                    any_remote |= remote;
                }
                let text = format!("sharded [{}]", texts.join(", "));
                Ok((Arc::new(ShardedStore::new(shards)?), text, any_remote))
            }
        }
    }

    async fn disk(
        &mut self,
        spec: &DiskSpec,
        default_path: &Path,
    ) -> Result<(Arc<dyn BlobStore>, String)> {
        let path = self.data.join(spec.path.as_deref().unwrap_or(default_path));
        if !self.disk_paths.insert(path.clone()) {
            return Err(Error::invalid(
                "cas.store",
                format!("two disk stores share {}", path.display()),
            ));
        }
        let bound = match spec.max_bytes {
            Some(n) => SizeBound::Bytes(n),
            None => SizeBound::FreeSpace {
                percent: spec
                    .free_space_percent
                    .unwrap_or(DEFAULT_FREE_SPACE_PERCENT),
            },
        };
        let p = path.clone();
        let store = tokio::task::spawn_blocking(move || DiskStore::open_with(p, bound))
            .await
            .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))??;
        if let Some(m) = &self.evictions {
            store.observe_evictions(m.clone());
        }
        let text = format!("disk {} (max {} bytes)", path.display(), store.max_bytes());
        Ok((Arc::new(store), text))
    }

    async fn action_cache(
        &mut self,
        spec: &ActionCacheSpec,
        limits: &MessageLimits,
    ) -> Result<(Arc<dyn ActionCache>, String)> {
        match spec {
            ActionCacheSpec::Disk(d) => {
                let path = self.data.join(d.path.as_deref().unwrap_or(Path::new("ac")));
                let max = limits.limit(MessageKind::ActionResult);
                let p = path.clone();
                let ac = tokio::task::spawn_blocking(move || DiskActionCache::open(p))
                    .await
                    .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))??
                    .with_max_entry_bytes(max);
                Ok((Arc::new(ac), format!("disk {}", path.display())))
            }
            ActionCacheSpec::Memory(_) => Ok((Arc::new(MemoryActionCache::new()), "memory".into())),
            ActionCacheSpec::Remote(r) => {
                let (connection, url) = connect_remote(r, "action_cache").await?;
                let mut ac = GrpcActionCache::with_channel(connection);
                if let Some(instance) = &r.instance_name {
                    ac = ac.with_fixed_instance(instance);
                }
                Ok((Arc::new(ac), format!("remote {url}")))
            }
        }
    }
}

/// A connection to the server `spec` names (`table` names the setting in
/// errors), with the TLS settings and token it gives.
async fn connect_remote(spec: &RemoteSpec, table: &str) -> Result<(Connection, String)> {
    let url = spec.url.as_deref().ok_or_else(|| {
        Error::invalid(
            format!("{table}.url"),
            "a remote store or action cache needs a url",
        )
    })?;
    let connection = spec
        .client
        .connector()
        .map_err(|e| e.in_field(table))?
        .connect(url)
        .await
        .map_err(|e| e.in_field(table))?;
    Ok((connection, url.to_string()))
}

/// The error of a remote server that did not answer this server's first
/// call: credentials it refused name the settings to check.
fn remote_refused(table: &str, url: &str, status: &tonic::Status) -> Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            "; check its `token_file` and `tls` settings"
        }
        _ => "",
    };
    let cause = std::error::Error::source(status)
        .map(|s| format!(": {}", crate::channel::error_chain(s)))
        .unwrap_or_default();
    Error::invalid(
        table,
        format!(
            "{url} did not answer ({:?}: {}{cause}){hint}",
            status.code(),
            status.message()
        ),
    )
}

async fn remote_store(spec: &RemoteSpec) -> Result<(Arc<dyn BlobStore>, String)> {
    let (connection, url) = connect_remote(spec, "cas.store").await?;
    let instance = spec.instance_name.as_deref().unwrap_or("");
    let mut store = GrpcStore::with_channel(connection, instance)
        .await
        .map_err(|e| match e {
            Error::Remote(status) => remote_refused("cas.store", &url, &status),
            other => other,
        })?;
    if let Some(instance) = &spec.instance_name {
        store = store.with_fixed_instance(instance);
    }
    Ok((Arc::new(store), format!("remote {url}")))
}
