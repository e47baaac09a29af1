//! A map from encoded keys (arrow row-format bytes) to slots, for the indexes of keyed tables,
//! aggregate groups and view results.
//!
//! Short keys (up to [`INLINE`] bytes: a customer or product id, a window start with an id)
//! are held inside the table's entries, so a probe compares the key in the entry it lands on
//! instead of following a pointer to it; longer keys are held on the heap. Probing and
//! comparing cost the same whatever the number of keys, but with every key inline the whole
//! index stays a few cache lines per key, which is what keeps lookups flat as tables grow.

use hashbrown::HashTable;

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
    key: Key,
    slot: usize,
}

/// A key being looked up: a short one in its inline form (compared as fixed-size arrays), a
/// long one as it is (no copy to the heap per lookup).
enum Probe<'a> {
    Inline(Key),
    Long(&'a [u8]),
}

impl Probe<'_> {
    fn holds(&self, e: &Entry) -> bool {
        match self {
            Probe::Inline(k) => e.key == *k,
            Probe::Long(k) => e.key.as_slice() == *k,
        }
    }
}

/// Encoded key -> slot.
#[derive(Default)]
pub struct KeyIndex {
    table: HashTable<Entry>,
    hasher: ahash::RandomState,
}

impl KeyIndex {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }

    /// The hash of `key`, and a test for the entry holding it.
    fn probe<'a>(&self, key: &'a [u8]) -> (u64, Probe<'a>) {
        let probe = if key.len() <= INLINE {
            Probe::Inline(Key::new(key))
        } else {
            Probe::Long(key)
        };
        (self.hasher.hash_one(key), probe)
    }

    /// The slot of `key`.
    pub fn get(&self, key: &[u8]) -> Option<usize> {
        let (h, p) = self.probe(key);
        self.table.find(h, |e| p.holds(e)).map(|e| e.slot)
    }

    /// The slot of `key`, to change in place.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut usize> {
        let (h, p) = self.probe(key);
        self.table.find_mut(h, |e| p.holds(e)).map(|e| &mut e.slot)
    }

    /// Sets the slot of `key`; returns the slot it had.
    pub fn insert(&mut self, key: &[u8], slot: usize) -> Option<usize> {
        let (h, p) = self.probe(key);
        let hasher = &self.hasher;
        match self
            .table
            .entry(h, |e| p.holds(e), |e| hasher.hash_one(e.key.as_slice()))
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(&mut o.get_mut().slot, slot))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let key = match p {
                    Probe::Inline(k) => k,
                    Probe::Long(k) => Key::Heap(k.into()),
                };
                v.insert(Entry { key, slot });
                None
            }
        }
    }

    /// Removes `key`; returns its slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<usize> {
        let (h, p) = self.probe(key);
        match self.table.find_entry(h, |e| p.holds(e)) {
            Ok(o) => Some(o.remove().0.slot),
            Err(_) => None,
        }
    }

    /// Every key with its slot, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], usize)> {
        self.table.iter().map(|e| (e.key.as_slice(), e.slot))
    }

    /// Every slot, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().map(|e| e.slot)
    }

    /// Every slot, to change in place.
    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut usize> {
        self.table.iter_mut().map(|e| &mut e.slot)
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
}
