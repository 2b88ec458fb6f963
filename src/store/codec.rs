//! Value encoding: one schema-version byte, then postcard. A value written by
//! a newer schema is refused rather than misread.
//!
//! Most values carry [`SCHEMA_VERSION`]. A type whose layout changed carries
//! its own, higher version, so that an earlier build refuses its values
//! while it can still read every other value; the store converts values of
//! the old layout it finds (see `Store::open`).

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// The version of every value whose type has not changed since version 2.
pub const SCHEMA_VERSION: u8 = 2;

/// Scope states: version 3 keeps open complaints by deadline hour and folds
/// old hours (version 2 kept one bucket per deadline minute).
pub const SCOPE_VERSION: u8 = 3;

/// Event-log values: where a chunk is in the event files (version 2 kept
/// the chunk itself in sled, which is still read).
pub const EVENT_REF_VERSION: u8 = 3;

/// Customer records: version 3 keeps event tags where version 2 kept event
/// ids (see `scoring::event_tag`); version 2 records are still read.
pub const CUSTOMER_VERSION: u8 = 3;

/// [`encode_into`] a fresh `Vec` (tests: the store reuses its buffers).
#[cfg(test)]
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    encode_into(value, &mut bytes)?;
    Ok(bytes)
}

/// Encodes `value` into `buf` (cleared first). A tuple is its fields back to
/// back: the version byte, then the value. A buffer reused across values
/// stops growing once it has held the largest, where a fresh `Vec` is
/// reallocated and copied several times per value. (`to_io` went through
/// `io::Write` a few bytes at a time, which showed in profiles.)
pub fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    encode_versioned_into(SCHEMA_VERSION, value, buf)
}

/// [`encode_into`] under a type's own `version`.
pub fn encode_versioned_into<T: Serialize>(
    version: u8,
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    buf.clear();
    append(&(version, value), buf)
}

/// Serializes `value` at the end of `buf`. postcard's own `to_extend` goes
/// through `Extend<u8>` a byte at a time: that loop alone was 6% of the
/// stream commit thread's samples, encoding customer records. This appends
/// slices whole.
pub fn append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), StoreError> {
    postcard::serialize_with_flavor(value, AppendTo(buf))
        .map_err(|e| StoreError::Codec(e.to_string()))
}

/// A postcard output that appends to a `Vec` it borrows.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    decode_versioned(SCHEMA_VERSION, bytes)
}

/// [`decode`] of a value written under `version`.
pub fn decode_versioned<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, StoreError> {
    match decode_prefix_versioned(version, bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(StoreError::Codec(format!(
            "{} bytes after the value",
            rest.len()
        ))),
    }
}

/// Decodes a value at the start of `bytes`; returns it and what follows
/// (a value extended after its codec part, as customer records are).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), StoreError> {
    decode_prefix_versioned(SCHEMA_VERSION, bytes)
}

pub fn decode_prefix_versioned<T: DeserializeOwned>(
    version: u8,
    bytes: &[u8],
) -> Result<(T, &[u8]), StoreError> {
    match bytes.split_first() {
        Some((&found, rest)) if found == version => {
            postcard::take_from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((&found, _)) => Err(StoreError::Schema {
            found,
            expected: version,
        }),
        None => Err(StoreError::Codec("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let bytes = encode(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes[0], SCHEMA_VERSION);
        // The layout data dirs already hold: the version byte, then the value.
        let value = postcard::to_allocvec(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes[1..], value[..]);
        assert_eq!(decode::<(u32, String)>(&bytes).unwrap(), (7, "x".into()));
        let mut newer = bytes.clone();
        newer[0] = SCHEMA_VERSION + 1;
        assert!(matches!(
            decode::<(u32, String)>(&newer),
            Err(StoreError::Schema { found, .. }) if found == SCHEMA_VERSION + 1
        ));
        assert!(decode::<(u32, String)>(&[]).is_err());
    }

    #[test]
    fn a_reused_buffer_holds_only_the_new_value_and_append_keeps_it() {
        let mut buf = Vec::new();
        encode_into(&"a much longer first value".to_string(), &mut buf).unwrap();
        encode_into(&(7u32, "x".to_string()), &mut buf).unwrap();
        assert_eq!(buf, encode(&(7u32, "x".to_string())).unwrap());
        append(&300u32, &mut buf).unwrap();
        let (value, rest): ((u32, String), _) = decode_prefix(&buf).unwrap();
        assert_eq!(value, (7, "x".into()));
        assert_eq!(postcard::from_bytes::<u32>(rest).unwrap(), 300);
    }
}
