//! An action cache reached over the network through the REAPI ActionCache
//! service: for a scheduler or server whose action cache runs in another
//! process. The remote side checks completeness against its own CAS; the
//! factory still puts [`super::CompletenessChecking`] over this backend,
//! against the CAS this process sees, since that is where its clients will
//! fetch the outputs from.

use async_trait::async_trait;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;

use super::ActionCache;
use crate::client_connection::Connection;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Largest gRPC message this client sends or accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// A remote action cache. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct GrpcActionCache {
    channel: Connection,
    /// When set, sent instead of each call's instance name.
    fixed_instance: Option<String>,
}

impl GrpcActionCache {
    /// Connects to `url` (`http://host:port`).
    pub async fn connect(url: &str) -> Result<Self> {
        let channel = crate::channel::connect(url).await?;
        Ok(Self::with_channel(channel))
    }

    /// Uses an existing channel or connection (a [`Connection`] brings
    /// its credentials).
    pub fn with_channel(channel: impl Into<Connection>) -> Self {
        GrpcActionCache {
            channel: channel.into(),
            fixed_instance: None,
        }
    }

    /// Sends every call to `instance` whatever its context says.
    pub fn with_fixed_instance(mut self, instance: &str) -> Self {
        self.fixed_instance = Some(instance.to_string());
        self
    }

    fn instance(&self, ctx: &RequestContext) -> String {
        self.fixed_instance
            .clone()
            .unwrap_or_else(|| ctx.instance_name().to_string())
    }

    fn client(&self) -> ActionCacheClient<Connection> {
        ActionCacheClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[async_trait]
impl ActionCache for GrpcActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        let request = reapi::GetActionResultRequest {
            instance_name: self.instance(ctx),
            action_digest: Some(action.to_proto()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: action.function().to_proto(),
        };
        match self.client().get_action_result(request).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(Error::Remote(status)),
        }
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        let request = reapi::UpdateActionResultRequest {
            instance_name: self.instance(ctx),
            action_digest: Some(action.to_proto()),
            action_result: Some(result),
            results_cache_policy: None,
            digest_function: action.function().to_proto(),
        };
        self.client().update_action_result(request).await?;
        Ok(())
    }
}
