//! A fixed-size stand-in for an event id inside stored state.
//!
//! Customer states keep event ids only to break ties between events of the
//! same millisecond (latest purchases, first purchase, latest NPS answer, a
//! case's opening), so any fixed total order of ids does. An [`EventTag`]
//! is the first 8 bytes of the id's SHA-256: 8 bytes where the ids took
//! ~27 (`demo` ids) to 37 (UUIDs), and ids were ~a quarter of a customer
//! record's bytes, which sled writes again on every event of the customer
//! and reads back on every start. The same digest is the idempotency key
//! of the store's recent ids, so there is one digest of an id, not two.
//!
//! Records of earlier builds stored the ids themselves. They are read
//! through [`read_legacy_ids`], under which a tag deserializes from a
//! string and digests it; serde's derives cannot pass that context down,
//! hence the thread-local flag, set only around one decode.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTag([u8; 8]);

impl EventTag {
    pub fn of(id: &str) -> Self {
        let hash = Sha256::digest(id.as_bytes());
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&hash[..8]);
        Self(tag)
    }

    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Debug for EventTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventTag(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

thread_local! {
    static LEGACY_IDS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decode` with tags read as the id strings earlier builds stored.
pub fn read_legacy_ids<R>(decode: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            LEGACY_IDS.with(|flag| flag.set(self.0));
        }
    }
    let _reset = Reset(LEGACY_IDS.with(|flag| flag.replace(true)));
    decode()
}

impl Serialize for EventTag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if LEGACY_IDS.with(Cell::get) {
            let id = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Ok(Self::of(&id))
        } else {
            <[u8; 8]>::deserialize(deserializer).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_across_builds_and_stored_as_8_bytes() {
        // Stored on disk: the first 8 bytes of SHA-256("e-1").
        let tag = EventTag::of("e-1");
        assert_eq!(
            tag.bytes(),
            [0xb9, 0x4f, 0x52, 0x31, 0x96, 0xaa, 0xac, 0xd8]
        );
        let bytes = postcard::to_allocvec(&tag).unwrap();
        assert_eq!(bytes, tag.bytes());
        assert_eq!(postcard::from_bytes::<EventTag>(&bytes).unwrap(), tag);
    }

    #[test]
    fn a_legacy_id_reads_as_its_tag_only_inside_read_legacy_ids() {
        let stored = postcard::to_allocvec("order-0001").unwrap();
        let read = read_legacy_ids(|| postcard::from_bytes::<EventTag>(&stored));
        assert_eq!(read.unwrap(), EventTag::of("order-0001"));
        // Outside, the same bytes are not an id: 8 of them are a tag, the
        // rest is left over.
        let (tag, rest) = postcard::take_from_bytes::<EventTag>(&stored).unwrap();
        assert_ne!(tag, EventTag::of("order-0001"));
        assert_eq!(rest.len(), stored.len() - 8);
        // The flag is reset even when the decode inside panics.
        let caught = std::panic::catch_unwind(|| read_legacy_ids(|| panic!("decode failed")));
        assert!(caught.is_err());
        assert!(!LEGACY_IDS.with(Cell::get));
    }
}
