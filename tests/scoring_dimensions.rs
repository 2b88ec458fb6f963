//! Per-dimension scope figures against hand-computed values: the gaps,
//! importance, Kano class and shortboard (DOMAIN.md "Scope").

use gapwatch::domain::{
    Body, DimensionSpec, Event, Interaction, InteractionKind, Measure, Millis, Rating, Severity,
    Survey,
};
use gapwatch::scoring::scope::SurveyFacts;
use gapwatch::scoring::{CustomerState, KanoClass, Params, ScopeOp, ScopeReport, ScopeState};
use std::collections::HashMap;

/// The `all` scope of events without attributes: every update of such an
/// event targets exactly that scope.
#[derive(Default)]
struct World {
    customers: HashMap<String, CustomerState>,
    scope: ScopeState,
}

impl World {
    fn apply(&mut self, ev: &Event, p: &Params) {
        let updates = self
            .customers
            .entry(ev.customer.clone())
            .or_default()
            .apply(ev, p);
        for u in &updates {
            self.scope.apply(&u.op, p);
        }
    }

    fn report(&self, as_of: Millis, dims: &[DimensionSpec], p: &Params) -> ScopeReport {
        self.scope.report(as_of, dims, p)
    }
}

fn event(id: &str, customer: &str, at: Millis, body: Body) -> Event {
    Event {
        id: id.into(),
        customer: customer.into(),
        at,
        attributes: Vec::new(),
        body,
    }
}

fn rating(d: &str, e: u8, p: u8, i: Option<u8>) -> Rating {
    Rating {
        dimension: d.into(),
        expectation: e,
        perception: p,
        importance: i,
    }
}

fn assert_close(got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("expected {want}, got None"));
    assert!((got - want).abs() < 1e-6, "expected {want}, got {got}");
}

fn surveys(p: &Params, list: &[(Millis, Survey)]) -> World {
    let mut w = World::default();
    for (k, (at, s)) in list.iter().enumerate() {
        let id = format!("s{k}");
        w.apply(&event(&id, &id, *at, Body::Survey(s.clone())), p);
    }
    w
}

fn spec(name: &str, m: Option<f64>, s: Option<f64>) -> DimensionSpec {
    DimensionSpec {
        predicted_expectation: m,
        standard_level: s,
        ..DimensionSpec::named(name)
    }
}

fn measured(
    id: &str,
    dim: &str,
    service: Option<Measure>,
    promise: Option<Measure>,
    lower: bool,
) -> Event {
    let i = Interaction {
        kind: InteractionKind::Service,
        amount: None,
        dimension: Some(dim.into()),
        case_id: None,
        severity: Severity::Minor,
        service,
        promise,
        lower_is_better: lower,
    };
    event(id, "m", 0, Body::Interaction(i))
}

#[test]
fn dimension_gaps_and_absence() {
    let p = Params::default();
    let mut w = surveys(
        &p,
        &[
            (
                0,
                Survey {
                    ratings: vec![
                        rating("reliability", 6, 3, None),
                        rating("speed", 2, 7, None),
                    ],
                    ..Survey::default()
                },
            ),
            (
                0,
                Survey {
                    ratings: vec![
                        rating("reliability", 4, 3, None),
                        rating("empathy", 5, 5, None),
                    ],
                    ..Survey::default()
                },
            ),
        ],
    );
    let m = |target, observed| Some(Measure { target, observed });
    // Behavior: 15 vs standard 10 (missed, +50%), 8 vs 10 (met, 0).
    w.apply(
        &measured("i1", "reliability", m(10.0, 15.0), None, true),
        &p,
    );
    w.apply(&measured("i2", "reliability", m(10.0, 8.0), None, true), &p);
    // Promotion: delivered 80 of promised 100, higher is better (missed,
    // 20/100 = 0.2); 3 against a target of 0, lower is better (missed,
    // absolute 3).
    w.apply(
        &measured("i3", "reliability", None, m(100.0, 80.0), false),
        &p,
    );
    w.apply(&measured("i4", "reliability", None, m(0.0, 3.0), true), &p);
    let dims = [
        spec("reliability", Some(4.5), Some(4.0)),
        spec("empathy", None, Some(6.0)),
        spec("tangibles", Some(4.0), Some(4.0)),
    ];
    let r = w.report(0, &dims, &p);
    assert_eq!(r.dimensions.len(), 3, "speed is kept but not reported");
    let rel = &r.dimensions[0];
    assert_eq!(rel.dimension, "reliability");
    // Ē = 5, P̄ = 3, total 2; understanding |5 − 4.5| = 0.5; procedure
    // max(0, 5 − 4) = 1.
    assert_close(rel.mean_expectation, 5.0);
    assert_close(rel.mean_perception, 3.0);
    assert_close(rel.total_gap, 2.0);
    assert_close(rel.understanding_gap, 0.5);
    assert_close(rel.procedure_gap, 1.0);
    let b = rel
        .behavior_gap
        .clone()
        .unwrap_or_else(|| panic!("behavior"));
    assert_close(Some(b.rate_percent), 50.0);
    assert_close(Some(b.mean_relative_shortfall), 0.25);
    assert_eq!(b.count, 2);
    let pr = rel
        .promotion_gap
        .clone()
        .unwrap_or_else(|| panic!("promotion"));
    assert_close(Some(pr.rate_percent), 100.0);
    assert_close(Some(pr.mean_relative_shortfall), 1.6);
    // Q = 1 + 6·(1 − 0.5) = 4 → perception gap 4 − 3 = 1.
    assert_close(rel.perception_gap, 1.0);
    assert_eq!(rel.rating_count, 2);
    assert_close(Some(rel.importance), 1.0);
    // What the alert monitors read after each rating: the report's gaps.
    let gaps = w.scope.derived_gaps(&dims[0]).expect("rated");
    assert_eq!(
        (gaps.understanding, gaps.procedure, gaps.perception),
        (rel.understanding_gap, rel.procedure_gap, rel.perception_gap)
    );
    assert_eq!(gaps.rating_count, 2);
    assert!(
        w.scope.derived_gaps(&dims[2]).is_none(),
        "no tangibles data"
    );
    // empathy: Ē = P̄ = 5, no M_d, procedure max(0, 5 − 6) = 0, no measures.
    let emp = &r.dimensions[1];
    assert_close(emp.total_gap, 0.0);
    assert_eq!(emp.understanding_gap, None);
    assert_close(emp.procedure_gap, 0.0);
    assert_eq!(emp.behavior_gap, None);
    assert_eq!(emp.promotion_gap, None);
    assert_eq!(emp.perception_gap, None);
    // tangibles: no data at all; every gap absent even though M, S are set.
    let tan = &r.dimensions[2];
    assert_eq!(tan.mean_expectation, None);
    assert_eq!(tan.total_gap, None);
    assert_eq!(tan.understanding_gap, None);
    assert_eq!(tan.procedure_gap, None);
    assert_eq!(tan.rating_count, 0);
    assert_eq!(tan.kano_class, KanoClass::Unclassified);
    assert_eq!(r.shortboard, vec![("reliability".to_string(), 2.0)]);
}

