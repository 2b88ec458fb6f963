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
mod spare;
mod wal;

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
    /// than [`ANSWER_BEFORE_APPLY_MAX_WRITES`] is applied (its hot keys
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

/// Writes staged for one atomic group commit.
#[derive(Default)]
pub struct WriteBatch {
    /// In order; a later write of a key replaces an earlier one.
    writes: Vec<(sled::IVec, Option<sled::IVec>)>,
    /// Encoded at commit (after `writes`).
    deferred: Deferred,
    /// Where each value is encoded before its exact-size copy.
    scratch: Vec<u8>,
}

/// Applies what a start replayed, in key order, on two threads. Right after
/// a crash sled's cache is cold and each record's leaf is read back from its
/// log: one thread took 1.1 s for 8 commits at a million customers. Every
/// key is written once (the last value the log held), so the threads never
/// share a key, and nothing reads the tree before they are done.
fn apply_replayed(
    tree: &sled::Tree,
    writes: HashMap<sled::IVec, Option<sled::IVec>>,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut writes: Vec<_> = writes.into_iter().collect();
    writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let count = writes.len();
    let (low, high) = writes.split_at(count / 2);
    std::thread::scope(|scope| {
        let apply = |half: &'_ [(sled::IVec, Option<sled::IVec>)]| -> Result<()> {
            for (key, value) in half {
                applying::put(tree, key, value)?;
            }
            Ok(())
        };
        let low = scope.spawn(move || apply(low));
        let high = apply(high);
        low.join().expect("a replay thread panicked").and(high)
    })?;
    tracing::info!(
        keys = count,
        took_ms = started.elapsed().as_millis() as u64,
        "applied the replayed writes to sled"
    );
    Ok(())
}

/// Writes as one atomic sled batch, in order: a later write of the same key
/// wins, as in [`Store::stage`].
fn sled_batch(writes: impl IntoIterator<Item = (sled::IVec, Option<sled::IVec>)>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    batch
}

/// Whether the chunks being routed are new, or replayed from the
/// write-ahead log (and perhaps appended already).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    New,
    Replay,
}

/// Appends the event log chunks among `writes` to the event files and
/// writes their references instead. A replayed chunk whose reference is
/// stored and whose bytes are intact is not appended again.
fn route_events(
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
fn append_chunk(events: &events::EventFiles, chunk: &[u8]) -> Result<sled::IVec> {
    let at = events.append(chunk)?;
    let mut bytes = Vec::new();
    codec::encode_versioned_into(codec::EVENT_REF_VERSION, &at, &mut bytes)?;
    Ok(sled::IVec::from(bytes))
}

/// Where the chunk an event-log value refers to is; `None` for a value
/// holding the chunk itself (written by earlier builds).
fn chunk_ref(value: &[u8]) -> Result<Option<events::ChunkRef>> {
    if value.first() != Some(&codec::EVENT_REF_VERSION) {
        return Ok(None);
    }
    codec::decode_versioned(codec::EVENT_REF_VERSION, value).map(Some)
}

/// Values a batch carries unencoded until it is committed, so that the
/// committing thread encodes them, not the writer that builds the batch:
/// customer records and the event log's chunks (a stream writer spent 4%
/// of its samples encoding chunks). Neither is read back from the stage:
/// the writer's cache holds the records in flight, and only committed
/// state serves the event log.
#[derive(Default)]
struct Deferred {
    records: Vec<(sled::IVec, Arc<CustomerRecord>)>,
    /// Chunks: the first sequence and the events from it.
    events: Vec<(u64, Vec<Event>)>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.events.is_empty()
    }

    /// Encodes them as writes, after the batch's other writes.
    fn encode(
        &self,
        writes: &mut Vec<(sled::IVec, Option<sled::IVec>)>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        writes.reserve(self.events.len() + self.records.len());
        for (first, events) in &self.events {
            codec::encode_into(events, scratch)?;
            let key = sled::IVec::from(&keys::event(*first)[..]);
            writes.push((key, Some(sled::IVec::from(scratch.as_slice()))));
        }
        for (key, record) in &self.records {
            record::encode_into(record, scratch)?;
            writes.push((key.clone(), Some(sled::IVec::from(scratch.as_slice()))));
        }
        Ok(())
    }
}

