//! The action-cache layer that asks [`Authorization`] before every call:
//! `get` needs `ac.read`, `update` needs `ac.write` (the farm's own writes
//! of executed results pass). What a client may never overwrite is the
//! provenance guard's business, below.

use std::sync::Arc;

use async_trait::async_trait;
use corral_auth::{AuditEvent, AuditKind, Permission};
use corral_proto::reapi;

use super::ActionCache;
use crate::authorization::Authorization;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

/// See the module documentation.
pub struct AuthorizingActionCache {
    inner: Arc<dyn ActionCache>,
    authorization: Authorization,
}

impl AuthorizingActionCache {
    /// Checks every call to `inner` with `authorization`.
    pub fn new(inner: Arc<dyn ActionCache>, authorization: Authorization) -> Self {
        AuthorizingActionCache {
            inner,
            authorization,
        }
    }
}

#[async_trait]
impl ActionCache for AuthorizingActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        self.authorization.check(ctx, Permission::AcRead)?;
        self.inner.get(ctx, action).await
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        self.authorization.check(ctx, Permission::AcWrite)?;
        self.inner.update(ctx, action, result).await?;
        if let Some(principal) = ctx.identity().principal() {
            let audit = self.authorization.audit();
            audit.record(
                &AuditEvent::new(AuditKind::AcWrite, self.authorization.now())
                    .principal(principal)
                    .instance(ctx.instance_name())
                    .digest(action)
                    .field("by", "client"),
            );
        }
        Ok(())
    }
}
