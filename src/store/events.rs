//! The event log's bytes, in append-only files of their own.
//!
//! Every commit's events are one chunk. In sled, a chunk (hundreds of KB in
//! a large commit) lived inside its leaf node, which made leaves of
//! megabytes: sled rewrote them whole, as blob files, at every change of the
//! leaf, kept them in its page cache, and read every one written since its
//! last snapshot at each start. Now the chunk is appended to a file under
//! `events/`, and sled keeps only where it is (a [`ChunkRef`] under the
//! chunk's `e` key), written in the same commit.
//!
//! Durability: a chunk is appended when its commit is applied, after the
//! commit's write-ahead log record, which holds the chunk, is durable. A
//! checkpoint syncs these files before it flushes sled, so a checkpointed
//! reference points at durable bytes. sled may write a reference out ahead
//! of a checkpoint, so a replay checks the bytes a reference points at
//! (length and CRC, both kept in the reference) and appends the chunk again
//! when they are not there.
//!
//! A chunk on disk is a frame (see `framed`) whose payload is the encoded
//! `Vec<Event>`, as sled held it. A file holds up to [`MAX_FILE_BYTES`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::framed::{self, HEADER};
use super::{codec, Result, StoreError};

/// A file this large is closed and the next one started.
pub(super) const MAX_FILE_BYTES: u64 = 256 << 20;

const SUFFIX: &str = ".events";

/// Where a chunk is: the value sled keeps under the chunk's `e` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ChunkRef {
    pub file: u64,
    pub offset: u64,
    pub length: u32,
    pub crc: u32,
    /// Events in the chunk (the log's last sequence without reading it).
    pub count: u64,
}

pub(super) struct EventFiles {
    dir: PathBuf,
    sync_to_device: bool,
    max_file_bytes: u64,
    active: Mutex<Active>,
}

struct Active {
    file: File,
    number: u64,
    length: u64,
    /// Files closed since the last sync: a checkpoint syncs them too.
    unsynced: Vec<File>,
    /// A file was created since the last sync: the dir needs one too.
    dir_changed: bool,
}

impl EventFiles {
    pub(super) fn open(data_dir: &Path, sync_to_device: bool, max_file_bytes: u64) -> Result<Self> {
        let dir = data_dir.join("events");
        let created = !dir.exists();
        if created {
            fs::create_dir(&dir)?;
        }
        let (number, length) = match framed::numbered(&dir, SUFFIX)?.last() {
            Some((number, path)) => (*number, fs::metadata(path)?.len()),
            None => (1, 0),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path(&dir, number))?;
        let files = Self {
            dir,
            sync_to_device,
            max_file_bytes,
            active: Mutex::new(Active {
                file,
                number,
                length,
                unsynced: Vec::new(),
                dir_changed: created || length == 0,
            }),
        };
        if created && sync_to_device {
            File::open(data_dir)?.sync_all()?;
        }
        Ok(files)
    }

