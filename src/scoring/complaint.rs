//! A customer's complaint cases, assembled from their steps in any order.
//!
//! A case's facts are its opening (the COMPLAINT_OPENED event with the
//! smallest (time, event tag): see `event_tag`), its first response (the
//! earliest RESPONDED time) and its resolution (the earliest RESOLVED
//! time). Each is a min over the steps seen, so the facts are
//! order-independent. What scopes get is a pure function of the facts
//! (`Parts`); whenever a step changes the facts, the parts that changed
//! are retracted from the old scopes and added to the new ones, so the
//! scopes end up with the same contributions whatever the arrival order.

use super::decay::Decayed;
use super::event_tag::EventTag;
use super::params::Params;
use super::response::{tarp_rate, ComplaintOutcome};
use super::scope::{CaseResolution, CaseResponse, Delta, OpenCase, ScopeOp, ScopeUpdate, Target};
use crate::domain::{Event, Interaction, InteractionKind, Millis, Severity, MILLIS_PER_HOUR};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// Cases kept per customer; beyond this the oldest is evicted.
pub const MAX_CASES: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Opened {
    at: Millis,
    event: EventTag,
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

/// A customer's cases by id, in id order: a sorted `Vec`, not a `BTreeMap`,
/// which allocates an 11-slot node for a customer's one case (see `top_k`).
/// Stored as that map was, so records written before read unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Complaints {
    #[serde(with = "sorted_map")]
    cases: Vec<(String, Case)>,
}

impl Complaints {
    /// Records one complaint step; returns the scope corrections.
    pub fn apply(&mut self, ev: &Event, i: &Interaction, p: &Params) -> Vec<ScopeUpdate> {
        let Some(case_id) = &i.case_id else {
            return Vec::new();
        };
        let at = match self.position(case_id) {
            Ok(at) => at,
            Err(at) => {
                self.cases.insert(at, (case_id.clone(), Case::default()));
                at
            }
        };
        let case = &mut self.cases[at].1;
        let before = case.parts();
        match i.kind {
            InteractionKind::ComplaintOpened => {
                let event = EventTag::of(&ev.id);
                let earlier = case
                    .opened
                    .as_ref()
                    .is_none_or(|o| (ev.at, event) < (o.at, o.event));
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
                        event,
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
            .enumerate()
            .min_by(|(_, a), (_, b)| (a.1.age_key(), &a.0).cmp(&(b.1.age_key(), &b.0)))
            .map(|(at, _)| at);
        if let Some((_, case)) = oldest.map(|at| self.cases.remove(at)) {
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
        let case = &self.cases[self.position(id).ok()?].1;
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
            .iter()
            .map(|(_, case)| case)
            .filter(|c| c.opened.is_some() && c.resolved.is_none())
            .count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    /// Where case `id` is, or would be inserted.
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.cases
            .binary_search_by(|(case, _)| case.as_str().cmp(id))
    }

    /// Decayed mean TARP rate over cases whose outcome is known at `as_of`,
    /// weighted by opening time.
    pub fn recovery(&self, as_of: Millis, h_ms: f64) -> Option<f64> {
        let mut d = Decayed::default();
        for (rate, at) in self.cases.iter().filter_map(|(_, c)| c.recovery(as_of)) {
            d.add(rate, 1.0, at, h_ms);
        }
        d.mean()
    }
}

/// A `Vec` of entries sorted by key, (de)serialized as a map.
mod sorted_map {
    use super::*;
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        entries: &[(K, V)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(entries.iter().map(|(k, v)| (k, v)))
    }

    /// Sorted by key as read (a stored map is already); of repeated keys
    /// the first is kept.
    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<Vec<(K, V)>, D::Error>
    where
        D: Deserializer<'de>,
        K: Ord + Deserialize<'de>,
        V: Deserialize<'de>,
    {
        let mut entries = deserializer.deserialize_map(Entries::<K, V>(PhantomData))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        Ok(entries)
    }

    struct Entries<K, V>(PhantomData<(K, V)>);

    impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
        type Value = Vec<(K, V)>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // The hint comes from the stored bytes: bounded, not trusted.
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_CASES));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Body;
    use std::collections::BTreeMap;

    fn step(id: &str, case: &str, kind: InteractionKind, at: Millis) -> (Event, Interaction) {
        let interaction = Interaction {
            kind,
            amount: None,
            dimension: None,
            case_id: Some(case.into()),
            severity: Severity::Major,
            service: None,
            promise: None,
            lower_is_better: true,
        };
        let event = Event {
            id: id.into(),
            customer: "c".into(),
            at,
            attributes: vec![("region".into(), "east".into())],
            body: Body::Interaction(interaction.clone()),
        };
        (event, interaction)
    }

    #[test]
    fn cases_are_stored_as_the_map_they_were_and_found_by_id() {
        let p = Params::default();
        let mut complaints = Complaints::default();
        for (id, case, kind, at) in [
            ("e1", "k-2", InteractionKind::ComplaintOpened, 1_000),
            ("e2", "k-1", InteractionKind::ComplaintOpened, 2_000),
            ("e3", "k-3", InteractionKind::ComplaintResolved, 3_000),
            ("e4", "k-2", InteractionKind::ComplaintResponded, 4_000),
        ] {
            let (event, interaction) = step(id, case, kind, at);
            complaints.apply(&event, &interaction, &p);
        }
        let ids: Vec<&str> = complaints.cases.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["k-1", "k-2", "k-3"]);
        assert!(complaints
            .case("k-2")
            .is_some_and(|c| c.responded && !c.resolved));
        assert!(complaints.case("k-3").is_none(), "resolved, never opened");
        assert!(complaints.case("k-0").is_none());
        assert_eq!(complaints.open_count(), 2);

        // The bytes of the BTreeMap of earlier builds, both ways.
        let map: BTreeMap<String, Case> = complaints.cases.iter().cloned().collect();
        let bytes = postcard::to_allocvec(&complaints).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&(&map,)).unwrap());
        let read: Complaints = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read, complaints);
    }

    #[test]
    fn stored_entries_out_of_order_are_sorted_and_repeats_dropped() {
        let case = |at| Case {
            responded: Some(at),
            ..Case::default()
        };
        let entries = vec![("b", case(1)), ("a", case(2)), ("b", case(3))];
        let bytes = postcard::to_allocvec(&(entries,)).unwrap();
        let read: Complaints = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            read.cases,
            [("a".to_string(), case(2)), ("b".to_string(), case(1))]
        );
    }
}
