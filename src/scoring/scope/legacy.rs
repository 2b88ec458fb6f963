//! The scope layout of schema version 2, read once to convert a data dir
//! written by an earlier build (see `Store::open`). It kept one open-case
//! bucket per deadline minute; everything else is unchanged.

use super::super::decay::Decayed;
use super::super::dimension::DimStats;
use super::{OpenCases, ScopeState};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Field for field the stored form of version 2 (postcard is positional).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct LegacyScopeState {
    customers: u64,
    events: u64,
    responses: u64,
    satisfaction: Decayed,
    csat: Decayed,
    nps: Decayed,
    ces: Decayed,
    ces_easy: Decayed,
    advocacy: Decayed,
    intent: Decayed,
    repeat: Decayed,
    recovery_resolved: Decayed,
    /// The open-case count, which the buckets' own counts now give.
    _open_cases: u64,
    open_by_deadline: BTreeMap<i64, Decayed>,
    responded_within: Decayed,
    resolved_within: Decayed,
    hours_to_resolve: Decayed,
    dimensions: BTreeMap<String, DimStats>,
}

impl LegacyScopeState {
    /// The same state in the current layout; `h_ms` (the half-life) merges
    /// the minute buckets of one hour. Folding waits for the next event.
    pub fn into_current(self, h_ms: f64) -> ScopeState {
        ScopeState {
            customers: self.customers,
            events: self.events,
            responses: self.responses,
            satisfaction: self.satisfaction,
            csat: self.csat,
            nps: self.nps,
            ces: self.ces,
            ces_easy: self.ces_easy,
            advocacy: self.advocacy,
            intent: self.intent,
            repeat: self.repeat,
            recovery_resolved: self.recovery_resolved,
            open: OpenCases::from_minute_buckets(self.open_by_deadline, h_ms),
            responded_within: self.responded_within,
            resolved_within: self.resolved_within,
            hours_to_resolve: self.hours_to_resolve,
            dimensions: self.dimensions,
        }
    }
}

#[cfg(test)]
impl LegacyScopeState {
    /// A version-2 state with `current`'s figures and these open cases
    /// (`(deadline, past-SLA rate, opened at)`) in minute buckets.
    pub fn with_open_cases(
        current: &ScopeState,
        open: &[(crate::domain::Millis, f64, crate::domain::Millis)],
        h_ms: f64,
    ) -> Self {
        let mut open_by_deadline = BTreeMap::<i64, Decayed>::new();
        for &(deadline, rate, opened_at) in open {
            let minute = deadline.div_euclid(60_000) + i64::from(deadline % 60_000 > 0);
            open_by_deadline
                .entry(minute)
                .or_default()
                .add(rate, 1.0, opened_at, h_ms);
        }
        let c = current.clone();
        Self {
            customers: c.customers,
            events: c.events,
            responses: c.responses,
            satisfaction: c.satisfaction,
            csat: c.csat,
            nps: c.nps,
            ces: c.ces,
            ces_easy: c.ces_easy,
            advocacy: c.advocacy,
            intent: c.intent,
            repeat: c.repeat,
            recovery_resolved: c.recovery_resolved,
            _open_cases: open.len() as u64,
            open_by_deadline,
            responded_within: c.responded_within,
            resolved_within: c.resolved_within,
            hours_to_resolve: c.hours_to_resolve,
            dimensions: c.dimensions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Delta, InteractionFacts, OpenCase, ScopeOp};
    use super::*;
    use crate::scoring::Params;

    const HOUR: i64 = 3_600_000;

    fn interaction(at: i64) -> ScopeOp {
        ScopeOp::Interaction(InteractionFacts {
            at,
            dimension: None,
            service: None,
            promise: None,
            purchase: Some(false),
        })
    }

    fn open(delta: Delta, (deadline, past_sla_rate, opened_at): (i64, f64, i64)) -> ScopeOp {
        ScopeOp::OpenCase(
            delta,
            OpenCase {
                opened_at,
                deadline,
                past_sla_rate,
            },
        )
    }

    #[test]
    fn a_converted_state_reports_and_retracts_like_one_built_now() {
        let p = Params::default();
        let h = p.half_life_ms();
        // Two deadlines in one hour, one in another, one on the hour.
        let cases = [
            (10 * HOUR + 60_000, 46.0, 0),
            (10 * HOUR + 59 * 60_000 + 1, 19.0, HOUR),
            (30 * HOUR + 1, 70.0, 2 * HOUR),
            (40 * HOUR, 54.0, 3 * HOUR),
        ];
        let mut built = ScopeState::default();
        built.apply(&interaction(3 * HOUR), &p);
        for case in cases {
            built.apply(&open(Delta::Add, case), &p);
        }
        let mut converted = LegacyScopeState::with_open_cases(&built, &cases, h).into_current(h);
        let recovery = |s: &ScopeState, as_of| s.report(as_of, &[], &p).loyalty.recovery;
        let same = |a: &ScopeState, b: &ScopeState| {
            assert_eq!(a.open.count(), b.open.count());
            for as_of in [10 * HOUR, 11 * HOUR, 31 * HOUR, 40 * HOUR, 100 * HOUR] {
                match (recovery(a, as_of), recovery(b, as_of)) {
                    (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "as of {as_of}"),
                    (x, y) => assert_eq!(x, y, "as of {as_of}"),
                }
            }
        };
        same(&converted, &built);
        // Resolving cases afterwards finds their terms in the new buckets.
        for case in [cases[1], cases[2]] {
            converted.apply(&open(Delta::Retract, case), &p);
            built.apply(&open(Delta::Retract, case), &p);
        }
        same(&converted, &built);
        assert_eq!(converted.open.bucket_count(), 2);
    }
}
