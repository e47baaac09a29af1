//! A map from encoded keys (arrow row-format bytes) to slots, for the indexes of keyed tables,
//! aggregate groups and view results.
//!
//! Short keys (up to [`INLINE`] bytes: a customer or product id, a window start with an id)
//! are held inside the table's entries, so a probe compares the key in the entry it lands on
//! instead of following a pointer to it; longer keys are held on the heap.
//!
//! Probing costs the same whatever the number of keys, but not the cache misses: while a
//! round decodes megabytes of JSON, a large index drops out of the caches, and a lookup then
//! waits on memory. So callers that look up a batch of keys hash them all first and ask for
//! each key's bucket a few keys ahead ([`KeyIndex::get_batch`], or [`KeyIndex::prefetch`] by
//! hand), and the misses of a batch overlap instead of queueing one after another.

/// Asks the CPU to start loading the cache line at `p`; never faults, whatever `p` is. A
/// per-row loop over state that is cold (a round's decoding has pushed it out of the caches)
/// calls this a few rows ahead, so the loads of several rows overlap instead of queueing.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not dereference `p` and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many rows ahead a per-row loop over cold state asks for the state of a row.
pub const AHEAD: usize = 8;

/// Keys up to this many bytes are held inline.
pub const INLINE: usize = 30;

#[derive(Clone, PartialEq, Eq)]
enum Key {
    /// The key's bytes, then zeros.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(k: &[u8]) -> Key {
        if k.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

struct Entry {
    hash: u64,
    slot: usize,
    key: Key,
}

/// A key being looked up: a short one in its inline form (compared as fixed-size arrays), a
/// long one as it is (no copy to the heap per lookup).
enum Probe<'a> {
    Inline(Key),
    Long(&'a [u8]),
}

impl Probe<'_> {
    fn new(key: &[u8]) -> Probe<'_> {
        if key.len() <= INLINE {
            Probe::Inline(Key::new(key))
        } else {
            Probe::Long(key)
        }
    }

    fn holds(&self, e: &Entry) -> bool {
        match self {
            Probe::Inline(k) => e.key == *k,
            Probe::Long(k) => e.key.as_slice() == *k,
        }
    }
}

