//! `gapwatch demo`: a realistic synthetic workload against a running server.
//! Customers of three brands in four regions buy, complain, get served and
//! answer surveys over the last 90 days; in `region=east` the
//! responsiveness dimension slowly degrades (perception drifts down, service
//! times drift past the standard). Prints the scores it produced.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use gapwatch::proto::{
    event, ingest_service_client::IngestServiceClient, score_service_client::ScoreServiceClient,
    DimensionRating, Event, EventStatus, GetScopeScoreRequest, Interaction, InteractionKind,
    ListAtRiskCustomersRequest, Severity, StreamEventsRequest, Survey, Tier,
};

const BRANDS: [&str; 3] = ["acme", "globex", "initech"];
const REGIONS: [&str; 4] = ["east", "west", "north", "south"];
const DIMENSIONS: [&str; 5] = [
    "tangibles",
    "reliability",
    "responsiveness",
    "assurance",
    "empathy",
];
const DAYS: f64 = 90.0;
/// The degrading segment and dimension.
const DEGRADING_REGION: &str = "east";
const DEGRADING_DIMENSION: &str = "responsiveness";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Distinct customers.
    #[arg(long, default_value_t = 2_000)]
    customers: u32,
    /// Events to send.
    #[arg(long, default_value_t = 50_000)]
    events: u32,
    /// Random seed; the same seed sends the same events (a second run is
    /// then all duplicates). Defaults to the clock.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    server: super::ServerArg,
}

struct Customer {
    id: String,
    brand: &'static str,
    region: &'static str,
    /// Typical basket; Pareto-distributed so that ~20% bring ~80% of value.
    basket: f64,
}

