//! The synthetic workload of `gapwatch demo` and `gapwatch bench`:
//! customers of three brands in four regions buy, complain, get served and
//! answer surveys over the last 90 days; in `region=east` the
//! responsiveness dimension degrades (perception drifts down, service times
//! drift past the standard) and then recovers. The same seed gives the
//! same events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use gapwatch::domain::DEFAULT_DIMENSIONS;
use gapwatch::proto::{
    event, DimensionRating, Event, Interaction, InteractionKind, Severity, Survey,
};

const BRANDS: [&str; 3] = ["acme", "globex", "initech"];
const REGIONS: [&str; 4] = ["east", "west", "north", "south"];
/// The five SERVQUAL dimensions every survey rates.
const DIMENSIONS: [&str; 5] = DEFAULT_DIMENSIONS;
pub(super) const DAYS: f64 = 90.0;
pub(super) const MILLIS_PER_DAY: f64 = 86_400_000.0;
const MILLIS_PER_HOUR: f64 = 3_600_000.0;
/// The degrading segment and dimension.
const DEGRADING_REGION: &str = "east";
pub(super) const DEGRADING_SCOPE: &str = "region=east";
pub(super) const DEGRADING_DIMENSION: &str = "responsiveness";
/// Management's predicted expectation M and the designed standard level S
/// of responsiveness (customers expect ~6 on the 1–7 scale): the
/// understanding gap is ~0.5 and the procedure gap ~0.2, both below
/// their alert thresholds (1.0 and 0.5).
pub(super) const PREDICTED_EXPECTATION: f64 = 5.5;
pub(super) const STANDARD_LEVEL: f64 = 5.8;
/// The degradation, as fractions of the run (see [`drift_at`]).
pub(super) const DRIFT_START: f64 = 0.10;
const DRIFT_WORST: f64 = 0.45;
pub(super) const DRIFT_FIX: f64 = 0.55;
pub(super) const DRIFT_FIXED: f64 = 0.62;

struct Customer {
    id: String,
    brand: &'static str,
    region: &'static str,
    /// Typical basket; Pareto-distributed so that ~20% bring ~80% of value.
    basket: f64,
}

/// How far the degrading segment has drifted at `progress` (0..1 of the
/// run): nothing for the first 10% (the detectors learn the baseline);
/// then a change makes things worse at once (0.3: a new ticket routing,
/// say) and the backlog it builds keeps them worsening, faster and faster,
/// to the worst (1) at 45%; that holds to 55%, the fix is rolled out by
/// 62%, and the last third is back to normal.
pub fn drift_at(progress: f64) -> f64 {
    const STEP: f64 = 0.3;
    if !(DRIFT_START..DRIFT_FIXED).contains(&progress) {
        0.0
    } else if progress < DRIFT_WORST {
        STEP + (1.0 - STEP) * ((progress - DRIFT_START) / (DRIFT_WORST - DRIFT_START)).powi(2)
    } else if progress < DRIFT_FIX {
        1.0
    } else {
        1.0 - (progress - DRIFT_FIX) / (DRIFT_FIXED - DRIFT_FIX)
    }
}

/// A complaint step scheduled at an event time.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct FollowUp {
    due: i64,
    customer: usize,
    case: String,
    kind: InteractionKind,
}

/// Generates the workload in event-time order (complaint steps are stamped
/// with their own due time, within minutes of the events around them).
pub struct Workload {
    rng: SmallRng,
    customers: Vec<Customer>,
    run: String,
    start_ms: i64,
    total: u32,
    produced: u32,
    follow_ups: BinaryHeap<Reverse<FollowUp>>,
}

impl Workload {
    pub fn new(seed: u64, customers: u32, total: u32, now_ms: i64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let customers = (0..customers)
            .map(|i| Customer {
                id: format!("cust-{i:06}"),
                brand: BRANDS[rng.random_range(0..BRANDS.len())],
                region: REGIONS[rng.random_range(0..REGIONS.len())],
                // Pareto(alpha = 1.16): the 80/20 distribution.
                basket: 20.0 / (1.0 - rng.random::<f64>()).powf(1.0 / 1.16),
            })
            .collect();
        Self {
            rng,
            customers,
            run: format!("demo-{seed}"),
            start_ms: now_ms - (DAYS * MILLIS_PER_DAY) as i64 - 3_600_000,
            total,
            produced: 0,
            follow_ups: BinaryHeap::new(),
        }
    }

