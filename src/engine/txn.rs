//! The working set of one group commit. It loads the state a commit
//! touches (reading through the commits still in flight), applies events
//! to it in order, feeds the alert monitors, and at the end writes
//! everything into one batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::alerting::Alerting;
use super::cache::CustomerCache;
use super::{EngineOptions, Map, Outcome, Set};
use crate::domain::alert::{Alert, Subject};
use crate::domain::{Body, DimensionSpec, Event, InteractionKind};
use crate::error::{Error, Result};
use crate::scoring::{Params, ScopeState, Target, ValueHistogram};
use crate::store::{CustomerRecord, RecentIds, Store, WriteBatch};

/// Overdue checks and retention deletions per tick, so a backlog never
/// makes one commit huge.
const TICK_LIMIT: usize = 1_000;

/// What one group commit produced.
pub(super) struct Committed {
    pub(super) batch: WriteBatch,
    pub(super) histogram: ValueHistogram,
    pub(super) next_sequence: u64,
    pub(super) next_alert_sequence: u64,
    pub(super) alerts: Vec<Alert>,
    /// Customers and scopes this commit creates.
    pub(super) new_customers: u64,
    pub(super) new_scopes: u64,
    /// The records it wrote, for the writer's cache (which must hold them
    /// until they are written: see `cache`).
    pub(super) customers: Map<String, Arc<CustomerRecord>>,
}

/// The working set of one group commit.
pub(super) struct Txn<'a> {
    store: &'a Store,
    cache: &'a mut CustomerCache,
    pub(super) alerting: Alerting<'a>,
    dimensions: &'a BTreeMap<String, DimensionSpec>,
    pub(super) batch: WriteBatch,
    next_sequence: u64,
    histogram: ValueHistogram,
    histogram_changed: bool,
    /// `histogram.vip_threshold`, recomputed only after the histogram
    /// changed (it walks every bucket; the churn check needs it per event).
    vip_threshold: Option<Option<i64>>,
    /// Shared with the commit that last wrote a record until it is
    /// written; changed through `Arc::make_mut`, which copies it only then.
    customers: Map<String, Arc<CustomerRecord>>,
    /// Customers looked up and not found (no second read when their first
    /// event is then accepted).
    unknown_customers: Set<String>,
    scopes: Map<String, Option<ScopeState>>,
    attribute_values: Map<String, u64>,
    new_attribute_values: Set<String>,
    new_customers: u64,
    new_scopes: u64,
    /// Accepted events, in sequence order from `first_sequence`.
    accepted: Vec<Event>,
    first_sequence: u64,
}

impl<'a> Txn<'a> {
    pub(super) fn new(
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
            unknown_customers: Set::default(),
            scopes: Map::default(),
            attribute_values: Map::default(),
            new_attribute_values: Set::default(),
            new_customers: 0,
            new_scopes: 0,
            accepted: Vec::new(),
            first_sequence: next_sequence,
        }
    }

    /// Applies one event. `Err` only for storage failures (the whole batch
    /// is then abandoned); refusals are `Ok(Outcome::Rejected)`.
    pub(super) fn apply(
        &mut self,
        event: Event,
        params: &Params,
        options: &EngineOptions,
    ) -> Result<Outcome> {
        let digest = RecentIds::digest(&event.id);
        if let Some(seq) = self.sequence_of(&event, &digest)? {
            return Ok(Outcome::Duplicate(seq));
        }
        // `all`, then one scope per attribute, in attribute order.
        let event_scopes = event.scopes();
        let attribute_scopes = || event.attributes.iter().zip(&event_scopes[1..]);
        if let Some(rejection) = self.check_attribute_cap(attribute_scopes(), options)? {
            return Ok(Outcome::Rejected(rejection));
        }
        for ((key, _), scope) in attribute_scopes() {
            if !self.scope_exists(scope)? {
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

        let new_scopes: Vec<String> = {
            let record = Arc::make_mut(
                self.customers
                    .get_mut(&event.customer)
                    .expect("loaded above"),
            );
            let mut added = Vec::new();
            for scope in &event_scopes {
                // Usually a member already, of a few scopes: equality
                // (lengths first) is cheaper than the ordering compares of
                // a binary search, which showed in the writer's profile.
                if record.scopes.len() <= 8 && record.scopes.contains(scope) {
                    continue;
                }
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
        Arc::make_mut(
            self.customers
                .get_mut(&event.customer)
                .expect("loaded above"),
        )
        .ids
        .remember(digest, seq, options.remembered_ids_per_customer);
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
        let record = Arc::make_mut(
            self.customers
                .get_mut(&event.customer)
                .expect("loaded by apply"),
        );
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
    pub(super) fn tick(&mut self) -> Result<()> {
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

    /// The sequence an event's id was accepted under, if it is remembered:
    /// among its customer's latest ids (see `RecentIds`), or in the id index
    /// of a dir written by earlier builds.
    fn sequence_of(&mut self, event: &Event, digest: &[u8; 8]) -> Result<Option<u64>> {
        if let Some(record) = self.known_customer(&event.customer)? {
            if let Some(seq) = record.ids.sequence_of(digest) {
                return Ok(Some(seq));
            }
        }
        Ok(self.store.legacy_event_sequence(&event.id)?)
    }

    /// Refuses an event that would add a value to an attribute key already
    /// at its cap, before anything is changed.
    fn check_attribute_cap<'e>(
        &mut self,
        attribute_scopes: impl Iterator<Item = (&'e (String, String), &'e String)>,
        options: &EngineOptions,
    ) -> Result<Option<Error>> {
        for ((key, _), scope) in attribute_scopes {
            if self.scope_exists(scope)? {
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

    /// The customer's record, loaded into the working set, or `None` for a
    /// customer not stored yet.
    fn known_customer(&mut self, id: &str) -> Result<Option<&CustomerRecord>> {
        if !self.customers.contains_key(id) && !self.unknown_customers.contains(id) {
            let known = match self.cache.take(id) {
                Some(record) => Some(record),
                None => self.store.customer_record(id)?.map(Arc::new),
            };
            match known {
                Some(record) => {
                    self.customers.insert(id.to_string(), record);
                }
                None => {
                    self.unknown_customers.insert(id.to_string());
                }
            }
        }
        Ok(self.customers.get(id).map(|record| &**record))
    }

    /// The customer's record in the working set; a new customer's is
    /// created.
    fn customer(&mut self, id: &str) -> Result<&mut CustomerRecord> {
        if self.known_customer(id)?.is_none() {
            self.unknown_customers.remove(id);
            self.new_customers += 1;
            self.customers.insert(id.to_string(), Arc::default());
        }
        // A copy only if the commit before still holds the record.
        Ok(Arc::make_mut(
            self.customers.get_mut(id).expect("inserted above"),
        ))
    }

    /// Writes the working set into the batch.
    pub(super) fn finish(mut self) -> Result<Committed> {
        self.batch
            .put_events(self.first_sequence, std::mem::take(&mut self.accepted));
        for (id, record) in &self.customers {
            self.batch.put_customer(id, Arc::clone(record));
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
