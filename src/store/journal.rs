//! The commit journal: how a pipelined group commit stays atomic without
//! sled's `apply_batch`.
//!
//! `apply_batch` holds a process-wide write lock while it applies, and every
//! sled read waits for it: the writer building the next commit would stall
//! on each read. Instead a commit is written as one journal value (a single
//! insert, atomic by itself) and flushed — from then on it is durable — and
//! only then applied key by key, which takes no global lock. A crash between
//! the two leaves the journal entry; [`Store::open`] applies it again.
//!
//! The last two entries are kept: when entry N is written, the keys of entry
//! N−2 were applied before the flush of entry N−1 returned, so they are
//! durable and its entry can go. The entries present at a start are
//! therefore always the latest ones, in order, and applying them again (in
//! order) is idempotent.

use sled::IVec;

use super::{keys, Result, Store, StoreError};

/// Format version of a journal entry (independent of the value codec: the
/// values inside are already encoded).
const FORMAT: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 0;

/// Journal entries kept after a commit (see the module docs).
pub(super) const KEPT: usize = 2;

pub(super) type Writes = [(IVec, Option<IVec>)];

/// `FORMAT`, the number of writes (u32 LE), then per write: key length
/// (u32 LE), key, `PUT` or `DELETE`, and for a put the value length (u32 LE)
/// and value.
pub(super) fn encode(writes: &Writes) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(FORMAT);
    let count = u32::try_from(writes.len()).expect("under 4 G writes per commit");
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in writes {
        out.extend_from_slice(&len(key).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(value) => {
                out.push(PUT);
                out.extend_from_slice(&len(value).to_le_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(DELETE),
        }
    }
    out
}

fn len(bytes: &[u8]) -> u32 {
    // Keys and values are bounded far below 4 GiB by the request limits.
    u32::try_from(bytes.len()).expect("a key or value under 4 GiB")
}

pub(super) fn decode(bytes: &[u8]) -> Result<Vec<(IVec, Option<IVec>)>> {
    let mut reader = match bytes.split_first() {
        Some((&FORMAT, rest)) => Reader(rest),
        Some((found, _)) => return Err(corrupt(&format!("unknown format {found}"))),
        None => return Err(corrupt("empty")),
    };
    let count = u32::from_le_bytes(reader.take(4)?.try_into().expect("4 bytes"));
    let mut writes = Vec::new();
    for _ in 0..count {
        let key = reader.sized()?;
        let value = match reader.take(1)?[0] {
            PUT => Some(reader.sized()?),
            DELETE => None,
            other => return Err(corrupt(&format!("unknown operation {other}"))),
        };
        writes.push((key, value));
    }
    if !reader.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(writes)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(format!("journal entry: {what}"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// A u32 LE length, then that many bytes.
    fn sized(&mut self) -> Result<IVec> {
        let size = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        Ok(IVec::from(self.take(size as usize)?))
    }
}

impl Store {
    /// After the last commit of a clean stop: makes every applied write
    /// durable, then removes the journal entries, so that the next start
    /// has nothing to apply again. (The entries kept for safety are the
    /// two latest commits; at a million customers, each of ~8,300 events.)
    pub fn close_journal(&self) -> Result<()> {
        self.flush()?;
        let mut batch = sled::Batch::default();
        for entry in self.journal.scan_prefix([keys::JOURNAL]).keys() {
            batch.remove(entry?);
        }
        self.journal.apply_batch(batch)?;
        if let Some(staged) = &self.staged {
            staged
                .journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        self.flush()?;
        Ok(())
    }

    /// Journal entries present (commits a start would apply again).
    #[cfg(test)]
    pub fn journal_entries(&self) -> usize {
        self.journal.len()
    }

    /// Applies the journal entries a crash left (in order, atomically each)
    /// and removes them. Returns how many there were.
    pub(super) fn replay_journal(&self) -> Result<usize> {
        let mut entries = 0;
        for entry in self.journal.scan_prefix([keys::JOURNAL]).values() {
            self.tree.apply_batch(super::sled_batch(decode(&entry?)?))?;
            entries += 1;
        }
        if entries > 0 {
            self.close_journal()?;
            tracing::info!(entries, "applied commits a crash left in the journal");
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_refuse_damage() {
        let writes: Vec<(IVec, Option<IVec>)> = vec![
            (IVec::from(&b"ckey"[..]), Some(IVec::from(vec![7u8; 300]))),
            (IVec::from(&b"gone"[..]), None),
            (IVec::from(&b"e"[..]), Some(IVec::from(&b""[..]))),
        ];
        let bytes = encode(&writes);
        assert_eq!(decode(&bytes).unwrap(), writes);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::new());
        for cut in [1, 5, 9, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        let mut other = bytes.clone();
        other[0] = FORMAT + 1;
        assert!(decode(&other).is_err());
        assert!(decode(&[]).is_err());
    }
}
