//! The writer loop: the first stage of every group commit. It applies
//! commands to an open commit as they arrive (the working set is `txn`),
//! seals it when the commit thread is free, stages it as one batch and
//! hands it over (`commit`), which makes it durable and only then answers
//! the callers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::alerting::Alerting;
use super::cache::CustomerCache;
use super::commit::{Commit, Committer, Failure, Reply, Stage};
use super::txn::Txn;
use super::{AlertFeed, Command, Dimensions, EngineOptions};
use crate::domain::alert::OpenAlerts;
use crate::error::{Error, Result};
use crate::scoring::{Params, ValueHistogram};
use crate::store::{EntityCounts, Store};

pub(super) struct Writer {
    /// Pipelined: reads see the commits still in flight.
    store: Store,
    params: Params,
    options: EngineOptions,
    dimensions: Dimensions,
    next_sequence: u64,
    next_alert_sequence: u64,
    histogram: ValueHistogram,
    failure: Arc<Failure>,
    /// Customers and scopes stored (kept in meta with each commit).
    counts: EntityCounts,
    /// Open alerts by kind (kept in meta by commits that change them).
    open_alerts: OpenAlerts,
    customers: CustomerCache,
    stages: Option<SyncSender<Stage>>,
    committer: Option<JoinHandle<()>>,
    /// Set while the commit thread holds a commit.
    committing: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn new(
        wake: mpsc::WeakSender<Command>,
        store: Store,
        params: Params,
        options: EngineOptions,
        dimensions: Dimensions,
        feed: Arc<AlertFeed>,
        metrics: crate::telemetry::Metrics,
    ) -> Result<Self> {
        let store = store.pipelined();
        let counts = store.entity_counts()?;
        metrics.entities(counts.customers, counts.scopes);
        let failure = Arc::new(Failure::default());
        let (stages, received) = Committer::channel();
        let committing = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            committing: committing.clone(),
            wake,
            store: store.clone(),
            feed,
            dimensions: dimensions.clone(),
            metrics,
            failure: failure.clone(),
        };
        let committer = std::thread::Builder::new()
            .name("gapwatch-commit".into())
            .spawn(move || committer.run(received))
            .map_err(|e| Error::Unavailable(format!("cannot start the commit thread: {e}")))?;
        Ok(Self {
            next_sequence: store.last_sequence()? + 1,
            next_alert_sequence: store.last_alert_sequence()? + 1,
            histogram: store.histogram()?,
            open_alerts: store.open_alerts()?,
            customers: CustomerCache::new(options.cached_customers),
            store,
            params,
            options,
            dimensions,
            failure,
            counts,
            stages: Some(stages),
            committer: Some(committer),
            committing,
        })
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut stopping = false;
        while let Some(first) = rx.blocking_recv() {
            self.build_commit(first, &mut rx, &mut stopping);
        }
        // Closing the pipeline lets the commit thread finish what is in
        // flight and stop.
        drop(self.stages.take());
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        if stopping {
            tracing::info!(
                next_sequence = self.next_sequence,
                "writer drained and stopped"
            );
        }
    }

    /// Builds one group commit from `first` and what follows, and hands it
    /// to the commit thread. Commands are applied as they arrive, and the
    /// commit stays open while the commit thread is still busy with the
    /// previous one (up to `max_batch_events`): building overlaps writing,
    /// and whatever arrives meanwhile shares the next flush. Closed-loop
    /// callers (unary) therefore commit together instead of trickling into
    /// many small commits.
    fn build_commit(
        &mut self,
        first: Command,
        rx: &mut mpsc::Receiver<Command>,
        stopping: &mut bool,
    ) {
        match first {
            Command::Idle => return,
            Command::Stop => {
                rx.close();
                *stopping = true;
                return;
            }
            _ => {}
        }
        if let Some(reason) = self.failure.reason() {
            refuse(first, reason);
            return;
        }
        let dims = self.dimensions.snapshot();
        let mut open = OpenCommit {
            txn: Txn::new(
                &self.store,
                &mut self.customers,
                &self.histogram,
                self.next_sequence,
                Alerting::new(
                    &self.store,
                    &self.options.alerts,
                    crate::api::now_millis(),
                    self.next_alert_sequence,
                ),
                &dims,
            ),
            replies: Vec::new(),
            queued: Vec::new(),
            events: 0,
            size: 0,
            commands: 0,
            span: None,
            result: Ok(()),
        };
        let max_events = self.options.max_batch_events;
        let mut next = Some(first);
        loop {
            while let Some(command) = next.take() {
                match command {
                    Command::Stop => {
                        // No new sends from now on; what is buffered still
                        // arrives through try_recv/blocking_recv.
                        rx.close();
                        *stopping = true;
                    }
                    Command::Idle => {}
                    Command::Tick => {
                        // Ticks scan the store: every earlier commit must
                        // be in it.
                        drain(self.stages.as_ref());
                        open.apply(Command::Tick, &self.params, &self.options);
                    }
                    command => open.apply(command, &self.params, &self.options),
                }
                if open.size >= max_events || open.result.is_err() {
                    break;
                }
                next = rx.try_recv().ok();
            }
            let keep_open = open.size < max_events
                && open.result.is_ok()
                && !*stopping
                && self.committing.load(Ordering::Acquire);
            if !keep_open {
                break;
            }
            // Woken by the next command, or by the commit thread's Idle.
            match rx.blocking_recv() {
                Some(command) => next = Some(command),
                None => break,
            }
        }
        let OpenCommit {
            txn,
            replies,
            queued,
            events,
            size: _,
            commands,
            span,
            result,
        } = open;
        let span = span.unwrap_or_else(tracing::Span::none);
        span.record("events", events);
        span.record("commands", commands);
        let staged = result.and_then(|()| {
            let _entered = span.enter();
            let mut committed = txn.finish()?;
            let counts = EntityCounts {
                customers: self.counts.customers + committed.new_customers,
                scopes: self.counts.scopes + committed.new_scopes,
                next_sequence: committed.next_sequence,
            };
            if committed.next_sequence != self.next_sequence {
                committed.batch.put_entity_counts(&counts)?;
            }
            // Kept (and reported) only when a transition changed it.
            let mut open_alerts = None;
            if !committed.alerts.is_empty() {
                let mut open = self.open_alerts.clone();
                if open.follow(&committed.alerts) {
                    committed.batch.put_open_alerts(&open)?;
                    open_alerts = Some(open);
                }
            }
            Ok((committed, counts, open_alerts))
        });
        let (committed, counts, open_alerts) = match staged {
            Ok(staged) => staged,
            Err(e) => {
                // Commits already handed over stay valid; this one is
                // dropped unstaged, and nothing more is accepted.
                let reason = self.failure.set(&e);
                replies.into_iter().for_each(|r| r.fail(reason));
                return;
            }
        };
        // The next commit builds on this one as if it were durable: if it
        // fails, so does everything after it.
        self.histogram = committed.histogram;
        self.next_sequence = committed.next_sequence;
        self.next_alert_sequence = committed.next_alert_sequence;
        self.counts = counts;
        if let Some(open) = &open_alerts {
            self.open_alerts = open.clone();
        }
        self.customers.put_back(committed.customers);
        if committed.batch.is_empty() && replies.is_empty() && committed.alerts.is_empty() {
            return;
        }
        let mut batch = self.store.stage(committed.batch);
        // Records and the event chunk are encoded by the commit thread,
        // unless it is still busy with the commit before: then the writer
        // would only wait for it, and encodes them itself. (With the writer
        // the busier thread, encoding moves off it; with the commit thread
        // the busier one, as with a million customers, it does not move
        // onto it.)
        if self.committing.load(Ordering::Acquire) {
            if let Err(e) = batch.encode_deferred() {
                let reason = self.failure.set(&e.into());
                replies.into_iter().for_each(|r| r.fail(reason));
                return;
            }
        }
        let commit = Commit {
            batch,
            replies,
            alerts: committed.alerts,
            events,
            queued,
            counts,
            open_alerts,
            span,
        };
        if let Some(stages) = &self.stages {
            self.committing.store(true, Ordering::Release);
            if let Err(unsent) = stages.send(Stage::Commit(Box::new(commit))) {
                // The commit thread is gone (it panicked): refuse from now on.
                let e = Error::Unavailable("the commit thread stopped".into());
                let reason = self.failure.set(&e);
                if let Stage::Commit(commit) = unsent.0 {
                    commit.replies.into_iter().for_each(|r| r.fail(reason));
                }
            }
        }
    }
}