    fn lock(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a chunk (an encoded `Vec<Event>`); returns where it is.
    pub(super) fn append(&self, chunk: &[u8]) -> Result<ChunkRef> {
        let count = chunk_count(chunk)?;
        let (header, crc) = framed::header(chunk);
        let framed_length = (HEADER + chunk.len()) as u64;
        let mut active = self.lock();
        if active.length > 0 && active.length + framed_length > self.max_file_bytes {
            let number = active.number + 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(path(&self.dir, number))?;
            let full = std::mem::replace(&mut active.file, file);
            active.unsynced.push(full);
            active.number = number;
            active.length = 0;
            active.dir_changed = true;
        }
        let offset = active.length;
        let written = active
            .file
            .write_all(&header)
            .and_then(|()| active.file.write_all(chunk));
        if let Err(e) = written {
            // A cut tail that nothing references; appends go on after it.
            active.length = active.file.metadata()?.len();
            return Err(e.into());
        }
        active.length += framed_length;
        Ok(ChunkRef {
            file: active.number,
            offset,
            length: u32::try_from(chunk.len()).expect("a frame under 4 GiB"),
            crc,
            count,
        })
    }

    /// The chunk `at` points to, if its bytes are there and intact.
    pub(super) fn read(&self, at: &ChunkRef) -> Result<Option<Vec<u8>>> {
        let file = match File::open(path(&self.dir, at.file)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = vec![0u8; HEADER + at.length as usize];
        match file.read_exact_at(&mut bytes, at.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // An intact frame of this length, and this chunk's (not another's
        // that a crash left at the same offset).
        let ours = framed::read(&bytes, 0)
            .is_some_and(|frame| frame.end == bytes.len() && frame.crc == at.crc);
        Ok(ours.then(|| {
            bytes.drain(..HEADER);
            bytes
        }))
    }

    /// Makes every chunk appended so far durable (with `sync_to_device`;
    /// without it, the page cache already survives the process).
    pub(super) fn sync(&self) -> Result<()> {
        let (file, closed, dir_changed) = {
            let mut active = self.lock();
            // Taken either way: closed files are kept open only until here.
            let closed = std::mem::take(&mut active.unsynced);
            let dir_changed = std::mem::replace(&mut active.dir_changed, false);
            if !self.sync_to_device {
                return Ok(());
            }
            (active.file.try_clone()?, closed, dir_changed)
        };
        for closed in &closed {
            closed.sync_data()?;
        }
        file.sync_data()?;
        if dir_changed {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Bytes in the files.
    pub(super) fn size(&self) -> Result<u64> {
        let mut total = 0;
        for (_, path) in framed::numbered(&self.dir, SUFFIX)? {
            total += fs::metadata(path)?.len();
        }
        Ok(total)
    }
}

/// The events in an encoded chunk: the length postcard writes (a varint)
/// after the version byte, read without decoding the events.
fn chunk_count(chunk: &[u8]) -> Result<u64> {
    let malformed = || StoreError::Codec("event chunk: no event count".into());
    match chunk.first() {
        Some(&codec::SCHEMA_VERSION) => {}
        Some(&found) => {
            return Err(StoreError::Schema {
                found,
                expected: codec::SCHEMA_VERSION,
            })
        }
        None => return Err(malformed()),
    }
    let mut count = 0u64;
    for (i, byte) in chunk[1..].iter().take(10).enumerate() {
        count |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(count);
        }
    }
    Err(malformed())
}

fn path(dir: &Path, number: u64) -> PathBuf {
    framed::path(dir, number, SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(events: usize, size: usize) -> Vec<u8> {
        let payload: Vec<String> = (0..events).map(|i| format!("{i:0size$}")).collect();
        codec::encode(&payload).unwrap()
    }

    #[test]
    fn chunks_are_read_back_across_files_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Vec<u8>> = (0..5).map(|n| chunk(n * 100 + 1, 40)).collect();
        let refs: Vec<ChunkRef> = {
            // Small files: a new one every two chunks or so.
            let files = EventFiles::open(dir.path(), true, 10_000).unwrap();
            let refs = chunks.iter().map(|c| files.append(c).unwrap()).collect();
            files.sync().unwrap();
            refs
        };
        let counts: Vec<u64> = refs.iter().map(|r| r.count).collect();
        assert_eq!(counts, [1, 101, 201, 301, 401]);
        assert!(refs.last().unwrap().file > 1, "{refs:?}");
        let files = EventFiles::open(dir.path(), true, MAX_FILE_BYTES).unwrap();
        for (chunk, at) in chunks.iter().zip(&refs) {
            assert_eq!(files.read(at).unwrap().as_ref(), Some(chunk));
        }
        // Appends continue the newest file, after what it holds.
        let last = refs.last().unwrap();
        let next = files.append(&chunks[0]).unwrap();
        assert_eq!(next.file, last.file);
        assert_eq!(
            next.offset,
            last.offset + HEADER as u64 + u64::from(last.length)
        );
    }

    #[test]
    fn a_reference_to_missing_or_other_bytes_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let files = EventFiles::open(dir.path(), false, MAX_FILE_BYTES).unwrap();
        let first = files.append(&chunk(3, 10)).unwrap();
        let second = files.append(&chunk(4, 10)).unwrap();
        // Lost in a crash: the file is cut before the second chunk.
        let file = OpenOptions::new()
            .write(true)
            .open(path(&files.dir, first.file))
            .unwrap();
        file.set_len(second.offset + 5).unwrap();
        assert!(files.read(&first).unwrap().is_some());
        assert_eq!(files.read(&second).unwrap(), None, "cut");
        // Other bytes where the reference points: refused by length or CRC.
        file.set_len(second.offset).unwrap();
        drop(file);
        let files = EventFiles::open(dir.path(), false, MAX_FILE_BYTES).unwrap();
        let other = files.append(&chunk(4, 11)).unwrap();
        assert_eq!(other.offset, second.offset);
        assert_eq!(files.read(&second).unwrap(), None, "other bytes");
        let elsewhere = ChunkRef { file: 99, ..first };
        assert_eq!(files.read(&elsewhere).unwrap(), None, "no such file");
    }

    #[test]
    fn the_count_is_read_from_the_encoding() {
        for events in [0, 1, 127, 128, 300, 70_000] {
            assert_eq!(chunk_count(&chunk(events, 1)).unwrap(), events as u64);
        }
        assert!(chunk_count(&[]).is_err());
        assert!(chunk_count(&[codec::SCHEMA_VERSION, 0x80]).is_err());
        assert!(matches!(
            chunk_count(&[codec::SCHEMA_VERSION + 1, 0]),
            Err(StoreError::Schema { .. })
        ));
    }
}