/// Encoded key -> slot: an open-addressing table with linear probing, at most half full.
///
/// Our own table rather than a library's, for one thing a library's does not offer: a caller
/// looking up a batch of keys hashes them first and asks for each key's bucket to be loaded
/// a few keys ahead ([`KeyIndex::prefetch`]), so the cache misses of a batch overlap.
#[derive(Default)]
pub struct KeyIndex {
    /// A power of two buckets (or none); a key's search starts at its hash's low bits.
    buckets: Vec<Option<Entry>>,
    len: usize,
    hasher: ahash::RandomState,
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = None);
        self.len = 0;
    }

    /// The hash a lookup of `key` starts from.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Starts loading the bucket where a lookup of a key with this hash begins.
    pub fn prefetch(&self, hash: u64) {
        if let Some(b) = self.buckets.get(self.home(hash)) {
            prefetch(b);
        }
    }

    fn home(&self, hash: u64) -> usize {
        (hash as usize) & self.buckets.len().wrapping_sub(1)
    }

    /// The bucket holding `key`, or the empty bucket where it would go.
    fn find(&self, p: &Probe, hash: u64) -> (usize, bool) {
        let mask = self.buckets.len() - 1;
        let mut i = self.home(hash);
        loop {
            match &self.buckets[i] {
                None => return (i, false),
                Some(e) if e.hash == hash && p.holds(e) => return (i, true),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The slot of `key`.
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        self.get_hashed(key, self.hash(key))
    }

    /// The slot of `key`, whose [`KeyIndex::hash`] the caller has.
    pub fn get_hashed(&self, key: &[u8], hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        match self.find(&Probe::new(key), hash) {
            (i, true) => self.buckets[i].as_ref().map(|e| e.slot),
            _ => None,
        }
    }

    /// The slot of each of `n` keys (`None` for a key that is `None` or not held). Every key
    /// is hashed first, then each key's bucket is asked for [`AHEAD`] keys before its lookup,
    /// so the cache misses of a batch overlap instead of queueing.
    pub fn get_batch<'k>(
        &self,
        n: usize,
        key: impl Fn(usize) -> Option<&'k [u8]>,
    ) -> Vec<Option<usize>> {
        if self.len == 0 {
            return vec![None; n];
        }
        let hashes: Vec<u64> = (0..n).map(|i| key(i).map_or(0, |k| self.hash(k))).collect();
        (0..n)
            .map(|i| {
                if let Some(&h) = hashes.get(i + AHEAD) {
                    self.prefetch(h);
                }
                key(i).and_then(|k| self.get_hashed(k, hashes[i]))
            })
            .collect()
    }

    /// The slot of `key`, to change in place.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut usize> {
        if self.len == 0 {
            return None;
        }
        match self.find(&Probe::new(key), self.hash(key)) {
            (i, true) => self.buckets[i].as_mut().map(|e| &mut e.slot),
            _ => None,
        }
    }

    /// Sets the slot of `key`; returns the slot it had.
    pub fn insert(&mut self, key: &[u8], slot: usize) -> Option<usize> {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        let hash = self.hash(key);
        let p = Probe::new(key);
        let (i, found) = self.find(&p, hash);
        if found {
            return self.buckets[i]
                .as_mut()
                .map(|e| std::mem::replace(&mut e.slot, slot));
        }
        let key = match p {
            Probe::Inline(k) => k,
            Probe::Long(k) => Key::Heap(k.into()),
        };
        self.buckets[i] = Some(Entry { hash, slot, key });
        self.len += 1;
        None
    }

    /// Twice the buckets (at least 16); entries move by their kept hash.
    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, (0..n).map(|_| None).collect());
        let mask = n - 1;
        for e in old.into_iter().flatten() {
            let mut i = self.home(e.hash);
            while self.buckets[i].is_some() {
                i = (i + 1) & mask;
            }
            self.buckets[i] = Some(e);
        }
    }

    /// Removes `key`; returns its slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let (mut hole, found) = self.find(&Probe::new(key), self.hash(key));
        if !found {
            return None;
        }
        let gone = self.buckets[hole].take().map(|e| e.slot);
        self.len -= 1;
        // Close the gap: an entry further along the run moves back into the hole when its
        // search would pass the hole on its way (no tombstones, so searches stay short).
        let mask = self.buckets.len() - 1;
        let mut j = (hole + 1) & mask;
        while let Some(e) = &self.buckets[j] {
            let home = self.home(e.hash);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.buckets[hole] = self.buckets[j].take();
                hole = j;
            }
            j = (j + 1) & mask;
        }
        gone
    }

    /// Every key with its slot, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], usize)> {
        self.buckets
            .iter()
            .flatten()
            .map(|e| (e.key.as_slice(), e.slot))
    }

    /// Every slot, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.buckets.iter().flatten().map(|e| e.slot)
    }

    /// Every slot, to change in place.
    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut usize> {
        self.buckets.iter_mut().flatten().map(|e| &mut e.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a std map, over short, boundary-length and long keys, some sharing prefixes
    /// and some differing only in trailing zeros (which the inline form pads with).
    #[test]
    fn behaves_as_a_map() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 2, INLINE - 1, INLINE, INLINE + 1, 64] {
            for v in 0..40u8 {
                let mut k = vec![7u8; len];
                if let Some(b) = k.last_mut() {
                    *b = v;
                }
                keys.push(k);
            }
        }
        keys.push(vec![0]);
        keys.push(vec![0, 0]);
        keys.push(vec![0; INLINE]);
        keys.push(vec![0; INLINE + 1]);
        keys.sort();
        keys.dedup();
        let mut idx = KeyIndex::default();
        let mut model: HashMap<Vec<u8>, usize> = HashMap::new();
        for round in 0..5usize {
            for (i, k) in keys.iter().enumerate() {
                match (i + round) % 3 {
                    0 => assert_eq!(
                        idx.insert(k, i * 10 + round),
                        model.insert(k.clone(), i * 10 + round)
                    ),
                    1 => assert_eq!(idx.remove(k), model.remove(k)),
                    _ => {
                        if let Some(s) = idx.get_mut(k) {
                            *s += 1;
                        }
                        if let Some(s) = model.get_mut(k) {
                            *s += 1;
                        }
                    }
                }
            }
            for k in &keys {
                assert_eq!(idx.get(k), model.get(k).copied(), "key {k:?}");
            }
            assert_eq!(idx.len(), model.len());
            let mut got: Vec<(Vec<u8>, usize)> = idx.iter().map(|(k, s)| (k.to_vec(), s)).collect();
            let mut want: Vec<(Vec<u8>, usize)> =
                model.iter().map(|(k, &s)| (k.clone(), s)).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
        for s in idx.slots_mut() {
            *s = 1;
        }
        assert!(idx.slots().all(|s| s == 1));
        idx.clear();
        assert!(idx.is_empty() && idx.get(&keys[3]).is_none());
    }

    /// Many keys inserted and removed in a scrambled order, so runs of neighbouring buckets
    /// form, wrap around the table's end and get holes closed: every lookup agrees with a std
    /// map after every step, through the table's growth.
    #[test]
    fn removals_keep_every_other_key_findable() {
        let mut idx = KeyIndex::default();
        let mut model: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut x: u64 = 12345;
        for step in 0..20_000usize {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = ((x >> 33) % 3000).to_le_bytes().to_vec();
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(idx.remove(&k), model.remove(&k), "step {step}");
            } else {
                assert_eq!(
                    idx.insert(&k, step),
                    model.insert(k.clone(), step),
                    "step {step}"
                );
            }
            if step.is_multiple_of(1000) {
                for (k, &v) in &model {
                    assert_eq!(idx.get(k), Some(v), "step {step}");
                    assert_eq!(idx.get_hashed(k, idx.hash(k)), Some(v));
                }
                assert_eq!(idx.len(), model.len());
            }
        }
        for (k, &v) in &model {
            assert_eq!(idx.get(k), Some(v));
        }
        assert_eq!(idx.iter().count(), model.len());
    }
}
