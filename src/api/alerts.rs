//! `AlertService`: the alert log as a resumable stream, listings and
//! acknowledgements.
//!
//! Each subscriber is one task that pulls from the feed at its own pace
//! into a bounded channel: from memory near the head, from the log in sled
//! when behind. Ingest never waits for subscribers, and a subscriber never
//! skips a transition.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, now_millis, page_size, Shared};
use crate::domain::alert::{self as d, Alert};
use crate::error::Error;
use crate::proto::{
    self, alert_service_server::AlertService, subscribe_response, AcknowledgeAlertRequest,
    Heartbeat, ListAlertsRequest, ListAlertsResponse, SubscribeRequest, SubscribeResponse,
};

/// Transitions read from the feed at a time.
const READ_CHUNK: usize = 256;
const MAX_NOTE_BYTES: usize = 1024;

pub struct AlertApi {
    shared: Shared,
}

impl AlertApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn kind(k: i32, field: &str) -> Result<d::AlertKind, Error> {
    use proto::AlertKind as P;
    match P::try_from(k) {
        Ok(P::GapWidening) => Ok(d::AlertKind::GapWidening),
        Ok(P::SatisfactionDrop) => Ok(d::AlertKind::SatisfactionDrop),
        Ok(P::LoyaltyDrop) => Ok(d::AlertKind::LoyaltyDrop),
        Ok(P::ChurnRisk) => Ok(d::AlertKind::ChurnRisk),
        Ok(P::ComplaintOverdue) => Ok(d::AlertKind::ComplaintOverdue),
        Ok(P::Unspecified) | Err(_) => {
            Err(Error::invalid(field, format!("unknown alert kind {k}")))
        }
    }
}

/// A `kinds` filter; errors name the offending entry (`kinds[1]`).
fn kinds(list: &[i32]) -> Result<Vec<d::AlertKind>, Error> {
    list.iter()
        .enumerate()
        .map(|(i, k)| kind(*k, &format!("kinds[{i}]")))
        .collect()
}

fn state(s: i32, field: &str) -> Result<d::AlertState, Error> {
    use proto::AlertState as P;
    match P::try_from(s) {
        Ok(P::Firing) => Ok(d::AlertState::Firing),
        Ok(P::Acknowledged) => Ok(d::AlertState::Acknowledged),
        Ok(P::Resolved) => Ok(d::AlertState::Resolved),
        Ok(P::Unspecified) | Err(_) => {
            Err(Error::invalid(field, format!("unknown alert state {s}")))
        }
    }
}

fn min_severity(s: i32) -> Result<d::AlertSeverity, Error> {
    use proto::AlertSeverity as P;
    match P::try_from(s) {
        Ok(P::Unspecified | P::Info) => Ok(d::AlertSeverity::Info),
        Ok(P::Warning) => Ok(d::AlertSeverity::Warning),
        Ok(P::Critical) => Ok(d::AlertSeverity::Critical),
        Err(_) => Err(Error::invalid(
            "min_severity",
            format!("unknown severity {s}"),
        )),
    }
}

/// What a subscriber asked to see.
struct Filter {
    kinds: Vec<d::AlertKind>,
    scopes: Vec<String>,
    dimensions: Vec<String>,
    min_severity: d::AlertSeverity,
}

impl Filter {
    fn from_request(r: &SubscribeRequest) -> Result<Self, Error> {
        Ok(Self {
            kinds: kinds(&r.kinds)?,
            scopes: r.scopes.clone(),
            dimensions: r.dimensions.clone(),
            min_severity: min_severity(r.min_severity)?,
        })
    }

