//! The instruments. Names are OpenTelemetry names (`gapwatch.…`); the
//! Prometheus names of `/metrics` follow from them (see the README).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge, UpDownCounter};
use opentelemetry::KeyValue;
use tonic::Code;

use crate::domain::alert::{Alert, AlertKind, AlertSeverity, AlertState, OpenAlerts};
use crate::store::Store;

const ALERT_KINDS: [AlertKind; 5] = [
    AlertKind::GapWidening,
    AlertKind::SatisfactionDrop,
    AlertKind::LoyaltyDrop,
    AlertKind::ChurnRisk,
    AlertKind::ComplaintOverdue,
];

/// Seconds: 0.5 ms … 10 s.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Events per group commit.
const BATCH_BOUNDS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];
/// Alert transitions behind the head.
const LAG_BOUNDS: [f64; 12] = [
    0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Every gapwatch instrument. Cheap to clone; created once per
/// [`super::Telemetry`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Instruments>,
    state: Arc<Observed>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Instruments {
    events: Counter<u64>,
    ack_latency: Histogram<f64>,
    batch_size: Histogram<u64>,
    commit_latency: Histogram<f64>,
    alert_transitions: Counter<u64>,
    subscribers: UpDownCounter<i64>,
    subscriber_lag: Histogram<u64>,
    _observed: Vec<ObservableGauge<u64>>,
    _open: ObservableGauge<i64>,
}

/// What the observable gauges report, while a server is attached.
#[derive(Default)]
struct Observed {
    attached: AtomicBool,
    store: Mutex<Option<Store>>,
    open_alerts: [AtomicI64; 5],
    customers: AtomicU64,
    scopes: AtomicU64,
}

/// What an event sent to the ingest service was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Survey,
    Interaction,
    /// A wire event with neither body (rejected by validation).
    Unknown,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Survey => "survey",
            Self::Interaction => "interaction",
            Self::Unknown => "unknown",
        }
    }

    pub fn of(event: &crate::proto::Event) -> Self {
        use crate::proto::event::Kind;
        match &event.kind {
            Some(Kind::Survey(_)) => Self::Survey,
            Some(Kind::Interaction(_)) => Self::Interaction,
            None => Self::Unknown,
        }
    }
}

/// Event outcomes counted locally, then added to the counter once (a batch
/// of 10,000 events costs a handful of counter updates).
#[derive(Debug, Default)]
pub struct EventTally {
    rows: Vec<(EventKind, Option<Code>, u64)>,
}

/// `None` = accepted, `Some(Ok)` = duplicate, `Some(code)` = rejected.
const DUPLICATE: Option<Code> = Some(Code::Ok);

impl EventTally {
    pub fn accepted(&mut self, kind: EventKind) {
        self.add(kind, None);
    }

    pub fn duplicate(&mut self, kind: EventKind) {
        self.add(kind, DUPLICATE);
    }

    pub fn rejected(&mut self, kind: EventKind, code: Code) {
        self.add(
            kind,
            Some(if code == Code::Ok {
                Code::Unknown
            } else {
                code
            }),
        );
    }

    fn add(&mut self, kind: EventKind, code: Option<Code>) {
        match self.rows.iter_mut().find(|r| r.0 == kind && r.1 == code) {
            Some(row) => row.2 += 1,
            None => self.rows.push((kind, code, 1)),
        }
    }

    /// Counts one result of `RecordBatch` / `StreamEvents`.
    pub fn result(&mut self, kind: EventKind, result: &crate::proto::EventResult) {
        use crate::proto::EventStatus;
        match EventStatus::try_from(result.status) {
            Ok(EventStatus::Accepted) => self.accepted(kind),
            Ok(EventStatus::Duplicate) => self.duplicate(kind),
            _ => {
                let code = result
                    .error
                    .as_ref()
                    .map_or(Code::Unknown, |e| Code::from_i32(e.code));
                self.rejected(kind, code);
            }
        }
    }

