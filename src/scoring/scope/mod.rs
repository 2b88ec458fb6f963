//! Scope (segment) state: what every scope an event counts in accumulates.
//!
//! A scope never sees events directly: the customer state turns each event
//! into [`ScopeOp`]s (see `customer`), so facts that need the customer's
//! history (is this purchase a repeat? did this complaint meet its SLA?) are
//! decided once, and corrections for out-of-order arrival are explicit ops.

mod legacy;
mod open_cases;

pub use legacy::LegacyScopeState;
use open_cases::OpenCases;

use super::decay::Decayed;
use super::dimension::{self, DimStats, Shortfall};
use super::params::Params;
use super::report::{ComplaintReport, Loyalty, ScopeReport};
use super::response::{advocacy_score, ces_easy, csat_satisfied, weighted_mean};
use crate::domain::{DimensionSpec, Millis, Rating};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which scopes an update applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// The scopes of the event just applied (`Event::scopes()`).
    EventScopes,
    /// Explicit scopes: those of a complaint's opening event or of an
    /// earlier first purchase.
    Scopes(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScopeUpdate {
    pub target: Target,
    pub op: ScopeOp,
}

/// Whether a complaint contribution is added or taken back (when a later
/// arriving step changes a case's facts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta {
    Add,
    Retract,
}

/// One survey response, with its satisfaction computed once.
#[derive(Clone, Debug, PartialEq)]
pub struct SurveyFacts {
    pub at: Millis,
    pub satisfaction: Option<f64>,
    pub csat: Option<u8>,
    pub nps: Option<u8>,
    pub ces: Option<u8>,
    pub repurchase: Option<u8>,
    pub ratings: Vec<Rating>,
}

/// One interaction of any kind.
#[derive(Clone, Debug, PartialEq)]
pub struct InteractionFacts {
    pub at: Millis,
    pub dimension: Option<String>,
    /// `standard` vs `actual` (behavior gap).
    pub service: Option<Shortfall>,
    /// `promised` vs `delivered` (promotion gap).
    pub promise: Option<Shortfall>,
    /// `Some(repeat)` for a PURCHASE.
    pub purchase: Option<bool>,
}

/// A complaint known to be open (opened, no resolution seen).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenCase {
    pub opened_at: Millis,
    /// Resolution deadline.
    pub deadline: Millis,
    /// TARP rate should it stay open past the deadline.
    pub past_sla_rate: f64,
}

/// A complaint's first response (paired with its opening).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaseResponse {
    pub opened_at: Millis,
    pub within_sla: bool,
}

/// A complaint's resolution (paired with its opening).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaseResolution {
    pub opened_at: Millis,
    pub hours: f64,
    pub within_sla: bool,
    /// TARP rate of the outcome.
    pub rate: f64,
}

/// Every change a scope needs. `Survey` and `Interaction` are emitted once
/// per event (and count it); the rest are corrections and complaint facts,
/// all weighted at the complaint's opening time so retracting a fact finds
/// exactly the term that was added.
#[derive(Clone, Debug, PartialEq)]
pub enum ScopeOp {
    Survey(SurveyFacts),
    Interaction(InteractionFacts),
    /// An earlier first purchase at `at` turned out to be a repeat.
    PurchaseBecameRepeat {
        at: Millis,
    },
    OpenCase(Delta, OpenCase),
    CaseResponse(Delta, CaseResponse),
    CaseResolution(Delta, CaseResolution),
}

fn pct(b: bool) -> f64 {
    if b {
        100.0
    } else {
        0.0
    }
}

