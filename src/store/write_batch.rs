//! A group commit's writes as the engine builds them: encoded values in
//! order, and the values encoded later, by the committing thread.

use std::sync::Arc;

use serde::Serialize;

use super::{codec, keys, record, CustomerRecord, EntityCounts, Result};
use crate::domain::{DimensionSpec, Event};
use crate::scoring::{ScopeState, ValueHistogram};

/// Writes staged for one atomic group commit.
#[derive(Default)]
pub struct WriteBatch {
    /// In order; a later write of a key replaces an earlier one.
    pub(super) writes: Vec<(sled::IVec, Option<sled::IVec>)>,
    /// Encoded at commit (after `writes`).
    pub(super) deferred: Deferred,
    /// Where each value is encoded before its exact-size copy.
    pub(super) scratch: Vec<u8>,
}

/// Writes as one atomic sled batch, in order: a later write of the same key
/// wins, as in [`super::Store::stage`].
pub(super) fn sled_batch(
    writes: impl IntoIterator<Item = (sled::IVec, Option<sled::IVec>)>,
) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    batch
}

/// Values a batch carries unencoded until it is committed, so that the
/// committing thread encodes them, not the writer that builds the batch:
/// customer records and the event log's chunks (a stream writer spent 4%
/// of its samples encoding chunks). Neither is read back from the stage:
/// the writer's cache holds the records in flight, and only committed
/// state serves the event log.
#[derive(Default)]
pub(super) struct Deferred {
    records: Vec<(sled::IVec, Arc<CustomerRecord>)>,
    /// Chunks: the first sequence and the events from it.
    events: Vec<(u64, Vec<Event>)>,
}

impl Deferred {
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.events.is_empty()
    }

    /// Encodes them as writes, after the batch's other writes.
    pub(super) fn encode(
        &self,
        writes: &mut Vec<(sled::IVec, Option<sled::IVec>)>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        writes.reserve(self.events.len() + self.records.len());
        for (first, events) in &self.events {
            codec::encode_into(events, scratch)?;
            let key = sled::IVec::from(&keys::event(*first)[..]);
            writes.push((key, Some(sled::IVec::from(scratch.as_slice()))));
        }
        for (key, record) in &self.records {
            record::encode_into(record, scratch)?;
            writes.push((key.clone(), Some(sled::IVec::from(scratch.as_slice()))));
        }
        Ok(())
    }
}

impl WriteBatch {
    pub(super) fn put<T: Serialize>(
        &mut self,
        key: impl Into<sled::IVec>,
        value: &T,
    ) -> Result<()> {
        codec::encode_into(value, &mut self.scratch)?;
        self.push_scratch(key);
        Ok(())
    }

    /// Writes the encoded value in `scratch` under `key` (one exact-size
    /// copy; `scratch` keeps its capacity for the next value).
    pub(super) fn push_scratch(&mut self, key: impl Into<sled::IVec>) {
        let value = sled::IVec::from(self.scratch.as_slice());
        self.writes.push((key.into(), Some(value)));
    }

    /// One chunk of the event log: the events accepted by one commit, from
    /// sequence `first` on (one sled write per commit instead of one per
    /// event), encoded when the batch is committed.
    pub fn put_events(&mut self, first: u64, events: Vec<Event>) {
        if !events.is_empty() {
            self.deferred.events.push((first, events));
        }
    }

    /// An entry of the id index earlier builds kept (event id → sequence),
    /// to test dirs they wrote.
    #[cfg(test)]
    pub fn put_legacy_event_id(&mut self, id: &str, seq: u64) -> Result<()> {
        self.put(keys::with_prefix(keys::EVENT_ID, id), &seq)
    }

    /// A customer record, encoded when the batch is committed (on the
    /// committing thread; see [`super::Store::stage`]).
    pub fn put_customer(&mut self, id: &str, record: Arc<CustomerRecord>) {
        self.deferred
            .records
            .push((keys::with_prefix(keys::CUSTOMER, id).into(), record));
    }

    pub fn put_scope(&mut self, name: &str, state: &ScopeState) -> Result<()> {
        self.put_scope_key(keys::with_prefix(keys::SCOPE, name), state)
    }

    pub(super) fn put_scope_key(
        &mut self,
        key: impl Into<sled::IVec>,
        state: &ScopeState,
    ) -> Result<()> {
        codec::encode_versioned_into(codec::SCOPE_VERSION, state, &mut self.scratch)?;
        self.push_scratch(key);
        Ok(())
    }

    pub fn put_attribute_values(&mut self, key: &str, count: u64) -> Result<()> {
        self.put(keys::with_prefix(keys::ATTRIBUTE_KEY, key), &count)
    }

    pub fn put_histogram(&mut self, histogram: &ValueHistogram) -> Result<()> {
        self.put(
            keys::with_prefix(keys::META, keys::META_HISTOGRAM),
            histogram,
        )
    }

    pub fn put_entity_counts(&mut self, counts: &EntityCounts) -> Result<()> {
        self.put(keys::with_prefix(keys::META, keys::META_COUNTS), counts)
    }

    pub fn put_dimension(&mut self, spec: &DimensionSpec) -> Result<()> {
        self.put(keys::with_prefix(keys::DIMENSION, &spec.name), spec)
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deferred.is_empty()
    }
}
