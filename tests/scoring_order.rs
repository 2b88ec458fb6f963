//! Order independence: every customer and scope report is the same for any
//! arrival order of the same events (DOMAIN.md "Rolling statistics").

use gapwatch::domain::{
    Body, DimensionSpec, Event, Interaction, InteractionKind, Measure, Millis, Rating, Severity,
    Survey, DEFAULT_DIMENSIONS,
};
use gapwatch::scoring::decay::Decayed;
use gapwatch::scoring::{
    CustomerReport, CustomerState, DimensionReport, MeasuredGap, Params, ScopeReport, ScopeState,
    Target, ValueHistogram,
};
use proptest::prelude::*;
use proptest::sample::subsequence;
use std::collections::{BTreeMap, BTreeSet};

const DAY: Millis = 86_400_000;
const HOUR: Millis = 3_600_000;
const BASE: Millis = 1_700_000_000_000;

/// Customer and scope states routed exactly like the engine does.
#[derive(Default)]
struct World {
    customers: BTreeMap<String, CustomerState>,
    scopes: BTreeMap<String, ScopeState>,
    members: BTreeSet<(String, String)>,
    histogram: ValueHistogram,
}

impl World {
    fn apply(&mut self, ev: &Event, p: &Params) {
        let customer = self.customers.entry(ev.customer.clone()).or_default();
        let old = customer.value_bucket(p);
        let updates = customer.apply(ev, p);
        self.histogram.replace(old, customer.value_bucket(p));
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

    fn build(events: &[Event], p: &Params) -> Self {
        let mut w = World::default();
        for e in events {
            w.apply(e, p);
        }
        w
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn same(what: &str, a: Option<f64>, b: Option<f64>) -> Result<(), TestCaseError> {
    match (a, b) {
        (None, None) => Ok(()),
        (Some(x), Some(y)) if close(x, y) => Ok(()),
        _ => Err(TestCaseError::fail(format!("{what}: {a:?} != {b:?}"))),
    }
}

fn same_customer(a: &CustomerReport, b: &CustomerReport) -> Result<(), TestCaseError> {
    same("satisfaction", a.satisfaction_index, b.satisfaction_index)?;
    same("loyalty", a.loyalty.index, b.loyalty.index)?;
    same("advocacy", a.loyalty.advocacy, b.loyalty.advocacy)?;
    same("intent", a.loyalty.intent, b.loyalty.intent)?;
    same("activity", a.loyalty.activity, b.loyalty.activity)?;
    same("recovery", a.loyalty.recovery, b.loyalty.recovery)?;
    same("value", Some(a.value), Some(b.value))?;
    prop_assert_eq!(a.health_band, b.health_band);
    prop_assert_eq!(a.at_risk, b.at_risk);
    prop_assert_eq!(a.tier, b.tier);
    prop_assert_eq!(a.nps_category, b.nps_category);
    prop_assert_eq!(a.open_complaints, b.open_complaints);
    prop_assert_eq!(a.survey_count, b.survey_count);
    prop_assert_eq!(a.interaction_count, b.interaction_count);
    prop_assert_eq!(a.purchase_count, b.purchase_count);
    prop_assert_eq!(a.last_event_at, b.last_event_at);
    Ok(())
}

fn same_gap(
    what: &str,
    a: &Option<MeasuredGap>,
    b: &Option<MeasuredGap>,
) -> Result<(), TestCaseError> {
    same(
        what,
        a.as_ref().map(|g| g.rate_percent),
        b.as_ref().map(|g| g.rate_percent),
    )?;
    same(
        what,
        a.as_ref().map(|g| g.mean_relative_shortfall),
        b.as_ref().map(|g| g.mean_relative_shortfall),
    )?;
    prop_assert_eq!(a.as_ref().map(|g| g.count), b.as_ref().map(|g| g.count));
    Ok(())
}

fn same_dimension(a: &DimensionReport, b: &DimensionReport) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.dimension, &b.dimension);
    same("E", a.mean_expectation, b.mean_expectation)?;
    same("P", a.mean_perception, b.mean_perception)?;
    same("total", a.total_gap, b.total_gap)?;
    same_gap("promotion", &a.promotion_gap, &b.promotion_gap)?;
    same("understanding", a.understanding_gap, b.understanding_gap)?;
    same("procedure", a.procedure_gap, b.procedure_gap)?;
    same_gap("behavior", &a.behavior_gap, &b.behavior_gap)?;
    same("perception", a.perception_gap, b.perception_gap)?;
    same("importance", Some(a.importance), Some(b.importance))?;
    prop_assert_eq!(a.kano_class, b.kano_class);
    prop_assert_eq!(a.rating_count, b.rating_count);
    Ok(())
}

fn same_scope(a: &ScopeReport, b: &ScopeReport) -> Result<(), TestCaseError> {
    same("satisfaction", a.satisfaction_index, b.satisfaction_index)?;
    same("loyalty", a.loyalty.index, b.loyalty.index)?;
    same("advocacy", a.loyalty.advocacy, b.loyalty.advocacy)?;
    same("intent", a.loyalty.intent, b.loyalty.intent)?;
    same("repeat", a.loyalty.activity, b.loyalty.activity)?;
    same("recovery", a.loyalty.recovery, b.loyalty.recovery)?;
    same("csat", a.csat_percent, b.csat_percent)?;
    same("nps", a.nps, b.nps)?;
    same("ces", a.ces_mean, b.ces_mean)?;
    same("ces easy", a.ces_easy_percent, b.ces_easy_percent)?;
    prop_assert_eq!(a.complaints.open, b.complaints.open);
    let (ca, cb) = (&a.complaints, &b.complaints);
    same(
        "responded",
        ca.responded_within_sla_percent,
        cb.responded_within_sla_percent,
    )?;
    same(
        "resolved",
        ca.resolved_within_sla_percent,
        cb.resolved_within_sla_percent,
    )?;
    same("hours", ca.mean_hours_to_resolve, cb.mean_hours_to_resolve)?;
    prop_assert_eq!(a.response_count, b.response_count);
    prop_assert_eq!(a.customer_count, b.customer_count);
    prop_assert_eq!(a.event_count, b.event_count);
    prop_assert_eq!(a.dimensions.len(), b.dimensions.len());
    for (x, y) in a.dimensions.iter().zip(&b.dimensions) {
        same_dimension(x, y)?;
    }
    // Mathematically tied weights may order differently after rounding, so
    // compare the ranking as a set and check each is sorted.
    let by_name = |s: &[(String, f64)]| s.iter().cloned().collect::<BTreeMap<_, _>>();
    let (na, nb) = (by_name(&a.shortboard), by_name(&b.shortboard));
    prop_assert_eq!(na.keys().collect::<Vec<_>>(), nb.keys().collect::<Vec<_>>());
    for (k, v) in &na {
        same(k, Some(*v), nb.get(k).copied())?;
    }
    for s in [&a.shortboard, &b.shortboard] {
        prop_assert!(s.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    Ok(())
}

fn rating_strategy() -> impl Strategy<Value = Vec<Rating>> {
    let dims: Vec<&'static str> = DEFAULT_DIMENSIONS.to_vec();
    (
        subsequence(dims, 0..=5),
        prop::collection::vec((1..=7u8, 1..=7u8, prop::option::of(1..=7u8)), 5),
    )
        .prop_map(|(names, values)| {
            names
                .into_iter()
                .zip(values)
                .map(|(d, (e, p, i))| Rating {
                    dimension: d.to_string(),
                    expectation: e,
                    perception: p,
                    importance: i,
                })
                .collect()
        })
}

fn survey_strategy() -> impl Strategy<Value = Body> {
    (
        prop::option::of(1..=5u8),
        prop::option::of(0..=10u8),
        prop::option::of(1..=7u8),
        prop::option::of(0..=10u8),
        rating_strategy(),
    )
        .prop_map(|(csat, nps, ces, repurchase, ratings)| {
            let mut s = Survey {
                csat,
                nps,
                ces,
                repurchase,
                ratings,
            };
            if s == Survey::default() {
                s.csat = Some(3);
            }
            Body::Survey(s)
        })
}

fn measure() -> impl Strategy<Value = Option<Measure>> {
    prop::option::of((0..=3u8, 0.0..30.0f64).prop_map(|(t, observed)| Measure {
        // Target 0 exercises the absolute shortfall.
        target: f64::from(t) * 5.0,
        observed,
    }))
}

fn interaction_strategy() -> impl Strategy<Value = Body> {
    use InteractionKind::*;
    let kinds = prop::sample::select(vec![
        Purchase,
        Purchase,
        Return,
        Service,
        ComplaintOpened,
        ComplaintOpened,
        ComplaintResponded,
        ComplaintResolved,
        FollowUp,
        Cancellation,
    ]);
    (
        kinds,
        0.0..1000.0f64,
        prop::sample::select(DEFAULT_DIMENSIONS.to_vec()),
        0..4u8,
        any::<bool>(),
        measure(),
        measure(),
        any::<bool>(),
    )
        .prop_map(
            |(kind, amount, dim, case, major, service, promise, lower)| {
                let measured = service.is_some() || promise.is_some();
                Body::Interaction(Interaction {
                    kind,
                    amount: matches!(kind, Purchase | Return).then_some(amount),
                    dimension: measured.then(|| dim.to_string()),
                    case_id: kind.is_complaint().then(|| format!("k{case}")),
                    severity: if major {
                        Severity::Major
                    } else {
                        Severity::Minor
                    },
                    service,
                    promise,
                    lower_is_better: lower,
                })
            },
        )
}

fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
    let one = (
        0..3u8,
        // Coarse days make ties on event time common; hours spread SLAs.
        0..40i64,
        0..80i64,
        prop::option::of(prop::sample::select(vec!["store", "web"])),
        prop::option::of(prop::sample::select(vec!["east", "west"])),
        prop_oneof![survey_strategy(), interaction_strategy()],
    );
    prop::collection::vec(one, 1..=60).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(k, (c, day, hour, channel, region, body))| {
                let mut attributes = Vec::new();
                if let Some(v) = channel {
                    attributes.push(("channel".to_string(), v.to_string()));
                }
                if let Some(v) = region {
                    attributes.push(("region".to_string(), v.to_string()));
                }
                Event {
                    id: format!("e{k:02}"),
                    customer: format!("c{c}"),
                    at: BASE + day * 5 * DAY + hour * HOUR,
                    attributes,
                    body,
                }
            })
            .collect()
    })
}

