//! The Capabilities service.
//!
//! Low API version 2.0 because Bazel 4 refuses a server whose low version is
//! higher. High version 2.3: the newest whose storage features Corral
//! implements completely — the `digest_function` request fields with BLAKE3
//! (2.3) and zstd `compressed-blobs` (2.1). Execution capabilities are absent
//! until the scheduler supplies them through [`CapabilitiesHandle`].

use std::sync::{Arc, RwLock};

use corral_proto::reapi;
use corral_proto::reapi::capabilities_server::Capabilities;
use corral_proto::semver::SemVer;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::digest::DigestFunction;

/// Shared, updatable Capabilities answer.
#[derive(Clone)]
pub struct CapabilitiesHandle {
    caps: Arc<RwLock<reapi::ServerCapabilities>>,
}

fn version(major: i32, minor: i32) -> SemVer {
    SemVer {
        major,
        minor,
        patch: 0,
        prerelease: String::new(),
    }
}

impl CapabilitiesHandle {
    pub fn new(config: &Config) -> Self {
        use reapi::compressor::Value as Compressor;
        let digest_functions: Vec<i32> = DigestFunction::ALL.iter().map(|f| f.to_proto()).collect();
        let cache = reapi::CacheCapabilities {
            digest_functions,
            action_cache_update_capabilities: Some(reapi::ActionCacheUpdateCapabilities {
                update_enabled: true,
            }),
            cache_priority_capabilities: None,
            max_batch_total_size_bytes: i64::try_from(config.max_batch_total_size_bytes())
                .unwrap_or(i64::MAX),
            symlink_absolute_path_strategy: reapi::symlink_absolute_path_strategy::Value::Allowed
                as i32,
            supported_compressors: vec![Compressor::Zstd as i32],
            supported_batch_update_compressors: vec![Compressor::Zstd as i32],
            ..Default::default()
        };
        let caps = reapi::ServerCapabilities {
            cache_capabilities: Some(cache),
            execution_capabilities: None,
            deprecated_api_version: Some(version(2, 0)),
            low_api_version: Some(version(2, 0)),
            high_api_version: Some(version(2, 3)),
        };
        CapabilitiesHandle {
            caps: Arc::new(RwLock::new(caps)),
        }
    }

    /// Switches remote execution on (`Some`) or off (`None`).
    pub fn set_execution(&self, execution: Option<reapi::ExecutionCapabilities>) {
        // Poison is harmless: the value is replaced whole.
        let mut caps = self.caps.write().unwrap_or_else(|p| p.into_inner());
        caps.execution_capabilities = execution;
    }

    /// The current answer.
    pub fn get(&self) -> reapi::ServerCapabilities {
        self.caps.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The tonic service. The answer is the same for every caller except
/// `update_enabled`, which says whether this caller may write the action
/// cache of this instance (`ac.write`): Bazel then stops a cache-only build
/// that would upload with a clear message instead of failing later.
pub struct CapabilitiesService {
    handle: CapabilitiesHandle,
    authorization: crate::Authorization,
}

impl CapabilitiesService {
    pub fn new(handle: CapabilitiesHandle, authorization: crate::Authorization) -> Self {
        CapabilitiesService {
            handle,
            authorization,
        }
    }
}

#[tonic::async_trait]
impl Capabilities for CapabilitiesService {
    async fn get_capabilities(
        &self,
        request: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        let caller = crate::Caller::from_request(&request);
        let ctx = caller.context(
            &request.get_ref().instance_name,
            crate::DigestFunction::Sha256,
        );
        let mut answer = self.handle.get();
        if let Some(update) = answer
            .cache_capabilities
            .as_mut()
            .and_then(|c| c.action_cache_update_capabilities.as_mut())
        {
            update.update_enabled = self
                .authorization
                .may(&ctx, corral_auth::Permission::AcWrite);
        }
        Ok(Response::new(answer))
    }
}
