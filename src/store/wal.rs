//! The write-ahead log: where a group commit becomes durable.
//!
//! A commit is appended to the current log file as one record and, with
//! `storage.sync_to_device`, `fdatasync`ed: one device wait per commit. Only
//! then are its writes applied to sled, which is not flushed per commit.
//! sled is flushed as a *checkpoint*, on a thread of its own (see
//! `checkpoint`): about once per `checkpoint_interval`, or when a file
//! reaches [`MAX_FILE_BYTES`], the committing thread writes to sled what it
//! held back (the hot keys of `applying`), starts a new file (the next
//! generation) and hands the full one over; once sled's flush returns,
//! every write of that generation is durable in sled and its file is
//! deleted. A start replays the files left, oldest first, and hands them
//! to the checkpoint thread like any full generation.
//!
//! Why not sled's flush per commit: it waited for the device twice (the
//! log's `sync_file_range`, then the `fdatasync` that makes it survive a
//! power cut) and wrote out a partly filled log buffer each time.
//!
//! Replaying is idempotent: a record holds final values (puts and deletes)
//! and records are applied in commit order, so applying again a generation
//! a checkpoint already made durable in sled (a crash before its file was
//! deleted) ends in the same state. Every write reaches sled through a
//! record first, so the files left always hold every commit sled may lack.
//!
//! A record is a frame (see `framed`) whose payload is the commit's writes
//! (see `journal::encode_into`). A commit
//! is acknowledged only once its record is whole on disk, so a record cut
//! short can only be the newest file's last, unacknowledged one: replay
//! stops there. Damage anywhere else is refused, not skipped. A file
//! started over a spare (see `spare`) ends with zeros where nothing was
//! written: zeros are no record, and a zero-filled rest ends any file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpointer, Flusher};
use super::framed::{self, HEADER};
use super::{journal, spare, Result, StoreError};

/// A file this large is checkpointed before its interval is up, which bounds
/// what a start after a crash replays.
const MAX_FILE_BYTES: u64 = 64 << 20;

const SUFFIX: &str = ".wal";

/// Run before a new file is started: sled must then hold every write the
/// full file's records made (see `applying`, whose hot keys it writes).
pub(super) type BeforeRotate = Box<dyn Fn() -> Result<()> + Send + Sync>;

pub(super) struct Wal {
    dir: PathBuf,
    /// The newest file a start replayed, until `checkpoint_replayed`.
    replayed_through: Option<u64>,
    before_rotate: BeforeRotate,
    sync_to_device: bool,
    interval: Duration,
    active: Mutex<Active>,
    checkpointer: Checkpointer,
    /// Tests: the next sync fails as a device error would.
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
}

/// The file being written.
struct Active {
    /// Written at `bytes`, not appended to: it may be a spare, zeros
    /// already (see `spare`).
    file: File,
    generation: u64,
    bytes: u64,
    commits: u64,
    opened: Instant,
    /// The record being written, kept for the next one: a large commit's
    /// record is megabytes, which a fresh allocation would fault in anew.
    buffer: Vec<u8>,
    /// Why a commit failed. The file may end with a record cut short, which
    /// a replay accepts only at the end of the newest file: nothing more is
    /// appended, and no newer file is started.
    failed: Option<String>,
}

