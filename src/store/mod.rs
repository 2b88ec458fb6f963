//! The only code that touches sled (and the data dir). One tree with the
//! key layout of `keys`, values in the versioned codec of `codec`, and group
//! commit: a [`WriteBatch`] is made durable atomically, as one record of the
//! write-ahead log (`wal`), before anyone is told; sled is flushed as the
//! log's checkpoint (`checkpoint`).
//!
//! The engine pipelines its commits: it *stages* a batch (its own reads see
//! it at once, through [`Store::pipelined`], customer records excepted: see
//! [`Store::stage`]) and builds the next one while a second thread commits
//! the first. Every other handle reads committed state only: what sled has,
//! and what `applying` holds of commits answered before sled had them.

mod alerts;
mod applying;
mod checkpoint;
pub mod codec;
mod device_sync;
mod events;
mod framed;
mod journal;
pub mod keys;
mod record;
mod routing;
mod spare;
mod wal;
mod write_batch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::domain::{DimensionSpec, Event, DEFAULT_DIMENSIONS};
use crate::scoring::scope::LegacyScopeState;
use crate::scoring::{CustomerState, ScopeState, ValueHistogram};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: undecodable value: {0}")]
    Codec(String),
    #[error(
        "storage: value written by schema version {found}, this build reads version {expected}"
    )]
    Schema { found: u8, expected: u8 },
    #[error("storage: data dir I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: checkpoint failed: {0}")]
    Checkpoint(String),
    #[error("storage: a commit to the write-ahead log failed earlier ({0}); restart the service")]
    LogFailed(String),
}

pub use record::{CustomerRecord, RecentIds};
pub use write_batch::WriteBatch;

use applying::apply_replayed;
use routing::{append_chunk, chunk_ref, route_events, Routing};
use write_batch::{sled_batch, Deferred};

pub type Result<T> = std::result::Result<T, StoreError>;

/// Storage settings (`[storage]` in the config file).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled page cache, bytes.
    pub cache_capacity: u64,
    /// The scoring half-life: converting scope states written by earlier
    /// builds merges decayed sums.
    pub half_life_ms: f64,
    /// `fdatasync` every write-ahead log record before its commit is
    /// acknowledged, and what sled leaves in the page cache at every
    /// checkpoint (see `device_sync`).
    pub sync_to_device: bool,
    /// How often sled is flushed (a checkpoint of the write-ahead log).
    pub checkpoint_interval: Duration,
}

/// A handle on the data dir. Cheap to clone; reads may happen from any
/// task, writes only through [`Store::commit`] (the engine).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// The dir holds `i` keys: the id index of builds before ids moved into
    /// customer records, still consulted for the events they accepted.
    legacy_ids: bool,
    /// Writes staged but not yet committed, read before sled; only on the
    /// engine's handle (see [`Store::pipelined`]).
    staged: Option<Arc<Staged>>,
    /// Commits answered but not yet in sled, shared by every handle.
    applying: Arc<applying::Applying>,
    /// The event log's chunks (sled keeps where each one is).
    events: Arc<events::EventFiles>,
    wal: Arc<wal::Wal>,
    #[cfg(test)]
    flusher: Arc<checkpoint::Flusher>,
}

/// Staged writes by key: the latest value (`None`: removed) and the number
/// of the staged batch that wrote it.
#[derive(Default)]
struct Staged {
    writes: Mutex<StagedWrites>,
    last_number: AtomicU64,
}

impl Staged {
    fn lock(&self) -> std::sync::MutexGuard<'_, StagedWrites> {
        // A poisoned map is still consistent: every insert is one call.
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Looked up on every read of the writer: foldhash rather than SipHash
/// (keys are ids from callers, hence the seeded quality variant).
type StagedWrites = HashMap<sled::IVec, (u64, Option<sled::IVec>), foldhash::quality::RandomState>;

/// A batch staged on a pipelined handle, waiting for [`Store::commit_staged`].
pub struct StagedBatch {
    number: u64,
    writes: Vec<(sled::IVec, Option<sled::IVec>)>,
    /// Encoded by [`Store::commit_staged`] and then appended to `writes`.
    deferred: Deferred,
    /// How many of `writes` are in the stage (those before the deferred).
    staged_writes: usize,
    /// The batch's encoding buffer, reused for the deferred values.
    scratch: Vec<u8>,
}

impl StagedBatch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deferred.is_empty()
    }

    /// Appends the encoded records and event chunk to the writes (once;
    /// else [`Store::commit_staged`] does it).
    pub fn encode_deferred(&mut self) -> Result<()> {
        if self.writes.len() == self.staged_writes {
            self.deferred.encode(&mut self.writes, &mut self.scratch)?;
        }
        Ok(())
    }
}

