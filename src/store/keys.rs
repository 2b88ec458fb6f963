//! Key layout. Everything lives in one sled tree; a group commit (one
//! write-ahead log record, see `wal`) writes the events, their effects on
//! state and the customers' recent ids together or not at all.
//!
//! | prefix | key                         | value                 |
//! |--------|-----------------------------|-----------------------|
//! | `e`    | first sequence (u64 BE)     | where the events of one commit are in the event files (`events`; own version); `Vec<Event>` itself in dirs of earlier builds |
//! | `i`    | event id                    | sequence: written by earlier builds only (see below) |
//! | `c`    | customer id                 | `CustomerRecord`, then its recent event ids |
//! | `s`    | scope (`all`, `key=value`)  | `ScopeState` (own version, see `codec`) |
//! | `k`    | attribute key               | distinct values (u64) |
//! | `d`    | dimension name              | `DimensionSpec`       |
//! | `M`    | `histogram`, `schema`, `alerts_pruned`, `counts`, `open_alerts` | meta values |
//! | `A`    | alert sequence (u64 BE)     | `Alert` (a transition) |
//! | `L`    | alert id (u64 BE)           | `Alert` (its latest transition) |
//! | `a`    | monitored subject key       | `MonitorState`        |
//! | `O`    | open alert id (u64 BE)      | `AlertKind`: written by earlier builds only (see below) |
//! | `o`    | due (i64 BE, offset) + subject key | empty (overdue check) |
//!
//! The `journal` tree held, in builds before the write-ahead log, `J` +
//! commit number (u64 BE) → a commit's writes (see `journal`); a start
//! applies and removes any left there.
//!
//! `m` (scope NUL customer: membership) was written by earlier builds
//! before records listed their scopes; such keys are never read. `i` was
//! the global idempotency index before customer records kept their recent
//! ids; it is read (never written) in dirs that have it. `O` indexed the
//! open alerts, written on every transition only for a start to count
//! them; the count is now kept in `M open_alerts`, and `O` is read only
//! in a dir that has no such count yet.

pub const EVENT: u8 = b'e';
pub const EVENT_ID: u8 = b'i';
pub const CUSTOMER: u8 = b'c';
pub const SCOPE: u8 = b's';
pub const ATTRIBUTE_KEY: u8 = b'k';
pub const DIMENSION: u8 = b'd';
pub const META: u8 = b'M';
pub const ALERT_LOG: u8 = b'A';
pub const ALERT: u8 = b'L';
pub const MONITOR: u8 = b'a';
pub const OPEN_ALERT: u8 = b'O';
pub const OVERDUE: u8 = b'o';
pub const JOURNAL: u8 = b'J';

pub const META_HISTOGRAM: &str = "histogram";
pub const META_SCHEMA: &str = "schema";
pub const META_ALERTS_PRUNED: &str = "alerts_pruned";
pub const META_COUNTS: &str = "counts";
pub const META_OPEN_ALERTS: &str = "open_alerts";

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

/// `prefix` + a big-endian u64: keys in numeric order.
pub fn numbered(prefix: u8, n: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&n.to_be_bytes());
    key
}

/// The number of a [`numbered`] key.
pub fn number(key: &[u8]) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(n)
}

/// An overdue-check key: due time (sign bit flipped so that big-endian bytes
/// sort like the numbers), then the subject key.
pub fn overdue(due: i64, subject: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + subject.len());
    key.push(OVERDUE);
    key.extend_from_slice(&((due as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(subject.as_bytes());
    key
}

/// The due time and subject key of an [`overdue`] key.
pub fn parse_overdue(key: &[u8]) -> (i64, String) {
    let due = (number(key) ^ (1 << 63)) as i64;
    (due, String::from_utf8_lossy(&key[9..]).into_owned())
}

/// The name part of a key (after the one-byte prefix).
pub fn name(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[1..]).into_owned()
}
