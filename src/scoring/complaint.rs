//! A customer's complaint cases, assembled from their steps in any order.
//!
//! A case's facts are its opening (the COMPLAINT_OPENED event with the
//! smallest (time, id)), its first response (the earliest RESPONDED time)
//! and its resolution (the earliest RESOLVED time). Each is a min over the
//! steps seen, so the facts are order-independent. What scopes get is a pure
//! function of the facts ([`Parts`]); whenever a step changes the facts,
//! the parts that changed are retracted from the old scopes and added to the
//! new ones, so the scopes end up with the same contributions whatever the
//! arrival order.

use super::decay::Decayed;
use super::params::Params;
use super::response::{tarp_rate, ComplaintOutcome};
use super::scope::{CaseResolution, CaseResponse, Delta, OpenCase, ScopeOp, ScopeUpdate, Target};
use crate::domain::{Event, Interaction, InteractionKind, Millis, Severity, MILLIS_PER_HOUR};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Cases kept per customer; beyond this the oldest is evicted.
pub const MAX_CASES: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Opened {
    at: Millis,
    event_id: String,
    severity: Severity,
    scopes: Vec<String>,
    /// Deadlines fixed when the opening is recorded, so that retracting a
    /// contribution later finds the same deadline bucket even if the SLA
    /// configuration changed in between.
    response_deadline: Millis,
    resolution_deadline: Millis,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Case {
    opened: Option<Opened>,
    responded: Option<Millis>,
    resolved: Option<Millis>,
}

/// What one case contributes to its scopes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Parts {
    scopes: Vec<String>,
    open: Option<OpenCase>,
    response: Option<CaseResponse>,
    resolution: Option<CaseResolution>,
}

fn hours_ms(hours: f64) -> Millis {
    // Validated SLAs are small positive hour counts; `as` saturates anyway.
    (hours * MILLIS_PER_HOUR).round() as Millis
}

fn min_time(current: Option<Millis>, t: Millis) -> Option<Millis> {
    Some(current.map_or(t, |c| c.min(t)))
}

impl Case {
    fn parts(&self) -> Parts {
        let Some(o) = &self.opened else {
            return Parts::default();
        };
        let open = self.resolved.is_none().then(|| OpenCase {
            opened_at: o.at,
            deadline: o.resolution_deadline,
            past_sla_rate: tarp_rate(ComplaintOutcome::OpenPastSla, o.severity),
        });
        let response = self.responded.map(|r| CaseResponse {
            opened_at: o.at,
            within_sla: r <= o.response_deadline,
        });
        let resolution = self.resolved.map(|r| {
            let within_sla = r <= o.resolution_deadline;
            let outcome = if within_sla {
                ComplaintOutcome::ResolvedWithinSla
            } else {
                ComplaintOutcome::ResolvedLate
            };
            CaseResolution {
                opened_at: o.at,
                // A resolution stamped before the opening counts as instant.
                hours: (r.saturating_sub(o.at) as f64 / MILLIS_PER_HOUR).max(0.0),
                within_sla,
                rate: tarp_rate(outcome, o.severity),
            }
        });
        Parts {
            scopes: o.scopes.clone(),
            open,
            response,
            resolution,
        }
    }

    /// The outcome known at `as_of` and its TARP rate, weighted at the
    /// opening time; `None` for a case still within its resolution SLA.
    fn recovery(&self, as_of: Millis) -> Option<(f64, Millis)> {
        let o = self.opened.as_ref()?;
        let outcome = match self.resolved {
            Some(r) if r <= o.resolution_deadline => ComplaintOutcome::ResolvedWithinSla,
            Some(_) => ComplaintOutcome::ResolvedLate,
            None if as_of >= o.resolution_deadline => ComplaintOutcome::OpenPastSla,
            None => return None,
        };
        Some((tarp_rate(outcome, o.severity), o.at))
    }

    /// Eviction order: oldest opening (or, before the opening is seen, the
    /// earliest step) first.
    fn age_key(&self) -> Millis {
        match &self.opened {
            Some(o) => o.at,
            None => self
                .responded
                .into_iter()
                .chain(self.resolved)
                .min()
                .unwrap_or(Millis::MIN),
        }
    }
}

