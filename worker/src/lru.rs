//! A small least-recently-used index with a cost per entry, shared by the
//! executable-variant store and the staged-tree cache. It only does the
//! bookkeeping; callers delete what [`Lru::evict`] hands back.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries ordered by last use, each with a cost (bytes, files, …).
pub struct Lru<K> {
    entries: HashMap<K, (u64, u64)>,
    order: BTreeMap<u64, K>,
    next_tick: u64,
    total: u64,
}

impl<K: Clone + Eq + Hash> Default for Lru<K> {
    fn default() -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
            total: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Lru<K> {
    /// Marks `key` as just used; false if it is not held.
    pub fn touch(&mut self, key: &K) -> bool {
        let Some((tick, _)) = self.entries.get_mut(key) else {
            return false;
        };
        self.order.remove(tick);
        *tick = self.next_tick;
        self.order.insert(self.next_tick, key.clone());
        self.next_tick += 1;
        true
    }

    /// Adds `key` with `cost` (or touches it if already held).
    pub fn insert(&mut self, key: K, cost: u64) {
        if self.touch(&key) {
            return;
        }
        self.entries.insert(key.clone(), (self.next_tick, cost));
        self.order.insert(self.next_tick, key);
        self.next_tick += 1;
        self.total += cost;
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some((tick, cost)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.total -= cost;
        }
    }

    /// Sum of the costs held.
    pub fn total(&self) -> u64 {
        self.total
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes least-recently-used entries until the total is at most `max`,
    /// skipping those `pinned` says are in use; returns the removed keys.
    pub fn evict(&mut self, max: u64, pinned: impl Fn(&K) -> bool) -> Vec<K> {
        let mut victims = Vec::new();
        let mut cursor = 0;
        while self.total > max {
            let Some((&tick, key)) = self.order.range(cursor..).next() else {
                break;
            };
            cursor = tick + 1;
            if pinned(key) {
                continue;
            }
            let key = key.clone();
            self.remove(&key);
            victims.push(key);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_unpinned_first() {
        let mut lru = Lru::default();
        lru.insert("a", 10);
        lru.insert("b", 10);
        lru.insert("c", 10);
        assert!(lru.touch(&"a"));
        // Order of use now: b, c, a. "b" is pinned, so "c" goes first.
        let victims = lru.evict(20, |k| *k == "b");
        assert_eq!(victims, vec!["c"]);
        assert_eq!(lru.total(), 20);
        let victims = lru.evict(0, |_| false);
        assert_eq!(victims, vec!["b", "a"]);
        assert!(lru.is_empty());
    }
}