    /// Counts one outcome of the engine.
    pub fn outcome(&mut self, kind: EventKind, outcome: &crate::engine::Outcome) {
        use crate::engine::Outcome;
        match outcome {
            Outcome::Accepted(_) => self.accepted(kind),
            Outcome::Duplicate(_) => self.duplicate(kind),
            Outcome::Rejected(e) => self.rejected(kind, crate::api::status::code(e)),
        }
    }
}

/// The gRPC code name, as in the README's error table.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn kind_name(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::GapWidening => "gap_widening",
        AlertKind::SatisfactionDrop => "satisfaction_drop",
        AlertKind::LoyaltyDrop => "loyalty_drop",
        AlertKind::ChurnRisk => "churn_risk",
        AlertKind::ComplaintOverdue => "complaint_overdue",
    }
}

fn state_name(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Acknowledged => "acknowledged",
        AlertState::Resolved => "resolved",
    }
}

fn severity_name(severity: AlertSeverity) -> &'static str {
    match severity {
        AlertSeverity::Info => "info",
        AlertSeverity::Warning => "warning",
        AlertSeverity::Critical => "critical",
    }
}

/// Decrements the live-subscriber count when dropped.
pub struct SubscriberGuard(Metrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.inner.subscribers.add(-1, &[]);
    }
}

/// Detaches the store from the gauges when dropped (so no reference to the
/// data dir outlives the server).
pub struct Attached(Metrics);

impl Drop for Attached {
    fn drop(&mut self) {
        let state = &self.0.state;
        state.attached.store(false, Ordering::Release);
        *state.store.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        let state = Arc::new(Observed::default());
        let size = {
            let state = state.clone();
            meter
                .u64_observable_gauge("gapwatch.store.size")
                .with_description("Size of the sled data dir on disk")
                .with_unit("By")
                .with_callback(move |o| {
                    let store = state
                        .store
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some(Ok(bytes)) = store.map(|s| s.size_on_disk()) {
                        o.observe(bytes, &[]);
                    }
                })
                .build()
        };
        let customers = {
            let state = state.clone();
            meter
                .u64_observable_gauge("gapwatch.customers")
                .with_description("Customers tracked")
                .with_unit("{customer}")
                .with_callback(move |o| {
                    if state.attached.load(Ordering::Acquire) {
                        o.observe(state.customers.load(Ordering::Relaxed), &[]);
                    }
                })
                .build()
        };
        let scopes = {
            let state = state.clone();
            meter
                .u64_observable_gauge("gapwatch.scopes")
                .with_description("Scopes tracked (all and every attribute key=value)")
                .with_unit("{scope}")
                .with_callback(move |o| {
                    if state.attached.load(Ordering::Acquire) {
                        o.observe(state.scopes.load(Ordering::Relaxed), &[]);
                    }
                })
                .build()
        };
        let open = {
            let state = state.clone();
            meter
                .i64_observable_gauge("gapwatch.alerts.open")
                .with_description("Open alerts (firing or acknowledged) by kind")
                .with_unit("{alert}")
                .with_callback(move |o| {
                    if state.attached.load(Ordering::Acquire) {
                        for (i, kind) in ALERT_KINDS.iter().enumerate() {
                            o.observe(
                                state.open_alerts[i].load(Ordering::Relaxed),
                                &[KeyValue::new("kind", kind_name(*kind))],
                            );
                        }
                    }
                })
                .build()
        };
        let inner = Instruments {
            events: meter
                .u64_counter("gapwatch.events")
                .with_description(
                    "Events answered by the ingest service, by kind, outcome \
                     (accepted, duplicate, rejected) and reason (gRPC code of a rejection)",
                )
                .with_unit("{event}")
                .build(),
            ack_latency: meter
                .f64_histogram("gapwatch.ingest.ack_latency")
                .with_description(
                    "From an ingest command reaching the engine to its events being durable",
                )
                .with_unit("s")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            batch_size: meter
                .u64_histogram("gapwatch.engine.batch_size")
                .with_description("Events applied in one group commit")
                .with_unit("{event}")
                .with_boundaries(BATCH_BOUNDS.to_vec())
                .build(),
            commit_latency: meter
                .f64_histogram("gapwatch.engine.commit_latency")
                .with_description(
                    "One group commit: write-ahead log record, its sync and per-key writes",
                )
                .with_unit("s")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            alert_transitions: meter
                .u64_counter("gapwatch.alerts.transitions")
                .with_description("Alert transitions written, by kind, state and severity")
                .with_unit("{transition}")
                .build(),
            subscribers: meter
                .i64_up_down_counter("gapwatch.alerts.subscribers")
                .with_description("Live AlertService.Subscribe streams")
                .with_unit("{subscriber}")
                .build(),
            subscriber_lag: meter
                .u64_histogram("gapwatch.alerts.subscriber_lag")
                .with_description(
                    "Transitions a subscriber is behind the head when it reads from the feed",
                )
                .with_unit("{transition}")
                .with_boundaries(LAG_BOUNDS.to_vec())
                .build(),
            _observed: vec![size, customers, scopes],
            _open: open,
        };
        Self {
            inner: Arc::new(inner),
            state,
        }
    }

