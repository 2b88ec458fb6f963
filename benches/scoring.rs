//! The scoring core alone: no gRPC, no validation, no sled, no alerting.
//!
//! `cargo bench --bench scoring` measures, on one core:
//!
//! - `apply_event`: what the writer does per event in memory —
//!   `CustomerState::apply`, then `ScopeState::apply` of every update on
//!   its scopes (`all`, `brand=…`, `region=…`) — over the event mix of
//!   `gapwatch demo` (purchases, returns, surveys rating the five SERVQUAL
//!   dimensions, service times, deliveries, complaints with their steps,
//!   cancellations), applied to a warm state of 10,000 customers.
//! - `score_query/customer`: `CustomerState::report` of a warm customer.
//! - `score_query/scope`: `ScopeState::report` of the `all` scope with the
//!   five dimensions configured.
//!
//! Throughput is reported in elements (events or reports) per second.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use gapwatch::domain::{
    Body, DimensionSpec, Event, Interaction, InteractionKind, Measure, Millis, Rating, Severity,
    Survey, DEFAULT_DIMENSIONS,
};
use gapwatch::scoring::{CustomerState, Params, ScopeState, Target};

const CUSTOMERS: usize = 10_000;
/// Events applied before measuring, so states hold realistic histories.
const WARM_EVENTS: usize = 100_000;
/// Events applied per measured iteration.
const BATCH: usize = 4_096;
const BRANDS: [&str; 3] = ["acme", "globex", "initech"];
const REGIONS: [&str; 4] = ["east", "west", "north", "south"];
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: f64 = 3_600_000.0;
/// 2026-09-23: the events span the 90 days before it.
const END_MS: Millis = 1_790_000_000_000;

/// A generator with the demo's mix, producing validated domain events.
struct Mix {
    rng: SmallRng,
    customers: Vec<(String, &'static str, &'static str, f64)>,
    produced: usize,
    total: usize,
    /// (due, customer, case, kind), kept sorted by due time descending.
    follow_ups: Vec<(Millis, usize, String, InteractionKind)>,
}

impl Mix {
    fn new(total: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(42);
        let customers = (0..CUSTOMERS)
            .map(|i| {
                (
                    format!("cust-{i:06}"),
                    BRANDS[rng.random_range(0..BRANDS.len())],
                    REGIONS[rng.random_range(0..REGIONS.len())],
                    20.0 / (1.0 - rng.random::<f64>()).powf(1.0 / 1.16),
                )
            })
            .collect();
        Self {
            rng,
            customers,
            produced: 0,
            total,
            follow_ups: Vec::new(),
        }
    }

    fn now(&self) -> Millis {
        let start = END_MS - 90 * DAY_MS;
        start + (self.produced as f64 / self.total as f64 * 90.0 * DAY_MS as f64) as i64
    }

    fn event(&self, c: usize, at: Millis, body: Body) -> Event {
        let (id, brand, region, _) = &self.customers[c];
        Event {
            id: format!("bench-{}", self.produced),
            customer: id.clone(),
            at,
            attributes: vec![
                ("brand".to_string(), (*brand).to_string()),
                ("region".to_string(), (*region).to_string()),
            ],
            body,
        }
    }

