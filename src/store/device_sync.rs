//! What sled 0.34's `flush` leaves to the page cache, pushed to the device.
//!
//! `flush` writes the log with `sync_file_range` (sled #1452): the data
//! reaches the device's queue, but the drive's volatile cache is not flushed
//! and a grown file's size (metadata) is not committed. Messages too large
//! for a log segment (over 128 KiB at the default 512 KiB segments: a large
//! value, or a node holding several) go to files under `blobs/`, which sled
//! writes and never syncs (sled #1077). All of that survives the
//! process being killed, since the kernel still holds it, but not a power
//! cut or a kernel crash. With `storage.sync_to_device`, each flush (a
//! checkpoint of the write-ahead log, see `wal`) is preceded by `fdatasync`
//! of every blob file not synced yet (and of `blobs/` when it gained
//! files), so the log entries the flush makes durable never point at a
//! blob that is not, and followed by `fdatasync` of the log.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(super) struct DeviceSync {
    log: File,
    blobs: PathBuf,
    /// Blob files (named by sled's log sequence number) already synced,
    /// with the length they had then.
    synced_blobs: Mutex<BTreeMap<String, u64>>,
}

impl DeviceSync {
    /// Syncs what sled wrote when it created the dir (its `conf`, the
    /// entries of `db` and `blobs/`) and the blobs present, which may come
    /// from a run without this option.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let sync = Self {
            log: File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            synced_blobs: Mutex::default(),
        };
        sync.sync_blobs()?;
        sync.sync_log()?;
        File::open(dir.join("conf"))?.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(sync)
    }

    /// Makes the blobs sled has written so far durable. sled writes a blob
    /// whole in the thread inserting its value, before the insert returns,
    /// so every blob of the writes a checkpoint covers is complete here. A
    /// blob of a later write may still be growing: it is synced again once
    /// it is longer than when it was synced.
    pub(super) fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = BTreeMap::new();
        let mut gained = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let path = self.blobs.join(&name);
            let length = match std::fs::metadata(&path) {
                Ok(metadata) => metadata.len(),
                // Collected by sled meanwhile: nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if synced.get(&name) != Some(&length) {
                match File::open(&path) {
                    Ok(blob) => blob.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                gained = true;
            }
            present.insert(name, length);
        }
        if gained {
            File::open(&self.blobs)?.sync_all()?;
        }
        // Forget the blobs sled removed, so the set stays as small as the dir.
        *synced = present;
        Ok(())
    }

    /// Makes sled's flushed log durable (after `flush`).
    pub(super) fn sync_log(&self) -> io::Result<()> {
        self.log.sync_data()
    }

    /// Blob files synced so far, with their length then (tests).
    #[cfg(test)]
    pub(super) fn synced_blobs(&self) -> BTreeMap<String, u64> {
        self.synced_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_that_grew_since_it_was_synced_is_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        std::fs::write(dir.path().join("conf"), b"").unwrap();
        let blob = dir.path().join("blobs").join("42");
        std::fs::write(&blob, [1u8; 10]).unwrap();
        let sync = DeviceSync::open(dir.path()).unwrap();
        assert_eq!(sync.synced_blobs().get("42"), Some(&10));
        // Still being written when it was listed.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&blob)
            .unwrap();
        std::io::Write::write_all(&mut file, &[2u8; 10]).unwrap();
        sync.sync_blobs().unwrap();
        assert_eq!(sync.synced_blobs().get("42"), Some(&20));
        std::fs::remove_file(&blob).unwrap();
        sync.sync_blobs().unwrap();
        assert!(
            sync.synced_blobs().is_empty(),
            "removed blobs are forgotten"
        );
    }
}
