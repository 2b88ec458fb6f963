//! The load: the workload pre-encoded once, and the three drivers (unary,
//! batch, stream) that send it and time every event.
//!
//! Requests are encoded before the clock starts and sent as raw bytes (a
//! pass-through codec), so the client spends its CPU on the transport, not
//! on building events: on a 2-core machine the client shares the CPU with
//! the server, and gapwatch and the ceiling pay the same client cost.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use prost::bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status};

use gapwatch::api::codec::PreEncoded;
use gapwatch::proto::{
    event, Event, EventResult, EventStatus, InteractionKind, RecordBatchResponse,
    RecordEventResponse, RecordInteractionRequest, RecordSurveyRequest, StreamEventsRequest,
};

const SURVEY: &str = "/gapwatch.v1.IngestService/RecordSurvey";
const INTERACTION: &str = "/gapwatch.v1.IngestService/RecordInteraction";
const BATCH: &str = "/gapwatch.v1.IngestService/RecordBatch";
const STREAM: &str = "/gapwatch.v1.IngestService/StreamEvents";

/// How requests are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// RecordSurvey / RecordInteraction, one event per call.
    Unary,
    /// RecordBatch.
    Batch,
    /// StreamEvents, pipelined.
    Stream,
}

/// What the bench needs to know about one event after sending it.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Index into [`Prepared::customers`].
    pub customer: u32,
    /// `occur_time` in milliseconds.
    pub occur_ms: i64,
    pub survey: bool,
    pub cancellation: bool,
}

/// The workload, encoded.
pub struct Prepared {
    pub meta: Vec<Meta>,
    /// Customer ids by index.
    pub customers: Vec<String>,
    /// Every event as a `StreamEventsRequest`, back to back. A
    /// `RecordBatchRequest` (`repeated Event events = 1`) has the same wire
    /// form as consecutive `StreamEventsRequest`s (`Event event = 1`), so a
    /// batch is a slice of this buffer.
    stream: Bytes,
    /// `offsets[i]..offsets[i + 1]` is event `i` in `stream`.
    offsets: Vec<usize>,
    /// Unary mode: `RecordSurveyRequest` / `RecordInteractionRequest`.
    unary: Option<(Bytes, Vec<usize>)>,
}

