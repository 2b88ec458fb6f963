//! `gapwatch demo`: a realistic synthetic workload against a running server.
//! Customers of three brands in four regions buy, complain, get served and
//! answer surveys over the last 90 days; in `region=east` the
//! responsiveness dimension degrades (perception drifts down, service times
//! drift past the standard) and then recovers. Before sending, the demo
//! subscribes to the alert log and prints the degrading segment's alert
//! transitions as they are committed; at the end it prints the scores and
//! a summary of the alerts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::alerts::{dimension_gap, Position};
use gapwatch::proto::{
    alert_service_client::AlertServiceClient, config_service_client::ConfigServiceClient, event,
    ingest_service_client::IngestServiceClient, score_service_client::ScoreServiceClient,
    subscribe_response, Alert, AlertKind, AlertState, Dimension, DimensionRating, Event,
    EventStatus, GetScopeScoreRequest, Interaction, InteractionKind, ListAtRiskCustomersRequest,
    PutDimensionRequest, Severity, StreamEventsRequest, SubscribeRequest, SubscribeResponse,
    Survey, Tier,
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
const MILLIS_PER_DAY: f64 = 86_400_000.0;
const MILLIS_PER_HOUR: f64 = 3_600_000.0;
/// The degrading segment and dimension.
const DEGRADING_REGION: &str = "east";
const DEGRADING_SCOPE: &str = "region=east";
const DEGRADING_DIMENSION: &str = "responsiveness";
/// Management's predicted expectation M and the designed standard level S
/// of responsiveness (customers expect ~6 on the 1–7 scale): the
/// understanding gap is ~0.5 and the procedure gap ~0.2, both below
/// their alert thresholds (1.0 and 0.5).
const PREDICTED_EXPECTATION: f64 = 5.5;
const STANDARD_LEVEL: f64 = 5.8;
/// The degradation, as fractions of the run (see [`drift_at`]).
const DRIFT_START: f64 = 0.10;
const DRIFT_WORST: f64 = 0.45;
const DRIFT_FIX: f64 = 0.55;
const DRIFT_FIXED: f64 = 0.62;
/// The alert kinds the demo follows.
const ALERT_KINDS: [AlertKind; 3] = [
    AlertKind::GapWidening,
    AlertKind::SatisfactionDrop,
    AlertKind::LoyaltyDrop,
];

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

pub async fn run(args: DemoArgs) -> anyhow::Result<std::process::ExitCode> {
    let seed = args
        .seed
        .unwrap_or_else(|| gapwatch::api::now_millis() as u64);
    let channel = args.server.connect().await?;
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut scores = ScoreServiceClient::new(channel.clone());
    let mut alerts = AlertServiceClient::new(channel.clone());
    let mut config = ConfigServiceClient::new(channel);
    println!(
        "demo: seed {seed}, {} customers, {} events over {DAYS} days; {DEGRADING_DIMENSION} degrades in {DEGRADING_SCOPE} (days {:.0}-{:.0}) and recovers (from day {:.0})",
        args.customers,
        args.events,
        DAYS * DRIFT_START,
        DAYS * DRIFT_FIX,
        DAYS * DRIFT_FIXED,
    );
    // M and S enable the understanding and procedure gaps.
    config
        .put_dimension(PutDimensionRequest {
            dimension: Some(Dimension {
                name: DEGRADING_DIMENSION.into(),
                display_name: "Responsiveness".into(),
                predicted_expectation: Some(PREDICTED_EXPECTATION),
                standard_level: Some(STANDARD_LEVEL),
            }),
        })
        .await?;
    println!(
        "dimension {DEGRADING_DIMENSION}: predicted expectation M = {PREDICTED_EXPECTATION}, standard level S = {STANDARD_LEVEL}"
    );
    let workload = Workload::new(
        seed,
        args.customers,
        args.events,
        gapwatch::api::now_millis(),
    );
    let start_ms = workload.start_ms();

    // Subscribed from the head before any event is sent: every transition
    // the workload causes is delivered.
    let subscription = alerts
        .subscribe(SubscribeRequest {
            from_sequence: None,
            kinds: ALERT_KINDS.iter().map(|k| *k as i32).collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let (until_tx, until_rx) = watch::channel(None);
    let watcher = tokio::spawn(watch_alerts(subscription, start_ms, until_rx));
    println!(
        "following alerts ({}); live: {DEGRADING_DIMENSION} in {DEGRADING_SCOPE} (the rest is counted in the summary)\n",
        kind_names()
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
        "\nsent {} events in {elapsed:.2} s ({:.0} events/s, durable acks): accepted {accepted}, duplicate {duplicate}, rejected {rejected}\n",
        accepted + duplicate + rejected,
        (accepted + duplicate + rejected) as f64 / elapsed
    );

    // Every transition the events caused is at or below the head now (a
    // commit publishes its transitions before it acks): let the watcher
    // reach it (a heartbeat moves it past filtered-out sequences).
    let head = super::alerts::head_sequence(&mut alerts).await?;
    until_tx.send_replace(Some(head));
    let transitions = watcher.await?;

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
    println!("\n{}", summary(&transitions, start_ms));
    Ok(std::process::ExitCode::SUCCESS)
}

fn kind_names() -> String {
    ALERT_KINDS
        .iter()
        .map(|k| k.as_str_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The degrading dimension in the degrading segment: shown live.
fn is_degrading(a: &Alert) -> bool {
    a.scope == DEGRADING_SCOPE && a.dimension == DEGRADING_DIMENSION
}

/// Days since the start of the workload, in event time.
fn day(a: &Alert, start_ms: i64) -> f64 {
    a.event_time.as_ref().map_or(f64::NAN, |t| {
        (t.seconds * 1000 + i64::from(t.nanos) / 1_000_000 - start_ms) as f64 / MILLIS_PER_DAY
    })
}

fn state_name(a: &Alert) -> &'static str {
    AlertState::try_from(a.state).map_or("?", |s| s.as_str_name())
}

fn kind_name(a: &Alert) -> &'static str {
    AlertKind::try_from(a.kind).map_or("?", |k| k.as_str_name())
}

/// `alert #SEQ day D  STATE  KIND  SCOPE  DIMENSION/GAP  message`.
fn live_line(a: &Alert, start_ms: i64) -> String {
    format!(
        "alert #{:<6} day {:>4.1}  {:<8} {:<17} {:<11} {:<24} {}",
        a.sequence,
        day(a, start_ms),
        state_name(a),
        kind_name(a),
        a.scope,
        dimension_gap(a),
        a.message
    )
}

/// Reads the subscription until it has delivered everything up to the
/// sequence sent on `until` (or 30 s after that was sent); prints the
/// degrading segment's transitions as they arrive and returns them all.
async fn watch_alerts(
    mut stream: tonic::Streaming<SubscribeResponse>,
    start_ms: i64,
    mut until: watch::Receiver<Option<u64>>,
) -> Vec<Alert> {
    let mut position = Position::new(None);
    let mut seen = Vec::new();
    let mut deadline = None;
    loop {
        let target = *until.borrow_and_update();
        if let Some(head) = target {
            if position.covers(head) {
                break;
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(30));
        }
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(m)) => match m.message {
                    Some(subscribe_response::Message::Alert(a)) => {
                        if position.alert(m.sequence) {
                            if is_degrading(&a) {
                                println!("{}", live_line(&a, start_ms));
                            }
                            seen.push(a);
                        }
                    }
                    _ => position.heartbeat(m.sequence),
                },
                Ok(None) => break,
                Err(status) => {
                    eprintln!("demo: the alert stream failed: {:?}: {}", status.code(), status.message());
                    break;
                }
            },
            changed = until.changed() => if changed.is_err() { break },
            () = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() => {
                eprintln!("demo: the alert stream did not reach sequence {} in 30 s", target.unwrap_or_default());
                break;
            }
        }
    }
    seen
}