/// Generates the workload in event-time order.
pub struct Workload {
    rng: SmallRng,
    customers: Vec<Customer>,
    run: String,
    start_ms: i64,
    total: u32,
    produced: u32,
    open_cases: Vec<(usize, String, i64)>,
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
            start_ms: now_ms - (DAYS * 86_400_000.0) as i64 - 3_600_000,
            total,
            produced: 0,
            open_cases: Vec::new(),
        }
    }

    fn time(&self) -> (i64, f64) {
        let progress = f64::from(self.produced) / f64::from(self.total.max(1));
        (
            self.start_ms + (progress * DAYS * 86_400_000.0) as i64,
            progress,
        )
    }

    fn envelope(
        &mut self,
        c: usize,
    ) -> (
        String,
        String,
        pbjson_types::Timestamp,
        std::collections::HashMap<String, String>,
    ) {
        let (at, _) = self.time();
        let customer = &self.customers[c];
        let attributes = [("brand", customer.brand), ("region", customer.region)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let id = format!("{}-{}", self.run, self.produced);
        let ts = pbjson_types::Timestamp {
            seconds: at / 1000,
            nanos: ((at % 1000) * 1_000_000) as i32,
        };
        (id, customer.id.clone(), ts, attributes)
    }

    /// How far the degrading segment has drifted (0 at the start, 1 at the end).
    fn drift(&self, c: usize) -> f64 {
        if self.customers[c].region == DEGRADING_REGION {
            self.time().1
        } else {
            0.0
        }
    }

    fn survey(&mut self, c: usize) -> Event {
        let drift = self.drift(c);
        let (event_id, customer_id, occur_time, attributes) = self.envelope(c);
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
        kind: InteractionKind,
        fill: impl FnOnce(&mut Interaction, &mut SmallRng),
    ) -> Event {
        let (event_id, customer_id, occur_time, attributes) = self.envelope(c);
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

    fn next_event(&mut self) -> Event {
        let c = self.rng.random_range(0..self.customers.len());
        let roll: f64 = self.rng.random();
        let event = if roll < 0.35 {
            let basket = self.customers[c].basket;
            self.interaction(c, InteractionKind::Purchase, |i, rng| {
                i.amount = Some((basket * rng.random_range(0.5..1.5) * 100.0).round() / 100.0);
            })
        } else if roll < 0.37 {
            let basket = self.customers[c].basket;
            self.interaction(c, InteractionKind::Return, |i, _| {
                i.amount = Some(basket / 2.0)
            })
        } else if roll < 0.62 {
            self.survey(c)
        } else if roll < 0.80 {
            // Time to respond against a 30-minute standard.
            let drift = self.drift(c);
            self.interaction(c, InteractionKind::Service, |i, rng| {
                i.dimension = DEGRADING_DIMENSION.into();
                i.standard = Some(30.0);
                i.actual = Some((rng.random_range(10.0..40.0) + 40.0 * drift).round());
            })
        } else if roll < 0.92 {
            // Delivery days against the promise.
            self.interaction(c, InteractionKind::Service, |i, rng| {
                i.dimension = "reliability".into();
                i.promised = Some(3.0);
                i.delivered = Some(f64::from(rng.random_range(2..=5)));
            })
        } else if roll < 0.95 {
            let case = format!("{}-case-{}", self.run, self.produced);
            let (at, _) = self.time();
            self.open_cases.push((c, case.clone(), at));
            self.interaction(c, InteractionKind::ComplaintOpened, |i, rng| {
                i.case_id = case;
                i.dimension = DEGRADING_DIMENSION.into();
                i.severity = if rng.random::<f64>() < 0.3 {
                    Severity::Major
                } else {
                    Severity::Minor
                }
                .into();
            })
        } else if roll < 0.99 && !self.open_cases.is_empty() {
            let k = self.rng.random_range(0..self.open_cases.len());
            let (c, case, _) = self.open_cases.swap_remove(k);
            let kind = if self.rng.random::<f64>() < 0.5 {
                InteractionKind::ComplaintResponded
            } else {
                InteractionKind::ComplaintResolved
            };
            if kind == InteractionKind::ComplaintResponded {
                // Responded cases get resolved later.
                let (at, _) = self.time();
                self.open_cases.push((c, case.clone(), at));
            }
            self.interaction(c, kind, |i, _| i.case_id = case)
        } else {
            self.interaction(c, InteractionKind::Cancellation, |_, _| {})
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

pub async fn run(args: DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    let seed = args
        .seed
        .unwrap_or_else(|| gapwatch::api::now_millis() as u64);
    let channel = args.server.connect().await?;
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut scores = ScoreServiceClient::new(channel);
    println!(
        "demo: seed {seed}, {} customers, {} events over {DAYS} days; {DEGRADING_DIMENSION} degrades in region={DEGRADING_REGION}",
        args.customers, args.events
    );
    let workload = Workload::new(
        seed,
        args.customers,
        args.events,
        gapwatch::api::now_millis(),
    );
    let (tx, rx) = mpsc::channel(4096);
    let producer = tokio::spawn(async move {
        for event in workload {
            if tx
                .send(StreamEventsRequest { event: Some(event) })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut acks = ingest
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut accepted, mut duplicate, mut rejected) = (0u64, 0u64, 0u64);
    while let Some(result) = acks.message().await? {
        match EventStatus::try_from(result.status) {
            Ok(EventStatus::Accepted) => accepted += 1,
            Ok(EventStatus::Duplicate) => duplicate += 1,
            _ => {
                rejected += 1;
                if rejected <= 5 {
                    eprintln!("rejected {}: {:?}", result.event_id, result.error);
                }
            }
        }
    }
    producer.await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sent {} events in {elapsed:.2} s ({:.0} events/s, durable acks): accepted {accepted}, duplicate {duplicate}, rejected {rejected}\n",
        accepted + duplicate + rejected,
        (accepted + duplicate + rejected) as f64 / elapsed
    );

    for scope in ["all", "region=east", "region=west"] {
        let score = scores
            .get_scope_score(GetScopeScoreRequest {
                scope: scope.into(),
                as_of_time: None,
            })
            .await?
            .into_inner();
        println!("{}", super::score::scope_table(&score));
    }
    let at_risk = scores
        .list_at_risk_customers(ListAtRiskCustomersRequest {
            tier: Tier::Vip.into(),
            page_size: 5,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("VIP customers at risk (top {}):", at_risk.customers.len());
    for c in at_risk.customers {
        println!(
            "  {}  value {:.2}  loyalty {:.1}",
            c.customer_id,
            c.value,
            c.loyalty.and_then(|l| l.index).unwrap_or(0.0)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_degrades_east_responsiveness() {
        let now = 1_790_000_000_000;
        let a: Vec<Event> = Workload::new(7, 50, 3000, now).collect();
        let b: Vec<Event> = Workload::new(7, 50, 3000, now).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3000);
        // Mean responsiveness perception in the east: first vs last third.
        let east_perception = |events: &[Event]| {
            let values: Vec<f64> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    Some(event::Kind::Survey(s)) if s.attributes["region"] == DEGRADING_REGION => s
                        .ratings
                        .iter()
                        .find(|r| r.dimension == DEGRADING_DIMENSION)
                        .map(|r| f64::from(r.perception)),
                    _ => None,
                })
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        let early = east_perception(&a[..1000]);
        let late = east_perception(&a[2000..]);
        assert!(early - late > 1.0, "early {early} late {late}");
    }
}
