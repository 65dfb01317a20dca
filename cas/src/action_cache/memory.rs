//! An action cache in a hash map, for tests and throw-away servers.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use corral_proto::reapi;

use super::ActionCache;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

type Key = (String, Digest);

/// An unbounded action cache in memory.
#[derive(Default)]
pub struct MemoryActionCache {
    entries: RwLock<HashMap<Key, reapi::ActionResult>>,
}

impl MemoryActionCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ActionCache for MemoryActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        // Poison is ignored: every update is one insert.
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .get(&(ctx.instance_name().to_string(), *action))
            .cloned())
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        map.insert((ctx.instance_name().to_string(), *action), result);
        Ok(())
    }
}
