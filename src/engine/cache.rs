//! The writer's cache of decoded customer records. Every event reads and
//! rewrites one customer record; for a customer seen recently the cache
//! saves the sled read and the decode. It always holds the latest state
//! (committed or still in flight), because only the writer changes records
//! and it puts every record it wrote back.

use super::Map;
use crate::store::CustomerRecord;

pub(super) struct CustomerCache {
    /// Boxed: a record is 408 bytes inline, and hashbrown now and then rehashes the
    /// whole table in place (taking and putting back leaves tombstones).
    /// With records inline, unary runs showed a ~140 ms writer stall that
    /// went away with the cache off; boxed (the table moves pointers), the
    /// worst ack fell to 14–46 ms.
    records: Map<String, Box<CustomerRecord>>,
    capacity: usize,
}

impl CustomerCache {
    pub(super) fn new(capacity: usize) -> Self {
        // Sized once, so the table never grows while the writer waits.
        let records = Map::with_capacity_and_hasher(capacity, Default::default());
        Self { records, capacity }
    }

    /// Moves a record out for a commit's working set (no copy).
    pub(super) fn take(&mut self, id: &str) -> Option<CustomerRecord> {
        self.records.remove(id).map(|record| *record)
    }

    /// Puts back the records a commit wrote. Past capacity it evicts a
    /// tenth of the cache in one pass: arbitrary records (hash order), which
    /// is cheap, and with skewed traffic the busiest customers come straight
    /// back. (Evicting a few per commit walked the emptied front of the
    /// table again every time.)
    pub(super) fn put_back(&mut self, records: impl IntoIterator<Item = (String, CustomerRecord)>) {
        if self.capacity == 0 {
            return;
        }
        self.records.extend(
            records
                .into_iter()
                .map(|(id, record)| (id, Box::new(record))),
        );
        if self.records.len() > self.capacity {
            let mut evict = self.records.len() - self.capacity * 9 / 10;
            self.records.retain(|_, _| {
                let keep = evict == 0;
                evict = evict.saturating_sub(1);
                keep
            });
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
        let mut cache = CustomerCache::new(10);
        cache.put_back((0..10).map(|i| (format!("c{i}"), CustomerRecord::default())));
        assert_eq!(cache.len(), 10, "up to capacity, nothing is evicted");
        cache.put_back((10..15).map(|i| (format!("c{i}"), CustomerRecord::default())));
        assert_eq!(cache.len(), 9, "past it, down to nine tenths at once");
        let kept: Vec<String> = (0..15)
            .map(|i| format!("c{i}"))
            .filter(|id| cache.take(id).is_some())
            .collect();
        assert_eq!(kept.len(), 9);
        assert_eq!(cache.len(), 0, "taken records leave the cache");

        let mut off = CustomerCache::new(0);
        off.put_back([("c".to_string(), CustomerRecord::default())]);
        assert_eq!(off.take("c"), None);
    }
}