/// A scope fed with `n` responses per Kano cell at the given satisfactions.
fn kano_scope(p: &Params, below: f64, at: f64, above: f64, n: usize) -> ScopeReport {
    let mut s = ScopeState::default();
    for (sat, (e, pe)) in [(below, (5, 3)), (at, (4, 4)), (above, (3, 6))] {
        for _ in 0..n {
            s.apply(
                &ScopeOp::Survey(SurveyFacts {
                    at: 0,
                    satisfaction: Some(sat),
                    csat: None,
                    nps: None,
                    ces: None,
                    repurchase: None,
                    ratings: vec![rating("assurance", e, pe, None)],
                }),
                p,
            );
        }
    }
    s.report(0, &[DimensionSpec::named("assurance")], p)
}

#[test]
fn kano_classes() {
    let p = Params::default();
    let class = |b, a, ab, n| kano_scope(&p, b, a, ab, n).dimensions[0].kano_class;
    // penalty 20, reward 10 → 20 ≥ 2·10 → BASIC.
    assert_eq!(class(40.0, 60.0, 70.0, 20), KanoClass::Basic);
    // penalty 5, reward 20 → SURPRISE.
    assert_eq!(class(55.0, 60.0, 80.0, 20), KanoClass::Surprise);
    // penalty 15, reward 15 → DESIRED.
    assert_eq!(class(45.0, 60.0, 75.0, 20), KanoClass::Desired);
    // Flat: neither positive → indifferent → Unclassified.
    assert_eq!(class(60.0, 60.0, 60.0, 20), KanoClass::Unclassified);
    // penalty 10, reward −5 → BASIC.
    assert_eq!(class(50.0, 60.0, 55.0, 20), KanoClass::Basic);
    // 19 per cell is not enough.
    assert_eq!(class(40.0, 60.0, 70.0, 19), KanoClass::Unclassified);
    assert_eq!(
        kano_scope(&p, 40.0, 60.0, 70.0, 19).dimensions[0].rating_count,
        57
    );
}

#[test]
fn shortboard_order() {
    let p = Params::default();
    let w = surveys(
        &p,
        &[(
            0,
            Survey {
                ratings: vec![
                    // gap 2, importance 1 → 2
                    rating("tangibles", 6, 4, None),
                    // gap 1, importance 4 → 4
                    rating("reliability", 5, 4, Some(4)),
                    // gap −1 → left out
                    rating("responsiveness", 3, 4, Some(7)),
                    // gap 2, importance 1 → 2, ties with tangibles
                    rating("assurance", 7, 5, Some(1)),
                    // gap 0 → left out
                    rating("empathy", 4, 4, Some(7)),
                ],
                ..Survey::default()
            },
        )],
    );
    let dims: Vec<_> = [
        "tangibles",
        "reliability",
        "responsiveness",
        "assurance",
        "empathy",
    ]
    .map(DimensionSpec::named)
    .to_vec();
    let r = w.report(0, &dims, &p);
    let want = vec![
        ("reliability".to_string(), 4.0),
        ("assurance".to_string(), 2.0),
        ("tangibles".to_string(), 2.0),
    ];
    assert_eq!(r.shortboard, want);
    assert_eq!(
        r.dimensions
            .iter()
            .map(|d| d.dimension.as_str())
            .collect::<Vec<_>>(),
        [
            "tangibles",
            "reliability",
            "responsiveness",
            "assurance",
            "empathy"
        ]
    );
}
