//! The writer's cache of decoded customer records. Every event reads and
//! rewrites one customer record; for a customer seen recently the cache
//! saves the sled read and the decode. It always holds the latest state
//! (committed or still in flight), because only the writer changes records
//! and it puts every record it wrote back.
//!
//! It also holds every record still in flight: the store encodes records
//! only when it commits them, so until then the cache is the only place to
//! read them from. A record is in flight while the commit holds its `Arc`
//! (see `Store::stage`); such records are never evicted.

use std::sync::Arc;

use super::Map;
use crate::store::CustomerRecord;

pub(super) struct CustomerCache {
    /// Behind a pointer: a record is 408 bytes inline, and hashbrown now
    /// and then rehashes the whole table in place (taking and putting back
    /// leaves tombstones). With records inline, unary runs showed a ~140 ms
    /// writer stall that went away with the cache off; boxed (the table
    /// moves pointers), the worst ack fell to 14–46 ms.
    records: Map<String, Arc<CustomerRecord>>,
    capacity: usize,
}

impl CustomerCache {
    pub(super) fn new(capacity: usize) -> Self {
        // Sized once, so the table never grows while the writer waits.
        let records = Map::with_capacity_and_hasher(capacity, Default::default());
        Self { records, capacity }
    }

    /// Moves a record out for a commit's working set (no copy; a record
    /// still in flight is copied when first changed, `Arc::make_mut`).
    pub(super) fn take(&mut self, id: &str) -> Option<Arc<CustomerRecord>> {
        self.records.remove(id)
    }

    /// Puts back the records a commit wrote. Past capacity it evicts a
    /// tenth of the cache in one pass: arbitrary records (hash order), which
    /// is cheap, and with skewed traffic the busiest customers come straight
    /// back. (Evicting a few per commit walked the emptied front of the
    /// table again every time.) Records in flight stay.
    pub(super) fn put_back(
        &mut self,
        records: impl IntoIterator<Item = (String, Arc<CustomerRecord>)>,
    ) {
        self.records.extend(records);
        if self.records.len() > self.capacity {
            let mut evict = self.records.len() - self.capacity * 9 / 10;
            self.records.retain(|_, record| {
                if evict == 0 || in_flight(record) {
                    return true;
                }
                evict -= 1;
                false
            });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// Held by a commit that has not been written yet.
fn in_flight(record: &Arc<CustomerRecord>) -> bool {
    Arc::strong_count(record) > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_hands_records_out_once() {
        let record = || Arc::new(CustomerRecord::default());
        let mut cache = CustomerCache::new(10);
        cache.put_back((0..10).map(|i| (format!("c{i}"), record())));
        assert_eq!(cache.len(), 10, "up to capacity, nothing is evicted");
        cache.put_back((10..15).map(|i| (format!("c{i}"), record())));
        assert_eq!(cache.len(), 9, "past it, down to nine tenths at once");
        let kept: Vec<String> = (0..15)
            .map(|i| format!("c{i}"))
            .filter(|id| cache.take(id).is_some())
            .collect();
        assert_eq!(kept.len(), 9);
        assert_eq!(cache.len(), 0, "taken records leave the cache");

        let mut off = CustomerCache::new(0);
        off.put_back([("c".to_string(), record())]);
        assert_eq!(off.take("c"), None);
    }

    #[test]
    fn records_in_flight_are_never_evicted() {
        let mut cache = CustomerCache::new(0);
        // The commit's reference: not written yet.
        let in_flight = Arc::new(CustomerRecord::default());
        let commit = Arc::clone(&in_flight);
        cache.put_back([("a".to_string(), in_flight)]);
        cache.put_back([("b".to_string(), Arc::new(CustomerRecord::default()))]);
        assert!(cache.take("b").is_none(), "written: evicted at once");
        let kept = cache.take("a").expect("in flight: kept");
        assert!(Arc::ptr_eq(&kept, &commit));

        // Written (the commit dropped it): evicted like any other.
        drop(commit);
        cache.put_back([("a".to_string(), kept)]);
        assert!(cache.take("a").is_none());
    }
}
