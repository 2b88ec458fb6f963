//! The writer's cache of decoded customer records. Every event reads and
//! rewrites one customer record; for a customer seen recently the cache
//! saves the sled read and the decode. It always holds the latest state
//! (committed or still in flight), because only the writer changes records
//! and it puts every record it wrote back.

use super::Map;
use crate::store::CustomerRecord;

pub(super) struct CustomerCache {
    records: Map<String, CustomerRecord>,
    capacity: usize,
}

impl CustomerCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            records: Map::default(),
            capacity,
        }
    }

    /// Moves a record out for a commit's working set (no copy).
    pub(super) fn take(&mut self, id: &str) -> Option<CustomerRecord> {
        self.records.remove(id)
    }

    /// Puts back the records a commit wrote, then evicts down to capacity.
    /// Eviction is arbitrary (hash order): cheap, and with skewed traffic
    /// the busiest customers come straight back.
    pub(super) fn put_back(&mut self, records: impl IntoIterator<Item = (String, CustomerRecord)>) {
        if self.capacity == 0 {
            return;
        }
        self.records.extend(records);
        let excess = self.records.len().saturating_sub(self.capacity);
        if excess > 0 {
            let evicted: Vec<String> = self.records.keys().take(excess).cloned().collect();
            for id in evicted {
                self.records.remove(&id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_hands_records_out_once() {
        let mut cache = CustomerCache::new(3);
        cache.put_back((0..5).map(|i| (format!("c{i}"), CustomerRecord::default())));
        assert_eq!(cache.len(), 3);
        let kept: Vec<String> = (0..5)
            .map(|i| format!("c{i}"))
            .filter(|id| cache.take(id).is_some())
            .collect();
        assert_eq!(kept.len(), 3);
        assert_eq!(cache.len(), 0, "taken records leave the cache");

        let mut off = CustomerCache::new(0);
        off.put_back([("c".to_string(), CustomerRecord::default())]);
        assert_eq!(off.take("c"), None);
    }
}
