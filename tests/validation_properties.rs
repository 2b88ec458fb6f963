//! Bad input, generated: wire events mixing valid values with every edge a
//! producer can send (NaN and infinities, out-of-range and extreme
//! integers, empty, overlong and control-character strings, timestamps
//! far in the past or future, out-of-range nanos, unknown enum numbers,
//! too many or malformed attributes, unconfigured or repeated dimensions).
//!
//! For every event, validation either refuses it with violations that
//! each name a field under the event's path and give a reason, or accepts
//! it as a domain event within the documented ranges (DOMAIN.md). Applying
//! whatever was accepted to the scoring core keeps every customer and
//! scope report finite and within its scale. Nothing panics.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::generate::{bad_text, bad_timestamp, mostly};
use gapwatch::domain::validate::{self, Context, FieldViolation};
use gapwatch::domain::{Body, DimensionSpec, Event, Millis, DEFAULT_DIMENSIONS};
use gapwatch::proto;
use gapwatch::scoring::{CustomerReport, CustomerState, Params, ScopeReport, ScopeState, Target};
use pbjson_types::Timestamp;
use proptest::prelude::*;

/// 2026-11-01, the validation clock.
const NOW: Millis = 1_793_491_200_000;
const DAY: i64 = 86_400_000;
/// Odds of a valid field against a bad one: most events are accepted and
/// scored.
const ODDS: u32 = 30;

fn event_id() -> BoxedStrategy<String> {
    mostly(
        ODDS,
        prop_oneof![3 => "[a-z0-9_-]{1,16}", 1 => "\\PC{1,20}"],
        bad_text(),
    )
}

/// A few customers, so that histories build up.
fn customer_id() -> BoxedStrategy<String> {
    mostly(
        ODDS,
        prop_oneof![8 => "cust-[0-2]", 1 => "\\PC{1,20}"],
        bad_text(),
    )
}

fn bad_int() -> impl Strategy<Value = i32> {
    prop_oneof![
        -3..0i32,
        11..20i32,
        any::<i32>(),
        Just(i32::MIN),
        Just(i32::MAX)
    ]
}

fn scale(lo: i32, hi: i32) -> BoxedStrategy<i32> {
    mostly(ODDS, lo..=hi, bad_int())
}

/// Finite values, extreme ones included: validation accepts them, so
/// scoring must stay finite with them.
fn valid_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0..5_000.0f64,
        2 => -1_000.0..0.0f64,
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(1e300),
        1 => Just(f64::MAX),
        1 => Just(-f64::MAX),
    ]
}

fn bad_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e9..-1e-9f64,
    ]
}

fn amount() -> BoxedStrategy<f64> {
    let valid = prop_oneof![
        6 => 0.0..5_000.0f64,
        1 => Just(0.0),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(1e300),
        2 => Just(f64::MAX),
    ];
    mostly(ODDS, valid, bad_number())
}

fn timestamp() -> BoxedStrategy<Option<Timestamp>> {
    let valid = (
        prop_oneof![
            20 => (NOW - 400 * DAY) / 1000..(NOW + 4 * 60_000) / 1000,
            1 => -2_000_000_000..0i64,
            1 => Just(0i64),
        ],
        0..1_000_000_000i32,
    )
        .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos }));
    let bad = prop_oneof![
        Just(None),
        bad_timestamp(NOW / 1000).prop_map(Some),
        Just(Some(Timestamp {
            seconds: NOW / 1000 + 3_600,
            nanos: 0
        })),
    ];
    mostly(ODDS, valid, bad)
}

fn attributes() -> BoxedStrategy<HashMap<String, String>> {
    let valid = prop::collection::hash_map(
        prop::sample::select(vec!["brand", "region", "channel"]).prop_map(String::from),
        prop_oneof![
            4 => prop::sample::select(vec!["acme", "east", "web"]).prop_map(String::from),
            1 => "\\PC{1,16}",
        ],
        0..4,
    );
    let bad = prop::collection::hash_map(
        prop_oneof!["[a-z_]{1,8}", bad_text()],
        prop_oneof!["[a-z]{1,8}", bad_text()],
        0..12,
    );
    mostly(ODDS, valid, bad)
}

fn dimension() -> BoxedStrategy<String> {
    mostly(
        ODDS,
        prop::sample::select(DEFAULT_DIMENSIONS.to_vec()).prop_map(String::from),
        bad_text(),
    )
}

fn survey() -> impl Strategy<Value = proto::Survey> {
    let rating = (
        dimension(),
        scale(1, 7),
        scale(1, 7),
        prop::option::of(scale(1, 7)),
    )
        .prop_map(
            |(dimension, expectation, perception, importance)| proto::DimensionRating {
                dimension,
                expectation,
                perception,
                importance,
            },
        );
    (
        (event_id(), customer_id(), timestamp(), attributes()),
        (
            prop::option::of(scale(1, 5)),
            prop::option::of(scale(0, 10)),
            prop::option::of(scale(1, 7)),
            prop::option::of(scale(0, 10)),
        ),
        prop::collection::vec(rating, 0..6),
    )
        .prop_map(
            |(
                (event_id, customer_id, occur_time, attributes),
                (csat, nps, ces, repurchase),
                ratings,
            )| {
                proto::Survey {
                    event_id,
                    customer_id,
                    occur_time,
                    attributes,
                    csat,
                    nps,
                    ces,
                    repurchase,
                    ratings,
                }
            },
        )
}