fn change(d: &mut Decayed, delta: Delta, x: f64, t: Millis, h_ms: f64) {
    match delta {
        Delta::Add => d.add(x, 1.0, t, h_ms),
        Delta::Retract => d.retract(x, 1.0, t, h_ms),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeState {
    customers: u64,
    events: u64,
    responses: u64,
    satisfaction: Decayed,
    /// 100 for csat 4–5, else 0.
    csat: Decayed,
    /// +100 / 0 / −100 per NPS answer.
    nps: Decayed,
    ces: Decayed,
    /// 100 for ces 5–7, else 0.
    ces_easy: Decayed,
    /// 10·nps.
    advocacy: Decayed,
    /// 10·repurchase.
    intent: Decayed,
    /// 100 for a repeat purchase, else 0.
    repeat: Decayed,
    /// TARP rates of resolved complaints.
    recovery_resolved: Decayed,
    /// Open complaints, so `report` can count those past their deadline.
    open: OpenCases,
    responded_within: Decayed,
    resolved_within: Decayed,
    hours_to_resolve: Decayed,
    /// Every rated or measured dimension, configured or not.
    dimensions: BTreeMap<String, DimStats>,
}

impl ScopeState {
    /// Counts a customer new to this scope (the engine tracks membership).
    pub fn add_customer(&mut self) {
        self.customers += 1;
    }

    pub fn customer_count(&self) -> u64 {
        self.customers
    }

    pub fn event_count(&self) -> u64 {
        self.events
    }

    pub fn apply(&mut self, op: &ScopeOp, p: &Params) {
        let h = p.half_life_ms();
        match op {
            ScopeOp::Survey(s) => self.survey(s, h),
            ScopeOp::Interaction(i) => self.interaction(i, h),
            ScopeOp::PurchaseBecameRepeat { at } => self.repeat.add_to_sum(100.0, *at, h),
            ScopeOp::OpenCase(delta, c) => {
                self.open
                    .change(*delta, c.deadline, c.past_sla_rate, c.opened_at, h)
            }
            ScopeOp::CaseResponse(delta, c) => {
                change(
                    &mut self.responded_within,
                    *delta,
                    pct(c.within_sla),
                    c.opened_at,
                    h,
                );
            }
            ScopeOp::CaseResolution(delta, c) => {
                change(
                    &mut self.resolved_within,
                    *delta,
                    pct(c.within_sla),
                    c.opened_at,
                    h,
                );
                change(&mut self.hours_to_resolve, *delta, c.hours, c.opened_at, h);
                change(&mut self.recovery_resolved, *delta, c.rate, c.opened_at, h);
            }
        }
    }

    fn survey(&mut self, s: &SurveyFacts, h: f64) {
        let at = s.at;
        self.events += 1;
        self.open.event_seen(at, h);
        self.responses += 1;
        if let Some(sat) = s.satisfaction {
            self.satisfaction.add(sat, 1.0, at, h);
        }
        if let Some(c) = s.csat {
            self.csat.add(pct(csat_satisfied(c)), 1.0, at, h);
        }
        if let Some(n) = s.nps {
            self.nps.add(advocacy_score(n), 1.0, at, h);
            self.advocacy.add(10.0 * f64::from(n), 1.0, at, h);
        }
        if let Some(c) = s.ces {
            self.ces.add(f64::from(c), 1.0, at, h);
            self.ces_easy.add(pct(ces_easy(c)), 1.0, at, h);
        }
        if let Some(r) = s.repurchase {
            self.intent.add(10.0 * f64::from(r), 1.0, at, h);
        }
        for r in &s.ratings {
            self.dimensions
                .entry(r.dimension.clone())
                .or_default()
                .rate(r, s.satisfaction, at, h);
        }
    }

    fn interaction(&mut self, i: &InteractionFacts, h: f64) {
        self.events += 1;
        self.open.event_seen(i.at, h);
        if let Some(repeat) = i.purchase {
            self.repeat.add(pct(repeat), 1.0, i.at, h);
        }
        if let Some(d) = &i.dimension {
            if i.service.is_some() || i.promise.is_some() {
                let stats = self.dimensions.entry(d.clone()).or_default();
                if let Some(s) = i.service {
                    stats.service(s, i.at, h);
                }
                if let Some(s) = i.promise {
                    stats.promise(s, i.at, h);
                }
            }
        }
    }

    /// Recovery: resolved complaints plus open ones past their deadline at
    /// `as_of`.
    fn recovery(&self, as_of: Millis, h: f64) -> Option<f64> {
        self.recovery_resolved
            .merged(&self.open.past_due(as_of, h), h)
            .mean()
    }

    /// The report of one dimension, `None` before it was rated or measured.
    /// [`DimStats::derived_gaps`] of one dimension, if it has data.
    pub fn derived_gaps(&self, spec: &DimensionSpec) -> Option<dimension::DerivedGaps> {
        self.dimensions
            .get(&spec.name)
            .map(|d| d.derived_gaps(spec))
    }

    pub fn report(&self, as_of: Millis, dims: &[DimensionSpec], p: &Params) -> ScopeReport {
        let h = p.half_life_ms();
        let w = &p.loyalty_weights;
        let mut loyalty = Loyalty {
            index: None,
            advocacy: self.advocacy.mean(),
            intent: self.intent.mean(),
            activity: self.repeat.mean(),
            recovery: self.recovery(as_of, h),
        };
        loyalty.index = weighted_mean(&[
            (loyalty.advocacy, w.advocacy),
            (loyalty.intent, w.intent),
            (loyalty.activity, w.activity),
            (loyalty.recovery, w.recovery),
        ]);
        let dimensions: Vec<_> = dims
            .iter()
            .map(|spec| match self.dimensions.get(&spec.name) {
                Some(stats) => stats.report(spec),
                None => dimension::empty_report(spec),
            })
            .collect();
        let mut shortboard: Vec<(String, f64)> = dimensions
            .iter()
            .filter_map(|d| {
                let weight = d.importance * d.total_gap?.max(0.0);
                (weight > 0.0).then(|| (d.dimension.clone(), weight))
            })
            .collect();
        shortboard.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ScopeReport {
            satisfaction_index: self.satisfaction.mean(),
            loyalty,
            csat_percent: self.csat.mean(),
            nps: self.nps.mean(),
            ces_mean: self.ces.mean(),
            ces_easy_percent: self.ces_easy.mean(),
            complaints: ComplaintReport {
                open: self.open.count(),
                responded_within_sla_percent: self.responded_within.mean(),
                resolved_within_sla_percent: self.resolved_within.mean(),
                mean_hours_to_resolve: self.hours_to_resolve.mean(),
            },
            response_count: self.responses,
            customer_count: self.customers,
            event_count: self.events,
            dimensions,
            shortboard,
        }
    }
}
