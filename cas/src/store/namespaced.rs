//! Instance names mapped to storage namespaces.
//!
//! REAPI scopes every CAS call by an instance name. By default they all
//! share one CAS; `[cas] namespaces` maps instance-name prefixes to other
//! configured stores, so that, say, `team-a` and everything under
//! `team-a/` keep their blobs apart from everyone else's. The longest
//! prefix that ends at a `/` boundary wins (as `[scheduler]
//! rootfs_by_instance` matches), and names no prefix claims use the
//! default store. The prefixes are resolved to stores once, when the stack
//! is built, so a call costs one scan of the (short) prefix list.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::routed::{Routed, Router};
use super::BlobStore;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

/// The value of the longest key of `map` that is `instance` itself or a
/// prefix of it ending at a `/` (the empty key matches every name).
pub fn longest_prefix<'a, V>(map: &'a BTreeMap<String, V>, instance: &str) -> Option<&'a V> {
    map.iter()
        .filter(|(key, _)| {
            instance
                .strip_prefix(key.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || key.is_empty())
        })
        .max_by_key(|(key, _)| key.len())
        .map(|(_, value)| value)
}

/// The stores of the namespaces, by instance-name prefix.
pub struct Namespaces {
    default: Arc<dyn BlobStore>,
    by_prefix: BTreeMap<String, Arc<dyn BlobStore>>,
}

/// Routes each call to the store of its instance name's namespace.
pub type NamespacedStore = Routed<Namespaces>;

impl NamespacedStore {
    /// `by_prefix` maps instance-name prefixes to their stores; every other
    /// name uses `default`.
    pub fn new(
        default: Arc<dyn BlobStore>,
        by_prefix: BTreeMap<String, Arc<dyn BlobStore>>,
    ) -> Self {
        Routed(Namespaces { default, by_prefix })
    }
}

#[async_trait]
impl Router for Namespaces {
    fn route(&self, ctx: &RequestContext, _: &Digest) -> &dyn BlobStore {
        longest_prefix(&self.by_prefix, ctx.instance_name())
            .unwrap_or(&self.default)
            .as_ref()
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let store = longest_prefix(&self.by_prefix, ctx.instance_name()).unwrap_or(&self.default);
        store.find_missing(ctx, digests).await
    }

    fn children(&self) -> Vec<&dyn BlobStore> {
        std::iter::once(&self.default)
            .chain(self.by_prefix.values())
            .map(|s| s.as_ref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_at_slash_boundaries() {
        let map: BTreeMap<String, u8> = [("team-a", 1), ("team-a/secret", 2), ("", 0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(longest_prefix(&map, "team-a"), Some(&1));
        assert_eq!(longest_prefix(&map, "team-a/x"), Some(&1));
        assert_eq!(longest_prefix(&map, "team-a/secret/y"), Some(&2));
        assert_eq!(longest_prefix(&map, "team-ab"), Some(&0));
        assert_eq!(longest_prefix(&map, ""), Some(&0));
        let no_default: BTreeMap<String, u8> = [("b".to_string(), 1)].into_iter().collect();
        assert_eq!(longest_prefix(&no_default, "bb"), None);
    }
}
