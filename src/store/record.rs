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

use super::{codec, Result, StoreError};
use crate::scoring::event_tag::{self, EventTag};
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
    /// Encoded after the fields above (see `encode_into`), so that records
    /// written before it existed still decode.
    #[serde(skip)]
    pub ids: RecentIds,
}

/// The ids of a customer's latest accepted events, oldest first, with the
/// sequence each was accepted under. An id is kept as its [`EventTag`] (the
/// first 8 bytes of its SHA-256): 8 bytes whatever its length, and two ids
/// of one customer collide with a probability of about n²/2⁶⁵ for n
/// remembered ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RecentIds(VecDeque<([u8; 8], u64)>);

/// As serde decodes a `VecDeque` (the same bytes), with room for one more
/// id: a record is read to be changed, and the event that reads it adds
/// its id, which would otherwise reallocate the ids of every customer below
/// the limit (2% of the writer's time in a stream).
impl<'de> Deserialize<'de> for RecentIds {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Ids;
        impl<'de> serde::de::Visitor<'de> for Ids {
            type Value = RecentIds;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of (event tag, sequence)")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RecentIds, A::Error> {
                // The length comes from the bytes: trusted only so far.
                let len = seq.size_hint().unwrap_or(0).min(MAX_PREALLOCATED_IDS);
                let mut ids = VecDeque::with_capacity(len + 1);
                while let Some(id) = seq.next_element()? {
                    ids.push_back(id);
                }
                Ok(RecentIds(ids))
            }
        }
        deserializer.deserialize_seq(Ids)
    }
}

/// The most ids room is made for before they are read.
const MAX_PREALLOCATED_IDS: usize = 4_096;

impl RecentIds {
    pub fn digest(id: &str) -> [u8; 8] {
        EventTag::of(id).bytes()
    }

    /// The sequence `id` was accepted under, if it is remembered.
    pub fn sequence_of(&self, digest: &[u8; 8]) -> Option<u64> {
        // Newest first: a retry is usually of a recent event.
        self.0.iter().rev().find(|(d, _)| d == digest).map(|e| e.1)
    }

    /// Remembers an accepted id, forgetting the oldest beyond `limit`.
    pub fn remember(&mut self, digest: [u8; 8], seq: u64, limit: usize) {
        // Forgotten first, so that a full deque never grows.
        while self.0.len() >= limit.max(1) {
            self.0.pop_front();
        }
        self.0.push_back((digest, seq));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The record's first fields as a codec value of [`codec::CUSTOMER_VERSION`],
/// then the ids.
#[cfg(test)]
pub fn encode(record: &CustomerRecord) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    encode_into(record, &mut bytes)?;
    Ok(bytes)
}

/// [`encode`] into `buf` (see `codec::encode_into`).
pub fn encode_into(record: &CustomerRecord, buf: &mut Vec<u8>) -> Result<()> {
    codec::encode_versioned_into(codec::CUSTOMER_VERSION, record, buf)?;
    codec::append(&record.ids, buf)
}

/// A record without its ids, for readers that need only the state or the
/// scopes (the ids are not decoded).
pub fn decode_without_ids(bytes: &[u8]) -> Result<CustomerRecord> {
    let (record, _ids) = decode_fields(bytes)?;
    Ok(record)
}

/// Reads what [`encode`] wrote; a record from before `ids` existed ends
/// after its first fields and has none.
pub fn decode(bytes: &[u8]) -> Result<CustomerRecord> {
    let (mut record, rest) = decode_fields(bytes)?;
    if !rest.is_empty() {
        record.ids = postcard::from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))?;
    }
    Ok(record)
}

