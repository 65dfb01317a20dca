//! The client-facing storage services, ready to be added to a tonic server.
//!
//! [`Services`] owns the shared state (store, action cache, settings,
//! in-progress uploads) and hands out the four tonic services. Other roles
//! add theirs beside them on the same port:
//!
//! Each handler builds the call's [`crate::RequestContext`] at the edge —
//! the [`crate::Caller`] from the tonic request's connection and headers,
//! then the instance name and digest function from the body — and passes
//! it to every store and action-cache call.
//!
//! ```no_run
//! # use corral_cas::{service::Services, Config, Storage};
//! # async fn demo(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
//! let services = Services::new(Config::default(), Storage::in_memory());
//! let mut routes = tonic::service::RoutesBuilder::default();
//! services.add_to(&mut routes);
//! // routes.add_service(my_execution_server);
//! tonic::transport::Server::builder()
//!     .add_routes(routes.routes())
//!     .serve_with_incoming(corral_cas::service::incoming(listener))
//!     .await
//! # }
//! ```

pub mod action_cache;
pub mod bytestream;
pub mod capabilities;
pub mod cas;
mod codec;
mod decode_errors;
mod tree;
mod uploads;
mod write;

use std::sync::Arc;

use corral_proto::bytestream::byte_stream_server::ByteStreamServer;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_server::ActionCacheServer;
use corral_proto::reapi::capabilities_server::CapabilitiesServer;
use corral_proto::reapi::content_addressable_storage_server::ContentAddressableStorageServer;

use crate::action_cache::ActionCache;
use crate::config::Config;
use crate::factory::Storage;
use crate::store::BoundedStore;

pub use capabilities::CapabilitiesHandle;

/// The largest HTTP/2 frame a peer may send us (h2's default is 16 KiB).
/// Each DATA frame of a large payload costs h2 one write call, so 16 KiB
/// frames mean thousands of system calls per 64 MiB blob; 1 MiB frames keep
/// that to a few dozen.
pub const MAX_FRAME: u32 = 1 << 20;

/// A tonic server builder tuned for blob traffic: large HTTP/2 windows so a
/// single ByteStream call is not throttled by flow control, `TCP_NODELAY`
/// for small RPCs, and keepalives that notice dead clients. Every role that
/// serves on the client-facing port should start from it, with a listener
/// wrapped by [`incoming`]: the builder's `tcp_nodelay` does not reach
/// connections accepted from a listener of our own.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_connection_window_size(32 << 20)
        .initial_stream_window_size(16 << 20)
        .max_frame_size(Some(MAX_FRAME))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
}

/// The connections of `listener`, with `TCP_NODELAY` set on each: without
/// it every small unary call waits for Nagle and delayed ACKs (40 ms a
/// round trip measured on loopback).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The storage services over one storage stack.
#[derive(Clone)]
pub struct Services {
    state: Arc<State>,
    capabilities: CapabilitiesHandle,
}

/// What every service shares.
pub(crate) struct State {
    pub config: Config,
    pub store: BoundedStore,
    pub action_cache: Arc<dyn ActionCache>,
    pub uploads: Arc<uploads::Uploads>,
    pub revoked_workers: crate::action_cache::RevokedWorkers,
    pub authorization: crate::Authorization,
}

impl Services {
    /// The services over `storage` (see [`crate::factory`]); `config`
    /// gives the limits of the services themselves.
    pub fn new(config: Config, storage: Storage) -> Self {
        Self::with_authorization(config, storage, crate::Authorization::local())
    }

