//! Key layout. Everything lives in one sled tree so that a group commit is a
//! single atomic `apply_batch`: events, their effects on state and the
//! idempotency index land together or not at all.
//!
//! | prefix | key                         | value                 |
//! |--------|-----------------------------|-----------------------|
//! | `e`    | sequence (u64 BE)           | `domain::Event`       |
//! | `i`    | event id                    | sequence (u64 BE)     |
//! | `c`    | customer id                 | `CustomerState`       |
//! | `s`    | scope (`all`, `key=value`)  | `ScopeState`          |
//! | `m`    | scope NUL customer id       | empty (membership)    |
//! | `k`    | attribute key               | distinct values (u64) |
//! | `d`    | dimension name              | `DimensionSpec`       |
//! | `M`    | `histogram`, `schema`       | meta values           |
//!
//! Ids, scopes and keys never contain NUL (validation rejects control
//! characters), so the membership separator is unambiguous.

pub const EVENT: u8 = b'e';
pub const EVENT_ID: u8 = b'i';
pub const CUSTOMER: u8 = b'c';
pub const SCOPE: u8 = b's';
pub const MEMBER: u8 = b'm';
pub const ATTRIBUTE_KEY: u8 = b'k';
pub const DIMENSION: u8 = b'd';
pub const META: u8 = b'M';

pub const META_HISTOGRAM: &str = "histogram";
pub const META_SCHEMA: &str = "schema";

pub fn with_prefix(prefix: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn event(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn member(scope: &str, customer: &str) -> Vec<u8> {
    let mut key = member_prefix(scope);
    key.extend_from_slice(customer.as_bytes());
    key
}

pub fn member_prefix(scope: &str) -> Vec<u8> {
    let mut key = with_prefix(MEMBER, scope);
    key.push(0);
    key
}

/// The name part of a key (after the one-byte prefix).
pub fn name(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[1..]).into_owned()
}
