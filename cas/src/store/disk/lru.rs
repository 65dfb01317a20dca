//! The disk store's in-memory index: which blobs it holds, how many bytes,
//! and in which order they were last used.
//!
//! Each blob has a tick (a use counter); `order` maps ticks back to blobs,
//! so the least recently used blob is the first entry of a `BTreeMap` and a
//! use is two map updates, not a scan. A tick is also the time of the use
//! (nanoseconds since the epoch, made strictly increasing), so the age of
//! an evicted blob, the cache's effective retention, costs no extra memory.
//!
//! Each blob's owners live in its entry ([`crate::store::owners`]): the
//! lookup that finds a blob also says who may see it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, DigestMap};
use crate::store::owners::{visible, OwnerId, Owners, Viewer};

/// What the index keeps per blob.
struct Entry {
    tick: u64,
    owners: Owners,
}

#[derive(Default)]
pub struct Lru {
    entries: DigestMap<Entry>,
    order: BTreeMap<u64, Digest>,
    next_tick: u64,
    total: u64,
    /// Tick of the most recently used blob evicted so far.
    last_evicted: Option<u64>,
}

/// Nanoseconds since the epoch (0 for a clock set before it).
fn nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The tick of a use at `at`: its time, or just after the last tick if
/// the clock went back or two uses share a nanosecond.
fn stamp(next_tick: &mut u64, at: SystemTime) -> u64 {
    let tick = nanos(at).max(*next_tick);
    *next_tick = tick + 1;
    tick
}

impl Lru {
    /// Marks `digest` as just used; false if it is not held.
    pub fn touch(&mut self, digest: &Digest) -> bool {
        self.touch_for(digest, None)
    }

    /// Marks `digest` as just used if it is held and `viewer` may see it
    /// (anyone may without a viewer); false otherwise, and then a blob
    /// the viewer may not see is left where it is in the order.
    pub fn touch_for(&mut self, digest: &Digest, viewer: Option<&Viewer>) -> bool {
        let Some(entry) = self.entries.get_mut(digest) else {
            return false;
        };
        if !visible(viewer, &entry.owners) {
            return false;
        }
        let tick = stamp(&mut self.next_tick, SystemTime::now());
        let old = std::mem::replace(&mut entry.tick, tick);
        self.order.remove(&old);
        self.order.insert(tick, *digest);
        true
    }

    /// Records `digest` as held and just used, and `owner` among its
    /// owners.
    pub fn insert(&mut self, digest: Digest, owner: Option<OwnerId>) {
        self.insert_used_at(digest, SystemTime::now());
        if let Some(owner) = owner {
            self.add_owner(&digest, owner);
        }
    }

    /// Adds `owner` to the owners of `digest`; false if it is not held.
    pub fn add_owner(&mut self, digest: &Digest, owner: OwnerId) -> bool {
        match self.entries.get_mut(digest) {
            Some(entry) => {
                entry.owners.insert(owner);
                true
            }
            None => false,
        }
    }

    /// Whether `digest` is held and `viewer` may see it.
    pub fn visible_to(&self, digest: &Digest, viewer: Option<&Viewer>) -> bool {
        self.entries
            .get(digest)
            .is_some_and(|e| visible(viewer, &e.owners))
    }

    /// Records `digest` as held and last used at `at` (a file's time when
    /// the index is rebuilt at start; callers insert oldest first).
    pub fn insert_used_at(&mut self, digest: Digest, at: SystemTime) {
        if self.touch(&digest) {
            return;
        }
        let tick = stamp(&mut self.next_tick, at);
        self.entries.insert(
            digest,
            Entry {
                tick,
                owners: Owners::default(),
            },
        );
        self.order.insert(tick, digest);
        self.total += digest.size();
    }

    /// How long before now the most recently used of the blobs evicted so
    /// far was last used.
    pub fn last_evicted_age(&self) -> Option<Duration> {
        let tick = self.last_evicted?;
        Some(Duration::from_nanos(
            nanos(SystemTime::now()).saturating_sub(tick),
        ))
    }

    /// Forgets `digest`; false if it was not held.
    pub fn remove(&mut self, digest: &Digest) -> bool {
        let Some(entry) = self.entries.remove(digest) else {
            return false;
        };
        self.order.remove(&entry.tick);
        self.total -= digest.size();
        true
    }

    /// Blobs held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Removes least-recently-used entries until `total <= max`, never
    /// `keep`; returns what to delete.
    pub fn evict_to(&mut self, max: u64, keep: &Digest) -> Vec<Digest> {
        let target = self.total.saturating_sub(max);
        self.evict_bytes(target, keep)
    }

    /// Removes least-recently-used entries holding at least `bytes` (or all
    /// but `keep`, if they hold less); returns what to delete.
    pub fn evict_bytes(&mut self, bytes: u64, keep: &Digest) -> Vec<Digest> {
        let mut victims = Vec::new();
        let mut freed = 0;
        let mut cursor = 0;
        while freed < bytes {
            let Some((&tick, &victim)) = self.order.range(cursor..).next() else {
                break;
            };
            cursor = tick + 1;
            if victim == *keep {
                continue;
            }
            self.remove(&victim);
            self.last_evicted = Some(tick);
            freed += victim.size();
            victims.push(victim);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;

    fn d(i: u8, size: u64) -> Digest {
        Digest::new(DigestFunction::Sha256, [i; 32], size)
    }

    #[test]
    fn evicts_oldest_first_and_spares_keep() {
        let mut lru = Lru::default();
        for i in 0..4 {
            lru.insert(d(i, 10), None);
        }
        lru.touch(&d(0, 10));
        assert_eq!(lru.evict_to(25, &d(1, 10)), vec![d(2, 10), d(3, 10)]);
        assert_eq!((lru.len(), lru.total()), (2, 20));
        assert_eq!(lru.evict_bytes(1, &d(9, 0)), vec![d(1, 10)]);
        assert_eq!(lru.evict_bytes(100, &d(0, 10)), Vec::<Digest>::new());
    }

    #[test]
    fn the_age_of_the_last_evicted_blob_is_its_time_since_last_use() {
        let mut lru = Lru::default();
        assert_eq!(lru.last_evicted_age(), None);
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        lru.insert_used_at(d(1, 10), hour_ago - Duration::from_secs(60));
        lru.insert_used_at(d(2, 10), hour_ago);
        lru.insert(d(3, 10), None);
        assert_eq!(lru.evict_to(10, &d(9, 0)), vec![d(1, 10), d(2, 10)]);
        let age = lru.last_evicted_age().unwrap();
        assert!(
            age >= Duration::from_secs(3600) && age < Duration::from_secs(3660),
            "{age:?}"
        );
        // A blob used again is young again.
        lru.insert(d(4, 10), None);
        assert_eq!(lru.evict_to(10, &d(9, 0)), vec![d(3, 10)]);
        assert!(lru.last_evicted_age().unwrap() < Duration::from_secs(60));
    }
}