    /// [`Services::new`] for a farm with a policy: `storage` should be
    /// confined with the same `authorization` ([`Storage::confine`]), which
    /// the services also use to answer Capabilities per caller.
    pub fn with_authorization(
        config: Config,
        storage: Storage,
        authorization: crate::Authorization,
    ) -> Self {
        let Storage {
            cas: store,
            action_cache,
            revoked_workers,
            ..
        } = storage;
        let capabilities = CapabilitiesHandle::new(&config);
        let uploads = Arc::new(uploads::Uploads::new(uploads::Limits {
            resume: std::time::Duration::from_secs(config.upload_resume_secs()),
            max_uploads: usize::try_from(config.max_open_uploads()).unwrap_or(usize::MAX),
            max_bytes: config.max_open_upload_bytes(),
        }));
        Services {
            state: Arc::new(State {
                config,
                store,
                action_cache,
                uploads,
                revoked_workers,
                authorization,
            }),
            capabilities,
        }
    }

    /// The Capabilities answer, shared with the Capabilities service. The
    /// scheduler switches execution on through it.
    pub fn capabilities(&self) -> &CapabilitiesHandle {
        &self.capabilities
    }

    /// Shortcut for `capabilities().set_execution(..)`.
    pub fn set_execution_capabilities(&self, caps: Option<reapi::ExecutionCapabilities>) {
        self.capabilities.set_execution(caps);
    }

    /// The storage stack behind the services.
    pub fn store(&self) -> BoundedStore {
        self.state.store.clone()
    }

    /// The action cache behind the services.
    pub fn action_cache(&self) -> Arc<dyn ActionCache> {
        self.state.action_cache.clone()
    }

    /// Who may do what (the zero-config local policy unless built with
    /// [`Services::with_authorization`]).
    pub fn authorization(&self) -> &crate::Authorization {
        &self.state.authorization
    }

    /// The workers whose results the action cache no longer serves.
    pub fn revoked_workers(&self) -> crate::action_cache::RevokedWorkers {
        self.state.revoked_workers.clone()
    }

    /// gRPC message size limit matching the advertised batch size; other
    /// services on the same port should use it too.
    pub fn max_message_bytes(&self) -> usize {
        self.state.config.max_message_bytes()
    }

    pub fn capabilities_server(&self) -> CapabilitiesServer<capabilities::CapabilitiesService> {
        CapabilitiesServer::new(capabilities::CapabilitiesService::new(
            self.capabilities.clone(),
            self.state.authorization.clone(),
        ))
    }

    pub fn cas_server(&self) -> ContentAddressableStorageServer<cas::CasService> {
        let limit = self.max_message_bytes();
        ContentAddressableStorageServer::new(cas::CasService::new(self.state.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    pub fn bytestream_server(&self) -> ByteStreamServer<bytestream::ByteStreamService> {
        let limit = self.max_message_bytes();
        ByteStreamServer::new(bytestream::ByteStreamService::new(self.state.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    pub fn action_cache_server(&self) -> ActionCacheServer<action_cache::ActionCacheService> {
        let limit = self.max_message_bytes();
        ActionCacheServer::new(action_cache::ActionCacheService::new(self.state.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Adds all four services to `routes`. Each answers undecodable
    /// requests with `INVALID_ARGUMENT` rather than tonic's `INTERNAL`.
    pub fn add_to(&self, routes: &mut tonic::service::RoutesBuilder) {
        use decode_errors::DecodeErrorsAsInvalid as Wrap;
        routes
            .add_service(Wrap(self.capabilities_server()))
            .add_service(Wrap(self.cas_server()))
            .add_service(Wrap(self.bytestream_server()))
            .add_service(Wrap(self.action_cache_server()));
    }

    /// What workers need on their own listener: Capabilities, CAS and
    /// ByteStream, never the action cache (the scheduler, not a worker,
    /// writes executed results).
    pub fn add_worker_storage_to(&self, routes: &mut tonic::service::RoutesBuilder) {
        use decode_errors::DecodeErrorsAsInvalid as Wrap;
        routes
            .add_service(Wrap(self.capabilities_server()))
            .add_service(Wrap(self.cas_server()))
            .add_service(Wrap(self.bytestream_server()));
    }

    /// The four services as routes of their own.
    pub fn routes(&self) -> tonic::service::Routes {
        let mut builder = tonic::service::RoutesBuilder::default();
        self.add_to(&mut builder);
        builder.routes()
    }
}