impl WriteBatch {
    fn put<T: Serialize>(&mut self, key: impl Into<sled::IVec>, value: &T) -> Result<()> {
        codec::encode_into(value, &mut self.scratch)?;
        self.push_scratch(key);
        Ok(())
    }

    /// Writes the encoded value in `scratch` under `key` (one exact-size
    /// copy; `scratch` keeps its capacity for the next value).
    fn push_scratch(&mut self, key: impl Into<sled::IVec>) {
        let value = sled::IVec::from(self.scratch.as_slice());
        self.writes.push((key.into(), Some(value)));
    }

    /// One chunk of the event log: the events accepted by one commit, from
    /// sequence `first` on (one sled write per commit instead of one per
    /// event), encoded when the batch is committed.
    pub fn put_events(&mut self, first: u64, events: Vec<Event>) {
        if !events.is_empty() {
            self.deferred.events.push((first, events));
        }
    }

    /// An entry of the id index earlier builds kept (event id → sequence),
    /// to test dirs they wrote.
    #[cfg(test)]
    pub fn put_legacy_event_id(&mut self, id: &str, seq: u64) -> Result<()> {
        self.put(keys::with_prefix(keys::EVENT_ID, id), &seq)
    }

    /// A customer record, encoded when the batch is committed (on the
    /// committing thread; see [`Store::stage`]).
    pub fn put_customer(&mut self, id: &str, record: Arc<CustomerRecord>) {
        self.deferred
            .records
            .push((keys::with_prefix(keys::CUSTOMER, id).into(), record));
    }

    pub fn put_scope(&mut self, name: &str, state: &ScopeState) -> Result<()> {
        self.put_scope_key(keys::with_prefix(keys::SCOPE, name), state)
    }

    fn put_scope_key(&mut self, key: impl Into<sled::IVec>, state: &ScopeState) -> Result<()> {
        codec::encode_versioned_into(codec::SCOPE_VERSION, state, &mut self.scratch)?;
        self.push_scratch(key);
        Ok(())
    }

    pub fn put_attribute_values(&mut self, key: &str, count: u64) -> Result<()> {
        self.put(keys::with_prefix(keys::ATTRIBUTE_KEY, key), &count)
    }

    pub fn put_histogram(&mut self, histogram: &ValueHistogram) -> Result<()> {
        self.put(
            keys::with_prefix(keys::META, keys::META_HISTOGRAM),
            histogram,
        )
    }

    pub fn put_entity_counts(&mut self, counts: &EntityCounts) -> Result<()> {
        self.put(keys::with_prefix(keys::META, keys::META_COUNTS), counts)
    }