/// One alert's transitions, in order.
struct Lifecycle<'a> {
    id: &'a str,
    steps: Vec<&'a Alert>,
}

impl Lifecycle<'_> {
    /// Whether the alert was open at some time while the segment was
    /// degraded (from its FIRING to its RESOLVED, in event time).
    fn overlaps_degradation(&self, start_ms: i64) -> bool {
        let Some(fired) = self.step(AlertState::Firing) else {
            return false;
        };
        let resolved = self
            .step(AlertState::Resolved)
            .map_or(f64::INFINITY, |a| day(a, start_ms));
        day(fired, start_ms) < DAYS * DRIFT_FIXED && resolved > DAYS * DRIFT_START
    }

    fn step(&self, state: AlertState) -> Option<&Alert> {
        self.steps.iter().copied().find(|a| a.state == state as i32)
    }

    /// `#ID WHAT  FIRING day D -> RESOLVED day D  message [context]`.
    fn line(&self, start_ms: i64) -> String {
        let first = self.steps[0];
        let what = match dimension_gap(first).as_str() {
            "-" => kind_name(first).to_string(),
            d => d.to_string(),
        };
        let fired = self.step(AlertState::Firing);
        let fired_text = fired.map_or_else(
            || "fired earlier".to_string(),
            |a| format!("FIRING day {:.1}", day(a, start_ms)),
        );
        let resolved_text = self.step(AlertState::Resolved).map_or_else(
            || "still open".to_string(),
            |a| format!("RESOLVED day {:.1}", day(a, start_ms)),
        );
        // The workload knows the truth: did the alert cover the degradation?
        let context = match fired.map(|a| day(a, start_ms)) {
            Some(d) if drift_at(d / DAYS) > 0.0 => "[during the degradation]",
            Some(_) if self.overlaps_degradation(start_ms) => {
                "[fired before it, open through the degradation]"
            }
            Some(_) => "[in control: a false alarm]",
            None => "",
        };
        let message = fired.map_or("", |a| a.message.as_str());
        format!(
            "#{:<6} {what:<24} {fired_text:<16} -> {resolved_text:<18} {context} {message}",
            self.id
        )
    }
}

