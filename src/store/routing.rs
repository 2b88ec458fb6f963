//! Event log chunks routed to the event files: sled keeps, under each
//! chunk's key, where its bytes are.

use super::{codec, events, keys, Result};

/// Whether the chunks being routed are new, or replayed from the
/// write-ahead log (and perhaps appended already).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Routing {
    New,
    Replay,
}

/// Appends the event log chunks among `writes` to the event files and
/// writes their references instead. A replayed chunk whose reference is
/// stored and whose bytes are intact is not appended again.
pub(super) fn route_events(
    tree: &sled::Tree,
    events: &events::EventFiles,
    writes: Vec<(sled::IVec, Option<sled::IVec>)>,
    routing: Routing,
) -> Result<Vec<(sled::IVec, Option<sled::IVec>)>> {
    let mut routed = Vec::with_capacity(writes.len());
    for (key, value) in writes {
        let chunk = match value {
            Some(chunk) if key.first() == Some(&keys::EVENT) => chunk,
            value => {
                routed.push((key, value));
                continue;
            }
        };
        if routing == Routing::Replay && appended_already(tree, events, &key, &chunk)? {
            continue;
        }
        routed.push((key, Some(append_chunk(events, &chunk)?)));
    }
    Ok(routed)
}

/// Whether `key` already refers to these very bytes in the event files.
fn appended_already(
    tree: &sled::Tree,
    events: &events::EventFiles,
    key: &[u8],
    chunk: &[u8],
) -> Result<bool> {
    let Some(stored) = tree.get(key)? else {
        return Ok(false);
    };
    let Some(at) = chunk_ref(&stored)? else {
        return Ok(false);
    };
    Ok(events.read(&at)?.is_some_and(|bytes| bytes == chunk))
}

/// Appends a chunk to the event files; returns the value sled keeps for it.
pub(super) fn append_chunk(events: &events::EventFiles, chunk: &[u8]) -> Result<sled::IVec> {
    let at = events.append(chunk)?;
    let mut bytes = Vec::new();
    codec::encode_versioned_into(codec::EVENT_REF_VERSION, &at, &mut bytes)?;
    Ok(sled::IVec::from(bytes))
}

/// Where the chunk an event-log value refers to is; `None` for a value
/// holding the chunk itself (written by earlier builds).
pub(super) fn chunk_ref(value: &[u8]) -> Result<Option<events::ChunkRef>> {
    if value.first() != Some(&codec::EVENT_REF_VERSION) {
        return Ok(None);
    }
    codec::decode_versioned(codec::EVENT_REF_VERSION, value).map(Some)
}
