//! `gapwatch demo`: the synthetic workload (`workload`) against a running
//! server, in which `region=east`'s responsiveness degrades and recovers.
//! Before sending, the demo
//! subscribes to the alert log and prints the degrading segment's alert
//! transitions as they are committed; at the end it prints the scores and
//! a summary of the alerts.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::alerts::{dimension_gap, Position};
use super::workload::{
    drift_at, Workload, DAYS, DEGRADING_DIMENSION, DEGRADING_SCOPE, DRIFT_FIX, DRIFT_FIXED,
    DRIFT_START, MILLIS_PER_DAY, PREDICTED_EXPECTATION, STANDARD_LEVEL,
};
use gapwatch::proto::{
    alert_service_client::AlertServiceClient, config_service_client::ConfigServiceClient,
    ingest_service_client::IngestServiceClient, score_service_client::ScoreServiceClient,
    subscribe_response, Alert, AlertKind, AlertState, Dimension, EventStatus, GetScopeScoreRequest,
    ListAtRiskCustomersRequest, PutDimensionRequest, StreamEventsRequest, SubscribeRequest,
    SubscribeResponse, Tier,
};

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
    use super::*;
    use gapwatch::proto::{AlertSeverity, GapKind};

    const NOW: i64 = 1_790_000_000_000;

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
