//! Scope figures against hand-computed values (DOMAIN.md "Scope"):
//! survey indices, repeat purchases, complaints. Dimensions are in
//! `scoring_dimensions.rs`.

use gapwatch::domain::{
    Body, DimensionSpec, Event, Interaction, InteractionKind, Millis, Severity, Survey,
};
use gapwatch::scoring::{CustomerState, Params, ScopeReport, ScopeState, Target};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const DAY: Millis = 86_400_000;
const HOUR: Millis = 3_600_000;

/// Routes events exactly like the engine: customer state first, then each
/// update to its target scopes.
#[derive(Default)]
struct World {
    customers: HashMap<String, CustomerState>,
    scopes: BTreeMap<String, ScopeState>,
    members: BTreeSet<(String, String)>,
}

impl World {
    fn apply(&mut self, ev: &Event, p: &Params) {
        let updates = self
            .customers
            .entry(ev.customer.clone())
            .or_default()
            .apply(ev, p);
        let event_scopes = ev.scopes();
        for s in &event_scopes {
            let scope = self.scopes.entry(s.clone()).or_default();
            if self.members.insert((s.clone(), ev.customer.clone())) {
                scope.add_customer();
            }
        }
        for u in &updates {
            let targets = match &u.target {
                Target::EventScopes => &event_scopes,
                Target::Scopes(v) => v,
            };
            for s in targets {
                self.scopes.entry(s.clone()).or_default().apply(&u.op, p);
            }
        }
    }

    fn report(
        &self,
        scope: &str,
        as_of: Millis,
        dims: &[DimensionSpec],
        p: &Params,
    ) -> ScopeReport {
        self.scopes
            .get(scope)
            .unwrap_or_else(|| panic!("no scope {scope}"))
            .report(as_of, dims, p)
    }
}

fn event(id: &str, customer: &str, at: Millis, attrs: &[(&str, &str)], body: Body) -> Event {
    Event {
        id: id.into(),
        customer: customer.into(),
        at,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    }
}

fn step(id: &str, at: Millis, kind: InteractionKind, case: &str, sev: Severity) -> Event {
    let mut i = Interaction::of_kind(kind);
    i.case_id = Some(case.into());
    i.severity = sev;
    event(id, "c", at, &[], Body::Interaction(i))
}

fn assert_close(got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("expected {want}, got None"));
    assert!((got - want).abs() < 1e-6, "expected {want}, got {got}");
}

fn surveys(p: &Params, list: &[(Millis, Survey)]) -> World {
    let mut w = World::default();
    for (k, (at, s)) in list.iter().enumerate() {
        w.apply(
            &event(
                &format!("s{k}"),
                &format!("c{k}"),
                *at,
                &[],
                Body::Survey(s.clone()),
            ),
            p,
        );
    }
    w
}

#[test]
fn csat_nps_ces_figures() {
    let p = Params::default();
    let mut list = Vec::new();
    for csat in [5, 4, 3, 1] {
        list.push((
            0,
            Survey {
                csat: Some(csat),
                ..Survey::default()
            },
        ));
    }
    for nps in [10, 9, 7, 3] {
        list.push((
            0,
            Survey {
                nps: Some(nps),
                ..Survey::default()
            },
        ));
    }
    for ces in [7, 5, 2] {
        list.push((
            0,
            Survey {
                ces: Some(ces),
                ..Survey::default()
            },
        ));
    }
    let r = surveys(&p, &list).report("all", 0, &[], &p);
    // CSAT: 2 of 4 are 4–5 → 50. NPS: (2 promoters − 1 detractor)/4 → 25.
    assert_close(r.csat_percent, 50.0);
    assert_close(r.nps, 25.0);
    // CES mean (7+5+2)/3 = 4.667; easy 2 of 3 → 66.67.
    assert_close(r.ces_mean, 14.0 / 3.0);
    assert_close(r.ces_easy_percent, 200.0 / 3.0);
    // Advocacy (100+90+70+30)/4 = 72.5 is the only loyalty component.
    assert_close(r.loyalty.advocacy, 72.5);
    assert_close(r.loyalty.index, 72.5);
    assert_eq!(r.response_count, 11);
    assert_eq!(r.customer_count, 11);
    assert_eq!(r.event_count, 11);
    // Satisfaction: csat 100, 75, 50, 0 and ces 100, 66.67, 16.67.
    assert_close(
        r.satisfaction_index,
        (225.0 + 100.0 + 400.0 / 6.0 + 100.0 / 6.0) / 7.0,
    );

    // Decay: csat 5 at day 0 (weight 0.5) and csat 1 at day 30 (weight 1)
    // → 100·0.5/1.5 = 33.33.
    let w = surveys(
        &p,
        &[
            (
                30 * DAY,
                Survey {
                    csat: Some(1),
                    ..Survey::default()
                },
            ),
            (
                0,
                Survey {
                    csat: Some(5),
                    ..Survey::default()
                },
            ),
        ],
    );
    assert_close(w.report("all", 30 * DAY, &[], &p).csat_percent, 100.0 / 3.0);
}

fn purchase(id: &str, customer: &str, at: Millis, channel: &str) -> Event {
    let mut i = Interaction::of_kind(InteractionKind::Purchase);
    i.amount = Some(10.0);
    event(
        id,
        customer,
        at,
        &[("channel", channel)],
        Body::Interaction(i),
    )
}