    /// Event time of the first event.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    fn time(&self) -> (i64, f64) {
        let progress = f64::from(self.produced) / f64::from(self.total.max(1));
        (
            self.start_ms + (progress * DAYS * MILLIS_PER_DAY) as i64,
            progress,
        )
    }

    fn envelope(
        &mut self,
        c: usize,
        at: i64,
    ) -> (
        String,
        String,
        pbjson_types::Timestamp,
        std::collections::HashMap<String, String>,
    ) {
        let customer = &self.customers[c];
        let attributes = [("brand", customer.brand), ("region", customer.region)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let id = format!("{}-{}", self.run, self.produced);
        let ts = pbjson_types::Timestamp {
            seconds: at.div_euclid(1000),
            nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
        };
        (id, customer.id.clone(), ts, attributes)
    }

    /// How far the degrading segment has drifted now (see [`drift_at`]).
    fn drift(&self, c: usize) -> f64 {
        if self.customers[c].region == DEGRADING_REGION {
            drift_at(self.time().1)
        } else {
            0.0
        }
    }

    fn survey(&mut self, c: usize) -> Event {
        let drift = self.drift(c);
        let (at, _) = self.time();
        let (event_id, customer_id, occur_time, attributes) = self.envelope(c, at);
        let rng = &mut self.rng;
        let mut ratings = Vec::new();
        let mut gap_sum = 0.0;
        for d in DIMENSIONS {
            let expectation = rng.random_range(5..=7);
            let mut perception = f64::from(expectation) + rng.random_range(-1.5..1.0);
            if d == DEGRADING_DIMENSION {
                perception -= 3.0 * drift;
            }
            let perception = perception.round().clamp(1.0, 7.0) as i32;
            gap_sum += f64::from(expectation - perception);
            ratings.push(DimensionRating {
                dimension: d.to_string(),
                expectation,
                perception,
                importance: Some(if d == DEGRADING_DIMENSION {
                    6
                } else {
                    rng.random_range(3..=7)
                }),
            });
        }
        // Answers follow the experience: bigger gaps, lower scores.
        let mood = (5.0 - gap_sum / 2.0 + rng.random_range(-1.0..1.0)).clamp(1.0, 5.0);
        Event {
            kind: Some(event::Kind::Survey(Survey {
                event_id,
                customer_id,
                occur_time: Some(occur_time),
                attributes,
                csat: Some(mood.round() as i32),
                nps: Some(
                    (mood * 2.0 + rng.random_range(-1.0..1.0))
                        .round()
                        .clamp(0.0, 10.0) as i32,
                ),
                ces: Some(
                    (mood * 1.4 + rng.random_range(-1.0..1.0))
                        .round()
                        .clamp(1.0, 7.0) as i32,
                ),
                repurchase: Some((mood * 2.0).round().clamp(0.0, 10.0) as i32),
                ratings,
            })),
        }
    }

    fn interaction(
        &mut self,
        c: usize,
        at: i64,
        kind: InteractionKind,
        fill: impl FnOnce(&mut Interaction, &mut SmallRng),
    ) -> Event {
        let (event_id, customer_id, occur_time, attributes) = self.envelope(c, at);
        let mut i = Interaction {
            event_id,
            customer_id,
            occur_time: Some(occur_time),
            attributes,
            kind: kind.into(),
            ..Default::default()
        };
        fill(&mut i, &mut self.rng);
        Event {
            kind: Some(event::Kind::Interaction(i)),
        }
    }

    /// Opens a complaint and schedules its steps: most get their first
    /// response within the SLA (1 h MAJOR, 2 h MINOR) and are resolved
    /// within theirs (24 h / 72 h); some are late, a few never answered.
    fn complaint(&mut self, c: usize, at: i64) -> Event {
        let case = format!("{}-case-{}", self.run, self.produced);
        let major = self.rng.random::<f64>() < 0.3;
        let (response_sla, resolution_sla) = if major { (1.0, 24.0) } else { (2.0, 72.0) };
        let rng = &mut self.rng;
        let hours = |h: f64| (h * MILLIS_PER_HOUR) as i64;
        let roll: f64 = rng.random();
        let responded = if roll < 0.85 {
            Some(rng.random_range(0.05..0.95) * response_sla)
        } else if roll < 0.97 {
            Some(rng.random_range(1.1..4.0) * response_sla)
        } else {
            None
        };
        if let Some(responded) = responded {
            self.follow_ups.push(Reverse(FollowUp {
                due: at + hours(responded),
                customer: c,
                case: case.clone(),
                kind: InteractionKind::ComplaintResponded,
            }));
            let roll: f64 = rng.random();
            let resolved = if roll < 0.8 {
                Some(responded.max(rng.random_range(0.1..0.9) * resolution_sla))
            } else if roll < 0.95 {
                Some(rng.random_range(1.05..2.5) * resolution_sla)
            } else {
                None
            };
            if let Some(resolved) = resolved {
                self.follow_ups.push(Reverse(FollowUp {
                    due: at + hours(resolved + 0.01),
                    customer: c,
                    case: case.clone(),
                    kind: InteractionKind::ComplaintResolved,
                }));
            }
        }
        self.interaction(c, at, InteractionKind::ComplaintOpened, |i, _| {
            i.case_id = case;
            i.dimension = DEGRADING_DIMENSION.into();
            i.severity = if major {
                Severity::Major
            } else {
                Severity::Minor
            }
            .into();
        })
    }

    fn next_event(&mut self) -> Event {
        let (at, _) = self.time();
        let due = self.follow_ups.peek().is_some_and(|Reverse(f)| f.due <= at);
        let event = if due {
            let Some(Reverse(f)) = self.follow_ups.pop() else {
                unreachable!("peeked above")
            };
            self.interaction(f.customer, f.due, f.kind, |i, _| i.case_id = f.case)
        } else {
            let c = self.rng.random_range(0..self.customers.len());
            let roll: f64 = self.rng.random();
            if roll < 0.39 {
                let basket = self.customers[c].basket;
                self.interaction(c, at, InteractionKind::Purchase, |i, rng| {
                    i.amount = Some((basket * rng.random_range(0.5..1.5) * 100.0).round() / 100.0);
                })
            } else if roll < 0.41 {
                let basket = self.customers[c].basket;
                self.interaction(c, at, InteractionKind::Return, |i, _| {
                    i.amount = Some(basket / 2.0)
                })
            } else if roll < 0.66 {
                self.survey(c)
            } else if roll < 0.84 {
                // Time to respond against a 30-minute standard.
                let drift = self.drift(c);
                self.interaction(c, at, InteractionKind::Service, |i, rng| {
                    i.dimension = DEGRADING_DIMENSION.into();
                    i.standard = Some(30.0);
                    i.actual = Some((rng.random_range(10.0..40.0) + 40.0 * drift).round());
                })
            } else if roll < 0.96 {
                // Delivery days against the promise.
                self.interaction(c, at, InteractionKind::Service, |i, rng| {
                    i.dimension = "reliability".into();
                    i.promised = Some(3.0);
                    i.delivered = Some(f64::from(rng.random_range(2..=5)));
                })
            } else if roll < 0.99 {
                self.complaint(c, at)
            } else {
                self.interaction(c, at, InteractionKind::Cancellation, |_, _| {})
            }
        };
        self.produced += 1;
        event
    }
}