fn dims() -> Vec<DimensionSpec> {
    DEFAULT_DIMENSIONS
        .iter()
        .enumerate()
        .map(|(k, name)| DimensionSpec {
            predicted_expectation: Some(3.0 + k as f64 * 0.5),
            standard_level: (k % 2 == 0).then_some(4.0),
            ..DimensionSpec::named(name)
        })
        .collect()
}

fn shuffled() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    events_strategy().prop_flat_map(|evs| (Just(evs.clone()), Just(evs).prop_shuffle()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn reports_do_not_depend_on_arrival_order((events, reordered) in shuffled()) {
        let p = Params::default();
        let dims = dims();
        let a = World::build(&events, &p);
        let b = World::build(&reordered, &p);
        prop_assert_eq!(&a.histogram, &b.histogram);
        let threshold = a.histogram.vip_threshold(&p);
        prop_assert_eq!(threshold, b.histogram.vip_threshold(&p));
        prop_assert_eq!(a.customers.len(), b.customers.len());
        prop_assert_eq!(a.scopes.keys().collect::<Vec<_>>(), b.scopes.keys().collect::<Vec<_>>());
        // Mid-range as_of exercises events after as_of; the late one, all
        // deadlines past.
        for as_of in [BASE + 100 * DAY, BASE + 210 * DAY] {
            for (id, ca) in &a.customers {
                let cb = &b.customers[id];
                same_customer(&ca.report(as_of, &p, threshold), &cb.report(as_of, &p, threshold))?;
            }
            for (name, sa) in &a.scopes {
                same_scope(&sa.report(as_of, &dims, &p), &b.scopes[name].report(as_of, &dims, &p))?;
            }
        }
    }

    #[test]
    fn decayed_add_order_does_not_matter(
        (obs, reordered) in prop::collection::vec((-100.0..100.0f64, 0.1..10.0f64, 0..200i64), 1..40)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let h = 30.0 * DAY as f64;
        let fill = |v: &[(f64, f64, i64)]| {
            let mut d = Decayed::default();
            for (x, w, t) in v {
                d.add(*x, *w, t * DAY, h);
            }
            d
        };
        let (a, b) = (fill(&obs), fill(&reordered));
        same("mean", a.mean(), b.mean())?;
        same("weight", Some(a.weight()), Some(b.weight()))?;
        same("sum", Some(a.sum_at(300 * DAY, h)), Some(b.sum_at(300 * DAY, h)))?;
    }

    #[test]
    fn decayed_retract_undoes_add(
        obs in prop::collection::vec((-100.0..100.0f64, 0.1..10.0f64, 0..200i64), 1..40),
        (x, w, t) in (-100.0..100.0f64, 0.1..10.0f64, 0..200i64),
    ) {
        let h = 30.0 * DAY as f64;
        let mut d = Decayed::default();
        for (x, w, t) in &obs {
            d.add(*x, *w, t * DAY, h);
        }
        let before = d.mean();
        d.add(x, w, t * DAY, h);
        d.retract(x, w, t * DAY, h);
        same("mean", before, d.mean())?;
        prop_assert_eq!(d.count(), obs.len() as u64);
    }

    #[test]
    fn histogram_does_not_depend_on_insertion_order(
        (buckets, reordered) in prop::collection::vec(prop::option::of(-50..50i64), 0..40)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let fill = |v: &[Option<i64>]| {
            let mut h = ValueHistogram::default();
            for b in v {
                h.replace(None, *b);
            }
            h
        };
        let (a, b) = (fill(&buckets), fill(&reordered));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.customers(), buckets.iter().flatten().count() as u64);
        prop_assert_eq!(a.vip_threshold(&Params::default()), b.vip_threshold(&Params::default()));
    }
}