impl Prepared {
    pub fn new(events: impl Iterator<Item = Event>, with_unary: bool) -> Self {
        let mut meta = Vec::new();
        let mut customers = Vec::new();
        let mut customer_index: HashMap<String, u32> = HashMap::new();
        let mut stream = BytesMut::new();
        let mut offsets = vec![0];
        let mut unary = BytesMut::new();
        let mut unary_offsets = vec![0];
        for event in events {
            let (customer, occur, survey, cancellation) = match &event.kind {
                Some(event::Kind::Survey(s)) => (&s.customer_id, &s.occur_time, true, false),
                Some(event::Kind::Interaction(i)) => (
                    &i.customer_id,
                    &i.occur_time,
                    false,
                    i.kind == InteractionKind::Cancellation as i32,
                ),
                None => continue,
            };
            let next = customer_index.len() as u32;
            let customer = *customer_index.entry(customer.clone()).or_insert_with(|| {
                customers.push(customer.clone());
                next
            });
            let occur_ms = occur
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            meta.push(Meta {
                customer,
                occur_ms,
                survey,
                cancellation,
            });
            if with_unary {
                match &event.kind {
                    Some(event::Kind::Survey(s)) => RecordSurveyRequest {
                        survey: Some(s.clone()),
                    }
                    .encode(&mut unary),
                    Some(event::Kind::Interaction(i)) => RecordInteractionRequest {
                        interaction: Some(i.clone()),
                    }
                    .encode(&mut unary),
                    None => unreachable!("skipped above"),
                }
                .expect("BytesMut grows");
                unary_offsets.push(unary.len());
            }
            StreamEventsRequest { event: Some(event) }
                .encode(&mut stream)
                .expect("BytesMut grows");
            offsets.push(stream.len());
        }
        Self {
            meta,
            customers,
            stream: stream.freeze(),
            offsets,
            unary: with_unary.then(|| (unary.freeze(), unary_offsets)),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Events `range` as one `StreamEventsRequest` each... or, taken whole,
    /// as a `RecordBatchRequest`.
    fn stream_bytes(&self, range: Range<usize>) -> Bytes {
        self.stream
            .slice(self.offsets[range.start]..self.offsets[range.end])
    }

    fn unary_bytes(&self, i: usize) -> Bytes {
        let (bytes, offsets) = self.unary.as_ref().expect("prepared for unary");
        bytes.slice(offsets[i]..offsets[i + 1])
    }

    /// Bytes of all events, for the report.
    pub fn encoded_bytes(&self) -> usize {
        self.stream.len()
    }
}

/// When each event was sent and acknowledged: nanoseconds since `t0`,
/// plus one (0 = not yet).
pub struct Timings {
    pub t0: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
}

impl Timings {
    pub fn new(n: usize, t0: Instant) -> Self {
        Self {
            t0,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64 + 1
    }

    fn mark_sent(&self, i: usize, at: u64) {
        self.sent[i].store(at, Ordering::Relaxed);
    }

    fn mark_acked(&self, i: usize, at: u64) {
        self.acked[i].store(at, Ordering::Relaxed);
    }

    /// Nanoseconds since `t0` at which event `i` was acknowledged.
    pub fn acked(&self, i: usize) -> Option<u64> {
        match self.acked[i].load(Ordering::Relaxed) {
            0 => None,
            at => Some(at - 1),
        }
    }

    /// Nanoseconds since `t0` at which event `i` was sent.
    pub fn sent(&self, i: usize) -> Option<u64> {
        match self.sent[i].load(Ordering::Relaxed) {
            0 => None,
            at => Some(at - 1),
        }
    }

    /// Ack latency of event `i`, nanoseconds.
    pub fn latency(&self, i: usize) -> Option<u64> {
        let sent = self.sent[i].load(Ordering::Relaxed);
        let acked = self.acked[i].load(Ordering::Relaxed);
        (sent > 0 && acked > 0).then(|| acked.saturating_sub(sent))
    }
}

/// Outcomes, counted.
#[derive(Default)]
pub struct Tally {
    pub accepted: AtomicU64,
    pub duplicate: AtomicU64,
    pub rejected: AtomicU64,
    /// Events whose call failed (no per-event answer).
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Tally {
    fn result(&self, status: i32, error: Option<&gapwatch::proto::EventError>) {
        match EventStatus::try_from(status) {
            Ok(EventStatus::Accepted) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Ok(EventStatus::Duplicate) => self.duplicate.fetch_add(1, Ordering::Relaxed),
            _ => {
                self.error(|| match error {
                    Some(e) => format!("rejected: {} {}", e.field, e.reason),
                    None => "rejected".to_string(),
                });
                self.rejected.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn failed(&self, events: u64, status: &Status) {
        self.error(|| format!("{:?}: {}", status.code(), status.message()));
        if status.code() == tonic::Code::InvalidArgument {
            self.rejected.fetch_add(events, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(events, Ordering::Relaxed);
        }
    }

    fn error(&self, message: impl FnOnce() -> String) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(message());
        }
    }

    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.duplicate.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// How to send one phase (warm-up or measured).
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: Mode,
    /// Unary: concurrent callers; batch: concurrent batch callers; stream:
    /// streams.
    pub workers: usize,
    pub batch_size: usize,
    /// Events per second over all workers; `None`: as fast as acks allow.
    pub rate: Option<f64>,
    /// Stop taking new events after this long.
    pub duration: Option<Duration>,
}

/// One phase in progress.
struct Phase {
    prepared: Arc<Prepared>,
    timings: Arc<Timings>,
    tally: Arc<Tally>,
    range: Range<usize>,
    next: AtomicUsize,
    stop: AtomicBool,
    rate: Option<f64>,
    start: Instant,
    /// Largest lag behind the paced schedule, nanoseconds.
    behind: AtomicU64,
}

impl Phase {
    /// The next `n` events to send, or `None` when the phase is done.
    fn take(&self, n: usize) -> Option<Range<usize>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let first = self.next.fetch_add(n, Ordering::Relaxed);
        (first < self.range.end).then(|| first..(first + n).min(self.range.end))
    }

    /// Waits until event `i` is due (paced runs only).
    async fn pace(&self, i: usize) {
        let Some(rate) = self.rate else { return };
        let due = self.start + Duration::from_secs_f64((i - self.range.start) as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            self.behind
                .fetch_max((now - due).as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn now(&self) -> u64 {
        self.timings.stamp(Instant::now())
    }
}

/// What one phase did.
pub struct PhaseResult {
    pub range: Range<usize>,
    pub start_ns: u64,
    /// The last ack, nanoseconds since `t0`.
    pub end_ns: u64,
    pub acked: u64,
    pub max_behind: Duration,
}

impl PhaseResult {
    pub fn seconds(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    pub fn events_per_second(&self) -> f64 {
        let s = self.seconds();
        if s > 0.0 {
            self.acked as f64 / s
        } else {
            0.0
        }
    }

    /// Ack latencies of the events acked in this phase, nanoseconds, sorted.
    pub fn latencies(&self, timings: &Timings) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .range
            .clone()
            .filter_map(|i| timings.latency(i))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Sends events `range` over `channels` as `plan` says; returns once every
/// sent event is answered.
pub async fn run_phase(
    prepared: &Arc<Prepared>,
    timings: &Arc<Timings>,
    tally: &Arc<Tally>,
    channels: &[Channel],
    plan: &Plan,
    range: Range<usize>,
) -> anyhow::Result<PhaseResult> {
    let start = Instant::now();
    let phase = Arc::new(Phase {
        prepared: prepared.clone(),
        timings: timings.clone(),
        tally: tally.clone(),
        next: AtomicUsize::new(range.start),
        range: range.clone(),
        stop: AtomicBool::new(false),
        rate: plan.rate,
        start,
        behind: AtomicU64::new(0),
    });
    let timer = plan.duration.map(|d| {
        let phase = phase.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            phase.stop.store(true, Ordering::Relaxed);
        })
    });
    let mut workers = Vec::new();
    for w in 0..plan.workers.max(1) {
        let channel = channels[w % channels.len()].clone();
        let phase = phase.clone();
        let batch_size = plan.batch_size;
        workers.push(match plan.mode {
            Mode::Unary => tokio::spawn(unary(phase, channel)),
            Mode::Batch => tokio::spawn(batch(phase, channel, batch_size)),
            Mode::Stream => tokio::spawn(stream(phase, channel)),
        });
    }
    let mut first_error = None;
    for w in workers {
        if let Err(e) = w.await? {
            first_error.get_or_insert(e);
        }
    }
    if let Some(timer) = timer {
        timer.abort();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut acked = 0u64;
    let mut end_ns = 0u64;
    for i in range.clone() {
        if let Some(at) = timings.acked(i) {
            acked += 1;
            end_ns = end_ns.max(at);
        }
    }
    Ok(PhaseResult {
        range,
        start_ns: timings.stamp(start) - 1,
        end_ns,
        acked,
        max_behind: Duration::from_nanos(phase.behind.load(Ordering::Relaxed)),
    })
}

/// One caller: one event per call, waiting for each answer.
async fn unary(phase: Arc<Phase>, channel: Channel) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel);
    while let Some(r) = phase.take(1) {
        let i = r.start;
        phase.pace(i).await;
        let path = if phase.prepared.meta[i].survey {
            SURVEY
        } else {
            INTERACTION
        };
        phase.timings.mark_sent(i, phase.now());
        grpc.ready().await?;
        let answer = grpc
            .unary::<_, RecordEventResponse, _>(
                Request::new(phase.prepared.unary_bytes(i)),
                PathAndQuery::from_static(path),
                PreEncoded::default(),
            )
            .await;
        match answer {
            Ok(response) => {
                phase.timings.mark_acked(i, phase.now());
                let counter = if response.get_ref().duplicate {
                    &phase.tally.duplicate
                } else {
                    &phase.tally.accepted
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => phase.tally.failed(1, &status),
        }
    }
    Ok(())
}

/// One batch caller: `size` events per call.
async fn batch(phase: Arc<Phase>, channel: Channel, size: usize) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel);
    while let Some(r) = phase.take(size.max(1)) {
        phase.pace(r.start).await;
        let sent = phase.now();
        for i in r.clone() {
            phase.timings.mark_sent(i, sent);
        }
        grpc.ready().await?;
        let answer = grpc
            .unary::<_, RecordBatchResponse, _>(
                Request::new(phase.prepared.stream_bytes(r.clone())),
                PathAndQuery::from_static(BATCH),
                PreEncoded::default(),
            )
            .await;
        match answer {
            Ok(response) => {
                let acked = phase.now();
                let results = response.into_inner().results;
                if results.len() != r.len() {
                    anyhow::bail!(
                        "RecordBatch answered {} results for {} events",
                        results.len(),
                        r.len()
                    );
                }
                for (i, result) in r.zip(&results) {
                    phase.timings.mark_acked(i, acked);
                    phase.tally.result(result.status, result.error.as_ref());
                }
            }
            Err(status) => phase.tally.failed(r.len() as u64, &status),
        }
    }
    Ok(())
}

/// One stream: the sender never waits for acks; each ack (in stream
/// order) is matched to the event sent at that position.
async fn stream(phase: Arc<Phase>, channel: Channel) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let (requests, outbound) = mpsc::channel::<Bytes>(1024);
    // Event indices in stream order, sender to receiver.
    let (order_tx, mut order) = mpsc::unbounded_channel::<usize>();
    let sender = {
        let phase = phase.clone();
        tokio::spawn(async move {
            while let Some(r) = phase.take(1) {
                let i = r.start;
                phase.pace(i).await;
                if order_tx.send(i).is_err() {
                    break;
                }
                phase.timings.mark_sent(i, phase.now());
                if requests.send(phase.prepared.stream_bytes(r)).await.is_err() {
                    break;
                }
            }
            // Dropping `requests` half-closes the stream.
        })
    };
    let response = grpc
        .streaming::<_, _, EventResult, _>(
            Request::new(ReceiverStream::new(outbound)),
            PathAndQuery::from_static(STREAM),
            PreEncoded::default(),
        )
        .await;
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(status) => {
            sender.abort();
            anyhow::bail!(
                "StreamEvents failed: {:?}: {}",
                status.code(),
                status.message()
            );
        }
    };
    let mut answered = 0u64;
    let outcome = loop {
        match inbound.message().await {
            Ok(Some(result)) => {
                let i = match order.try_recv() {
                    Ok(i) => i,
                    Err(_) => match order.recv().await {
                        Some(i) => i,
                        None => break Err(anyhow::anyhow!("more acks than events sent")),
                    },
                };
                phase.timings.mark_acked(i, phase.now());
                phase.tally.result(result.status, result.error.as_ref());
                answered += 1;
            }
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(anyhow::anyhow!(
                    "StreamEvents ended after {answered} acks: {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    };
    sender.abort();
    let _ = sender.await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapwatch::proto::{RecordBatchRequest, Survey};

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                kind: Some(event::Kind::Survey(Survey {
                    event_id: format!("e-{i}"),
                    customer_id: format!("c-{}", i % 3),
                    csat: Some(4),
                    ..Default::default()
                })),
            })
            .collect()
    }

    #[test]
    fn consecutive_stream_requests_are_a_batch_request() {
        let events = events(5);
        let prepared = Prepared::new(events.clone().into_iter(), true);
        assert_eq!(prepared.len(), 5);
        assert_eq!(prepared.customers.len(), 3);
        let batch = RecordBatchRequest::decode(prepared.stream_bytes(1..4)).expect("decodes");
        assert_eq!(batch.events, events[1..4]);
        let one = StreamEventsRequest::decode(prepared.stream_bytes(2..3)).expect("decodes");
        assert_eq!(one.event.as_ref(), Some(&events[2]));
        let unary = RecordSurveyRequest::decode(prepared.unary_bytes(4)).expect("decodes");
        assert_eq!(unary.survey.map(|s| s.event_id), Some("e-4".to_string()));
    }
}
