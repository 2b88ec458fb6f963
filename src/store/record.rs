//! What the store keeps per customer, and how it is encoded.
//!
//! The idempotency index lives in the record: the ids of the customer's
//! latest events ([`RecentIds`]). Every event reads and rewrites its
//! customer's record anyway, so a duplicate check costs no extra sled read
//! and an accepted event no extra sled key. (A global id → sequence key per
//! event doubled the keys in the tree: a second insert per event, a second
//! tree walk, and a page table and a start-up that grew with it.)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{codec, Result, StoreError};
use crate::scoring::CustomerState;

/// The scoring state and the engine's bookkeeping of one customer, in one
/// value so that one read serves an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub state: CustomerState,
    /// Scopes the customer counts in, sorted (membership without a read
    /// per scope).
    pub scopes: Vec<String>,
    /// The open CHURN_RISK alert, if any.
    pub churn_alert: Option<u64>,
    /// Encoded after the fields above (see [`encode`]), so that records
    /// written before it existed still decode.
    #[serde(skip)]
    pub ids: RecentIds,
}

/// The ids of a customer's latest accepted events, oldest first, with the
/// sequence each was accepted under. An id is kept as the first 8 bytes of
/// its SHA-256: 8 bytes whatever its length, and two ids of one customer
/// collide with a probability of about n²/2⁶⁵ for n remembered ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentIds(VecDeque<([u8; 8], u64)>);

impl RecentIds {
    pub fn digest(id: &str) -> [u8; 8] {
        let hash = Sha256::digest(id.as_bytes());
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&hash[..8]);
        digest
    }

    /// The sequence `id` was accepted under, if it is remembered.
    pub fn sequence_of(&self, digest: &[u8; 8]) -> Option<u64> {
        // Newest first: a retry is usually of a recent event.
        self.0.iter().rev().find(|(d, _)| d == digest).map(|e| e.1)
    }

    /// Remembers an accepted id, forgetting the oldest beyond `limit`.
    pub fn remember(&mut self, digest: [u8; 8], seq: u64, limit: usize) {
        self.0.push_back((digest, seq));
        while self.0.len() > limit.max(1) {
            self.0.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The versioned codec value of the record's first fields, then the ids.
#[cfg(test)]
pub fn encode(record: &CustomerRecord) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(record, &mut bytes)?;
    Ok(bytes)
}

/// [`encode`] into `buf` (see `codec::encode_into`).
pub fn encode_into(record: &CustomerRecord, buf: &mut Vec<u8>) -> Result<()> {
    codec::encode_into(record, buf)?;
    codec::append(&record.ids, buf)
}

/// A record without its ids, for readers that need only the state or the
/// scopes (the ids are not decoded).
pub fn decode_without_ids(bytes: &[u8]) -> Result<CustomerRecord> {
    let (record, _ids) = codec::decode_prefix(bytes)?;
    Ok(record)
}

/// Reads what [`encode`] wrote; a record from before `ids` existed ends
/// after its first fields and has none.
pub fn decode(bytes: &[u8]) -> Result<CustomerRecord> {
    let (mut record, rest): (CustomerRecord, _) = codec::decode_prefix(bytes)?;
    if !rest.is_empty() {
        record.ids = postcard::from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))?;
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_with_ids(ids: &[(&str, u64)]) -> CustomerRecord {
        let mut record = CustomerRecord {
            scopes: vec!["all".into(), "brand=acme".into()],
            churn_alert: Some(7),
            ..CustomerRecord::default()
        };
        for (id, seq) in ids {
            record.ids.remember(RecentIds::digest(id), *seq, 10);
        }
        record
    }

    #[test]
    fn records_round_trip_with_their_ids() {
        let record = record_with_ids(&[("e-1", 1), ("e-2", 5)]);
        let decoded = decode(&encode(&record).unwrap()).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.ids.sequence_of(&RecentIds::digest("e-2")), Some(5));
        assert_eq!(decoded.ids.sequence_of(&RecentIds::digest("e-3")), None);
    }

    #[test]
    fn a_record_written_before_ids_existed_decodes_with_none() {
        let record = record_with_ids(&[]);
        // What earlier builds wrote: the codec value of the first fields.
        let old = codec::encode(&record).unwrap();
        let decoded = decode(&old).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.ids.is_empty());
        // Damaged ids are an error, not an empty index.
        let mut damaged = encode(&record_with_ids(&[("e-1", 1)])).unwrap();
        damaged.truncate(damaged.len() - 1);
        assert!(decode(&damaged).is_err());
    }

    #[test]
    fn the_oldest_ids_are_forgotten_beyond_the_limit() {
        let mut ids = RecentIds::default();
        for seq in 1..=5 {
            ids.remember(RecentIds::digest(&format!("e-{seq}")), seq, 3);
        }
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.sequence_of(&RecentIds::digest("e-2")), None);
        assert_eq!(ids.sequence_of(&RecentIds::digest("e-3")), Some(3));
        assert_eq!(ids.sequence_of(&RecentIds::digest("e-5")), Some(5));
    }

    #[test]
    fn digests_are_stable_across_builds() {
        // Stored on disk: the first 8 bytes of SHA-256("e-1").
        assert_eq!(
            RecentIds::digest("e-1"),
            [0xb9, 0x4f, 0x52, 0x31, 0x96, 0xaa, 0xac, 0xd8]
        );
    }
}
