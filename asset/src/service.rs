//! The Fetch and Push services, ready to be added to a tonic server beside
//! the storage services on the same port.
//!
//! [`AssetServices`] owns what both share: the CAS stack (the same
//! [`BoundedStore`] the CAS service writes to, so pushed and fetched
//! digests name the blobs clients uploaded), the [`AssetIndex`], the
//! [`Fetcher`] when the download policy allows anything, and the clock.
//! Each handler builds the call's [`corral_cas::RequestContext`] at the
//! edge, as the storage services do, and passes it to every CAS and index
//! call.
//!
//! Failures are gRPC errors, never an OK response carrying a failing
//! `status`: a miss is NOT_FOUND, a download that failed has the code the
//! API lists for it (PERMISSION_DENIED, ABORTED for a checksum mismatch,
//! RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE) and a message
//! naming the URI. The API also allows the inline `status`, but Bazel 4's
//! remote downloader ignores it and would take the response's empty digest
//! for the file; every client handles the gRPC error.

mod fetch;
mod push;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::asset::v1::fetch_server::FetchServer;
use bazel_remote_apis::build::bazel::remote::asset::v1::push_server::PushServer;
use corral_cas::store::BoundedStore;

use crate::clock::{Clock, SystemClock};
use crate::config::{AssetConfig, IndexKind};
use crate::error::{AssetError, Result};
use crate::fetcher::Fetcher;
use crate::index::{AssetIndex, DiskIndex, MemoryIndex};
use crate::policy::DownloadPolicy;

pub use fetch::FetchService;
pub use push::PushService;

/// Largest request or response message: a Push may list many references.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Where the index and the download spool live when `[asset] path` is not
/// set, under the server's data directory.
pub const DEFAULT_PATH: &str = "asset";

/// What both services share.
#[derive(Clone)]
pub(crate) struct State {
    pub cas: BoundedStore,
    pub index: Arc<dyn AssetIndex>,
    pub fetcher: Option<Arc<Fetcher>>,
    pub clock: Arc<dyn Clock>,
    pub ignorable: BTreeSet<String>,
    /// Fetch needs `cas.read` on the instance, Push `ac.write`: an index
    /// entry is trusted by every later Fetch, as an action result is.
    pub authorization: corral_cas::Authorization,
}

impl State {
    /// The common part of a request, parsed, from a caller that may hold
    /// `permission` on its instance name (Fetch: `cas.read`; Push:
    /// `ac.write`, since every later Fetch trusts what a Push names).
    pub fn admit(
        &self,
        caller: &corral_cas::Caller,
        instance_name: &str,
        digest_function: i32,
        (uris, qualifiers): (
            &[String],
            &[bazel_remote_apis::build::bazel::remote::asset::v1::Qualifier],
        ),
        permission: corral_auth::Permission,
    ) -> Result<crate::request::Common> {
        let common = crate::request::Common::parse(
            caller,
            instance_name,
            digest_function,
            uris,
            qualifiers,
            &self.ignorable,
        )?;
        self.authorization.check(&common.ctx, permission)?;
        Ok(common)
    }
}

/// The Remote Asset services over one CAS stack and one index.
#[derive(Clone)]
pub struct AssetServices {
    state: Arc<State>,
    fetch: bool,
    push: bool,
}

impl AssetServices {
    /// Builds what `config` describes over `cas`: the disk index under
    /// `data` (or a memory one) and, if the download policy allows
    /// anything, the fetcher with its spool beside the index. Opening the
    /// disk index is blocking work, done on the blocking pool.
    pub async fn build(config: &AssetConfig, cas: BoundedStore, data: &Path) -> Result<Self> {
        let dir = data.join(config.path.as_deref().unwrap_or(Path::new(DEFAULT_PATH)));
        let policy = DownloadPolicy::from_config(&config.download)?;
        let kind = config.index;
        let d = dir.clone();
        let (index, fetcher) = tokio::task::spawn_blocking(move || -> Result<_> {
            let index: Arc<dyn AssetIndex> = match kind {
                IndexKind::Disk => Arc::new(DiskIndex::open(&d)?),
                IndexKind::Memory => Arc::new(MemoryIndex::new()),
            };
            let fetcher = if policy.enabled() {
                Some(Fetcher::new(policy, &d.join("downloads"))?)
            } else {
                None
            };
            Ok((index, fetcher))
        })
        .await
        .map_err(|e| AssetError::Internal(format!("opening {}: {e}", dir.display())))??;
        tracing::info!(
            fetch = config.fetch,
            push = config.push,
            index = ?config.index,
            path = %dir.display(),
            downloads = fetcher.is_some(),
            "remote asset services built"
        );
        Ok(Self::new(config, cas, index, fetcher))
    }

    /// The services over an index and fetcher of the caller's (tests).
    pub fn new(
        config: &AssetConfig,
        cas: BoundedStore,
        index: Arc<dyn AssetIndex>,
        fetcher: Option<Fetcher>,
    ) -> Self {
        AssetServices {
            state: Arc::new(State {
                cas,
                index,
                fetcher: fetcher.map(Arc::new),
                clock: Arc::new(SystemClock),
                ignorable: config.ignored_qualifiers.clone(),
                authorization: corral_cas::Authorization::local(),
            }),
            fetch: config.fetch,
            push: config.push,
        }
    }

    /// The same services with another clock (tests move time with it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let mut state = State::clone(&self.state);
        state.clock = clock;
        self.state = Arc::new(state);
        self
    }

    /// The same services checking each call with `authorization` (the
    /// server's policy).
    pub fn with_authorization(mut self, authorization: corral_cas::Authorization) -> Self {
        let mut state = State::clone(&self.state);
        state.authorization = authorization;
        self.state = Arc::new(state);
        self
    }

    /// The index behind the services.
    pub fn index(&self) -> Arc<dyn AssetIndex> {
        self.state.index.clone()
    }

    /// Whether the server downloads anything itself.
    pub fn downloads(&self) -> bool {
        self.state.fetcher.is_some()
    }

    /// The Fetch service.
    pub fn fetch_server(&self) -> FetchServer<FetchService> {
        FetchServer::new(FetchService::new(self.state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The Push service.
    pub fn push_server(&self) -> PushServer<PushService> {
        PushServer::new(PushService::new(self.state.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Adds the services `[asset]` enables to `routes`.
    pub fn add_to(&self, routes: &mut tonic::service::RoutesBuilder) {
        if self.fetch {
            routes.add_service(self.fetch_server());
        }
        if self.push {
            routes.add_service(self.push_server());
        }
    }
}
