//! The fields of the store's hash, as Paho last wrote or removed them.
//!
//! A store's hash has one writer, the client that opened it, so the core can
//! keep the list of its fields and answer `keys`, `contains_key` and the
//! `remove` of a key that was never written without asking Redis.

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// A hash field name. Paho's keys are at most 13 bytes (`c5-4294967295`), so
/// they are stored inline: adding a key to the index does not allocate.
pub(crate) type FieldName = SmallVec<[u8; 16]>;

/// Maps and sets keyed by Paho's keys hash them with FxHash (rustc-hash), not
/// std's SipHash: SipHash resists keys chosen to collide, and these come from
/// Paho and from this store's own hash (whoever can write that can delete
/// it). SipHash took a tenth of the client's instructions in a run of QoS 1
/// publishes (BENCHMARKS.md, "Instructions per message").
pub(crate) type KeyMap<K, V> = FxHashMap<K, V>;
pub(crate) type KeySet<K> = FxHashSet<K>;

/// The fields of the hash, as Paho last wrote or removed them.
#[derive(Debug, Default)]
pub(crate) struct FieldIndex {
    fields: KeySet<FieldName>,
}

impl FieldIndex {
    pub(crate) fn insert(&mut self, key: &str) {
        // Inline for Paho's keys: building the name to insert costs no allocation.
        self.fields.insert(FieldName::from_slice(key.as_bytes()));
    }

    /// Removes `key`; returns whether it was there.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        self.fields.remove(key.as_bytes())
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.contains_bytes(key.as_bytes())
    }

    pub(crate) fn contains_bytes(&self, field: &[u8]) -> bool {
        self.fields.contains(field)
    }

    pub(crate) fn clear(&mut self) {
        self.fields.clear();
    }

    /// The fields as Paho keys, highest message id first (see
    /// [`crate::paho::restore_order`]), the same order on every call. Only
    /// valid UTF-8 without NUL ever enters the index, so every field converts.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .fields
            .iter()
            .filter_map(|field| std::str::from_utf8(field).ok().map(str::to_owned))
            .collect();
        keys.sort_by_cached_key(|key| crate::paho::restore_order(key));
        keys
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.fields.iter().map(|field| field.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_tracks_inserts_and_removes() {
        let mut index = FieldIndex::default();
        index.insert("s-1");
        index.insert("s-1");
        index.insert("c-2");
        assert_eq!(index.keys().len(), 2);
        assert!(index.contains("s-1"));
        assert!(index.remove("s-1"));
        assert!(!index.remove("s-1"));
        assert_eq!(index.keys(), vec!["c-2".to_owned()]);
    }

    #[test]
    fn keys_come_highest_message_id_first() {
        let mut index = FieldIndex::default();
        for key in ["s-2", "s-10", "sc-10", "s-1", "c-3", "s5-65535", "q-4"] {
            index.insert(key);
        }
        assert_eq!(index.keys(), ["s5-65535", "s-10", "sc-10", "q-4", "c-3", "s-2", "s-1"]);
    }
}
