//! A zero-filled file, prepared ahead for the write-ahead log's next
//! generation.
//!
//! An `fdatasync` after an append must also commit the file system's
//! journal (the file grew); one after writing over blocks the file already
//! has needs only the data written. Measured here (ext4, 24 KB records,
//! docs/PERFORMANCE-LOG.md): 0.17 ms per sync instead of 0.25, and a unary
//! commit waits for one. So after checkpointing a generation of small
//! commits, the checkpoint thread fills a spare file with zeros and syncs
//! it, off every commit's path; the next rotation renames it into place and
//! writes records over it from its start. A log file can therefore end
//! with zeros: the replay takes a zero-filled rest of any file as its end
//! (zeros are never a record: see `framed::read`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The spare, whole and synced.
const READY: &str = "spare";
/// The spare being filled (removed at a start: a crash may have cut it).
const FILLING: &str = "spare.filling";

/// The largest spare, and the size of the zero block it is written with.
pub(super) const MAX_BYTES: u64 = 32 << 20;
const BLOCK: usize = 1 << 20;

/// Commits larger than this on average wait for the device too little,
/// next to their own writing, for a spare to pay for its zeros (streams:
/// megabytes per commit).
pub(super) const SMALL_COMMIT_BYTES: u64 = 64 << 10;

/// The spare worth preparing after a generation of `bytes` in `commits`
/// commits: about as large as that generation, or none.
pub(super) fn size_after(bytes: u64, commits: u64) -> Option<u64> {
    let small = commits > 0 && bytes / commits <= SMALL_COMMIT_BYTES;
    (small && bytes >= BLOCK as u64).then(|| bytes.next_multiple_of(BLOCK as u64).min(MAX_BYTES))
}

/// Fills and syncs a spare of `bytes` in `dir`, unless one is ready. A
/// spare that could not be filled (a full disk) is removed.
pub(super) fn prepare(dir: &Path, bytes: u64) -> io::Result<()> {
    if dir.join(READY).exists() {
        return Ok(());
    }
    let filled = fill(dir, bytes);
    if filled.is_err() {
        let _ = clear_unfinished(dir);
    }
    filled
}

fn fill(dir: &Path, bytes: u64) -> io::Result<()> {
    let filling = dir.join(FILLING);
    let mut file = File::create(&filling)?;
    let zeros = vec![0u8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        file.write_all(&zeros[..n])?;
        // Synced block by block: one sync of the whole file queued tens of
        // megabytes at the device at once, and the commits' syncs waited
        // behind them (unary p999 12–15 ms instead of 9–11).
        file.sync_data()?;
        left -= n as u64;
    }
    file.sync_all()?;
    fs::rename(filling, dir.join(READY))
}

/// Renames a ready spare to `to` and opens it for writing; `None` without
/// one. The caller syncs the directory.
pub(super) fn take(dir: &Path, to: &Path) -> io::Result<Option<File>> {
    match fs::rename(dir.join(READY), to) {
        Ok(()) => Ok(Some(OpenOptions::new().write(true).open(to)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a spare a crash left half-filled.
pub(super) fn clear_unfinished(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(FILLING)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_follow_generations_of_small_commits_only() {
        let mib = 1 << 20;
        assert_eq!(size_after(26 * mib, 1_000), Some(26 * mib));
        assert_eq!(size_after(26 * mib + 1, 1_000), Some(27 * mib), "whole MiB");
        assert_eq!(size_after(64 * mib, 2_000), Some(MAX_BYTES), "at most");
        assert_eq!(size_after(64 * mib, 16), None, "large commits");
        assert_eq!(size_after(mib / 2, 100), None, "little written");
        assert_eq!(size_after(0, 0), None);
    }

    #[test]
    fn a_spare_is_zeros_taken_once_and_a_half_filled_one_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("7.wal");
        assert!(take(dir.path(), &to).unwrap().is_none(), "none yet");
        prepare(dir.path(), 3 * BLOCK as u64 + 5).unwrap();
        let file = take(dir.path(), &to).unwrap().expect("ready");
        drop(file);
        let bytes = fs::read(&to).unwrap();
        assert_eq!(bytes.len(), 3 * BLOCK + 5);
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(take(dir.path(), &dir.path().join("8.wal"))
            .unwrap()
            .is_none());
        fs::write(dir.path().join(FILLING), b"cut").unwrap();
        clear_unfinished(dir.path()).unwrap();
        clear_unfinished(dir.path()).unwrap();
        assert!(!dir.path().join(FILLING).exists());
    }
}
