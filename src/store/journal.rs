//! A commit's writes as bytes: the payload of a write-ahead log record (see
//! `wal`). Builds before the log kept such entries in a sled tree of their
//! own, `journal`; a start still applies (and removes) any a crash left
//! there, see [`replay_legacy`].

use sled::IVec;

use super::checkpoint::Flusher;
use super::{keys, Result, StoreError};

/// Format version of a journal entry (independent of the value codec: the
/// values inside are already encoded).
const FORMAT: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 0;

pub(super) type Writes = [(IVec, Option<IVec>)];

/// `FORMAT`, the number of writes (u32 LE), then per write: key length
/// (u32 LE), key, `PUT` or `DELETE`, and for a put the value length (u32 LE)
/// and value; appended to `out`.
pub(super) fn encode_into(writes: &Writes, out: &mut Vec<u8>) {
    let size: usize = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum();
    out.reserve(5 + size);
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
}

/// [`encode_into`] a new buffer.
#[cfg(test)]
pub(super) fn encode(writes: &Writes) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(writes, &mut out);
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

/// Applies the entries a crash left in the `journal` tree of an earlier
/// build (in order, atomically each), makes them durable and removes them.
/// Returns how many there were.
pub(super) fn replay_legacy(
    journal: &sled::Tree,
    tree: &sled::Tree,
    flusher: &Flusher,
) -> Result<usize> {
    let mut entries = 0;
    let mut applied = sled::Batch::default();
    for entry in journal.scan_prefix([keys::JOURNAL]) {
        let (key, value) = entry?;
        tree.apply_batch(super::sled_batch(decode(&value)?))?;
        applied.remove(key);
        entries += 1;
    }
    if entries > 0 {
        flusher.flush()?;
        journal.apply_batch(applied)?;
        flusher.flush()?;
        tracing::info!(
            entries,
            "applied commits a crash left in the journal of an earlier build"
        );
    }
    Ok(entries)
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
        let mut after = vec![1u8, 2, 3];
        encode_into(&writes, &mut after);
        assert_eq!((&after[..3], &after[3..]), (&[1u8, 2, 3][..], &bytes[..]));
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