/// Updates that turn the contributions of `old` into those of `new`.
fn diff(old: &Parts, new: &Parts, out: &mut Vec<ScopeUpdate>) {
    let moved = old.scopes != new.scopes;
    let mut emit = |scopes: &Vec<String>, op: ScopeOp| {
        out.push(ScopeUpdate {
            target: Target::Scopes(scopes.clone()),
            op,
        })
    };
    if moved || old.open != new.open {
        if let Some(c) = old.open {
            emit(&old.scopes, ScopeOp::OpenCase(Delta::Retract, c));
        }
        if let Some(c) = new.open {
            emit(&new.scopes, ScopeOp::OpenCase(Delta::Add, c));
        }
    }
    if moved || old.response != new.response {
        if let Some(c) = old.response {
            emit(&old.scopes, ScopeOp::CaseResponse(Delta::Retract, c));
        }
        if let Some(c) = new.response {
            emit(&new.scopes, ScopeOp::CaseResponse(Delta::Add, c));
        }
    }
    if moved || old.resolution != new.resolution {
        if let Some(c) = old.resolution {
            emit(&old.scopes, ScopeOp::CaseResolution(Delta::Retract, c));
        }
        if let Some(c) = new.resolution {
            emit(&new.scopes, ScopeOp::CaseResolution(Delta::Add, c));
        }
    }
}

/// What the overdue check needs of one opened case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CaseView {
    pub opened_at: Millis,
    pub severity: Severity,
    pub response_deadline: Millis,
    pub resolution_deadline: Millis,
    pub responded: bool,
    pub resolved: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Complaints {
    cases: BTreeMap<String, Case>,
}

impl Complaints {
    /// Records one complaint step; returns the scope corrections.
    pub fn apply(&mut self, ev: &Event, i: &Interaction, p: &Params) -> Vec<ScopeUpdate> {
        let Some(case_id) = &i.case_id else {
            return Vec::new();
        };
        let case = self.cases.entry(case_id.clone()).or_default();
        let before = case.parts();
        match i.kind {
            InteractionKind::ComplaintOpened => {
                let earlier = case
                    .opened
                    .as_ref()
                    .is_none_or(|o| (ev.at, ev.id.as_str()) < (o.at, o.event_id.as_str()));
                if earlier {
                    let (response, resolution) = match i.severity {
                        Severity::Minor => {
                            (p.sla.minor_response_hours, p.sla.minor_resolution_hours)
                        }
                        Severity::Major => {
                            (p.sla.major_response_hours, p.sla.major_resolution_hours)
                        }
                    };
                    case.opened = Some(Opened {
                        at: ev.at,
                        event_id: ev.id.clone(),
                        severity: i.severity,
                        scopes: ev.scopes(),
                        response_deadline: ev.at.saturating_add(hours_ms(response)),
                        resolution_deadline: ev.at.saturating_add(hours_ms(resolution)),
                    });
                }
            }
            InteractionKind::ComplaintResponded => case.responded = min_time(case.responded, ev.at),
            InteractionKind::ComplaintResolved => case.resolved = min_time(case.resolved, ev.at),
            _ => {}
        }
        let mut out = Vec::new();
        diff(&before, &case.parts(), &mut out);
        if self.cases.len() > MAX_CASES {
            self.evict_oldest(&mut out);
        }
        out
    }

    /// Drops the oldest case. Its settled contributions stay in the scopes
    /// (they are history); an open one is withdrawn, since nothing could
    /// ever close it again.
    fn evict_oldest(&mut self, out: &mut Vec<ScopeUpdate>) {
        let oldest = self
            .cases
            .iter()
            .min_by(|a, b| (a.1.age_key(), a.0).cmp(&(b.1.age_key(), b.0)))
            .map(|(id, _)| id.clone());
        if let Some(case) = oldest.and_then(|id| self.cases.remove(&id)) {
            let parts = case.parts();
            if let Some(c) = parts.open {
                out.push(ScopeUpdate {
                    target: Target::Scopes(parts.scopes),
                    op: ScopeOp::OpenCase(Delta::Retract, c),
                });
            }
        }
    }

    /// An opened case; `None` when unknown, evicted or not opened yet.
    pub fn case(&self, id: &str) -> Option<CaseView> {
        let case = self.cases.get(id)?;
        let o = case.opened.as_ref()?;
        Some(CaseView {
            opened_at: o.at,
            severity: o.severity,
            response_deadline: o.response_deadline,
            resolution_deadline: o.resolution_deadline,
            // A resolution answers the customer too.
            responded: case.responded.is_some() || case.resolved.is_some(),
            resolved: case.resolved.is_some(),
        })
    }

    /// Opened cases without a resolution.
    pub fn open_count(&self) -> u32 {
        let open = self
            .cases
            .values()
            .filter(|c| c.opened.is_some() && c.resolved.is_none())
            .count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    /// Decayed mean TARP rate over cases whose outcome is known at `as_of`,
    /// weighted by opening time.
    pub fn recovery(&self, as_of: Millis, h_ms: f64) -> Option<f64> {
        let mut d = Decayed::default();
        for (rate, at) in self.cases.values().filter_map(|c| c.recovery(as_of)) {
            d.add(rate, 1.0, at, h_ms);
        }
        d.mean()
    }
}
