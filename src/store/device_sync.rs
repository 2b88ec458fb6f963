//! What sled 0.34's `flush` leaves to the page cache, pushed to the device.
//!
//! `flush` writes the log with `sync_file_range` (sled #1452): the data
//! reaches the device's queue, but the drive's volatile cache is not flushed
//! and a grown file's size (metadata) is not committed. Values too large for
//! a log segment (over 128 KiB at the default 512 KiB segments: the journal
//! entries and event chunks of large commits) go to files under `blobs/`,
//! which sled writes and never syncs (sled #1077). All of that survives the
//! process being killed, since the kernel still holds it, but not a power
//! cut or a kernel crash. With `storage.sync_to_device`, each flush is
//! preceded by `fdatasync` of every blob file not synced yet (and of
//! `blobs/` when it gained files), so the log entries pointing at a blob
//! are not made durable before it, and followed by `fdatasync` of the log.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(super) struct DeviceSync {
    log: File,
    blobs: PathBuf,
    /// Blob files (named by sled's log sequence number) already synced.
    synced_blobs: Mutex<BTreeSet<String>>,
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

    /// Makes the blobs sled has written so far durable. Called by the one
    /// task that flushes, which is also the one that writes (sled writes a
    /// blob whole, in the thread inserting its value), so no blob listed
    /// here is still being written.
    pub(super) fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = BTreeSet::new();
        let mut gained = false;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !synced.contains(&name) {
                match File::open(self.blobs.join(&name)) {
                    Ok(blob) => blob.sync_data()?,
                    // Collected by sled meanwhile: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                gained = true;
            }
            present.insert(name);
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

    /// Blob files synced so far (tests).
    #[cfg(test)]
    pub(super) fn synced_blobs(&self) -> BTreeSet<String> {
        self.synced_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
