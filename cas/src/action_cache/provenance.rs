//! Provenance of executed results, and the layer that keeps clients from
//! forging or overwriting them.
//!
//! When the scheduler writes a result a worker produced, it stamps a
//! [`Provenance`] record into `execution_metadata.auxiliary_metadata`: the
//! tenant and principal that asked, the worker and the identity its
//! connection proved, the sandbox profile and the Corral version. The
//! [`ProvenanceGuard`] layer then holds three rules, whatever the backend:
//!
//! * a client's write (any identity but the farm's) that carries a
//!   provenance record is refused: only the farm vouches for execution;
//! * a client's write never replaces an entry the farm wrote;
//! * a result produced by a revoked worker is no longer served (a miss, so
//!   the action runs again on a worker still trusted).
//!
//! Whether the client may write at all (`ac.write`) is authorization's
//! business, a layer above this one.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use corral_proto::provenance::v1::Provenance;
use corral_proto::reapi;
use prost::Message;

use super::ActionCache;
use crate::context::{Identity, RequestContext};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// The `Any` type URL of a [`Provenance`] record.
pub const PROVENANCE_TYPE_URL: &str = "type.googleapis.com/corral.provenance.v1.Provenance";

/// The provenance record of `result`, if it has one that decodes.
pub fn provenance_of(result: &reapi::ActionResult) -> Option<Provenance> {
    records(result)
        .find(|any| any.type_url == PROVENANCE_TYPE_URL)
        .and_then(|any| Provenance::decode(any.value.as_slice()).ok())
}

/// Whether `result` carries a provenance record at all (decodable or not:
/// a garbled one is still a claim a client must not make).
pub fn claims_provenance(result: &reapi::ActionResult) -> bool {
    records(result).any(|any| any.type_url == PROVENANCE_TYPE_URL)
}

/// Replaces any provenance record of `result` with `provenance`.
pub fn stamp(result: &mut reapi::ActionResult, provenance: &Provenance) {
    let metadata = result
        .execution_metadata
        .get_or_insert_with(Default::default);
    metadata
        .auxiliary_metadata
        .retain(|any| any.type_url != PROVENANCE_TYPE_URL);
    metadata
        .auxiliary_metadata
        .push(corral_proto::protobuf::Any {
            type_url: PROVENANCE_TYPE_URL.to_string(),
            value: provenance.encode_to_vec(),
        });
}

fn records(result: &reapi::ActionResult) -> impl Iterator<Item = &corral_proto::protobuf::Any> {
    result
        .execution_metadata
        .iter()
        .flat_map(|m| m.auxiliary_metadata.iter())
}

/// Worker identities whose results are no longer trusted. Shared between
/// the guard and whoever revokes (the policy, an operator); cheap to clone.
#[derive(Clone, Default)]
pub struct RevokedWorkers {
    identities: Arc<RwLock<HashSet<String>>>,
    /// Whether the policy in force still lists a worker identity.
    trust: Arc<RwLock<Option<TrustCheck>>>,
}

/// Says whether a worker identity is still trusted.
pub type TrustCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl std::fmt::Debug for RevokedWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedWorkers").finish_non_exhaustive()
    }
}

impl RevokedWorkers {
    /// Stops trusting results produced under `identity`.
    pub fn revoke(&self, identity: &str) {
        self.write().insert(identity.to_string());
    }

    /// Replaces the whole set (on a policy reload).
    pub fn replace(&self, identities: impl IntoIterator<Item = String>) {
        *self.write() = identities.into_iter().collect();
    }

    /// Also distrusts every identity `check` says no to (the policy no
    /// longer lists the worker).
    pub fn set_trust(&self, check: TrustCheck) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Some(check);
    }

    /// Whether `identity` was revoked, or the trust check refuses it.
    pub fn is_revoked(&self, identity: &str) -> bool {
        if self
            .identities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(identity)
        {
            return true;
        }
        let check = self.trust.read().unwrap_or_else(|p| p.into_inner()).clone();
        check.is_some_and(|trusts| !trusts(identity))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        // A set of strings is consistent after any panic mid-insert.
        self.identities.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The layer; see the module documentation.
pub struct ProvenanceGuard {
    inner: Arc<dyn ActionCache>,
    revoked: RevokedWorkers,
}

impl ProvenanceGuard {
    /// Guards `inner`; results of workers in `revoked` become misses.
    pub fn new(inner: Arc<dyn ActionCache>, revoked: RevokedWorkers) -> Self {
        ProvenanceGuard { inner, revoked }
    }
}

#[async_trait]
impl ActionCache for ProvenanceGuard {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        let Some(result) = self.inner.get(ctx, action).await? else {
            return Ok(None);
        };
        if let Some(p) = provenance_of(&result) {
            if self.revoked.is_revoked(&p.worker_identity) {
                tracing::info!(action = %action, worker = %p.worker_identity, "result of a revoked worker: a miss");
                return Ok(None);
            }
        }
        Ok(Some(result))
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        if *ctx.identity() != Identity::Farm {
            if claims_provenance(&result) {
                return Err(Error::PermissionDenied(format!(
                    "action result for {action}: execution_metadata.auxiliary_metadata holds a \
                     Corral provenance record, which only the farm may write"
                )));
            }
            let existing = self.inner.get(ctx, action).await?;
            if existing.as_ref().is_some_and(claims_provenance) {
                return Err(Error::PermissionDenied(format!(
                    "action result for {action} in instance {:?} was produced by the farm; \
                     a client cannot replace it",
                    ctx.instance_name()
                )));
            }
        }
        self.inner.update(ctx, action, result).await
    }
}