    fn matches(&self, a: &Alert) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&a.kind()))
            && (self.scopes.is_empty()
                || a.scope()
                    .is_some_and(|s| self.scopes.iter().any(|x| x == s)))
            && (self.dimensions.is_empty()
                || a.dimension
                    .as_ref()
                    .is_some_and(|dim| self.dimensions.contains(dim)))
            && a.severity >= self.min_severity
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AlertService for AlertApi {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let filter = Filter::from_request(&request)?;
        let feed = self.shared.engine.feed().clone();
        let store = self.shared.store.clone();
        let head = feed.head();
        let pruned = store.alerts_pruned_through().map_err(Error::from)?;
        let start = match request.from_sequence {
            None => head + 1,
            // 0: the oldest retained transition, whatever retention removed.
            Some(0) => pruned + 1,
            Some(from) => from,
        };
        if start <= pruned {
            return Err(Error::OutOfRange {
                field: "from_sequence".into(),
                reason: format!(
                    "sequence {start} is older than retention; the oldest available sequence is {}",
                    pruned + 1
                ),
            }
            .into());
        }
        if start > head + 1 {
            return Err(Error::OutOfRange {
                field: "from_sequence".into(),
                reason: format!("sequence {start} is beyond the head of the log ({head})"),
            }
            .into());
        }
        let settings = &self.shared.config.alerts;
        let (tx, rx) = mpsc::channel(settings.subscriber_buffer);
        let heartbeat = Duration::from_secs_f64(settings.heartbeat_secs);
        let shutdown = self.shared.shutdown.clone();
        let max_secs = self.shared.config.server.stream_max_duration_secs;
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let session = Subscriber {
                feed,
                store,
                filter,
                next: start,
                tx,
                metrics,
            };
            session.run(heartbeat, shutdown, max_secs).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let r = request.into_inner();
        let states: Vec<d::AlertState> = if r.states.is_empty() {
            vec![d::AlertState::Firing, d::AlertState::Acknowledged]
        } else {
            r.states
                .iter()
                .enumerate()
                .map(|(i, s)| state(*s, &format!("states[{i}]")))
                .collect::<Result<_, _>>()?
        };
        let kinds = kinds(&r.kinds)?;
        let limit = page_size(r.page_size)?;
        let after = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<u64>().map_err(|_| {
                Error::invalid("page_token", "is not a token returned by ListAlerts")
            })?
        };
        // Read before the listing: every transition up to it is reflected.
        let head = self.shared.engine.feed().head();
        let store = self.shared.store.clone();
        let scope = r.scope;
        let alerts = tokio::task::spawn_blocking(move || {
            store.alerts(after, limit + 1, |a| {
                states.contains(&a.state)
                    && (kinds.is_empty() || kinds.contains(&a.kind()))
                    && (scope.is_empty() || a.scope() == Some(scope.as_str()))
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Error::from)?;
        let more = alerts.len() > limit;
        let page: Vec<_> = alerts.into_iter().take(limit).collect();
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListAlertsResponse {
            alerts: page.iter().map(alert).collect(),
            next_page_token,
            head_sequence: head,
        }))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<AcknowledgeAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let r = request.into_inner();
        let id = r
            .id
            .parse::<u64>()
            .map_err(|_| Error::invalid("id", "must be an alert id (a decimal sequence number)"))?;
        if r.note.len() > MAX_NOTE_BYTES {
            return Err(Error::invalid("note", format!("at most {MAX_NOTE_BYTES} bytes")).into());
        }
        if r.note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::invalid("note", "must not contain control characters").into());
        }
        let acknowledged = self
            .shared
            .engine
            .acknowledge(id, r.note, r.rebaseline)
            .await?;
        Ok(Response::new(alert(&acknowledged)))
    }
}

struct Subscriber {
    feed: Arc<crate::engine::AlertFeed>,
    store: crate::store::Store,
    filter: Filter,
    /// The next sequence to deliver.
    next: u64,
    tx: mpsc::Sender<Result<SubscribeResponse, Status>>,
    metrics: crate::telemetry::Metrics,
}