impl Iterator for Workload {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        (self.produced < self.total).then(|| self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NOW: i64 = 1_790_000_000_000;

    fn millis(t: &Option<pbjson_types::Timestamp>) -> i64 {
        let t = t.as_ref().expect("occur_time");
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    }

    /// Mean of `value` over the east events whose progress is in `range`.
    fn east_mean(
        events: &[Event],
        range: std::ops::Range<f64>,
        value: impl Fn(&Event) -> Option<f64>,
    ) -> f64 {
        let n = events.len() as f64;
        let values: Vec<f64> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| range.contains(&(*i as f64 / n)))
            .filter_map(|(_, e)| value(e))
            .collect();
        assert!(values.len() > 30, "{range:?}: {} values", values.len());
        values.iter().sum::<f64>() / values.len() as f64
    }

    fn east_perception(e: &Event) -> Option<f64> {
        match &e.kind {
            Some(event::Kind::Survey(s)) if s.attributes["region"] == DEGRADING_REGION => s
                .ratings
                .iter()
                .find(|r| r.dimension == DEGRADING_DIMENSION)
                .map(|r| f64::from(r.perception)),
            _ => None,
        }
    }

    fn east_service_minutes(e: &Event) -> Option<f64> {
        match &e.kind {
            Some(event::Kind::Interaction(i))
                if i.attributes["region"] == DEGRADING_REGION
                    && i.dimension == DEGRADING_DIMENSION
                    && i.standard.is_some() =>
            {
                i.actual
            }
            _ => None,
        }
    }