impl Store {
    /// Opens (or creates) the data dir. sled locks the folder: a second
    /// process on the same dir fails here.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity)
            // Commits are durable in the write-ahead log; sled is flushed
            // by its checkpoints only (concurrent flushes can deadlock).
            .flush_every_ms(None)
            // Larger segments written less often: more space, fewer stalls.
            .mode(sled::Mode::HighThroughput);
        let opening = std::time::Instant::now();
        let db = open_waiting_for_lock(&config)?;
        // sled's own recovery: most of a start after a crash.
        tracing::info!(
            took_ms = opening.elapsed().as_millis() as u64,
            "sled opened"
        );
        let tree = db.open_tree("gapwatch")?;
        // Commits of builds before the write-ahead log: applied (if a crash
        // left any) below, never written.
        let journal = db.open_tree("journal")?;
        let legacy_ids = tree.scan_prefix([keys::EVENT_ID]).next().is_some();
        let device_sync = if options.sync_to_device {
            Some(device_sync::DeviceSync::open(path)?)
        } else {
            None
        };
        let events = Arc::new(events::EventFiles::open(
            path,
            options.sync_to_device,
            events::MAX_FILE_BYTES,
        )?);
        let flusher = Arc::new(checkpoint::Flusher::new(
            db.clone(),
            events.clone(),
            device_sync,
        ));
        // Oldest first: an earlier build's journal, then the log.
        journal::replay_legacy(&journal, &tree, &flusher)?;
        // The last value of each key the log's files hold, applied once
        // they are all read.
        let mut replayed = HashMap::new();
        let mut replay = |writes| {
            let writes = route_events(&tree, &events, writes, Routing::Replay)?;
            replayed.extend(writes);
            Ok(())
        };
        let applying = Arc::new(applying::Applying::default());
        let before_rotate: wal::BeforeRotate = {
            let (applying, tree) = (applying.clone(), tree.clone());
            Box::new(move || Ok(applying.write_hot(&tree)?))
        };
        let mut wal = wal::Wal::open(
            path,
            &mut replay,
            flusher.clone(),
            options.sync_to_device,
            options.checkpoint_interval,
            before_rotate,
        )?;
        apply_replayed(&tree, replayed)?;
        wal.checkpoint_replayed()?;
        let store = Self {
            db,
            tree,
            legacy_ids,
            staged: None,
            applying,
            events,
            wal: Arc::new(wal),
            #[cfg(test)]
            flusher,
        };
        store.initialise()?;
        // What was replayed may hold scope states of the old layout.
        store.convert_legacy_scopes(options.half_life_ms)?;
        Ok(store)
    }

    /// Checks the schema of an existing dir; seeds a new one with the
    /// default dimensions.
    fn initialise(&self) -> Result<()> {
        let schema_key = keys::with_prefix(keys::META, keys::META_SCHEMA);
        match self.tree.get(&schema_key)? {
            Some(v) => {
                let _: u8 = codec::decode(&v)?;
            }
            None => {
                let mut batch = WriteBatch::default();
                for name in DEFAULT_DIMENSIONS {
                    batch.put_dimension(&DimensionSpec::named(name))?;
                }
                batch.put(schema_key, &codec::SCHEMA_VERSION)?;
                self.commit(batch)?;
            }
        }
        Ok(())
    }

    /// Rewrites scope states of schema version 2 in the current layout, in
    /// one atomic batch (scopes are few: one per attribute value).
    fn convert_legacy_scopes(&self, half_life_ms: f64) -> Result<()> {
        let mut batch = WriteBatch::default();
        for kv in self.tree.scan_prefix([keys::SCOPE]) {
            let (key, value) = kv?;
            if value.first() == Some(&codec::SCHEMA_VERSION) {
                let legacy: LegacyScopeState = codec::decode(&value)?;
                batch.put_scope_key(key, &legacy.into_current(half_life_ms))?;
            }
        }
        if !batch.is_empty() {
            self.commit(batch)?;
        }
        Ok(())
    }

    /// A handle whose point reads also see the batches it stages: the
    /// engine's. Range scans see committed state only, so the engine
    /// drains its pipeline before work that scans.
    pub fn pipelined(&self) -> Self {
        Self {
            staged: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// The stored bytes of `key`: staged first on the engine's handle, then
    /// answered but not yet in sled, then sled.
    fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        if let Some(staged) = &self.staged {
            if let Some((_, value)) = staged.lock().get(key) {
                return Ok(value.clone());
            }
        }
        if let Some(value) = self.applying.get(key) {
            return Ok(value);
        }
        Ok(self.tree.get(key)?)
    }

    /// The tree for a range read, once every answered commit is in it
    /// (but for hot keys: see `applying`).
    fn settled(&self) -> &sled::Tree {
        self.applying.settle();
        &self.tree
    }

    /// The tree for a range read over hot keys (scopes): every answered
    /// commit is in it, hot keys included.
    fn settled_with_hot_keys(&self) -> Result<&sled::Tree> {
        self.applying.settle();
        self.applying.write_hot(&self.tree)?;
        Ok(&self.tree)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.get_raw(key)?.map(|v| codec::decode(&v)).transpose()
    }

    pub fn customer(&self, id: &str) -> Result<Option<CustomerState>> {
        self.get_raw(&keys::with_prefix(keys::CUSTOMER, id))?
            .map(|v| record::decode_without_ids(&v).map(|r| r.state))
            .transpose()
    }

    pub fn customer_record(&self, id: &str) -> Result<Option<CustomerRecord>> {
        self.get_raw(&keys::with_prefix(keys::CUSTOMER, id))?
            .map(|v| record::decode(&v))
            .transpose()
    }

    pub fn scope(&self, name: &str) -> Result<Option<ScopeState>> {
        self.get_raw(&keys::with_prefix(keys::SCOPE, name))?
            .map(|v| codec::decode_versioned(codec::SCOPE_VERSION, &v))
            .transpose()
    }

    pub fn histogram(&self) -> Result<ValueHistogram> {
        Ok(self
            .get(&keys::with_prefix(keys::META, keys::META_HISTOGRAM))?
            .unwrap_or_default())
    }

    /// The sequence an event id was accepted under, from the id index of
    /// earlier builds (`None` at once in a dir that never had one).
    pub fn legacy_event_sequence(&self, event_id: &str) -> Result<Option<u64>> {
        if !self.legacy_ids {
            return Ok(None);
        }
        // Never staged: only earlier builds wrote these keys.
        let key = keys::with_prefix(keys::EVENT_ID, event_id);
        self.tree.get(key)?.map(|v| codec::decode(&v)).transpose()
    }

    /// The stored value of the event log chunk holding `seq`: its first
    /// sequence, and where it is (or, written by earlier builds, the chunk).
    fn chunk_value_at(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>> {
        let last = self
            .settled()
            .range(keys::event(0)..=keys::event(seq))
            .next_back()
            .transpose()?;
        Ok(last.map(|(k, v)| (keys::number(&k), v)))
    }

    /// The event log chunk holding `seq`: its first sequence and events.
    fn chunk_at(&self, seq: u64) -> Result<Option<(u64, Vec<Event>)>> {
        let Some((first, value)) = self.chunk_value_at(seq)? else {
            return Ok(None);
        };
        let Some(at) = chunk_ref(&value)? else {
            return Ok(Some((first, codec::decode(&value)?)));
        };
        let chunk = self.events.read(&at)?.ok_or_else(|| {
            StoreError::Codec(format!(
                "event chunk from sequence {first}: not in event file {} at byte {}",
                at.file, at.offset
            ))
        })?;
        Ok(Some((first, codec::decode(&chunk)?)))
    }

    /// The event accepted under `seq`.
    pub fn event(&self, seq: u64) -> Result<Option<Event>> {
        Ok(self.chunk_at(seq)?.and_then(|(first, events)| {
            let index = usize::try_from(seq.checked_sub(first)?).ok()?;
            events.into_iter().nth(index)
        }))
    }

    /// The highest sequence in the event log (0 when empty), read from the
    /// last chunk's reference.
    pub fn last_sequence(&self) -> Result<u64> {
        let Some((first, value)) = self.chunk_value_at(u64::MAX)? else {
            return Ok(0);
        };
        let count = match chunk_ref(&value)? {
            Some(at) => at.count,
            None => codec::decode::<Vec<Event>>(&value)?.len() as u64,
        };
        // A chunk holds at least one event (`put_events` writes none empty).
        Ok(first + count.max(1) - 1)
    }

    /// Distinct values seen for an attribute key.
    pub fn attribute_values(&self, key: &str) -> Result<u64> {
        Ok(self
            .get(&keys::with_prefix(keys::ATTRIBUTE_KEY, key))?
            .unwrap_or(0))
    }

    pub fn dimensions(&self) -> Result<Vec<DimensionSpec>> {
        self.settled()
            .scan_prefix([keys::DIMENSION])
            .map(|kv| codec::decode(&kv?.1))
            .collect()
    }

    /// Scopes whose name starts with `prefix`, in name order, strictly after
    /// `after`, at most `limit`.
    pub fn scopes(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ScopeState)>> {
        let start = match after {
            // The smallest key greater than `after`.
            Some(a) => {
                let mut k = keys::with_prefix(keys::SCOPE, a);
                k.push(0);
                k
            }
            None => keys::with_prefix(keys::SCOPE, prefix),
        };
        let full_prefix = keys::with_prefix(keys::SCOPE, prefix);
        let mut out = Vec::new();
        for kv in self.settled_with_hot_keys()?.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&full_prefix) || out.len() >= limit {
                break;
            }
            out.push((
                keys::name(&k),
                codec::decode_versioned(codec::SCOPE_VERSION, &v)?,
            ));
        }
        Ok(out)
    }

    /// Every customer (of one scope when given), in id order. A scope is a
    /// filter on the full scan: each record lists its scopes, so no
    /// membership index has to be written for every new customer.
    pub fn customers<'a>(
        &'a self,
        scope: Option<&'a str>,
    ) -> impl Iterator<Item = Result<(String, CustomerState)>> + 'a {
        self.settled()
            .scan_prefix([keys::CUSTOMER])
            .filter_map(move |kv| {
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                let record = match record::decode_without_ids(&v) {
                    Ok(record) => record,
                    Err(e) => return Some(Err(e)),
                };
                let member = scope.is_none_or(|s| {
                    record
                        .scopes
                        .binary_search_by(|x| x.as_str().cmp(s))
                        .is_ok()
                });
                member.then(|| Ok((keys::name(&k), record.state)))
            })
    }

    /// Logs a batch, then applies it atomically: when this returns Ok,
    /// every write of the batch survives `kill -9` (and, with
    /// `sync_to_device`, a power cut).
    pub fn commit(&self, mut batch: WriteBatch) -> Result<()> {
        let mut writes = std::mem::take(&mut batch.writes);
        batch.deferred.encode(&mut writes, &mut batch.scratch)?;
        self.wal.commit(&writes, || {
            let (hot, cold): (Vec<_>, Vec<_>) = writes
                .iter()
                .cloned()
                .partition(|(key, _)| applying::is_hot(key));
            let routed = route_events(&self.tree, &self.events, cold, Routing::New)?;
            self.tree.apply_batch(sled_batch(routed))?;
            self.applying.apply_hot(&self.tree, &hot)?;
            Ok(())
        })
    }

    /// Tests: the next commit's sync to the device fails.
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) {
        self.wal.fail_next_sync();
    }

    /// Bytes in the write-ahead log not checkpointed yet (tests).
    #[cfg(test)]
    pub fn wal_pending_bytes(&self) -> u64 {
        self.wal.pending_bytes()
    }

    /// Checkpoints every commit so far and waits for it: after the last
    /// commit of a clean stop, so that the next start has nothing to
    /// replay.
    pub fn close_wal(&self) -> Result<()> {
        self.wal.checkpoint_now()
    }

    /// Makes a batch visible to this handle's point reads at once; it
    /// becomes durable (and visible to every handle) in
    /// [`Store::commit_staged`], which must see staged batches in order.
    ///
    /// Customer records and event chunks are the exception: they are
    /// encoded later, on the committing thread, and reads see them only
    /// once committed. The engine never reads a record it has in flight
    /// (its cache holds each one until `commit_staged` has written it and
    /// dropped its `Arc`), nor the event log.
    ///
    /// # Panics
    /// On a handle that is not [`Store::pipelined`].
    pub fn stage(&self, batch: WriteBatch) -> StagedBatch {
        let staged = self.staged.as_ref().expect("stage on a pipelined handle");
        let number = staged.last_number.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = staged.lock();
        for (key, value) in &batch.writes {
            map.insert(key.clone(), (number, value.clone()));
        }
        StagedBatch {
            number,
            staged_writes: batch.writes.len(),
            writes: batch.writes,
            deferred: batch.deferred,
            scratch: batch.scratch,
        }
    }

    /// Makes a staged batch durable and atomic (one record of the
    /// write-ahead log) and readable by every handle, calls `on_durable`
    /// (which answers its callers), then applies its writes to the tree key
    /// by key (but for its hot keys, held until a checkpoint: see
    /// `applying`) and stops reading them from the stage. A batch of more
    /// than `ANSWER_BEFORE_APPLY_MAX_WRITES` is applied (its hot keys
    /// held) before `on_durable`. Once `on_durable` is called, every write
    /// of the batch survives `kill -9`. On failure the writes stay staged: the engine
    /// refuses all work from then on, and the next open repairs the tree
    /// from the log.
    ///
    /// # Panics
    /// On a handle that is not [`Store::pipelined`].
    pub fn commit_staged(&self, mut batch: StagedBatch, on_durable: impl FnOnce()) -> Result<()> {
        batch.encode_deferred()?;
        self.wal.commit(&batch.writes, || {
            if batch.writes.len() > ANSWER_BEFORE_APPLY_MAX_WRITES {
                self.apply_staged(&batch.writes)?;
                let hot = batch.writes.iter().filter(|(key, _)| applying::is_hot(key));
                self.applying.hold_hot(hot);
                on_durable();
                return Ok(());
            }
            let published = self.applying.publish(&batch.writes);
            on_durable();
            let applied = self.apply_staged(&batch.writes);
            published.applied(applied.is_ok());
            applied
        })?;
        self.unstage(batch.number, &batch.writes[..batch.staged_writes]);
        // Only now may the engine's cache let go of the records.
        drop(batch);
        Ok(())
    }

    /// Applies a logged batch key by key, but for its hot keys (see
    /// `applying`): `apply_batch` would hold sled's process-wide write lock,
    /// stalling the writer's reads meanwhile. The record is what makes the
    /// batch atomic across a crash.
    ///
    /// In the batch's order, so a later write of a key wins. (Key order,
    /// for the CPU caches' sake, was measured: no gain in 16 alternating
    /// stream runs, 4% more instructions on the commit thread.)
    fn apply_staged(&self, writes: &[(sled::IVec, Option<sled::IVec>)]) -> Result<()> {
        for (key, value) in writes.iter().filter(|(key, _)| !applying::is_hot(key)) {
            match value {
                Some(chunk) if key.first() == Some(&keys::EVENT) => {
                    self.tree.insert(key, append_chunk(&self.events, chunk)?)?
                }
                Some(value) => self.tree.insert(key, value.clone())?,
                None => self.tree.remove(key)?,
            };
        }
        Ok(())
    }

    /// Stops reading a committed batch's writes from the stage.
    fn unstage(&self, number: u64, writes: &[(sled::IVec, Option<sled::IVec>)]) {
        let staged = self.staged.as_ref().expect("commit on a pipelined handle");
        let mut map = staged.lock();
        for (key, _) in writes {
            // A later staged batch may have written the key again.
            if map.get(key).is_some_and(|(n, _)| *n == number) {
                map.remove(key);
            }
        }
    }

    /// Bytes on disk: sled's, and the event files'.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()? + self.events.size()?)
    }

    /// Customers and scopes stored: the counts kept with the last commit
    /// that accepted events, or a scan when they are missing or stale (a
    /// dir written by an older build).
    pub fn entity_counts(&self) -> Result<EntityCounts> {
        let next_sequence = self.last_sequence()? + 1;
        let kept: Option<EntityCounts> =
            self.get(&keys::with_prefix(keys::META, keys::META_COUNTS))?;
        if let Some(counts) = kept.filter(|c| c.next_sequence == next_sequence) {
            return Ok(counts);
        }
        let tree = self.settled_with_hot_keys()?;
        let count = |prefix: u8| -> Result<u64> {
            let mut n = 0;
            for kv in tree.scan_prefix([prefix]) {
                kv?;
                n += 1;
            }
            Ok(n)
        };
        Ok(EntityCounts {
            customers: count(keys::CUSTOMER)?,
            scopes: count(keys::SCOPE)?,
            next_sequence,
        })
    }
}

/// The most writes of a commit answered before sled has them. Answering
/// before the apply saves a small commit's callers the apply (server-side
/// ack 1.34 -> 1.09 ms, unary +8-21%); a large commit's writes cost more to
/// publish in `applying` than its callers gain (streams of commits of
/// ~8,000 events measured 6.5% slower, means of 11 alternating runs).
const ANSWER_BEFORE_APPLY_MAX_WRITES: usize = 2048;

/// How long [`Store::open`] waits for the folder's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens sled, waiting up to [`LOCK_WAIT`] while its folder lock is held.
/// A dropped `sled::Db` releases the lock only when its background threads
/// have exited (sled #1289), so a reopen in the same process (a restart in
/// tests) can briefly find it taken. A lock held by a live process is held
/// far longer, so a second process on the dir still fails, a second later.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            // sled reports the flock failure as a message, not a kind.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return Ok(opened?),
        }
    }
}

/// How many customers and scopes are stored, as of the event log's
/// `next_sequence` (kept in meta for the gauges, so a start needs no scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EntityCounts {
    pub customers: u64,
    pub scopes: u64,
    pub next_sequence: u64,
}

#[cfg(test)]
mod replay_properties;
#[cfg(test)]
mod tests;
