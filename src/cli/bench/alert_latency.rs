//! Alert latency: a subscriber attached from the head of the alert log
//! records when each transition arrives; afterwards each transition is
//! matched to the event that caused it and its latency is
//! `arrival − ack of that event`.
//!
//! An alert names its cause by `customer_id` and `event_time` (the
//! `occur_time` of the observation), not by event id. The workload gives
//! every event its own `occur_time` (milliseconds spread over 90 days), so:
//!
//! - **CHURN_RISK** (the headline figure): FIRING transitions are matched on
//!   `(customer_id, event_time)` to a CANCELLATION event — a recent
//!   cancellation is what makes a customer at risk. Churn alerts caused by
//!   a red loyalty band instead (after a survey) match no cancellation and
//!   are counted as unmatched.
//! - **all kinds**: every transition but COMPLAINT_OVERDUE (whose
//!   `event_time` is an SLA deadline, fired by the wall clock) is matched
//!   on `event_time` alone to the latest-acked event with that
//!   `occur_time`.
//!
//! An alert can arrive before its event's ack (both leave the server once
//! the commit is durable, on different streams): such a latency counts as
//! 0 and how many did is reported. The end-to-end figure, arrival − the
//! moment the producer sent the event, is reported beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::load::{Prepared, Timings};
use super::stats::Latency;
use gapwatch::proto::{
    alert_service_client::AlertServiceClient, subscribe_response, AlertKind, AlertState,
    SubscribeRequest,
};

/// One transition as it arrived.
struct Arrival {
    /// Nanoseconds since the bench's `t0`.
    at: u64,
    kind: i32,
    state: i32,
    customer: String,
    event_ms: Option<i64>,
}

pub struct Subscriber {
    channel: Channel,
    task: JoinHandle<anyhow::Result<Vec<Arrival>>>,
    /// Highest sequence delivered (alert or heartbeat).
    seen: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
}

impl Subscriber {
    /// Subscribes from the current head (`ListAlerts.head_sequence + 1`).
    pub async fn start(channel: Channel, t0: Instant) -> anyhow::Result<Self> {
        let mut client = AlertServiceClient::new(channel.clone());
        let head = crate::cli::alerts::head_sequence(&mut client).await?;
        let mut stream = client
            .subscribe(SubscribeRequest {
                from_sequence: Some(head + 1),
                ..Default::default()
            })
            .await?
            .into_inner();
        let seen = Arc::new(AtomicU64::new(head));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut arrivals = Vec::new();
                loop {
                    let m = tokio::select! {
                        m = stream.message() => match m? {
                            Some(m) => m,
                            None => break,
                        },
                        () = stop.cancelled() => break,
                    };
                    let at = t0.elapsed().as_nanos() as u64;
                    if let Some(subscribe_response::Message::Alert(a)) = m.message {
                        arrivals.push(Arrival {
                            at,
                            kind: a.kind,
                            state: a.state,
                            customer: a.customer_id,
                            event_ms: a
                                .event_time
                                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
                        });
                    }
                    seen.fetch_max(m.sequence, Ordering::Relaxed);
                }
                Ok(arrivals)
            })
        };
        Ok(Self {
            channel,
            task,
            seen,
            stop,
        })
    }

    /// Waits until every transition committed so far has arrived (at most
    /// `patience`), then stops and returns the arrivals.
    async fn finish(self, patience: Duration) -> anyhow::Result<Vec<Arrival>> {
        let head =
            crate::cli::alerts::head_sequence(&mut AlertServiceClient::new(self.channel.clone()))
                .await?;
        let deadline = Instant::now() + patience;
        while self.seen.load(Ordering::Relaxed) < head && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let complete = self.seen.load(Ordering::Relaxed) >= head;
        self.stop.cancel();
        let arrivals = self.task.await??;
        if !complete {
            eprintln!("bench: not every alert transition arrived within {patience:?}");
        }
        Ok(arrivals)
    }
}

/// What the subscriber saw.
#[derive(Debug, serde::Serialize)]
pub struct AlertReport {
    /// Transitions delivered during the run.
    pub transitions: u64,
    /// CHURN_RISK FIRING transitions.
    pub churn_firing: u64,
    /// ...of which matched to a CANCELLATION event.
    pub churn_matched: u64,
    /// Arrival − ack of the cancellation.
    pub churn_latency: Option<Latency>,
    /// Arrival − send of the cancellation.
    pub churn_from_send: Option<Latency>,
    /// Transitions (all kinds but COMPLAINT_OVERDUE) matched on event time.
    pub all_matched: u64,
    pub all_unmatched: u64,
    pub all_latency: Option<Latency>,
    /// Matched CHURN_RISK / all transitions that arrived before their
    /// event's ack (counted as latency 0).
    pub churn_before_ack: u64,
    pub all_before_ack: u64,
}

/// Collects the subscriber's arrivals and matches them to acks.
pub async fn collect(
    subscriber: Subscriber,
    prepared: &Prepared,
    timings: &Timings,
) -> anyhow::Result<AlertReport> {
    // Heartbeats come every alerts.heartbeat_secs (5 s by default).
    let arrivals = subscriber.finish(Duration::from_secs(15)).await?;
    let mut cancellations: HashMap<(u32, i64), usize> = HashMap::new();
    let mut by_time: HashMap<i64, usize> = HashMap::new();
    for (i, m) in prepared.meta.iter().enumerate() {
        let Some(acked) = timings.acked(i) else {
            continue;
        };
        if m.cancellation {
            cancellations.insert((m.customer, m.occur_ms), i);
        }
        by_time
            .entry(m.occur_ms)
            .and_modify(|j| {
                if timings.acked(*j).is_some_and(|a| a < acked) {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let customers: HashMap<&str, u32> = prepared
        .customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let latency = |arrival: &Arrival, event: usize, before_ack: &mut u64| {
        let acked = timings.acked(event).expect("only acked events are indexed");
        if arrival.at < acked {
            *before_ack += 1;
        }
        arrival.at.saturating_sub(acked)
    };
    let (mut churn_before_ack, mut all_before_ack) = (0, 0);
    let mut churn = Vec::new();
    let mut churn_from_send = Vec::new();
    let mut churn_firing = 0;
    let mut all = Vec::new();
    let mut all_unmatched = 0;
    for a in &arrivals {
        let Some(event_ms) = a.event_ms else {
            continue;
        };
        if a.kind == AlertKind::ChurnRisk as i32 && a.state == AlertState::Firing as i32 {
            churn_firing += 1;
            let cause = customers
                .get(a.customer.as_str())
                .and_then(|c| cancellations.get(&(*c, event_ms)));
            if let Some(&i) = cause {
                churn.push(latency(a, i, &mut churn_before_ack));
                if let Some(sent) = timings.sent(i) {
                    churn_from_send.push(a.at.saturating_sub(sent));
                }
            }
        }
        if a.kind != AlertKind::ComplaintOverdue as i32 {
            match by_time.get(&event_ms) {
                Some(&i) => all.push(latency(a, i, &mut all_before_ack)),
                None => all_unmatched += 1,
            }
        }
    }
    churn.sort_unstable();
    churn_from_send.sort_unstable();
    all.sort_unstable();
    Ok(AlertReport {
        transitions: arrivals.len() as u64,
        churn_firing,
        churn_matched: churn.len() as u64,
        churn_latency: Latency::of_sorted(&churn),
        churn_from_send: Latency::of_sorted(&churn_from_send),
        all_matched: all.len() as u64,
        all_unmatched,
        all_latency: Latency::of_sorted(&all),
        churn_before_ack,
        all_before_ack,
    })
}