impl Subscriber {
    async fn run(
        mut self,
        heartbeat: Duration,
        shutdown: tokio_util::sync::CancellationToken,
        max_secs: u64,
    ) {
        // Counted live until this task ends, however it ends.
        let _live = self.metrics.subscriber();
        let mut head = self.feed.watch();
        let max_duration = super::stream_deadline(max_secs);
        tokio::pin!(max_duration);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            match self.catch_up().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.tx.send(Err(Status::unavailable("server shutting down; resume from the last sequence"))).await;
                    return;
                }
                () = self.tx.closed() => return,
                () = &mut max_duration => {
                    let message = format!(
                        "stream reached server.stream_max_duration_secs; resume from sequence {}",
                        self.next
                    );
                    let _ = self.tx.send(Err(Status::unavailable(message))).await;
                    return;
                }
                changed = head.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {
                    let message = SubscribeResponse {
                        sequence: self.next - 1,
                        message: Some(subscribe_response::Message::Heartbeat(Heartbeat {
                            head_sequence: self.next - 1,
                            time: Some(convert::timestamp(now_millis())),
                        })),
                    };
                    if self.tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Delivers everything committed up to the head. `Ok(false)` when the
    /// client went away.
    async fn catch_up(&mut self) -> Result<bool, Status> {
        loop {
            let batch = self
                .feed
                .read(&self.store, self.next, READ_CHUNK)
                .map_err(Error::from)?;
            let Some(first) = batch.first() else {
                return Ok(true);
            };
            self.metrics
                .subscriber_lag(self.feed.head().saturating_sub(self.next - 1));
            if first.sequence != self.next {
                // Retention overtook a subscriber that fell very far behind.
                return Err(Error::OutOfRange {
                    field: "from_sequence".into(),
                    reason: format!(
                        "sequences {}..{} were removed by retention before delivery; resume from {}",
                        self.next,
                        first.sequence - 1,
                        first.sequence
                    ),
                }
                .into());
            }
            for a in batch {
                self.next = a.sequence + 1;
                if self.filter.matches(&a) {
                    let message = SubscribeResponse {
                        sequence: a.sequence,
                        message: Some(subscribe_response::Message::Alert(alert(&a))),
                    };
                    if self.tx.send(Ok(message)).await.is_err() {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

pub fn alert(a: &Alert) -> proto::Alert {
    use proto::{AlertKind as K, AlertSeverity as S, AlertState as St, GapKind as G};
    proto::Alert {
        id: a.id.to_string(),
        kind: match a.kind() {
            d::AlertKind::GapWidening => K::GapWidening,
            d::AlertKind::SatisfactionDrop => K::SatisfactionDrop,
            d::AlertKind::LoyaltyDrop => K::LoyaltyDrop,
            d::AlertKind::ChurnRisk => K::ChurnRisk,
            d::AlertKind::ComplaintOverdue => K::ComplaintOverdue,
        }
        .into(),
        state: match a.state {
            d::AlertState::Firing => St::Firing,
            d::AlertState::Acknowledged => St::Acknowledged,
            d::AlertState::Resolved => St::Resolved,
        }
        .into(),
        severity: match a.severity {
            d::AlertSeverity::Info => S::Info,
            d::AlertSeverity::Warning => S::Warning,
            d::AlertSeverity::Critical => S::Critical,
        }
        .into(),
        scope: a.scope().unwrap_or_default().to_string(),
        dimension: a.dimension.clone().unwrap_or_default(),
        gap_kind: match a.gap() {
            None => G::Unspecified,
            Some(d::GapKind::Total) => G::Total,
            Some(d::GapKind::Promotion) => G::Promotion,
            Some(d::GapKind::Understanding) => G::Understanding,
            Some(d::GapKind::Procedure) => G::Procedure,
            Some(d::GapKind::Behavior) => G::Behavior,
            Some(d::GapKind::Perception) => G::Perception,
        }
        .into(),
        customer_id: a.customer().unwrap_or_default().to_string(),
        case_id: a.case().unwrap_or_default().to_string(),
        value: a.value,
        baseline: a.baseline,
        threshold: a.threshold,
        observations: a.observations,
        event_time: Some(convert::timestamp(a.event_at)),
        update_time: Some(convert::timestamp(a.updated_at)),
        message: a.message.clone(),
        sequence: a.sequence,
        note: a.note.clone(),
    }
}
