//! The greatest K distinct values seen: a customer's latest purchases and
//! cancellations.
//!
//! A sorted `Vec`, not a `BTreeSet`: a customer record holds two of these,
//! and a B-tree allocates an 11-slot node for even one element, so the
//! decoded records the writer keeps took ~1.3 KB each (derived from the
//! server's RSS with 50,000 and 200,000 of them cached).
//! Stored exactly as the `BTreeSet` it replaces was (a postcard sequence in
//! ascending order), so records written before it read unchanged.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct TopK<T>(Vec<T>);

impl<T> Default for TopK<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Ord> TopK<T> {
    /// Adds `item` (a value already kept is not added twice), then drops the
    /// smallest values beyond `k`.
    pub fn insert(&mut self, item: T, k: usize) {
        if let Err(at) = self.0.binary_search(&item) {
            self.0.insert(at, item);
        }
        if self.0.len() > k {
            let excess = self.0.len() - k;
            self.0.drain(..excess);
        }
    }

    /// Ascending.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn last(&self) -> Option<&T> {
        self.0.last()
    }

    /// The greatest value kept that is at most `bound`.
    pub fn last_at_most(&self, bound: &T) -> Option<&T> {
        let end = self.0.partition_point(|x| x <= bound);
        end.checked_sub(1).map(|i| &self.0[i])
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for TopK<T> {
    /// Sorted and deduplicated as read, so that no stored value can break
    /// the order the binary searches rely on.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = Vec::<T>::deserialize(deserializer)?;
        values.sort_unstable();
        values.dedup();
        Ok(Self(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The same values, order and bytes as the `BTreeSet` it replaced,
        /// kept to its top K the way that set was.
        #[test]
        fn matches_the_top_k_btree_set(items in proptest::collection::vec((0i64..50, "[a-c]{0,2}"), 0..80), k in 1usize..20) {
            let mut set = BTreeSet::new();
            let mut top = TopK::default();
            for item in items {
                set.insert(item.clone());
                while set.len() > k {
                    set.pop_first();
                }
                top.insert(item, k);
                prop_assert!(top.iter().eq(set.iter()));
            }
            prop_assert_eq!(top.len(), set.len());
            prop_assert_eq!(top.last(), set.last());
            let bytes = postcard::to_allocvec(&top).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&set).unwrap());
            let read: TopK<(i64, String)> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(read, top);
        }

        #[test]
        fn last_at_most_is_the_set_range_end(items in proptest::collection::vec(0i64..100, 0..20), bound in -5i64..105) {
            let mut top = TopK::default();
            for &item in &items {
                top.insert(item, 16);
            }
            let set: BTreeSet<i64> = top.iter().copied().collect();
            prop_assert_eq!(top.last_at_most(&bound), set.range(..=bound).next_back());
        }
    }

    #[test]
    fn unsorted_or_repeated_stored_values_are_put_in_order() {
        let bytes = postcard::to_allocvec(&vec![5i64, 1, 5, 3]).unwrap();
        let read: TopK<i64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read.iter().copied().collect::<Vec<_>>(), [1, 3, 5]);
        assert!(TopK::<i64>::default().is_empty());
    }
}