/// Which of the two measured pairs an interaction carries (each needs a
/// dimension).
fn measures() -> impl Strategy<Value = (String, [Option<f64>; 4])> {
    let value = || mostly(ODDS, valid_number(), bad_number());
    let dropped = || mostly(ODDS, Just(false), Just(true));
    prop_oneof![
        2 => Just((String::new(), [None; 4])),
        2 => (dimension(), value(), value(), dropped()).prop_map(|(d, standard, actual, drop)| {
            (d, [Some(standard), (!drop).then_some(actual), None, None])
        }),
        1 => (dimension(), value(), value(), dropped()).prop_map(|(d, promised, delivered, drop)| {
            (d, [None, None, Some(promised), (!drop).then_some(delivered)])
        }),
        1 => (dimension(), value(), value(), value(), value()).prop_map(|(d, a, b, c, e)| {
            (d, [Some(a), Some(b), Some(c), Some(e)])
        }),
    ]
}

fn interaction() -> impl Strategy<Value = proto::Interaction> {
    let kind = mostly(
        ODDS,
        1..=8i32,
        prop_oneof![Just(0), -3..0i32, 9..20i32, any::<i32>()],
    );
    (kind, any::<bool>())
        .prop_flat_map(|(kind, optional)| {
            // PURCHASE and RETURN need an amount, complaints a case id.
            let amount = if matches!(kind, 1 | 2) || optional {
                mostly(ODDS, amount().prop_map(Some), Just(None))
            } else {
                Just(None).boxed()
            };
            let case_id = if (4..=6).contains(&kind) || !optional {
                mostly(ODDS, event_id(), Just(String::new()))
            } else {
                mostly(ODDS, Just(String::new()), bad_text())
            };
            (
                (event_id(), customer_id(), timestamp(), attributes()),
                (
                    Just(kind),
                    amount,
                    case_id,
                    mostly(ODDS, 0..=2i32, bad_int()),
                ),
                (measures(), prop::option::of(any::<bool>())),
            )
        })
        .prop_map(
            |(
                (event_id, customer_id, occur_time, attributes),
                (kind, amount, case_id, severity),
                ((dimension, [standard, actual, promised, delivered]), lower_is_better),
            )| proto::Interaction {
                event_id,
                customer_id,
                occur_time,
                attributes,
                kind,
                amount,
                dimension,
                case_id,
                severity,
                standard,
                actual,
                promised,
                delivered,
                lower_is_better,
            },
        )
}

fn wire_event() -> impl Strategy<Value = proto::Event> {
    prop_oneof![
        10 => survey().prop_map(|s| Some(proto::event::Kind::Survey(s))),
        10 => interaction().prop_map(|i| Some(proto::event::Kind::Interaction(i))),
        1 => Just(None),
    ]
    .prop_map(|kind| proto::Event { kind })
}

fn dimensions() -> BTreeMap<String, DimensionSpec> {
    DEFAULT_DIMENSIONS
        .iter()
        .map(|name| {
            let spec = DimensionSpec {
                name: name.to_string(),
                display_name: name.to_string(),
                predicted_expectation: (*name == "responsiveness").then_some(5.5),
                standard_level: (*name == "responsiveness").then_some(5.75),
            };
            (name.to_string(), spec)
        })
        .collect()
}

/// What a domain event must satisfy once accepted (DOMAIN.md's ranges, as
/// documented on the domain types).
fn check_accepted(event: &Event) -> Result<(), TestCaseError> {
    for id in [&event.id, &event.customer] {
        prop_assert!(
            !id.is_empty() && id.len() <= validate::MAX_ID_BYTES,
            "{id:?}"
        );
        prop_assert!(!id.chars().any(char::is_control), "{id:?}");
    }
    prop_assert!(event.at <= NOW + validate::MAX_FUTURE_SKEW_MS);
    prop_assert!(event.attributes.len() <= validate::MAX_ATTRIBUTES);
    for (key, value) in &event.attributes {
        prop_assert!(validate::is_valid_name(key), "{key:?}");
        prop_assert!(!value.is_empty() && value.len() <= validate::MAX_ATTRIBUTE_VALUE_BYTES);
    }
    match &event.body {
        Body::Survey(s) => {
            prop_assert!(s.csat.is_none_or(|v| (1..=5).contains(&v)));
            prop_assert!(s.nps.is_none_or(|v| v <= 10));
            prop_assert!(s.ces.is_none_or(|v| (1..=7).contains(&v)));
            prop_assert!(s.repurchase.is_none_or(|v| v <= 10));
            let mut seen = std::collections::BTreeSet::new();
            for r in &s.ratings {
                prop_assert!(DEFAULT_DIMENSIONS.contains(&r.dimension.as_str()));
                prop_assert!(seen.insert(r.dimension.clone()), "repeated {}", r.dimension);
                prop_assert!((1..=7).contains(&r.expectation));
                prop_assert!((1..=7).contains(&r.perception));
                prop_assert!(r.importance.is_none_or(|v| (1..=7).contains(&v)));
            }
        }
        Body::Interaction(i) => {
            prop_assert!(i.amount.is_none_or(f64::is_finite));
            for m in [i.service, i.promise].into_iter().flatten() {
                prop_assert!(m.target.is_finite() && m.observed.is_finite(), "{m:?}");
            }
            if let Some(d) = &i.dimension {
                prop_assert!(DEFAULT_DIMENSIONS.contains(&d.as_str()), "{d:?}");
            }
        }
    }
    Ok(())
}

