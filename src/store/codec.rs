//! Value encoding: one schema-version byte, then postcard. A value written by
//! a newer schema is refused rather than misread.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// Bumped whenever a stored type changes incompatibly; see `Store::open`.
pub const SCHEMA_VERSION: u8 = 2;

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
    buf.clear();
    *buf = postcard::to_extend(&(SCHEMA_VERSION, value), std::mem::take(buf))
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match decode_prefix(bytes)? {
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
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, rest)) => {
            postcard::take_from_bytes(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((&found, _)) => Err(StoreError::Schema { found }),
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
            Err(StoreError::Schema { found }) if found == SCHEMA_VERSION + 1
        ));
        assert!(decode::<(u32, String)>(&[]).is_err());
    }
}
