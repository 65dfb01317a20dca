//! An asset index in memory: lost on restart; for tests and for servers
//! whose CAS is in memory too.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use corral_cas::RequestContext;

use super::{AssetEntry, AssetIndex, AssetKey};
use crate::error::{AssetError, Result};

/// Entries keyed by instance name and key.
#[derive(Default)]
pub struct MemoryIndex {
    entries: Mutex<HashMap<(String, AssetKey), AssetEntry>>,
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn locked(&self) -> Result<std::sync::MutexGuard<'_, HashMap<(String, AssetKey), AssetEntry>>> {
        self.entries
            .lock()
            .map_err(|_| AssetError::Internal("the memory asset index lock is poisoned".into()))
    }
}

#[async_trait]
impl AssetIndex for MemoryIndex {
    async fn get(&self, ctx: &RequestContext, key: &AssetKey) -> Result<Option<AssetEntry>> {
        let id = (ctx.instance_name().to_string(), key.clone());
        Ok(self.locked()?.get(&id).cloned())
    }

    async fn put(&self, ctx: &RequestContext, key: &AssetKey, entry: &AssetEntry) -> Result<()> {
        let id = (ctx.instance_name().to_string(), key.clone());
        self.locked()?.insert(id, entry.clone());
        Ok(())
    }

    async fn remove(&self, ctx: &RequestContext, key: &AssetKey) -> Result<()> {
        let id = (ctx.instance_name().to_string(), key.clone());
        self.locked()?.remove(&id);
        Ok(())
    }
}