#[test]
fn repeat_purchase_rate_with_out_of_order_first_purchase() {
    let p = Params::default();
    let mut w = World::default();
    // Customer a in order: day 0 (first, 0), day 30 (repeat, 100).
    w.apply(&purchase("a1", "a", 0, "store"), &p);
    w.apply(&purchase("a2", "a", 30 * DAY, "web"), &p);
    // Customer b out of order: day 30 arrives first, then day 0.
    w.apply(&purchase("b2", "b", 30 * DAY, "web"), &p);
    w.apply(&purchase("b1", "b", 0, "store"), &p);
    // all: 0 at day 0 (×2, weight 0.5 each), 100 at day 30 (×2, weight 1)
    // → 200/3 = 66.67.
    let r = w.report("all", 30 * DAY, &[], &p);
    assert_close(r.loyalty.activity, 200.0 / 3.0);
    assert_close(r.loyalty.index, 200.0 / 3.0);
    // web holds only the day-30 repeats (b's re-valued): 100; store only
    // the first purchases: 0.
    assert_close(
        w.report("channel=web", 30 * DAY, &[], &p).loyalty.activity,
        100.0,
    );
    assert_close(
        w.report("channel=store", 30 * DAY, &[], &p)
            .loyalty
            .activity,
        0.0,
    );
    assert_eq!(r.customer_count, 2);
    assert_eq!(r.event_count, 4);
    assert_eq!(r.response_count, 0);
}

#[test]
fn complaint_sla_figures() {
    use InteractionKind::*;
    let p = Params::default();
    let mut w = World::default();
    let events = [
        // Minor: first response 5 h (late, SLA 2 h) — corrected below.
        step("a2", 5 * HOUR, ComplaintResponded, "a", Severity::Minor),
        step("a1", 0, ComplaintOpened, "a", Severity::Minor),
        step("a3", 80 * HOUR, ComplaintResolved, "a", Severity::Minor),
        // Major: response 3 h (late, SLA 1 h), resolved in 20 h (within 24).
        step("b3", 20 * HOUR, ComplaintResolved, "b", Severity::Major),
        step("b1", 0, ComplaintOpened, "b", Severity::Major),
        step("b2", 3 * HOUR, ComplaintResponded, "b", Severity::Major),
        // Minor, still open.
        step("c1", 0, ComplaintOpened, "c", Severity::Minor),
    ];
    for e in &events {
        w.apply(e, &p);
    }
    let r = w.report("all", 48 * HOUR, &[], &p);
    assert_eq!(r.complaints.open, 1);
    assert_close(r.complaints.responded_within_sla_percent, 0.0);
    // a resolved late (80 h > 72 h), b within: 50%; hours (80+20)/2 = 50.
    assert_close(r.complaints.resolved_within_sla_percent, 50.0);
    assert_close(r.complaints.mean_hours_to_resolve, 50.0);
    // Recovery at 48 h: a late minor 70, b within major 82 → 76.
    assert_close(r.loyalty.recovery, 76.0);
    // At 72 h case c is past its deadline: (70 + 82 + 46)/3 = 66.
    assert_close(w.report("all", 72 * HOUR, &[], &p).loyalty.recovery, 66.0);
    // An earlier response for a (1 h, within 2 h) replaces the 5 h one.
    w.apply(
        &step("a4", HOUR, ComplaintResponded, "a", Severity::Minor),
        &p,
    );
    let r = w.report("all", 48 * HOUR, &[], &p);
    assert_close(r.complaints.responded_within_sla_percent, 50.0);
    // Resolving c at 10 h closes it: within → 95; (70 + 82 + 95)/3.
    w.apply(
        &step("c2", 10 * HOUR, ComplaintResolved, "c", Severity::Minor),
        &p,
    );
    let r = w.report("all", 72 * HOUR, &[], &p);
    assert_eq!(r.complaints.open, 0);
    assert_close(r.loyalty.recovery, 247.0 / 3.0);
    assert_close(r.complaints.mean_hours_to_resolve, 110.0 / 3.0);
    assert_eq!(r.event_count, 9);
}

#[test]
fn oldest_case_is_evicted_beyond_the_cap() {
    use gapwatch::scoring::complaint::MAX_CASES;
    let p = Params::default();
    let mut w = World::default();
    // MAX_CASES + 1 open minor cases, opened an hour apart, arriving newest
    // first; the one opened at 0 h is evicted and withdrawn from the scope.
    for k in (0..=MAX_CASES as i64).rev() {
        let id = format!("k{k}");
        w.apply(
            &step(
                &id,
                k * HOUR,
                InteractionKind::ComplaintOpened,
                &id,
                Severity::Minor,
            ),
            &p,
        );
    }
    let c = &w.customers["c"];
    assert_eq!(c.open_complaints() as usize, MAX_CASES);
    let r = w.report("all", 10_000 * HOUR, &[], &p);
    assert_eq!(r.complaints.open, MAX_CASES as u64);
    assert_eq!(r.event_count, MAX_CASES as u64 + 1);
    // Every remaining case is open past SLA: 46.
    assert_close(r.loyalty.recovery, 46.0);
    // A stray step for the evicted case forms a case keyed at 1 h, which
    // ties with k1 and loses on id, so it is evicted itself: nothing moves.
    w.apply(
        &step(
            "late",
            HOUR,
            InteractionKind::ComplaintResolved,
            "k0",
            Severity::Minor,
        ),
        &p,
    );
    assert_eq!(w.customers["c"].open_complaints() as usize, MAX_CASES);
    assert_eq!(
        w.report("all", 0, &[], &p).complaints.open,
        MAX_CASES as u64
    );
}
