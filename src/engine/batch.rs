//! The writer loop and the first stage of one group commit. A batch loads
//! the state it touches into a working set (reading through the commits
//! still in flight), applies every event in order, stages the working set
//! as one atomic batch and hands it to the commit thread (`commit`), which
//! makes it durable and only then answers the callers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::alerting::Alerting;
use super::cache::CustomerCache;
use super::commit::{unavailable, Commit, Committer, Failure, Reply, Stage};
use super::{AlertFeed, Command, Dimensions, EngineOptions, Map, Outcome, Set};
use crate::domain::alert::{Alert, Subject};
use crate::domain::{Body, DimensionSpec, Event, InteractionKind};
use crate::error::{Error, Result};
use crate::scoring::{Params, ScopeState, Target, ValueHistogram};
use crate::store::{CustomerRecord, EntityCounts, Store, WriteBatch};

/// Overdue checks and retention deletions per tick, so a backlog never
/// makes one commit huge.
const TICK_LIMIT: usize = 1_000;

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
            fail_all(vec![first], reason);
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
        if commands == 0 {
            return;
        }
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
            Ok((committed, counts))
        });
        let (committed, counts) = match staged {
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
        self.customers.put_back(committed.customers);
        if committed.batch.is_empty() && replies.is_empty() && committed.alerts.is_empty() {
            return;
        }
        let commit = Commit {
            batch: self.store.stage(committed.batch),
            replies,
            alerts: committed.alerts,
            events,
            queued,
            counts,
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

fn fail_all(commands: Vec<Command>, reason: &str) {
    for command in commands {
        match command {
            Command::Ingest { events, reply, .. } => {
                let _ = reply.send(unavailable(events.len(), reason));
            }
            Command::PutDimension { reply, .. } => {
                let _ = reply.send(Err(Error::Unavailable(reason.to_string())));
            }
            Command::Acknowledge { reply, .. } => {
                let _ = reply.send(Err(Error::Unavailable(reason.to_string())));
            }
            Command::Tick | Command::Idle | Command::Stop => {}
        }
    }
}

/// What one group commit produced.
struct Committed {
    batch: WriteBatch,
    histogram: ValueHistogram,
    next_sequence: u64,
    next_alert_sequence: u64,
    alerts: Vec<Alert>,
    /// Customers and scopes this commit creates.
    new_customers: u64,
    new_scopes: u64,
    /// The records it wrote, for the writer's cache.
    customers: Map<String, CustomerRecord>,
}

/// The working set of one group commit.
struct Txn<'a> {
    store: &'a Store,
    cache: &'a mut CustomerCache,
    alerting: Alerting<'a>,
    dimensions: &'a BTreeMap<String, DimensionSpec>,
    batch: WriteBatch,
    next_sequence: u64,
    histogram: ValueHistogram,
    histogram_changed: bool,
    /// `histogram.vip_threshold`, recomputed only after the histogram
    /// changed (it walks every bucket; the churn check needs it per event).
    vip_threshold: Option<Option<i64>>,
    customers: Map<String, CustomerRecord>,
    scopes: Map<String, Option<ScopeState>>,
    attribute_values: Map<String, u64>,
    new_attribute_values: Set<String>,
    new_ids: Map<String, u64>,
    new_customers: u64,
    new_scopes: u64,
    /// Accepted events, in sequence order from `first_sequence`.
    accepted: Vec<Event>,
    first_sequence: u64,
}

impl<'a> Txn<'a> {
    fn new(
        store: &'a Store,
        cache: &'a mut CustomerCache,
        histogram: &ValueHistogram,
        next_sequence: u64,
        alerting: Alerting<'a>,
        dimensions: &'a BTreeMap<String, DimensionSpec>,
    ) -> Self {
        Self {
            store,
            cache,
            alerting,
            dimensions,
            batch: WriteBatch::default(),
            next_sequence,
            histogram: histogram.clone(),
            histogram_changed: false,
            vip_threshold: None,
            customers: Map::default(),
            scopes: Map::default(),
            attribute_values: Map::default(),
            new_attribute_values: Set::default(),
            new_ids: Map::default(),
            new_customers: 0,
            new_scopes: 0,
            accepted: Vec::new(),
            first_sequence: next_sequence,
        }
    }

    /// Applies one event. `Err` only for storage failures (the whole batch
    /// is then abandoned); refusals are `Ok(Outcome::Rejected)`.
    fn apply(&mut self, event: Event, params: &Params, options: &EngineOptions) -> Result<Outcome> {
        if let Some(seq) = self.sequence_of(&event.id)? {
            return Ok(Outcome::Duplicate(seq));
        }
        if let Some(rejection) = self.check_attribute_cap(&event, options)? {
            return Ok(Outcome::Rejected(rejection));
        }
        for (key, value) in &event.attributes {
            let scope = crate::domain::scope_name(key, value);
            if !self.scope_exists(&scope)? {
                *self
                    .attribute_values
                    .get_mut(key)
                    .expect("loaded by the cap check") += 1;
                self.new_attribute_values.insert(key.clone());
            }
        }

        let record = self.customer(&event.customer)?;
        let old_bucket = record.state.value_bucket(params);
        let updates = record.state.apply(&event, params);
        let new_bucket = record.state.value_bucket(params);
        if old_bucket != new_bucket {
            self.histogram.replace(old_bucket, new_bucket);
            self.histogram_changed = true;
            self.vip_threshold = None;
        }

        let event_scopes = event.scopes();
        let new_scopes: Vec<String> = {
            let record = self
                .customers
                .get_mut(&event.customer)
                .expect("loaded above");
            let mut added = Vec::new();
            for scope in &event_scopes {
                if let Err(at) = record.scopes.binary_search(scope) {
                    record.scopes.insert(at, scope.clone());
                    added.push(scope.clone());
                }
            }
            added
        };
        for scope in &new_scopes {
            self.scope(scope)?.add_customer();
        }
        for update in &updates {
            let targets = match &update.target {
                Target::EventScopes => &event_scopes,
                Target::Scopes(scopes) => scopes,
            };
            for scope in targets {
                self.scope(scope)?.apply(&update.op, params);
            }
        }
        self.observe(&event, &event_scopes, &updates, params)?;

        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.batch.put_event_id(&event.id, seq)?;
        self.new_ids.insert(event.id.clone(), seq);
        self.accepted.push(event);
        Ok(Outcome::Accepted(seq))
    }

    /// Feeds the alert monitors with what one accepted event changed.
    fn observe(
        &mut self,
        event: &Event,
        event_scopes: &[String],
        updates: &[crate::scoring::ScopeUpdate],
        params: &Params,
    ) -> Result<()> {
        for update in updates {
            if update.target != Target::EventScopes {
                continue;
            }
            for scope in event_scopes {
                if let Some(Some(state)) = self.scopes.get(scope) {
                    self.alerting
                        .scope_op(scope, state, &update.op, self.dimensions)?;
                }
            }
        }
        let histogram = &self.histogram;
        let vip_threshold = *self
            .vip_threshold
            .get_or_insert_with(|| histogram.vip_threshold(params));
        let record = self
            .customers
            .get_mut(&event.customer)
            .expect("loaded by apply");
        let customer = &record.state;
        let as_of = customer.last_event_at().unwrap_or(event.at);
        let report = customer.report(as_of, params, vip_threshold);
        self.alerting.customer(
            &event.customer,
            &report,
            event.at,
            params.red_below,
            &mut record.churn_alert,
        )?;
        let customer = &record.state;
        if let Body::Interaction(i) = &event.body {
            if let (true, Some(case)) = (i.kind.is_complaint(), &i.case_id) {
                if let Some(view) = customer.complaint(case) {
                    let opened_now = i.kind == InteractionKind::ComplaintOpened;
                    self.alerting
                        .complaint(&event.customer, case, &view, opened_now, event.at)?;
                }
            }
        }
        Ok(())
    }

    /// Wall-clock work: complaints whose overdue check is due, retention.
    fn tick(&mut self) -> Result<()> {
        let now = crate::api::now_millis();
        for (raw, _due, subject) in self.store.overdue_due(now, TICK_LIMIT)? {
            // The working set may hold a newer state of the customer.
            let view = match Subject::parse_complaint_key(&subject) {
                Some((customer, case, _)) => match self.customers.get(&customer) {
                    Some(c) => c.state.complaint(&case),
                    None => self
                        .store
                        .customer(&customer)?
                        .and_then(|c| c.complaint(&case)),
                },
                None => None,
            };
            self.alerting.overdue_check(raw, &subject, view)?;
        }
        self.alerting.prune(TICK_LIMIT)?;
        Ok(())
    }

    fn sequence_of(&self, id: &str) -> Result<Option<u64>> {
        match self.new_ids.get(id) {
            Some(seq) => Ok(Some(*seq)),
            None => Ok(self.store.event_sequence(id)?),
        }
    }

    /// Refuses an event that would add a value to an attribute key already
    /// at its cap, before anything is changed.
    fn check_attribute_cap(
        &mut self,
        event: &Event,
        options: &EngineOptions,
    ) -> Result<Option<Error>> {
        for (key, value) in &event.attributes {
            let scope = crate::domain::scope_name(key, value);
            if self.scope_exists(&scope)? {
                continue;
            }
            let count = match self.attribute_values.get(key) {
                Some(count) => *count,
                None => {
                    let count = self.store.attribute_values(key)?;
                    self.attribute_values.insert(key.clone(), count);
                    count
                }
            };
            if count >= options.max_distinct_values_per_key {
                return Ok(Some(Error::ResourceExhausted {
                    field: format!("attributes[{key}]"),
                    reason: format!(
                        "attribute key `{key}` already has {count} distinct values (limit {})",
                        options.max_distinct_values_per_key
                    ),
                }));
            }
        }
        Ok(None)
    }

    fn scope_exists(&mut self, scope: &str) -> Result<bool> {
        if let Some(state) = self.scopes.get(scope) {
            return Ok(state.is_some());
        }
        let state = self.store.scope(scope)?;
        let exists = state.is_some();
        self.scopes.insert(scope.to_string(), state);
        Ok(exists)
    }

    fn scope(&mut self, scope: &str) -> Result<&mut ScopeState> {
        if !self.scopes.contains_key(scope) {
            let state = self.store.scope(scope)?;
            self.scopes.insert(scope.to_string(), state);
        }
        let slot = self.scopes.get_mut(scope).expect("inserted above");
        if slot.is_none() {
            self.new_scopes += 1;
        }
        Ok(slot.get_or_insert_with(ScopeState::default))
    }

    fn customer(&mut self, id: &str) -> Result<&mut CustomerRecord> {
        if !self.customers.contains_key(id) {
            let known = match self.cache.take(id) {
                Some(record) => Some(record),
                None => self.store.customer_record(id)?,
            };
            let record = match known {
                Some(record) => record,
                None => {
                    self.new_customers += 1;
                    CustomerRecord::default()
                }
            };
            self.customers.insert(id.to_string(), record);
        }
        Ok(self.customers.get_mut(id).expect("inserted above"))
    }

    /// Writes the working set into the batch.
    fn finish(mut self) -> Result<Committed> {
        self.batch.put_events(self.first_sequence, &self.accepted)?;
        for (id, record) in &self.customers {
            self.batch.put_customer(id, record)?;
        }
        for (name, state) in &self.scopes {
            if let Some(state) = state {
                self.batch.put_scope(name, state)?;
            }
        }
        for key in &self.new_attribute_values {
            self.batch
                .put_attribute_values(key, self.attribute_values[key])?;
        }
        if self.histogram_changed {
            self.batch.put_histogram(&self.histogram)?;
        }
        let (alerts, next_alert_sequence) = self.alerting.finish(&mut self.batch)?;
        Ok(Committed {
            batch: self.batch,
            histogram: self.histogram,
            next_sequence: self.next_sequence,
            next_alert_sequence,
            alerts,
            new_customers: self.new_customers,
            new_scopes: self.new_scopes,
            customers: self.customers,
        })
    }
}