    fn next_event(&mut self) -> Event {
        let at = self.now();
        let event = if self.follow_ups.last().is_some_and(|f| f.0 <= at) {
            let (due, c, case, kind) = self.follow_ups.pop().expect("checked");
            let mut i = Interaction::of_kind(kind);
            i.case_id = Some(case);
            self.event(c, due, Body::Interaction(i))
        } else {
            let c = self.rng.random_range(0..CUSTOMERS);
            let basket = self.customers[c].3;
            let roll: f64 = self.rng.random();
            let body = if roll < 0.39 {
                let mut i = Interaction::of_kind(InteractionKind::Purchase);
                i.amount = Some(basket * self.rng.random_range(0.5..1.5));
                Body::Interaction(i)
            } else if roll < 0.41 {
                let mut i = Interaction::of_kind(InteractionKind::Return);
                i.amount = Some(basket / 2.0);
                Body::Interaction(i)
            } else if roll < 0.66 {
                let rng = &mut self.rng;
                let ratings: Vec<Rating> = DEFAULT_DIMENSIONS
                    .iter()
                    .map(|d| {
                        let expectation = rng.random_range(5..=7u8);
                        let perception = (f64::from(expectation) + rng.random_range(-1.5..1.0))
                            .round()
                            .clamp(1.0, 7.0) as u8;
                        Rating {
                            dimension: (*d).to_string(),
                            expectation,
                            perception,
                            importance: Some(rng.random_range(3..=7)),
                        }
                    })
                    .collect();
                let mood: u8 = rng.random_range(1..=5);
                Body::Survey(Survey {
                    csat: Some(mood),
                    nps: Some((mood * 2).min(10)),
                    ces: Some((mood + 2).min(7)),
                    repurchase: Some(mood * 2),
                    ratings,
                })
            } else if roll < 0.84 {
                let mut i = Interaction::of_kind(InteractionKind::Service);
                i.dimension = Some("responsiveness".into());
                i.service = Some(Measure {
                    target: 30.0,
                    observed: self.rng.random_range(10.0..40.0f64).round(),
                });
                Body::Interaction(i)
            } else if roll < 0.96 {
                let mut i = Interaction::of_kind(InteractionKind::Service);
                i.dimension = Some("reliability".into());
                i.promise = Some(Measure {
                    target: 3.0,
                    observed: f64::from(self.rng.random_range(2..=5)),
                });
                Body::Interaction(i)
            } else if roll < 0.99 {
                let case = format!("case-{}", self.produced);
                let major = self.rng.random::<f64>() < 0.3;
                let sla = if major { 1.0 } else { 2.0 };
                let responded = self.rng.random_range(0.05..2.0) * sla;
                let resolved = responded + self.rng.random_range(1.0..48.0);
                for (hours, kind) in [
                    (responded, InteractionKind::ComplaintResponded),
                    (resolved, InteractionKind::ComplaintResolved),
                ] {
                    self.follow_ups
                        .push((at + (hours * HOUR_MS) as i64, c, case.clone(), kind));
                }
                self.follow_ups.sort_by_key(|f| std::cmp::Reverse(f.0));
                let mut i = Interaction::of_kind(InteractionKind::ComplaintOpened);
                i.case_id = Some(case);
                i.dimension = Some("responsiveness".into());
                i.severity = if major {
                    Severity::Major
                } else {
                    Severity::Minor
                };
                Body::Interaction(i)
            } else {
                Body::Interaction(Interaction::of_kind(InteractionKind::Cancellation))
            };
            self.event(c, at, body)
        };
        self.produced += 1;
        event
    }
}

/// Customer and scope states, as the writer's working set holds them.
#[derive(Clone, Default)]
struct States {
    customers: HashMap<String, CustomerState>,
    scopes: HashMap<String, ScopeState>,
}

impl States {
    fn apply(&mut self, event: &Event, p: &Params) {
        let updates = self
            .customers
            .entry(event.customer.clone())
            .or_default()
            .apply(event, p);
        let event_scopes = event.scopes();
        for update in &updates {
            let targets = match &update.target {
                Target::EventScopes => &event_scopes,
                Target::Scopes(scopes) => scopes,
            };
            for scope in targets {
                match self.scopes.get_mut(scope) {
                    Some(state) => state.apply(&update.op, p),
                    None => self
                        .scopes
                        .entry(scope.clone())
                        .or_default()
                        .apply(&update.op, p),
                }
            }
        }
    }
}

fn dimensions() -> Vec<DimensionSpec> {
    DEFAULT_DIMENSIONS
        .iter()
        .map(|d| {
            let mut spec = DimensionSpec::named(d);
            if *d == "responsiveness" {
                spec.predicted_expectation = Some(5.5);
                spec.standard_level = Some(5.75);
            }
            spec
        })
        .collect()
}

fn scoring(c: &mut Criterion) {
    let p = Params::default();
    // Enough batches that every sample applies events not seen before.
    let batches = 64;
    let mut mix = Mix::new(WARM_EVENTS + batches * BATCH);
    let mut warm = States::default();
    for _ in 0..WARM_EVENTS {
        let e = mix.next_event();
        warm.apply(&e, &p);
    }
    let fresh: Vec<Vec<Event>> = (0..batches)
        .map(|_| (0..BATCH).map(|_| mix.next_event()).collect())
        .collect();

    let mut group = c.benchmark_group("apply_event");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0usize;
    group.bench_function("customer_and_scopes", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % fresh.len();
                (warm.clone(), &fresh[next])
            },
            |(mut states, events)| {
                for e in events {
                    states.apply(e, &p);
                }
                states
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let as_of = END_MS;
    let dims = dimensions();
    // The customer with the most history: the expensive end of a query.
    let busiest = warm
        .customers
        .values()
        .max_by_key(|c| {
            let r = c.report(as_of, &p, None);
            r.survey_count + r.interaction_count
        })
        .expect("customers")
        .clone();
    let all = warm.scopes.get("all").expect("scope all").clone();
    let mut group = c.benchmark_group("score_query");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("customer", |b| {
        b.iter(|| black_box(&busiest).report(black_box(as_of), &p, Some(900)));
    });
    group.bench_function("scope_all_5_dimensions", |b| {
        b.iter(|| black_box(&all).report(black_box(as_of), &dims, &p));
    });
    group.finish();
}

criterion_group!(benches, scoring);
criterion_main!(benches);