fn within(what: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<(), TestCaseError> {
    if let Some(v) = value {
        prop_assert!(
            v.is_finite() && v >= lo - 1e-9 && v <= hi + 1e-9,
            "{what} = {v}, outside {lo}..={hi}"
        );
    }
    Ok(())
}

fn finite(what: &str, value: Option<f64>) -> Result<(), TestCaseError> {
    if let Some(v) = value {
        prop_assert!(v.is_finite(), "{what} = {v}");
    }
    Ok(())
}

fn check_customer(r: &CustomerReport) -> Result<(), TestCaseError> {
    within("customer satisfaction", r.satisfaction_index, 0.0, 100.0)?;
    finite("customer loyalty", r.loyalty.index)?;
    finite("customer value", Some(r.value))?;
    Ok(())
}

fn check_scope(r: &ScopeReport) -> Result<(), TestCaseError> {
    within("scope satisfaction", r.satisfaction_index, 0.0, 100.0)?;
    finite("scope loyalty", r.loyalty.index)?;
    within("csat %", r.csat_percent, 0.0, 100.0)?;
    within("nps", r.nps, -100.0, 100.0)?;
    within("ces mean", r.ces_mean, 1.0, 7.0)?;
    within("ces easy %", r.ces_easy_percent, 0.0, 100.0)?;
    within(
        "responded within SLA %",
        r.complaints.responded_within_sla_percent,
        0.0,
        100.0,
    )?;
    within(
        "resolved within SLA %",
        r.complaints.resolved_within_sla_percent,
        0.0,
        100.0,
    )?;
    finite("hours to resolve", r.complaints.mean_hours_to_resolve)?;
    for d in &r.dimensions {
        within("mean expectation", d.mean_expectation, 1.0, 7.0)?;
        within("mean perception", d.mean_perception, 1.0, 7.0)?;
        within("total gap", d.total_gap, -6.0, 6.0)?;
        finite("understanding gap", d.understanding_gap)?;
        finite("procedure gap", d.procedure_gap)?;
        finite("perception gap", d.perception_gap)?;
        finite("importance", Some(d.importance))?;
        for g in [&d.promotion_gap, &d.behavior_gap].into_iter().flatten() {
            within("gap rate %", Some(g.rate_percent), 0.0, 100.0)?;
            finite("mean relative shortfall", Some(g.mean_relative_shortfall))?;
        }
    }
    for (dimension, weight) in &r.shortboard {
        prop_assert!(weight.is_finite() && *weight > 0.0, "{dimension}: {weight}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_wire_event_is_refused_with_its_fields_or_scored_within_range(
        events in prop::collection::vec(wire_event(), 1..32)
    ) {
        let dims = dimensions();
        let ctx = Context { now: NOW, dimensions: &dims };
        let params = Params::default();
        let mut customers: BTreeMap<String, CustomerState> = BTreeMap::new();
        let mut scopes: BTreeMap<String, ScopeState> = BTreeMap::new();
        for (i, wire) in events.iter().enumerate() {
            let prefix = format!("events[{i}]");
            match validate::event(wire, &ctx, &prefix) {
                Err(violations) => {
                    prop_assert!(!violations.is_empty());
                    for FieldViolation { field, reason } in &violations {
                        prop_assert!(
                            field.starts_with(&prefix),
                            "{field:?} is not under {prefix}"
                        );
                        prop_assert!(!reason.is_empty(), "{field}: no reason");
                    }
                }
                Ok(event) => {
                    check_accepted(&event)?;
                    let updates = customers
                        .entry(event.customer.clone())
                        .or_default()
                        .apply(&event, &params);
                    let event_scopes = event.scopes();
                    for update in &updates {
                        let targets = match &update.target {
                            Target::EventScopes => &event_scopes,
                            Target::Scopes(names) => names,
                        };
                        for name in targets {
                            scopes.entry(name.clone()).or_default().apply(&update.op, &params);
                        }
                    }
                }
            }
        }
        let specs: Vec<DimensionSpec> = dims.values().cloned().collect();
        for as_of in [NOW - 30 * DAY, NOW, NOW + 400 * DAY] {
            for customer in customers.values() {
                check_customer(&customer.report(as_of, &params, Some(0)))?;
                check_customer(&customer.report(as_of, &params, None))?;
            }
            for scope in scopes.values() {
                check_scope(&scope.report(as_of, &specs, &params))?;
            }
        }
    }
}