    pub fn put_dimension(&mut self, spec: &DimensionSpec) -> Result<()> {
        self.put(keys::with_prefix(keys::DIMENSION, &spec.name), spec)
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deferred.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Body, Survey};

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            customer: "c".into(),
            at: 0,
            attributes: Vec::new(),
            body: Body::Survey(Survey {
                csat: Some(4),
                ..Survey::default()
            }),
        }
    }

    fn options() -> StoreOptions {
        StoreOptions {
            cache_capacity: 1 << 20,
            half_life_ms: crate::scoring::Params::default().half_life_ms(),
            sync_to_device: true,
            checkpoint_interval: Duration::from_secs(1),
        }
    }

    fn scope_batch(name: &str, customers: u64) -> WriteBatch {
        let mut state = ScopeState::default();
        for _ in 0..customers {
            state.add_customer();
        }
        let mut batch = WriteBatch::default();
        batch.put_scope(name, &state).unwrap();
        batch
    }

    fn record_with_churn_alert(alert: u64) -> CustomerRecord {
        let mut record = CustomerRecord {
            churn_alert: Some(alert),
            ..CustomerRecord::default()
        };
        record.ids.remember(RecentIds::digest("e-1"), 1, 10);
        record
    }

    fn customers_of(store: &Store, name: &str) -> Option<u64> {
        store.scope(name).unwrap().map(|s| s.customer_count())
    }

    #[test]
    fn staged_writes_are_read_by_the_pipelined_handle_only_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let committed = Store::open(dir.path(), &options()).unwrap();
        let pipelined = committed.pipelined();
        let first = pipelined.stage(scope_batch("all", 1));
        let second = pipelined.stage(scope_batch("all", 2));
        assert_eq!(customers_of(&pipelined, "all"), Some(2), "latest staged");
        assert_eq!(customers_of(&committed, "all"), None, "nothing committed");

        pipelined.commit_staged(first, || ()).unwrap();
        assert_eq!(customers_of(&committed, "all"), Some(1));
        // The second batch's write is still the one the writer must see.
        assert_eq!(customers_of(&pipelined, "all"), Some(2));
        pipelined.commit_staged(second, || ()).unwrap();
        assert_eq!(customers_of(&committed, "all"), Some(2));
        assert!(pipelined.staged.as_ref().unwrap().lock().is_empty());
    }

    #[test]
    fn a_commit_is_read_by_every_handle_from_its_answer_on() {
        let dir = tempfile::tempdir().unwrap();
        let public = Store::open(dir.path(), &options()).unwrap();
        let pipelined = public.pipelined();
        let mut batch = scope_batch("brand=acme", 3);
        batch.put_events(1, vec![event("e-1")]);
        batch.put_attribute_values("brand", 1).unwrap();
        let attribute_key = keys::with_prefix(keys::ATTRIBUTE_KEY, "brand");
        let staged = pipelined.stage(batch);
        let mut listing = None;
        pipelined
            .commit_staged(staged, || {
                // Answered, not applied yet: sled lacks the writes (the
                // scope, a hot key, until a checkpoint or a listing).
                assert!(public.tree.get(&attribute_key).unwrap().is_none());
                assert_eq!(public.attribute_values("brand").unwrap(), 1);
                let key = keys::with_prefix(keys::SCOPE, "brand=acme");
                assert!(public.tree.get(key).unwrap().is_none());
                assert_eq!(customers_of(&public, "brand=acme"), Some(3));
                // A range read waits for the apply (on another thread:
                // this one applies once the answer returns).
                let reader = public.clone();
                listing = Some(std::thread::spawn(move || {
                    let scopes = reader.scopes("brand=", None, 10).unwrap();
                    (scopes.len(), reader.last_sequence().unwrap())
                }));
            })
            .unwrap();
        let (scopes, last_sequence) = listing.unwrap().join().unwrap();
        assert_eq!((scopes, last_sequence), (1, 1));
        // Applied: read from sled, no longer held.
        assert_eq!(public.applying.get(&attribute_key), None);
        assert_eq!(public.attribute_values("brand").unwrap(), 1);
        assert_eq!(customers_of(&public, "brand=acme"), Some(3));
    }

    #[test]
    fn scope_states_reach_sled_at_checkpoints_and_listings_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::with_prefix(keys::SCOPE, "region=west");
        {
            let public = Store::open(dir.path(), &without_checkpoints()).unwrap();
            let pipelined = public.pipelined();
            let staged = pipelined.stage(scope_batch("region=west", 2));
            pipelined.commit_staged(staged, || ()).unwrap();
            assert!(public.tree.get(&key).unwrap().is_none(), "held back");
            assert_eq!(customers_of(&public, "region=west"), Some(2));
            assert_eq!(customers_of(&pipelined, "region=west"), Some(2));
            // A listing writes them first.
            assert_eq!(public.scopes("region=", None, 10).unwrap().len(), 1);
            assert!(public.tree.get(&key).unwrap().is_some());

            let staged = pipelined.stage(scope_batch("region=west", 5));
            pipelined.commit_staged(staged, || ()).unwrap();
            // Dropped without a checkpoint: a crash, as far as sled knows.
        }
        {
            let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
            assert_eq!(customers_of(&store, "region=west"), Some(5), "replayed");
            let pipelined = store.pipelined();
            let staged = pipelined.stage(scope_batch("region=west", 7));
            pipelined.commit_staged(staged, || ()).unwrap();
            store.close_wal().unwrap();
            assert_eq!(store.wal_pending_bytes(), 0, "checkpointed");
        }
        let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
        let stored = store.tree.get(&key).unwrap().expect("in sled");
        let state: ScopeState = codec::decode_versioned(codec::SCOPE_VERSION, &stored).unwrap();
        assert_eq!(state.customer_count(), 7, "written before the checkpoint");
    }

    #[test]
    fn a_commits_writes_reach_sled_with_the_last_write_of_a_key_winning() {
        let dir = tempfile::tempdir().unwrap();
        let public = Store::open(dir.path(), &options()).unwrap();
        let pipelined = public.pipelined();
        // Small (applied after the answer) and large (before it): the key
        // `b` is written 50 times among keys on both sides of it.
        for writes_per_key in [1, ANSWER_BEFORE_APPLY_MAX_WRITES / 40] {
            let mut batch = WriteBatch::default();
            for n in 1..=50 {
                for other in ["c", "a"].into_iter().cycle().take(2 * writes_per_key) {
                    batch.put_attribute_values(other, n).unwrap();
                }
                batch.put_attribute_values("b", n).unwrap();
            }
            pipelined
                .commit_staged(pipelined.stage(batch), || ())
                .unwrap();
            for key in ["a", "b", "c"] {
                let stored = public
                    .tree
                    .get(keys::with_prefix(keys::ATTRIBUTE_KEY, key))
                    .unwrap()
                    .map(|v| codec::decode::<u64>(&v).unwrap());
                assert_eq!(stored, Some(50), "{key} after {writes_per_key} per key");
            }
        }
    }

    #[test]
    fn a_large_commit_is_applied_before_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let public = Store::open(dir.path(), &options()).unwrap();
        let pipelined = public.pipelined();
        let mut batch = WriteBatch::default();
        for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
            batch.put_attribute_values(&format!("key-{n}"), 1).unwrap();
        }
        let mut answered = false;
        pipelined
            .commit_staged(pipelined.stage(batch), || {
                let key = keys::with_prefix(keys::ATTRIBUTE_KEY, "key-0");
                assert!(public.tree.get(key).unwrap().is_some());
                answered = true;
            })
            .unwrap();
        assert!(answered);
        assert_eq!(public.attribute_values("key-2048").unwrap(), 1);

        // Its hot keys wait for the checkpoint, readable meanwhile.
        let mut batch = scope_batch("region=north", 3);
        for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
            batch
                .put_attribute_values(&format!("other-{n}"), 1)
                .unwrap();
        }
        pipelined
            .commit_staged(pipelined.stage(batch), || ())
            .unwrap();
        let key = keys::with_prefix(keys::SCOPE, "region=north");
        assert_eq!(public.tree.get(&key).unwrap(), None, "held");
        assert_eq!(customers_of(&public, "region=north"), Some(3));
        public.close_wal().unwrap();
        assert!(public.tree.get(&key).unwrap().is_some(), "checkpointed");
    }

    #[test]
    fn a_large_commits_held_hot_keys_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let large = |customers| {
            let mut batch = scope_batch("region=south", customers);
            for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
                batch.put_attribute_values(&format!("key-{n}"), 1).unwrap();
            }
            batch
        };
        {
            let public = Store::open(dir.path(), &without_checkpoints()).unwrap();
            let pipelined = public.pipelined();
            pipelined
                .commit_staged(pipelined.stage(large(4)), || ())
                .unwrap();
            let key = keys::with_prefix(keys::SCOPE, "region=south");
            assert_eq!(public.tree.get(&key).unwrap(), None, "held");
            // Dropped without a checkpoint: a crash, as far as sled knows.
        }
        let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
        assert_eq!(customers_of(&store, "region=south"), Some(4), "replayed");
        assert_eq!(store.attribute_values("key-2048").unwrap(), 1);
    }

    /// Options under which nothing is checkpointed before a close.
    fn without_checkpoints() -> StoreOptions {
        StoreOptions {
            checkpoint_interval: Duration::from_secs(3_600),
            ..options()
        }
    }

    fn wal_files(dir: &Path) -> Vec<u64> {
        wal::generations(&dir.join("wal"))
            .unwrap()
            .into_iter()
            .map(|(generation, _)| generation)
            .collect()
    }

    /// Commits "gone", then deletes it and writes "all" (1, 3) and alice.
    fn commit_a_history(store: &Store) {
        store
            .commit_staged(store.stage(scope_batch("gone", 1)), || ())
            .unwrap();
        let mut batch = scope_batch("all", 1);
        batch.delete(keys::with_prefix(keys::SCOPE, "gone"));
        batch.put_customer("alice", Arc::new(record_with_churn_alert(7)));
        store.commit_staged(store.stage(batch), || ()).unwrap();
        store
            .commit_staged(store.stage(scope_batch("all", 3)), || ())
            .unwrap();
    }

    fn assert_history(store: &Store) {
        assert_eq!(customers_of(store, "all"), Some(3), "applied in order");
        let alice = store.customer_record("alice").unwrap().expect("replayed");
        assert_eq!(alice, record_with_churn_alert(7), "records are logged");
        assert_eq!(customers_of(store, "gone"), None, "deletes replayed");
    }

    #[test]
    fn the_write_ahead_log_alone_restores_every_commit() {
        let written = tempfile::tempdir().unwrap();
        let store = Store::open(written.path(), &without_checkpoints()).unwrap();
        commit_a_history(&store.pipelined());
        assert!(store.wal_pending_bytes() > 0);
        let crashed = dir_with_log(&log_copy(written.path()));
        let restored = Store::open(crashed.path(), &without_checkpoints()).unwrap();
        assert_history(&restored);
        // The start handed the replayed files to the checkpoint thread;
        // a close waits for it.
        restored.close_wal().unwrap();
        assert_eq!(restored.wal_pending_bytes(), 0, "replayed, checkpointed");
        let generation = wal_files(crashed.path());
        assert_eq!(generation.len(), 1, "one new, empty file: {generation:?}");
    }

    /// The log files of `dir`, by generation, with their bytes.
    fn log_copy(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        wal_files(dir)
            .into_iter()
            .map(|g| (g, std::fs::read(wal::path(&dir.join("wal"), g)).unwrap()))
            .collect()
    }

    /// A data dir whose sled never saw anything: only these log files.
    fn dir_with_log(files: &[(u64, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("wal")).unwrap();
        for (generation, bytes) in files {
            std::fs::write(wal::path(&dir.path().join("wal"), *generation), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn a_crash_before_a_replay_is_checkpointed_replays_it_again_then_the_commits_after_it() {
        let written = tempfile::tempdir().unwrap();
        let store = Store::open(written.path(), &without_checkpoints()).unwrap();
        commit_a_history(&store.pipelined());
        let history = log_copy(written.path());
        let crashed = dir_with_log(&history);
        let after_replay = {
            let store = Store::open(crashed.path(), &without_checkpoints()).unwrap();
            store.commit(scope_batch("all", 9)).unwrap();
            // The generation this commit went to, whatever the checkpoint
            // of the replayed ones has done by now.
            let newest = *wal_files(crashed.path()).last().unwrap();
            let bytes = std::fs::read(wal::path(&crashed.path().join("wal"), newest)).unwrap();
            assert!(!bytes.is_empty());
            (newest, bytes)
        };
        assert!(
            history.iter().all(|(g, _)| *g < after_replay.0),
            "a start's commits go to a newer generation than it replayed"
        );
        // The worst crash: sled kept nothing, every file is left.
        let mut files = history;
        files.push(after_replay);
        let store = Store::open(dir_with_log(&files).path(), &without_checkpoints()).unwrap();
        assert_eq!(
            customers_of(&store, "all"),
            Some(9),
            "the later commit last"
        );
        let alice = store.customer_record("alice").unwrap().expect("replayed");
        assert_eq!(alice, record_with_churn_alert(7));
        assert_eq!(customers_of(&store, "gone"), None);
    }

    #[test]
    fn a_record_cut_short_ends_the_replay_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = without_checkpoints();
        let newest = {
            let store = Store::open(dir.path(), &options).unwrap().pipelined();
            commit_a_history(&store);
            let newest = *wal_files(dir.path()).last().unwrap();
            wal::path(&dir.path().join("wal"), newest)
        };
        // A commit cut short after the history: never acknowledged.
        let mut cut = Vec::new();
        let writes = [(keys::with_prefix(keys::SCOPE, "all").into(), None)];
        wal::record_into(&writes, &mut cut);
        cut.truncate(cut.len() - 1);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .unwrap();
        std::io::Write::write_all(&mut file, &cut).unwrap();
        drop(file);
        let history = std::fs::read(&newest).unwrap();
        {
            let store = Store::open(dir.path(), &options).unwrap();
            assert_history(&store);
        }
        // The same bytes in an older generation, before a newer one: damage.
        std::fs::write(wal::path(&dir.path().join("wal"), 1), &history).unwrap();
        let refused = Store::open(dir.path(), &options).err().expect("refused");
        assert!(refused.to_string().contains("write-ahead log"), "{refused}");
    }

    #[test]
    fn checkpoints_empty_the_log_and_a_clean_close_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let every_commit = StoreOptions {
                checkpoint_interval: Duration::ZERO,
                ..options()
            };
            let store = Store::open(dir.path(), &every_commit).unwrap().pipelined();
            for n in 1..=5 {
                store
                    .commit_staged(store.stage(scope_batch("all", n)), || ())
                    .unwrap();
            }
            // A commit hands its generation over when the last is done.
            assert!(
                wal_files(dir.path()).len() <= 3,
                "{:?}",
                wal_files(dir.path())
            );
            store.close_wal().unwrap();
            assert_eq!(store.wal_pending_bytes(), 0, "nothing to replay");
            assert_eq!(wal_files(dir.path()).len(), 1, "the empty active file");
        }
        {
            let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
            assert_eq!(customers_of(&store, "all"), Some(5), "every commit kept");
            // Commits after a close are logged as before.
            store.commit(scope_batch("all", 6)).unwrap();
            assert!(store.wal_pending_bytes() > 0);
            store.close_wal().unwrap();
            assert_eq!(store.wal_pending_bytes(), 0);
        }
        let store = Store::open(dir.path(), &options()).unwrap();
        assert_eq!(customers_of(&store, "all"), Some(6));
    }

    #[test]
    fn entries_a_crash_left_in_the_journal_of_an_earlier_build_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &options()).unwrap();
            store.commit(scope_batch("gone", 1)).unwrap();
            store.close_wal().unwrap();
            // What the earlier build left: two entries, never applied.
            let mut first = scope_batch("all", 1);
            first.delete(keys::with_prefix(keys::SCOPE, "gone"));
            first.put_customer("alice", Arc::new(record_with_churn_alert(7)));
            let journal = store.db.open_tree("journal").unwrap();
            for (number, mut batch) in [(8, first), (9, scope_batch("all", 3))] {
                let mut writes = std::mem::take(&mut batch.writes);
                batch
                    .deferred
                    .encode(&mut writes, &mut batch.scratch)
                    .unwrap();
                let entry = journal::encode(&writes);
                journal
                    .insert(keys::numbered(keys::JOURNAL, number), entry)
                    .unwrap();
            }
            store.flusher.flush().unwrap();
        }
        let store = Store::open(dir.path(), &options()).unwrap();
        assert_history(&store);
        assert!(store.db.open_tree("journal").unwrap().is_empty(), "removed");
    }

    #[test]
    fn a_held_folder_is_refused_and_a_released_one_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), &options()).unwrap();
        let refused = Store::open(dir.path(), &options()).err().expect("locked");
        assert!(refused.to_string().contains("lock"), "{refused}");

        // Released while the second open waits: it succeeds.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(first);
        });
        Store::open(dir.path(), &options()).expect("opened once released");
        release.join().unwrap();
    }

    #[test]
    fn event_log_chunks_answer_by_sequence_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let options = options();
        {
            let store = Store::open(dir.path(), &options).unwrap();
            assert_eq!(store.last_sequence().unwrap(), 0);
            assert_eq!(store.event(1).unwrap(), None);
            // Two commits: sequences 1..=3, then 4..=5.
            for (first, ids) in [(1, vec!["a", "b", "c"]), (4, vec!["d", "e"])] {
                let mut batch = WriteBatch::default();
                let events: Vec<Event> = ids.iter().map(|id| event(id)).collect();
                batch.put_events(first, events);
                store.commit(batch).unwrap();
            }
        }
        let store = Store::open(dir.path(), &options).unwrap();
        assert_eq!(store.last_sequence().unwrap(), 5);
        for (seq, id) in [(1, "a"), (3, "c"), (4, "d"), (5, "e")] {
            assert_eq!(store.event(seq).unwrap().unwrap().id, id);
        }
        assert_eq!(store.event(6).unwrap(), None);
    }

    fn events_file_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("events"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn event_chunks_live_in_the_event_files_and_sled_keeps_where() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &without_checkpoints())
                .unwrap()
                .pipelined();
            let mut batch = WriteBatch::default();
            batch.put_events(1, vec![event("a"), event("b")]);
            store.commit_staged(store.stage(batch), || ()).unwrap();
            let stored = store.tree.get(keys::event(1)).unwrap().unwrap();
            assert_eq!(stored[0], codec::EVENT_REF_VERSION, "a reference");
            assert!(stored.len() < 40, "{} bytes in sled", stored.len());
            assert!(events_file_bytes(dir.path()) > 0);
        }
        let appended = events_file_bytes(dir.path());
        {
            // Replayed with its bytes intact: not appended again.
            let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
            assert_eq!(events_file_bytes(dir.path()), appended, "no duplicate");
            assert_eq!(store.event(2).unwrap().unwrap().id, "b");
            assert_eq!(store.last_sequence().unwrap(), 2);
            // A chunk whose bytes were lost, its log record still there.
            let mut batch = WriteBatch::default();
            batch.put_events(3, vec![event("c")]);
            store.commit(batch).unwrap();
        }
        let file = std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(appended)
            .unwrap();
        let store = Store::open(dir.path(), &options()).unwrap();
        assert_eq!(store.event(3).unwrap().unwrap().id, "c", "appended again");
        assert_eq!(store.event(1).unwrap().unwrap().id, "a");
        assert_eq!(store.last_sequence().unwrap(), 3);
    }

    #[test]
    fn event_chunks_earlier_builds_kept_in_sled_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &options()).unwrap();
        // The chunk itself in sled, as earlier builds wrote it.
        let old = codec::encode(&vec![event("old-1"), event("old-2")]).unwrap();
        store.tree.insert(keys::event(1), old).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_events(3, vec![event("new-3")]);
        store.commit(batch).unwrap();
        assert_eq!(store.event(2).unwrap().unwrap().id, "old-2");
        assert_eq!(store.event(3).unwrap().unwrap().id, "new-3");
        assert_eq!(store.last_sequence().unwrap(), 3);
        drop(store);
        let store = Store::open(dir.path(), &options()).unwrap();
        assert_eq!(store.last_sequence().unwrap(), 3);
    }

    #[test]
    fn scope_states_of_schema_version_2_are_converted_at_open() {
        let h = options().half_life_ms;
        let mut current = ScopeState::default();
        current.add_customer();
        let legacy =
            |deadline| LegacyScopeState::with_open_cases(&current, &[(deadline, 46.0, 0)], h);
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &options()).unwrap().pipelined();
            let mut batch = WriteBatch::default();
            batch
                .put(keys::with_prefix(keys::SCOPE, "all"), &legacy(60_001))
                .unwrap();
            store.commit(batch).unwrap();
            // One more only in an earlier build's journal, as a crash
            // would leave it.
            let mut batch = WriteBatch::default();
            batch
                .put(keys::with_prefix(keys::SCOPE, "north"), &legacy(1))
                .unwrap();
            let journal = store.db.open_tree("journal").unwrap();
            let entry = journal::encode(&batch.writes);
            journal
                .insert(keys::numbered(keys::JOURNAL, 1), entry)
                .unwrap();
            store.flusher.flush().unwrap();
            // This build refuses to read the old layout as the new one.
            assert!(matches!(
                store.scope("all"),
                Err(StoreError::Schema {
                    found: 2,
                    expected: 3
                })
            ));
        }
        let store = Store::open(dir.path(), &options()).unwrap();
        for (name, deadline) in [("all", 60_001), ("north", 1)] {
            let state = store.scope(name).unwrap().expect("converted");
            assert_eq!(state, legacy(deadline).into_current(h), "{name}");
            assert_eq!(state.customer_count(), 1);
            let raw = store.tree.get(keys::with_prefix(keys::SCOPE, name));
            assert_eq!(raw.unwrap().unwrap()[0], codec::SCOPE_VERSION);
        }
    }

    #[test]
    fn with_sync_to_device_every_blob_sled_wrote_is_synced_by_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = || -> std::collections::BTreeSet<String> {
            std::fs::read_dir(dir.path().join("blobs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let store = Store::open(dir.path(), &without_checkpoints())
            .unwrap()
            .pipelined();
        let sync = || {
            let sync = store.flusher.device_sync().expect("on in these options");
            sync.synced_blobs()
                .into_keys()
                .collect::<std::collections::BTreeSet<_>>()
        };
        for n in 0..3u64 {
            let before = blobs();
            let mut batch = scope_batch("all", n + 1);
            // A value of 300 KiB: over sled's 128 KiB blob limit.
            let big = vec![n as u8; 300 * 1024];
            batch
                .put(keys::with_prefix(keys::ATTRIBUTE_KEY, "big"), &big)
                .unwrap();
            store.commit_staged(store.stage(batch), || ()).unwrap();
            let written = blobs();
            assert!(written.difference(&before).next().is_some(), "a new blob");
            store.close_wal().unwrap();
            let synced = sync();
            assert!(
                written.is_subset(&synced),
                "unsynced blobs after checkpoint {n}: {written:?} against {synced:?}"
            );
        }
        let off = StoreOptions {
            sync_to_device: false,
            ..options()
        };
        drop(store);
        let store = Store::open(dir.path(), &off).unwrap();
        assert!(store.flusher.device_sync().is_none());
    }

    #[test]
    fn the_id_index_of_earlier_builds_is_read_where_one_exists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &options()).unwrap();
            assert!(!store.legacy_ids);
            let mut batch = WriteBatch::default();
            batch.put_legacy_event_id("old-1", 3).unwrap();
            store.commit(batch).unwrap();
            // Noticed at open only: this handle does not look.
            assert_eq!(store.legacy_event_sequence("old-1").unwrap(), None);
        }
        let store = Store::open(dir.path(), &options()).unwrap();
        assert!(store.legacy_ids);
        assert_eq!(store.legacy_event_sequence("old-1").unwrap(), Some(3));
        assert_eq!(store.legacy_event_sequence("old-2").unwrap(), None);
    }

    #[test]
    fn open_alerts_are_read_from_meta_or_counted_from_an_earlier_builds_index() {
        use crate::domain::alert::{AlertKind, OpenAlerts};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &options()).unwrap();
        assert_eq!(store.open_alerts().unwrap(), OpenAlerts::default());
        // What earlier builds wrote: one `O` key per open alert.
        let mut batch = WriteBatch::default();
        for (id, kind) in [
            (1, AlertKind::ChurnRisk),
            (4, AlertKind::ChurnRisk),
            (9, AlertKind::GapWidening),
        ] {
            batch
                .put(keys::numbered(keys::OPEN_ALERT, id).to_vec(), &kind)
                .unwrap();
        }
        store.commit(batch).unwrap();
        let counted = store.open_alerts().unwrap();
        assert_eq!(counted.count(AlertKind::ChurnRisk), 2);
        assert_eq!(counted.count(AlertKind::GapWidening), 1);
        // Once a commit keeps the count, the stale index is not read.
        let mut kept = OpenAlerts::default();
        kept.open(AlertKind::LoyaltyDrop);
        let mut batch = WriteBatch::default();
        batch.put_open_alerts(&kept).unwrap();
        store.commit(batch).unwrap();
        assert_eq!(store.open_alerts().unwrap(), kept);
    }
}