/// The first fields and what follows them. A version 2 record (event ids
/// where tags are now) reads as the record the same events make today,
/// ties between events of one millisecond aside: those it had already
/// settled by id, and they stay settled.
fn decode_fields(bytes: &[u8]) -> Result<(CustomerRecord, &[u8])> {
    match bytes.first() {
        Some(&codec::SCHEMA_VERSION) => event_tag::read_legacy_ids(|| {
            codec::decode_prefix_versioned(codec::SCHEMA_VERSION, bytes)
        }),
        _ => codec::decode_prefix_versioned(codec::CUSTOMER_VERSION, bytes),
    }
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
        assert!(decoded.ids.0.capacity() > 2, "room for the next id");
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

/// A record as version 2 stored it, against the same events today.
#[cfg(test)]
mod version_2 {
    use super::*;
    use crate::domain::{Body, Event, Interaction, InteractionKind, Severity, Survey};
    use crate::scoring::Params;

    /// Written by the build before event tags (`2e7b39a`) from
    /// [`history`]: hex of [`encode`] of [`record_of`].
    const STORED: &str = include_str!("testdata/customer_record_v2.hex");

    /// Two purchases in one millisecond, NPS answers, a complaint case, a
    /// cancellation: every place a customer state kept an event id.
    fn history() -> Vec<Event> {
        let ev = |id: &str, at: i64, body: Body| Event {
            id: id.into(),
            customer: "c-1".into(),
            at,
            attributes: vec![("brand".into(), "acme".into())],
            body,
        };
        let step = |kind, amount: Option<f64>, case: Option<&str>| {
            Body::Interaction(Interaction {
                kind,
                amount,
                dimension: None,
                case_id: case.map(Into::into),
                severity: Severity::Major,
                service: None,
                promise: None,
                lower_is_better: true,
            })
        };
        let nps = |nps, csat| {
            Body::Survey(Survey {
                nps: Some(nps),
                csat,
                ..Survey::default()
            })
        };
        let day = 86_400_000;
        use InteractionKind::*;
        vec![
            ev("order-0002", 30 * day, step(Purchase, Some(40.0), None)),
            ev("order-0001", 10 * day, step(Purchase, Some(25.0), None)),
            ev("order-0003", 30 * day, step(Purchase, Some(60.0), None)),
            ev("nps-b", 31 * day + day / 2, nps(9, Some(4))),
            ev("nps-a", 31 * day, nps(3, None)),
            ev(
                "open-7",
                32 * day,
                step(ComplaintOpened, None, Some("case-7")),
            ),
            ev(
                "resp-7",
                33 * day,
                step(ComplaintResponded, None, Some("case-7")),
            ),
            ev("cancel-1", 34 * day, step(Cancellation, None, None)),
        ]
    }

    fn record_of(events: &[Event]) -> CustomerRecord {
        let p = Params::default();
        let mut record = CustomerRecord {
            scopes: vec!["all".into(), "brand=acme".into()],
            churn_alert: Some(3),
            ..CustomerRecord::default()
        };
        for (seq, e) in (1..).zip(events) {
            record.state.apply(e, &p);
            record.ids.remember(RecentIds::digest(&e.id), seq, 10);
        }
        record
    }

    fn stored() -> Vec<u8> {
        let hex = STORED.trim();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_version_2_record_reads_as_the_same_events_make_it_now() {
        let stored = stored();
        assert_eq!(stored[0], codec::SCHEMA_VERSION);
        let today = record_of(&history());
        assert_eq!(decode(&stored).unwrap(), today);
        assert_eq!(decode_without_ids(&stored).unwrap().state, today.state);
        // Written back as version 3: each id the state kept (a length and
        // its bytes) is now 8 bytes.
        let written = encode(&today).unwrap();
        assert_eq!(written[0], codec::CUSTOMER_VERSION);
        assert_eq!(decode(&written).unwrap(), today);
        let kept = [
            "order-0001", // latest purchases
            "order-0002",
            "order-0003",
            "order-0001", // first purchase
            "open-7",     // the case's opening
            "nps-b",      // latest NPS answer
        ];
        let saved: i64 = kept.iter().map(|id| 1 + id.len() as i64 - 8).sum();
        assert_eq!(written.len() as i64, stored.len() as i64 - saved);
    }

    #[test]
    fn other_versions_are_refused() {
        let mut newer = encode(&record_of(&history())).unwrap();
        newer[0] = codec::CUSTOMER_VERSION + 1;
        assert!(matches!(
            decode(&newer),
            Err(StoreError::Schema { found, expected })
                if found == codec::CUSTOMER_VERSION + 1 && expected == codec::CUSTOMER_VERSION
        ));
        // A version 3 record is not read as version 2, nor the reverse.
        let mut relabelled = stored();
        relabelled[0] = codec::CUSTOMER_VERSION;
        assert!(decode(&relabelled).is_err());
    }
}