fn lifecycles<'a>(transitions: impl Iterator<Item = &'a Alert>) -> Vec<Lifecycle<'a>> {
    let mut out: Vec<Lifecycle<'a>> = Vec::new();
    for a in transitions {
        match out.iter_mut().find(|l| l.id == a.id) {
            Some(l) => l.steps.push(a),
            None => out.push(Lifecycle {
                id: &a.id,
                steps: vec![a],
            }),
        }
    }
    out
}

/// Transitions by kind and state; the degrading dimension's alerts one by
/// one; the segment's satisfaction and advocacy alerts that fired during
/// the degradation; counts of the rest.
fn summary(transitions: &[Alert], start_ms: i64) -> String {
    let mut out = String::new();
    let states = [
        AlertState::Firing,
        AlertState::Acknowledged,
        AlertState::Resolved,
    ];
    let _ = writeln!(
        out,
        "alert transitions while the demo ran: {}",
        transitions.len()
    );
    let _ = writeln!(
        out,
        "  {:<18} {:>8} {:>13} {:>9}",
        "kind", "FIRING", "ACKNOWLEDGED", "RESOLVED"
    );
    for kind in ALERT_KINDS {
        let count = |state: AlertState| {
            transitions
                .iter()
                .filter(|a| a.kind == kind as i32 && a.state == state as i32)
                .count()
        };
        let _ = writeln!(
            out,
            "  {:<18} {:>8} {:>13} {:>9}",
            kind.as_str_name(),
            count(states[0]),
            count(states[1]),
            count(states[2])
        );
    }

    let degrading = lifecycles(transitions.iter().filter(|a| is_degrading(a)));
    let _ = writeln!(
        out,
        "\n>> {DEGRADING_DIMENSION} in {DEGRADING_SCOPE} (degraded days {:.0}-{:.0}, recovered by day {:.0}): {} alerts",
        DAYS * DRIFT_START,
        DAYS * DRIFT_FIX,
        DAYS * DRIFT_FIXED,
        degrading.len()
    );
    for l in &degrading {
        let _ = writeln!(out, ">> {}", l.line(start_ms));
    }

    let segment = lifecycles(
        transitions
            .iter()
            .filter(|a| a.scope == DEGRADING_SCOPE && a.dimension.is_empty()),
    );
    let during: Vec<&Lifecycle> = segment
        .iter()
        .filter(|l| l.overlaps_degradation(start_ms))
        .collect();
    let _ = writeln!(
        out,
        "\n  satisfaction and advocacy in {DEGRADING_SCOPE}: {} alerts, {} open during the degradation:",
        segment.len(),
        during.len()
    );
    for l in during {
        let _ = writeln!(out, "   {}", l.line(start_ms));
    }
    let aggregate = transitions
        .iter()
        .filter(|a| a.dimension == DEGRADING_DIMENSION && !a.scope.starts_with("region="))
        .count();
    let in_segment = transitions
        .iter()
        .filter(|a| a.scope == DEGRADING_SCOPE && (is_degrading(a) || a.dimension.is_empty()))
        .count();
    let _ = writeln!(
        out,
        "\n  {DEGRADING_DIMENSION} in the scopes that include {DEGRADING_SCOPE} (all, brand=*): {aggregate} transitions"
    );
    let _ = writeln!(
        out,
        "  other scopes and dimensions (not shown live): {} transitions",
        transitions.len() - in_segment - aggregate
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use gapwatch::proto::{AlertSeverity, GapKind};

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

    fn transition(
        sequence: u64,
        id: u64,
        state: AlertState,
        scope: &str,
        dimension: &str,
        day: f64,
    ) -> Alert {
        let at = NOW + (day * MILLIS_PER_DAY) as i64;
        Alert {
            id: id.to_string(),
            kind: if dimension.is_empty() {
                AlertKind::SatisfactionDrop
            } else {
                AlertKind::GapWidening
            } as i32,
            state: state as i32,
            severity: AlertSeverity::Warning as i32,
            scope: scope.into(),
            dimension: dimension.into(),
            gap_kind: if dimension.is_empty() {
                GapKind::Unspecified
            } else {
                GapKind::Total
            } as i32,
            event_time: Some(pbjson_types::Timestamp {
                seconds: at / 1000,
                nanos: 0,
            }),
            message: format!("alert {id} {state:?}"),
            sequence,
            ..Default::default()
        }
    }

    #[test]
    fn summary_counts_and_highlights_the_degrading_dimension() {
        use AlertState::{Firing, Resolved};
        let t = [
            transition(1, 1, Firing, "region=east", "responsiveness", 20.0),
            transition(2, 2, Firing, "region=west", "tangibles", 21.0),
            transition(3, 3, Firing, "region=east", "", 30.0),
            transition(4, 4, Firing, "all", "responsiveness", 31.0),
            transition(5, 2, Resolved, "region=west", "tangibles", 22.0),
            transition(6, 1, Resolved, "region=east", "responsiveness", 57.0),
            transition(7, 7, Firing, "region=east", "responsiveness", 80.0),
            transition(8, 8, Firing, "region=east", "responsiveness", 2.0),
            transition(9, 9, Firing, "region=east", "responsiveness", 3.0),
            transition(10, 9, Resolved, "region=east", "responsiveness", 4.0),
        ];
        assert!(is_degrading(&t[0]) && !is_degrading(&t[2]) && !is_degrading(&t[3]));
        let s = summary(&t, NOW);
        assert!(
            s.contains("alert transitions while the demo ran: 10"),
            "{s}"
        );
        let rows: Vec<String> = s
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(rows.contains(&"GAP_WIDENING 6 0 3".to_string()), "{s}");
        assert!(rows.contains(&"SATISFACTION_DROP 1 0 0".to_string()), "{s}");
        let highlighted: Vec<&str> = s.lines().filter(|l| l.starts_with(">> #")).collect();
        assert_eq!(highlighted.len(), 4, "{s}");
        assert!(highlighted[0].contains("responsiveness/TOTAL"), "{s}");
        assert!(highlighted[0].contains("FIRING day 20.0"), "{s}");
        assert!(highlighted[0].contains("RESOLVED day 57.0"), "{s}");
        assert!(highlighted[0].contains("[during the degradation]"), "{s}");
        assert!(highlighted[1].contains("still open"), "{s}");
        assert!(
            highlighted[1].contains("[in control: a false alarm]"),
            "{s}"
        );
        assert!(s.contains("1 alerts, 1 open during the degradation"), "{s}");
        assert!(s.contains("(all, brand=*): 1 transitions"), "{s}");
        assert!(s.contains("(not shown live): 2 transitions"), "{s}");
        assert!(live_line(&t[0], NOW).starts_with("alert #1      day 20.0  FIRING"));
    }
}
