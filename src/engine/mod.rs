//! The engine: the single writer. Handlers send it validated events; one
//! thread applies whatever is queued as one batch, group-commits it to sled
//! (one flush for every event of the batch) and only then answers. An answer
//! therefore means durable, and concurrent callers share flushes.

mod alerting;
mod batch;
mod cache;
mod commit;
mod feed;
mod monitors;
pub mod rules;
mod transitions;
mod txn;

pub use feed::AlertFeed;
pub use rules::AlertSettings;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::domain::alert::Alert;
use crate::domain::{DimensionSpec, Event};
use crate::error::{Error, Result};
use crate::scoring::Params;
use crate::store::Store;

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// Durable, at this log sequence.
    Accepted(u64),
    /// Its id was accepted before, at this sequence; nothing changed.
    Duplicate(u64),
    /// Refused; nothing changed.
    Rejected(Error),
}

/// Engine settings (`[engine]` in the config file).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most events applied in one group commit.
    pub max_batch_events: usize,
    /// Commands queued for the writer before senders wait.
    pub queue_capacity: usize,
    /// Distinct values allowed per attribute key.
    pub max_distinct_values_per_key: u64,
    /// Event ids remembered per customer for duplicate detection.
    pub remembered_ids_per_customer: usize,
    /// Customer records the writer keeps decoded in memory.
    pub cached_customers: usize,
    /// Detectors, thresholds, retention, feed limits.
    pub alerts: AlertSettings,
}

/// The engine's hash maps: keyed by ids and scope names on every event, where
/// SipHash showed in profiles. foldhash's quality variant with a per-map
/// random seed, because the keys come from callers.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
type Set<T> = std::collections::HashSet<T, foldhash::quality::RandomState>;

enum Command {
    Ingest {
        events: Vec<Event>,
        reply: oneshot::Sender<Vec<Outcome>>,
        /// The sender's span (the RPC): the batch that applies these
        /// events is traced under it.
        span: tracing::Span,
        /// When the command was queued (ack latency).
        queued: std::time::Instant,
    },
    PutDimension {
        spec: DimensionSpec,
        reply: oneshot::Sender<Result<()>>,
    },
    Acknowledge {
        id: u64,
        note: String,
        rebaseline: bool,
        reply: oneshot::Sender<Result<Alert>>,
    },
    /// Wall-clock work: overdue complaints, alert retention.
    Tick,
    /// From the commit thread: it is free (wakes a writer that holds a
    /// small commit back; see `Writer::run`).
    Idle,
    Stop,
}

/// The configured dimensions, shared with validation.
#[derive(Clone, Default)]
pub struct Dimensions(Arc<RwLock<Arc<BTreeMap<String, DimensionSpec>>>>);

impl Dimensions {
    pub fn snapshot(&self) -> Arc<BTreeMap<String, DimensionSpec>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, specs: impl IntoIterator<Item = DimensionSpec>) {
        let map = specs.into_iter().map(|d| (d.name.clone(), d)).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    fn insert(&self, spec: DimensionSpec) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut map = (**guard).clone();
        map.insert(spec.name.clone(), spec);
        *guard = Arc::new(map);
    }
}

/// A handle for sending work to the writer. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    dimensions: Dimensions,
    feed: Arc<AlertFeed>,
}

/// The writer thread; [`Engine::shutdown`] drains and stops it.
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    pub fn start(
        store: Store,
        params: Params,
        options: EngineOptions,
        metrics: crate::telemetry::Metrics,
    ) -> Result<Self> {
        let dimensions = Dimensions::default();
        dimensions.replace(store.dimensions()?);
        let feed = Arc::new(AlertFeed::new(
            store.last_alert_sequence()?,
            options.alerts.recent_transitions,
        ));
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let interval = std::time::Duration::from_millis(options.alerts.check_interval_ms);
        let writer = batch::Writer::new(
            tx.downgrade(),
            store,
            params,
            options,
            dimensions.clone(),
            feed.clone(),
            metrics,
        )?;
        let thread = std::thread::Builder::new()
            .name("gapwatch-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Unavailable(format!("cannot start the writer thread: {e}")))?;
        tokio::spawn(tick(tx.clone(), interval));
        Ok(Self {
            handle: EngineHandle {
                tx,
                dimensions,
                feed,
            },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Commits everything queued so far, then stops the writer: later
    /// sends from surviving handles fail with `UNAVAILABLE`.
    pub async fn shutdown(mut self) {
        // Queued behind every command already sent; the writer closes its
        // receiver when it reaches it and drains what is left.
        let _ = self.handle.tx.send(Command::Stop).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl EngineHandle {
    /// Applies events; one outcome per event, in order, once durable.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<Vec<Outcome>> {
        self.submit(events).await?.wait().await
    }

    /// Queues events and returns without waiting for the commit, so a
    /// stream can keep reading while earlier events are being committed.
    /// Waits only while the queue is full (backpressure).
    pub async fn submit(&self, events: Vec<Event>) -> Result<PendingOutcomes> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ingest {
                events,
                reply,
                span: tracing::Span::current(),
                queued: std::time::Instant::now(),
            })
            .await
            .map_err(|_| stopped())?;
        Ok(PendingOutcomes(rx))
    }

    /// Creates or replaces a dimension, durably.
    pub async fn put_dimension(&self, spec: DimensionSpec) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::PutDimension { spec, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Acknowledges an open alert, durably.
    pub async fn acknowledge(&self, id: u64, note: String, rebaseline: bool) -> Result<Alert> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Acknowledge {
                id,
                note,
                rebaseline,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    pub fn feed(&self) -> &Arc<AlertFeed> {
        &self.feed
    }
}

/// Asks the writer for its wall-clock work every `interval`. A tick is
/// skipped when the queue is full: the writer is busy and will get the
/// next one.
async fn tick(tx: mpsc::Sender<Command>, interval: std::time::Duration) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Command::Tick) {
            return;
        }
    }
}

/// Outcomes of submitted events, available once they are durable.
pub struct PendingOutcomes(oneshot::Receiver<Vec<Outcome>>);

impl PendingOutcomes {
    pub async fn wait(self) -> Result<Vec<Outcome>> {
        self.0.await.map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Unavailable("the engine is stopped (shutting down or storage failed)".into())
}

#[cfg(test)]
mod tests;