    #[test]
    fn drift_rises_over_the_first_half_then_recovers() {
        assert_eq!(drift_at(0.0), 0.0);
        assert_eq!(drift_at(0.09), 0.0);
        assert_eq!(drift_at(0.1), 0.3, "a step first");
        assert!(drift_at(0.2) > 0.3 && drift_at(0.2) < drift_at(0.3));
        assert!(drift_at(0.3) < drift_at(0.4));
        assert_eq!(drift_at(0.45), 1.0);
        assert_eq!(drift_at(0.5), 1.0);
        assert!(drift_at(0.6) > 0.0 && drift_at(0.6) < 1.0);
        for p in [0.62, 0.67, 0.8, 0.99, 1.0] {
            assert_eq!(drift_at(p), 0.0, "{p}");
        }
    }

    #[test]
    fn workload_is_deterministic_and_east_responsiveness_degrades_then_recovers() {
        let a: Vec<Event> = Workload::new(7, 200, 12_000, NOW).collect();
        let b: Vec<Event> = Workload::new(7, 200, 12_000, NOW).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 12_000);
        let before = east_mean(&a, 0.0..0.1, east_perception);
        let worst = east_mean(&a, 0.45..0.55, east_perception);
        let after = east_mean(&a, 0.7..1.0, east_perception);
        assert!(before - worst > 2.0, "before {before} worst {worst}");
        assert!(
            (before - after).abs() < 0.3,
            "before {before} after {after}"
        );
        let before = east_mean(&a, 0.0..0.1, east_service_minutes);
        let worst = east_mean(&a, 0.45..0.55, east_service_minutes);
        let after = east_mean(&a, 0.7..1.0, east_service_minutes);
        assert!(worst - before > 30.0, "before {before} worst {worst}");
        assert!(
            (before - after).abs() < 3.0,
            "before {before} after {after}"
        );
        // Elsewhere nothing changes.
        let west = |e: &Event| match &e.kind {
            Some(event::Kind::Survey(s)) if s.attributes["region"] == "west" => s
                .ratings
                .iter()
                .find(|r| r.dimension == DEGRADING_DIMENSION)
                .map(|r| f64::from(r.perception)),
            _ => None,
        };
        let (w0, w1) = (
            east_mean(&a, 0.0..0.1, west),
            east_mean(&a, 0.45..0.55, west),
        );
        assert!((w0 - w1).abs() < 0.4, "west {w0} {w1}");
    }

    #[test]
    fn complaints_mostly_answered_within_their_sla() {
        let events: Vec<Event> = Workload::new(3, 500, 40_000, NOW).collect();
        // case -> (opened at, response SLA hours)
        let mut opened: HashMap<String, (i64, f64)> = HashMap::new();
        let mut responded: HashMap<String, i64> = HashMap::new();
        let mut resolved: HashMap<String, i64> = HashMap::new();
        for e in &events {
            let Some(event::Kind::Interaction(i)) = &e.kind else {
                continue;
            };
            let at = millis(&i.occur_time);
            assert!(at <= NOW, "no event in the future");
            match InteractionKind::try_from(i.kind) {
                Ok(InteractionKind::ComplaintOpened) => {
                    let sla = if i.severity == Severity::Major as i32 {
                        1.0
                    } else {
                        2.0
                    };
                    opened.insert(i.case_id.clone(), (at, sla));
                }
                Ok(InteractionKind::ComplaintResponded) => {
                    assert!(responded.insert(i.case_id.clone(), at).is_none());
                }
                Ok(InteractionKind::ComplaintResolved) => {
                    assert!(resolved.insert(i.case_id.clone(), at).is_none());
                }
                _ => {}
            }
        }
        assert!(opened.len() > 500, "{} complaints", opened.len());
        let (mut within, mut late) = (0, 0);
        for (case, at) in &responded {
            let (open, sla) = opened[case];
            assert!(*at > open, "{case}: responded before it opened");
            let hours = (at - open) as f64 / MILLIS_PER_HOUR;
            if hours <= sla {
                within += 1;
            } else {
                late += 1;
            }
            if let Some(r) = resolved.get(case) {
                assert!(r > at, "{case}: resolved before the first response");
            }
        }
        for case in resolved.keys() {
            assert!(responded.contains_key(case), "{case} resolved unanswered");
        }
        let answered = f64::from(within + late);
        assert!(answered / opened.len() as f64 > 0.9);
        let share = f64::from(within) / answered;
        assert!(share > 0.8 && share < 0.95, "within SLA {share}");
    }
}
