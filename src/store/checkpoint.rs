//! sled's flush, and the thread that runs it as the write-ahead log's
//! checkpoint (see `wal`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use super::device_sync::DeviceSync;
use super::events::EventFiles;
use super::{spare, wal, Result, StoreError};

/// sled's flush, wrapped (with `sync_to_device`) in the device syncs of
/// `device_sync`, after the event files' sync (sled's references to chunks
/// must not become durable before the chunks). One flush at a time:
/// concurrent flushes can deadlock in sled 0.34 (sled #1308).
pub(super) struct Flusher {
    db: sled::Db,
    events: Arc<EventFiles>,
    device_sync: Option<DeviceSync>,
    lock: Mutex<()>,
}

impl Flusher {
    pub(super) fn new(
        db: sled::Db,
        events: Arc<EventFiles>,
        device_sync: Option<DeviceSync>,
    ) -> Self {
        Self {
            db,
            events,
            device_sync,
            lock: Mutex::new(()),
        }
    }

    /// Makes every write sled took, and every chunk appended, before this
    /// call durable.
    pub(super) fn flush(&self) -> Result<()> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.events.sync()?;
        if let Some(sync) = &self.device_sync {
            sync.sync_blobs()?;
        }
        self.db.flush()?;
        if let Some(sync) = &self.device_sync {
            sync.sync_log()?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn device_sync(&self) -> Option<&DeviceSync> {
        self.device_sync.as_ref()
    }
}

/// Checkpoint generations up to `through`; answer on `done` when asked;
/// then fill a spare of `spare` bytes for a later generation.
struct Request {
    through: u64,
    done: Option<mpsc::SyncSender<Result<()>>>,
    spare: Option<u64>,
}

/// The checkpoint thread, seen from the log.
pub(super) struct Checkpointer {
    requests: Option<mpsc::Sender<Request>>,
    busy: Arc<AtomicBool>,
    /// Why a checkpoint failed: the log then refuses further commits (sled
    /// may be unable to persist what it was handed).
    failed: Arc<OnceLock<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(flusher: Arc<Flusher>, dir: PathBuf) -> Self {
        let (requests, received) = mpsc::channel::<Request>();
        let busy = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(OnceLock::new());
        let thread = {
            let (busy, failed) = (busy.clone(), failed.clone());
            std::thread::Builder::new()
                .name("gapwatch-checkpoint".into())
                .spawn(move || {
                    for request in received {
                        let outcome = checkpoint(&flusher, &dir, request.through);
                        if let Err(e) = &outcome {
                            tracing::error!(error = %e, "checkpoint failed; refusing further commits");
                            let _ = failed.set(e.to_string());
                        }
                        if let (Ok(()), Some(bytes)) = (&outcome, request.spare) {
                            // Without one, the next generation is appended
                            // to as a new file: slower syncs, same records.
                            if let Err(e) = spare::prepare(&dir, bytes) {
                                tracing::warn!(error = %e, "could not prepare a spare log file");
                            }
                        }
                        busy.store(false, Ordering::Release);
                        if let Some(done) = request.done {
                            let _ = done.send(outcome);
                        }
                    }
                })
                .expect("spawn the checkpoint thread")
        };
        Self {
            requests: Some(requests),
            busy,
            failed,
            thread: Some(thread),
        }
    }

    /// The error of a failed checkpoint, if one failed.
    pub(super) fn check(&self) -> Result<()> {
        match self.failed.get() {
            Some(reason) => Err(StoreError::Checkpoint(reason.clone())),
            None => Ok(()),
        }
    }

    /// No checkpoint in progress: the log may hand over another generation.
    pub(super) fn idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire)
    }

    /// Hands generations up to `through` over, without waiting; then a
    /// spare of `spare` bytes is prepared.
    pub(super) fn request(&self, through: u64, spare: Option<u64>) -> Result<()> {
        self.busy.store(true, Ordering::Release);
        self.send(Request {
            through,
            done: None,
            spare,
        })
    }

    /// Checkpoints generations up to `through` (after any checkpoint queued
    /// before) and waits for it.
    pub(super) fn wait(&self, through: u64) -> Result<()> {
        let (done, outcome) = mpsc::sync_channel(1);
        self.send(Request {
            through,
            done: Some(done),
            spare: None,
        })?;
        outcome.recv().unwrap_or_else(|_| Err(stopped()))
    }

    fn send(&self, request: Request) -> Result<()> {
        // The thread stops only on drop, or if a checkpoint panicked.
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        requests.send(request).map_err(|_| stopped())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it is done; joining lets
        // the data dir's lock go with the last handle (the thread holds
        // sled).
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Checkpoint("the checkpoint thread stopped".into())
}

/// Flushes sled, then deletes the log files it made redundant.
fn checkpoint(flusher: &Flusher, dir: &std::path::Path, through: u64) -> Result<()> {
    let started = Instant::now();
    flusher.flush()?;
    let mut removed = 0;
    for (generation, path) in wal::generations(dir)? {
        if generation <= through {
            std::fs::remove_file(path)?;
            removed += 1;
        }
    }
    tracing::debug!(
        through,
        removed,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "checkpoint"
    );
    Ok(())
}
