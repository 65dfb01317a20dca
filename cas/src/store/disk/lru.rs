//! The disk store's in-memory index: which blobs it holds, how many bytes,
//! and in which order they were last used.
//!
//! Each blob has a tick (a use counter); `order` maps ticks back to blobs,
//! so the least recently used blob is the first entry of a `BTreeMap` and a
//! use is two map updates, not a scan.

use std::collections::BTreeMap;

use crate::digest::{Digest, DigestMap};

#[derive(Default)]
pub struct Lru {
    ticks: DigestMap<u64>,
    order: BTreeMap<u64, Digest>,
    next_tick: u64,
    total: u64,
}

impl Lru {
    /// Marks `digest` as just used; false if it is not held.
    pub fn touch(&mut self, digest: &Digest) -> bool {
        let Some(tick) = self.ticks.get_mut(digest) else {
            return false;
        };
        self.order.remove(tick);
        *tick = self.next_tick;
        self.order.insert(self.next_tick, *digest);
        self.next_tick += 1;
        true
    }

    /// Records `digest` as held and just used.
    pub fn insert(&mut self, digest: Digest) {
        if self.touch(&digest) {
            return;
        }
        self.ticks.insert(digest, self.next_tick);
        self.order.insert(self.next_tick, digest);
        self.next_tick += 1;
        self.total += digest.size();
    }

    pub fn remove(&mut self, digest: &Digest) {
        if let Some(tick) = self.ticks.remove(digest) {
            self.order.remove(&tick);
            self.total -= digest.size();
        }
    }

    /// Blobs held.
    pub fn len(&self) -> usize {
        self.ticks.len()
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
            lru.insert(d(i, 10));
        }
        lru.touch(&d(0, 10));
        assert_eq!(lru.evict_to(25, &d(1, 10)), vec![d(2, 10), d(3, 10)]);
        assert_eq!((lru.len(), lru.total()), (2, 20));
        assert_eq!(lru.evict_bytes(1, &d(9, 0)), vec![d(1, 10)]);
        assert_eq!(lru.evict_bytes(100, &d(0, 10)), Vec::<Digest>::new());
    }
}
