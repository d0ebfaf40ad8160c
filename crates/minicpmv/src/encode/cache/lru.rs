//! The in-memory layer: a map from key to shared embeddings, bounded by bytes, evicting the
//! least recently used entry first.

use std::collections::HashMap;
use std::sync::Arc;

use super::EmbdKey;
use crate::encode::ImageEmbeddings;

/// Bytes an entry is charged: its floats plus a fixed 256 for the plan and bookkeeping.
pub(super) fn emb_bytes(e: &ImageEmbeddings) -> u64 {
    e.chunks.iter().map(|c| c.len() as u64 * 4).sum::<u64>() + 256
}

struct MemEntry {
    emb: Arc<ImageEmbeddings>,
    bytes: u64,
    /// The [`MemLru::tick`] of its last use: smallest is evicted first.
    last_used: u64,
}

/// An LRU map bounded by [`emb_bytes`]. Eviction scans for the oldest entry (O(n)); a chat
/// holds a handful of images, so a linked list would not pay for itself.
pub(super) struct MemLru {
    max_bytes: u64,
    map: HashMap<EmbdKey, MemEntry>,
    bytes: u64,
    /// A use counter: every hit and insertion takes the next value.
    tick: u64,
}

impl MemLru {
    /// An empty map holding at most `max_bytes` (0: holds nothing).
    pub(super) fn new(max_bytes: u64) -> MemLru {
        MemLru {
            max_bytes,
            map: HashMap::new(),
            bytes: 0,
            tick: 0,
        }
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes held (the sum of the entries' [`emb_bytes`]), at most the bound.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry of `key`, marked as just used.
    pub(super) fn get(&mut self, key: &EmbdKey) -> Option<Arc<ImageEmbeddings>> {
        self.tick += 1;
        let e = self.map.get_mut(key)?;
        e.last_used = self.tick;
        Some(Arc::clone(&e.emb))
    }

    /// Drops the entry of `key`, if any.
    pub(super) fn remove(&mut self, key: &EmbdKey) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    /// Stores `emb` under `key` as the most recent entry (replacing any entry of that key),
    /// evicting least recently used entries until it fits. An entry larger than the whole
    /// bound is not stored (and evicts nothing). Returns the number of entries evicted.
    pub(super) fn put(&mut self, key: EmbdKey, emb: Arc<ImageEmbeddings>) -> u64 {
        let bytes = emb_bytes(&emb);
        if bytes > self.max_bytes {
            return 0;
        }
        self.remove(&key);
        let mut evicted = 0;
        while self.bytes + bytes > self.max_bytes {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.remove(&oldest);
            evicted += 1;
        }
        self.tick += 1;
        self.bytes += bytes;
        self.map.insert(
            key,
            MemEntry {
                emb,
                bytes,
                last_used: self.tick,
            },
        );
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{expected, key, sample};
    use super::super::{CacheConfig, EmbeddingCache};
    use super::*;

    #[test]
    fn memory_cache_is_lru_bounded_by_bytes() {
        let e = Arc::new(sample(1000, 700, 8, 4, 0.0));
        let one = emb_bytes(&e);
        let mut cache = EmbeddingCache::new(CacheConfig {
            mem_max_bytes: one * 2,
            dir: None,
            disk_max_bytes: 0,
        })
        .unwrap();
        let ex = expected(&e);
        cache.insert(key(1), Arc::clone(&e));
        cache.insert(key(2), Arc::clone(&e));
        assert!(cache.get(&key(1), &ex).is_some()); // 1 is now more recent than 2
        cache.insert(key(3), Arc::clone(&e));
        assert!(cache.get(&key(2), &ex).is_none(), "LRU entry kept");
        assert!(cache.get(&key(1), &ex).is_some());
        assert!(cache.get(&key(3), &ex).is_some());
        assert!(cache.mem_bytes() <= one * 2);
        let s = cache.stats();
        assert_eq!((s.mem_hits, s.misses, s.mem_evictions), (3, 1, 1));
        // an entry that does not match what the caller expects is not returned
        let other = sample(300, 200, 8, 4, 0.0);
        assert!(cache.get(&key(1), &expected(&other)).is_none());
    }
}