impl Active {
    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(StoreError::LogFailed(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Wal {
    /// Replays the files a crash left through `apply` (each record's
    /// writes, in order; then checkpoints and deletes the files) and starts
    /// a new file.
    pub(super) fn open(
        data_dir: &Path,
        apply: &mut dyn FnMut(Vec<(sled::IVec, Option<sled::IVec>)>) -> Result<()>,
        flusher: Arc<Flusher>,
        sync_to_device: bool,
        interval: Duration,
        before_rotate: BeforeRotate,
    ) -> Result<Self> {
        let dir = data_dir.join("wal");
        if !dir.exists() {
            fs::create_dir(&dir)?;
            sync_dir(data_dir, sync_to_device)?;
        }
        spare::clear_unfinished(&dir)?;
        let files = generations(&dir)?;
        let replaying = Instant::now();
        let mut replayed = 0;
        for (index, (_, path)) in files.iter().enumerate() {
            replayed += replay_file(path, apply, index + 1 == files.len())?;
        }
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                took_ms = replaying.elapsed().as_millis() as u64,
                "read the commits the write-ahead log held since its last checkpoint"
            );
        }
        let generation = files.last().map_or(1, |(g, _)| g + 1);
        let file = create(&dir, generation, sync_to_device)?;
        Ok(Self {
            replayed_through: files.last().map(|(g, _)| *g),
            checkpointer: Checkpointer::start(flusher, dir.clone()),
            dir,
            before_rotate,
            sync_to_device,
            interval,
            active: Mutex::new(Active {
                file,
                generation,
                bytes: 0,
                commits: 0,
                opened: Instant::now(),
                buffer: Vec::new(),
                failed: None,
            }),
            #[cfg(test)]
            fail_next_sync: Default::default(),
        })
    }

    /// Tests: makes the next commit's sync fail.
    #[cfg(test)]
    pub(super) fn fail_next_sync(&self) {
        self.fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Hands the files a start replayed to the checkpoint thread, once
    /// their writes are in sled; it is not waited for, so a start after a
    /// crash serves before sled's flush of them. Until that checkpoint
    /// deletes them, a crash replays them again, before the newer
    /// generations, and replaying is idempotent.
    pub(super) fn checkpoint_replayed(&mut self) -> Result<()> {
        match self.replayed_through.take() {
            Some(through) => self.checkpointer.request(through, None),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Active> {
        // A poisoned file is still usable: a failed append fails its commit,
        // and the engine accepts nothing more until a restart.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `writes` durable as one record, then runs `apply`, which
    /// writes them to sled. Commits are serialised here, so a checkpoint
    /// never starts between a record and its apply.
    pub(super) fn commit(
        &self,
        writes: &journal::Writes,
        apply: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut guard = self.lock();
        let active = &mut *guard;
        active.check()?;
        self.checkpointer.check()?;
        record_into(writes, &mut active.buffer);
        let written = active.file.write_all_at(&active.buffer, active.bytes);
        let synced = written.and_then(|()| match self.sync_to_device {
            true => active.file.sync_data(),
            false => Ok(()),
        });
        #[cfg(test)]
        let synced = synced.and_then(|()| {
            use std::sync::atomic::Ordering;
            match self.fail_next_sync.swap(false, Ordering::SeqCst) {
                true => Err(io::Error::other("injected device failure")),
                false => Ok(()),
            }
        });
        if let Err(e) = synced.map_err(StoreError::from).and_then(|()| apply()) {
            active.failed = Some(e.to_string());
            return Err(e);
        }
        active.bytes += active.buffer.len() as u64;
        active.commits += 1;
        let due = active.bytes >= MAX_FILE_BYTES || active.opened.elapsed() >= self.interval;
        if due && self.checkpointer.idle() {
            let spare = match self.sync_to_device {
                true => spare::size_after(active.bytes, active.commits),
                false => None,
            };
            let full = self.rotate(active, true)?;
            self.checkpointer.request(full, spare)?;
        }
        Ok(())
    }

    /// Checkpoints everything committed so far and waits for it: at a clean
    /// stop, so the next start has nothing to replay.
    pub(super) fn checkpoint_now(&self) -> Result<()> {
        let mut active = self.lock();
        active.check()?;
        if active.bytes == 0 {
            // Earlier generations may still be in the checkpointer's hands.
            let previous = active.generation - 1;
            drop(active);
            return self.checkpointer.wait(previous);
        }
        // A stop: the file started now holds nothing, and a start reads
        // every file, so it is not made from a spare.
        let full = self.rotate(&mut active, false)?;
        drop(active);
        self.checkpointer.wait(full)
    }

    /// Starts the next generation (over a spare, if `spare` and one is
    /// ready); returns the one just filled.
    fn rotate(&self, active: &mut Active, spare: bool) -> Result<u64> {
        (self.before_rotate)()?;
        let next = active.generation + 1;
        let spare = match spare {
            true => spare::take(&self.dir, &path(&self.dir, next))?,
            false => None,
        };
        active.file = match spare {
            Some(file) => {
                sync_dir(&self.dir, self.sync_to_device)?;
                file
            }
            None => create(&self.dir, next, self.sync_to_device)?,
        };
        active.bytes = 0;
        active.commits = 0;
        active.opened = Instant::now();
        Ok(std::mem::replace(&mut active.generation, next))
    }

    /// Bytes of records not checkpointed yet, in every file (tests).
    #[cfg(test)]
    pub(super) fn pending_bytes(&self) -> u64 {
        generations(&self.dir)
            .unwrap()
            .iter()
            .map(|(_, path)| fs::metadata(path).map_or(0, |m| m.len()))
            .sum()
    }
}

/// A commit's writes as a record, in `buffer` (replacing what it held):
/// encoded after room for the header, which is filled in once the payload
/// is final (no second copy of megabytes).
pub(super) fn record_into(writes: &journal::Writes, buffer: &mut Vec<u8>) {
    buffer.clear();
    buffer.resize(HEADER, 0);
    journal::encode_into(writes, buffer);
    let (header, payload) = buffer.split_at_mut(HEADER);
    header.copy_from_slice(&framed::header(payload).0);
}

/// Applies a file's records, each atomically. A damaged record ends the
/// newest file (it was never acknowledged) and fails any other, or any
/// followed by an intact record: a crash cuts short only the last one.
fn replay_file(
    path: &Path,
    apply: &mut dyn FnMut(Vec<(sled::IVec, Option<sled::IVec>)>) -> Result<()>,
    newest: bool,
) -> Result<usize> {
    let bytes = fs::read(path)?;
    let mut at = 0;
    let mut records = 0;
    while at < bytes.len() {
        let Some(record) = framed::read(&bytes, at) else {
            if bytes[at..].iter().all(|&b| b == 0) {
                // The unwritten rest of a file written over a spare.
                break;
            }
            if newest && !framed::intact_after_damaged(&bytes, at) {
                tracing::warn!(
                    file = %path.display(),
                    dropped_bytes = bytes.len() - at,
                    "the write-ahead log ends with a commit cut short; it was never acknowledged"
                );
                break;
            }
            return Err(StoreError::Codec(format!(
                "write-ahead log {}: damaged record at byte {at}, which no crash leaves there; \
                 the commits from it on were acknowledged (truncating the file at that byte \
                 would drop them)",
                path.display()
            )));
        };
        apply(journal::decode(record.payload)?)?;
        records += 1;
        at = record.end;
    }
    Ok(records)
}

/// The path of generation `generation`'s file in `dir`.
pub(super) fn path(dir: &Path, generation: u64) -> PathBuf {
    framed::path(dir, generation, SUFFIX)
}

/// The log files in `dir`, oldest first.
pub(super) fn generations(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    framed::numbered(dir, SUFFIX)
}

/// A new, empty log file; its directory entry is synced, so that the records
/// synced into it can be found after a power cut.
fn create(dir: &Path, generation: u64, sync_to_device: bool) -> Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path(dir, generation))?;
    sync_dir(dir, sync_to_device)?;
    Ok(file)
}

/// Makes a file created, renamed or removed in `dir` survive a crash (with
/// `sync_to_device`).
fn sync_dir(dir: &Path, sync_to_device: bool) -> io::Result<()> {
    match sync_to_device {
        true => File::open(dir)?.sync_all(),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's payload and where the next one starts.
    fn read_record(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
        framed::read(bytes, at).map(|record| (record.payload, record.end))
    }

    #[test]
    fn records_are_read_back_whole_and_refused_when_cut_or_damaged() {
        let mut first = Vec::new();
        record_into(&[(sled::IVec::from(&b"k"[..]), None)], &mut first);
        let mut second = vec![7u8; 3];
        let value = Some(sled::IVec::from(vec![9u8; 1000]));
        record_into(&[(sled::IVec::from(&b"key"[..]), value)], &mut second);
        let bytes = [first.clone(), second.clone()].concat();
        let (payload, next) = read_record(&bytes, 0).unwrap();
        assert_eq!(payload, &first[HEADER..]);
        assert_eq!(next, first.len());
        let (payload, end) = read_record(&bytes, next).unwrap();
        assert_eq!(payload, &second[HEADER..]);
        assert_eq!(end, bytes.len());
        assert!(read_record(&bytes, end).is_none(), "nothing after the end");
        for cut in [first.len() + 3, first.len() + HEADER, bytes.len() - 1] {
            assert!(read_record(&bytes[..cut], next).is_none(), "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        damaged[next + HEADER + 500] ^= 1;
        assert!(read_record(&damaged, next).is_none(), "CRC mismatch");
        assert!(read_record(&damaged, 0).is_some(), "the first is intact");
        assert!(read_record(&[0u8; 64], 0).is_none(), "zeros are no record");
    }

    /// A log in `data_dir` (with a sled and event files of its own), its
    /// replayed writes handed to `apply`.
    fn open_wal(
        data_dir: &Path,
        interval: Duration,
        apply: &mut dyn FnMut(Vec<(sled::IVec, Option<sled::IVec>)>) -> Result<()>,
    ) -> Wal {
        let db = sled::Config::new()
            .path(data_dir.join("sled"))
            .open()
            .unwrap();
        let events = super::super::events::EventFiles::open(data_dir, false, 1 << 20);
        let flusher = Arc::new(Flusher::new(db, Arc::new(events.unwrap()), None));
        Wal::open(
            data_dir,
            apply,
            flusher,
            false,
            interval,
            Box::new(|| Ok(())),
        )
        .unwrap()
    }

    #[test]
    fn after_a_failed_commit_nothing_is_appended_or_rotated() {
        let data_dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3_600);
        let wal = open_wal(data_dir.path(), hour, &mut |_| Ok(()));
        let writes = [(sled::IVec::from(&b"k"[..]), None)];
        wal.commit(&writes, || Ok(())).unwrap();
        let failed = wal.commit(&writes, || Err(StoreError::Codec("apply".into())));
        assert!(failed.is_err());
        let files = generations(&data_dir.path().join("wal")).unwrap();
        let refused = wal.commit(&writes, || panic!("not applied"));
        assert!(
            matches!(refused, Err(StoreError::LogFailed(_))),
            "{refused:?}"
        );
        assert!(matches!(
            wal.checkpoint_now(),
            Err(StoreError::LogFailed(_))
        ));
        let after = generations(&data_dir.path().join("wal")).unwrap();
        assert_eq!(files, after, "no file started or deleted");
    }

    #[test]
    fn generations_are_listed_oldest_first_and_other_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for generation in [10, 2, 9] {
            create(dir.path(), generation, false).unwrap();
        }
        fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let listed: Vec<u64> = generations(dir.path())
            .unwrap()
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(listed, [2, 9, 10]);
        assert!(create(dir.path(), 9, false).is_err(), "never reused");
    }

    type Written = Vec<(sled::IVec, Option<sled::IVec>)>;

    fn one_write(key: &[u8]) -> Written {
        vec![(sled::IVec::from(key), Some(sled::IVec::from(&b"v"[..])))]
    }

    fn record_of(writes: &Written) -> Vec<u8> {
        let mut record = Vec::new();
        record_into(writes, &mut record);
        record
    }

    /// What a replay of `bytes` as the newest file or an older one gives.
    fn replayed(bytes: &[u8], newest: bool) -> Result<Vec<Written>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("1.wal");
        fs::write(&file, bytes).unwrap();
        let mut writes = Vec::new();
        let mut keep = |w| {
            writes.push(w);
            Ok(())
        };
        replay_file(&file, &mut keep, newest)?;
        Ok(writes)
    }

    #[test]
    fn zeros_end_any_file_and_a_record_cut_before_them_only_the_newest() {
        let (first, second) = (one_write(b"a"), one_write(b"b"));
        let zeros = vec![0u8; 4096];
        let whole = [record_of(&first), record_of(&second), zeros.clone()].concat();
        for newest in [true, false] {
            let writes = replayed(&whole, newest).unwrap();
            assert_eq!(writes, [first.clone(), second.clone()], "newest: {newest}");
        }
        // A spare written over, and a crash in the middle of a record.
        let second_record = record_of(&second);
        let cut = &second_record[..second_record.len() - 2];
        let torn = [record_of(&first), cut.to_vec(), zeros].concat();
        assert_eq!(replayed(&torn, true).unwrap(), [first]);
        assert!(replayed(&torn, false).is_err(), "damage in an older file");
    }

    #[test]
    fn a_generation_started_over_a_spare_is_written_from_its_start_and_replayed() {
        let data_dir = tempfile::tempdir().unwrap();
        let dir = data_dir.path().join("wal");
        let (first, second) = (one_write(b"a"), one_write(b"b"));
        {
            let mut wal = open_wal(data_dir.path(), Duration::ZERO, &mut |_| Ok(()));
            spare::prepare(&dir, 2 << 20).unwrap();
            // Due at once: generation 2 starts over the spare.
            wal.commit(&first, || Ok(())).unwrap();
            wal.interval = Duration::from_secs(3_600);
            wal.checkpointer.wait(1).unwrap();
            assert_eq!(
                generations(&dir).unwrap().len(),
                1,
                "generation 1 checkpointed"
            );
            assert_eq!(
                fs::metadata(path(&dir, 2)).unwrap().len(),
                2 << 20,
                "the spare"
            );
            wal.commit(&second, || Ok(())).unwrap();
        }
        let bytes = fs::read(path(&dir, 2)).unwrap();
        assert_eq!(bytes.len(), 2 << 20, "written over, not appended to");
        let mut writes = Vec::new();
        let hour = Duration::from_secs(3_600);
        let mut keep = |w| {
            writes.push(w);
            Ok(())
        };
        let _reopened = open_wal(data_dir.path(), hour, &mut keep);
        assert_eq!(writes, [second]);
    }
}