    /// Reports `store` in the gauges until the guard is dropped, with the
    /// open alerts read once now (the count kept with the commits).
    pub fn attach(&self, store: &Store) -> crate::store::Result<Attached> {
        self.open_alerts(&store.open_alerts()?);
        *self.state.store.lock().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
        self.state.attached.store(true, Ordering::Release);
        Ok(Attached(self.clone()))
    }

    /// Adds counted event outcomes.
    pub fn events(&self, tally: &EventTally) {
        for (kind, code, n) in &tally.rows {
            let kind = KeyValue::new("kind", kind.as_str());
            match code {
                None => self
                    .inner
                    .events
                    .add(*n, &[kind, KeyValue::new("outcome", "accepted")]),
                Some(Code::Ok) => self
                    .inner
                    .events
                    .add(*n, &[kind, KeyValue::new("outcome", "duplicate")]),
                Some(code) => self.inner.events.add(
                    *n,
                    &[
                        kind,
                        KeyValue::new("outcome", "rejected"),
                        KeyValue::new("reason", code_name(*code)),
                    ],
                ),
            }
        }
    }

    /// One ingest command answered, durable; `since` is when it was queued.
    pub fn acked(&self, since: Instant) {
        self.inner
            .ack_latency
            .record(since.elapsed().as_secs_f64(), &[]);
    }

    /// One group commit: the events it applied and how long the sled apply
    /// and flush took (`None` when nothing was written).
    pub fn committed(&self, events: usize, commit: Option<Duration>) {
        if events > 0 {
            self.inner.batch_size.record(events as u64, &[]);
        }
        if let Some(took) = commit {
            self.inner.commit_latency.record(took.as_secs_f64(), &[]);
        }
    }

    /// Durable alert transitions: counts them.
    pub fn transitions(&self, alerts: &[Alert]) {
        for a in alerts {
            self.inner.alert_transitions.add(
                1,
                &[
                    KeyValue::new("kind", kind_name(a.kind())),
                    KeyValue::new("state", state_name(a.state)),
                    KeyValue::new("severity", severity_name(a.severity)),
                ],
            );
        }
    }

    /// Open alerts by kind (the writer's committed count).
    pub fn open_alerts(&self, open: &OpenAlerts) {
        for (slot, kind) in self.state.open_alerts.iter().zip(ALERT_KINDS) {
            let n = i64::try_from(open.count(kind)).unwrap_or(i64::MAX);
            slot.store(n, Ordering::Relaxed);
        }
    }

    /// Customers and scopes in the store (the writer's committed counts).
    pub fn entities(&self, customers: u64, scopes: u64) {
        self.state.customers.store(customers, Ordering::Relaxed);
        self.state.scopes.store(scopes, Ordering::Relaxed);
    }

    /// A live subscriber, until the guard is dropped.
    pub fn subscriber(&self) -> SubscriberGuard {
        self.inner.subscribers.add(1, &[]);
        SubscriberGuard(self.clone())
    }

    /// How far behind the head a subscriber was when it read.
    pub fn subscriber_lag(&self, behind: u64) {
        self.inner.subscriber_lag.record(behind, &[]);
    }
}