/// Waits until every commit handed over so far is durable (or failed):
/// range scans read committed state only.
fn drain(stages: Option<&SyncSender<Stage>>) {
    let (done, wait) = std::sync::mpsc::channel();
    if let Some(stages) = stages {
        if stages.send(Stage::Drain(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// A group commit being built.
struct OpenCommit<'a> {
    txn: Txn<'a>,
    replies: Vec<Reply>,
    /// When each ingest command was queued (ack latency).
    queued: Vec<std::time::Instant>,
    /// Events ingested (the span's and the metric's figure).
    events: usize,
    /// Events plus one per other command: what `max_batch_events` bounds.
    size: usize,
    commands: usize,
    /// `engine.batch`: a child of the first request's span, linked to the
    /// others. None while only ticks were applied.
    span: Option<tracing::Span>,
    /// A storage failure abandons the whole commit.
    result: Result<()>,
}

impl OpenCommit<'_> {
    fn apply(&mut self, command: Command, params: &Params, options: &EngineOptions) {
        self.commands += 1;
        if let Command::Ingest { span: request, .. } = &command {
            match &self.span {
                Some(span) => {
                    span.follows_from(request);
                }
                None => {
                    self.span = Some(tracing::info_span!(
                        parent: request.id(),
                        "engine.batch",
                        events = tracing::field::Empty,
                        commands = tracing::field::Empty
                    ))
                }
            };
        }
        let span = self.span.clone().unwrap_or_else(tracing::Span::none);
        let _entered = span.enter();
        let txn = &mut self.txn;
        match command {
            Command::Ingest {
                events,
                reply,
                queued,
                ..
            } => {
                let count = events.len();
                self.events += count;
                self.size += count;
                self.queued.push(queued);
                let mut outcomes = Vec::with_capacity(count);
                for event in events {
                    match txn.apply(event, params, options) {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(e) => {
                            self.result = Err(e);
                            break;
                        }
                    }
                }
                self.replies.push(Reply::Ingest(reply, outcomes, count));
            }
            Command::PutDimension { spec, reply } => {
                self.size += 1;
                if let Err(e) = txn.batch.put_dimension(&spec) {
                    self.result = Err(e.into());
                }
                self.replies.push(Reply::Dimension(reply, spec));
            }
            Command::Acknowledge {
                id,
                note,
                rebaseline,
                reply,
            } => {
                self.size += 1;
                let outcome = txn.alerting.acknowledge(id, note, rebaseline);
                if let Err(Error::Storage(_)) = &outcome {
                    self.result = outcome
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| Error::Unavailable(format!("reading alert {id} failed: {e}")));
                }
                self.replies.push(Reply::Acknowledge(reply, outcome));
            }
            Command::Tick => {
                self.size += 1;
                if let Err(e) = txn.tick() {
                    self.result = Err(e);
                }
            }
            Command::Idle | Command::Stop => {}
        }
    }
}

/// Answers a command that will not be applied: UNAVAILABLE, as for a
/// failed commit.
fn refuse(command: Command, reason: &str) {
    let reply = match command {
        Command::Ingest { events, reply, .. } => Reply::Ingest(reply, Vec::new(), events.len()),
        Command::PutDimension { spec, reply } => Reply::Dimension(reply, spec),
        Command::Acknowledge { reply, .. } => {
            Reply::Acknowledge(reply, Err(Error::Unavailable(reason.to_string())))
        }
        Command::Tick | Command::Idle | Command::Stop => return,
    };
    reply.fail(reason);
}
