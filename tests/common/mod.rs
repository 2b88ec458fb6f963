//! Test harness for the gRPC integration tests: an in-process gapwatch on
//! `127.0.0.1:0` with a temporary data dir, typed clients, event builders
//! and float/JSON comparison helpers.
//!
//! Every event time is fixed in the past (from [`T0`] = 2026-01-01T00:00:00Z)
//! and every score query passes an explicit `as_of_time`, so the numbers are
//! deterministic. The default half-life is 30 days.
#![allow(dead_code)] // each test crate uses a different part of the harness
pub mod child;
pub mod generate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gapwatch::proto::alert_service_client::AlertServiceClient;
use gapwatch::proto::config_service_client::ConfigServiceClient;
use gapwatch::proto::ingest_service_client::IngestServiceClient;
use gapwatch::proto::score_service_client::ScoreServiceClient;
use gapwatch::Config;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub use gapwatch::proto;
pub use gapwatch::proto::{Event, Interaction, InteractionKind, Severity, Survey};

/// 2026-01-01T00:00:00Z in seconds since the epoch (20 454 days).
pub const T0: i64 = 1_767_225_600;
pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// A gapwatch server running on the test's tokio runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub channel: Channel,
    pub ingest: IngestServiceClient<Channel>,
    pub score: ScoreServiceClient<Channel>,
    pub config: ConfigServiceClient<Channel>,
    pub alerts: AlertServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Owned temporary data dir (`None` when the caller owns the dir).
    dir: Option<TempDir>,
}

impl TestServer {
    /// Defaults, in a fresh temporary data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Defaults edited by `config_edit`, in a fresh temporary data dir.
    pub async fn start_with(config_edit: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new().expect("create a temporary data dir");
        let mut server = Self::start_at(dir.path(), config_edit).await;
        server.dir = Some(dir);
        server
    }

    /// Runs on a data dir the caller owns (restart tests).
    pub async fn start_at(data_dir: &Path, config_edit: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.storage.data_dir = data_dir.to_path_buf();
        config.storage.cache_capacity_mb = 16;
        config_edit(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender (test ended without stop) also shuts down.
            let _ = rx.await;
        };
        let handle = tokio::spawn(gapwatch::run(config, listener, shutdown));
        // Lazy: the first call waits for the server instead of racing it;
        // if the server fails, the listener closes and calls fail.
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        Self {
            addr,
            data_dir: data_dir.to_path_buf(),
            ingest: IngestServiceClient::new(channel.clone()),
            score: ScoreServiceClient::new(channel.clone()),
            config: ConfigServiceClient::new(channel.clone()),
            alerts: AlertServiceClient::new(channel.clone()),
            channel,
            shutdown: Some(tx),
            handle,
            dir: None,
        }
    }

    /// Shuts the server down and waits until `run` returned (so sled has
    /// released the data dir); asserts it returned `Ok`.
    pub async fn stop(self) {
        let TestServer {
            channel,
            ingest,
            score,
            config,
            alerts,
            mut shutdown,
            handle,
            dir,
            ..
        } = self;
        // Close our connection first so the graceful drain has nothing to
        // wait for.
        drop((channel, ingest, score, config, alerts));
        if let Some(tx) = shutdown.take() {
            let _ = tx.send(());
        }
        let result = handle.await.expect("the server task panicked");
        if let Err(e) = result {
            panic!("gapwatch::run returned an error: {e:#}");
        }
        drop(dir);
    }

    pub async fn record_survey(
        &self,
        survey: Survey,
    ) -> Result<proto::RecordEventResponse, Status> {
        self.ingest
            .clone()
            .record_survey(proto::RecordSurveyRequest {
                survey: Some(survey),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn record_interaction(
        &self,
        interaction: Interaction,
    ) -> Result<proto::RecordEventResponse, Status> {
        self.ingest
            .clone()
            .record_interaction(proto::RecordInteractionRequest {
                interaction: Some(interaction),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Records a survey that must be accepted; returns its sequence.
    pub async fn accept_survey(&self, survey: Survey) -> u64 {
        let id = survey.event_id.clone();
        let r = self
            .record_survey(survey)
            .await
            .unwrap_or_else(|s| panic!("survey {id} refused: {s:?}"));
        assert!(!r.duplicate, "survey {id} reported as duplicate");
        r.sequence
    }

    /// Records an interaction that must be accepted; returns its sequence.
    pub async fn accept_interaction(&self, interaction: Interaction) -> u64 {
        let id = interaction.event_id.clone();
        let r = self
            .record_interaction(interaction)
            .await
            .unwrap_or_else(|s| panic!("interaction {id} refused: {s:?}"));
        assert!(!r.duplicate, "interaction {id} reported as duplicate");
        r.sequence
    }

    pub async fn record_batch(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<proto::EventResult>, Status> {
        self.ingest
            .clone()
            .record_batch(proto::RecordBatchRequest { events })
            .await
            .map(|r| r.into_inner().results)
    }

    /// Streams `events` over one StreamEvents call and returns every result,
    /// in order, once the server has ended the stream cleanly.
    pub async fn stream_all(&self, events: Vec<Event>) -> Vec<proto::EventResult> {
        let requests: Vec<_> = events
            .into_iter()
            .map(|event| proto::StreamEventsRequest { event: Some(event) })
            .collect();
        let mut acks = self
            .ingest
            .clone()
            .stream_events(tokio_stream::iter(requests))
            .await
            .expect("the stream opens")
            .into_inner();
        let mut results = Vec::new();
        while let Some(result) = acks.message().await.expect("the stream ends cleanly") {
            results.push(result);
        }
        results
    }

    /// Records events in batches of at most 1,000; every one must be
    /// accepted.
    pub async fn accept_all(&self, events: &[Event]) {
        for chunk in events.chunks(1_000) {
            let results = self
                .record_batch(chunk.to_vec())
                .await
                .expect("batch refused");
            for r in results {
                assert_eq!(
                    r.status(),
                    proto::EventStatus::Accepted,
                    "event {} not accepted: {r:?}",
                    r.event_id
                );
            }
        }
    }

    pub async fn try_scope(
        &self,
        scope: &str,
        as_of_secs: i64,
    ) -> Result<proto::ScopeScore, Status> {
        self.score
            .clone()
            .get_scope_score(proto::GetScopeScoreRequest {
                scope: scope.to_string(),
                as_of_time: Some(ts(as_of_secs)),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn scope(&self, scope: &str, as_of_secs: i64) -> proto::ScopeScore {
        self.try_scope(scope, as_of_secs)
            .await
            .unwrap_or_else(|s| panic!("GetScopeScore({scope}) failed: {s:?}"))
    }

    pub async fn try_customer(
        &self,
        customer: &str,
        as_of_secs: i64,
    ) -> Result<proto::CustomerScore, Status> {
        self.score
            .clone()
            .get_customer_score(proto::GetCustomerScoreRequest {
                customer_id: customer.to_string(),
                as_of_time: Some(ts(as_of_secs)),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn customer(&self, customer: &str, as_of_secs: i64) -> proto::CustomerScore {
        self.try_customer(customer, as_of_secs)
            .await
            .unwrap_or_else(|s| panic!("GetCustomerScore({customer}) failed: {s:?}"))
    }

    /// Every page of ListScopes (optionally of one key).
    pub async fn all_scopes(&self, attribute_key: &str) -> Vec<proto::ScopeSummary> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .score
                .clone()
                .list_scopes(proto::ListScopesRequest {
                    attribute_key: attribute_key.to_string(),
                    page_size: 0,
                    page_token: token,
                })
                .await
                .expect("ListScopes")
                .into_inner();
            out.extend(page.scopes);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }

    pub async fn put_dimension(
        &self,
        dimension: proto::Dimension,
    ) -> Result<proto::Dimension, Status> {
        self.config
            .clone()
            .put_dimension(proto::PutDimensionRequest {
                dimension: Some(dimension),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn dimension_names(&self) -> Vec<String> {
        self.config
            .clone()
            .list_dimensions(proto::ListDimensionsRequest {})
            .await
            .expect("ListDimensions")
            .into_inner()
            .dimensions
            .into_iter()
            .map(|d| d.name)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Event builders. Complete the messages with struct-update syntax:
// `Survey { csat: Some(4), ..survey("e1", "alice", T0) }`.

pub fn ts(secs: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// Seconds since the epoch, now (for "in the future" checks only).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A survey with no score yet (invalid until one is set).
pub fn survey(id: &str, customer: &str, at_secs: i64) -> Survey {
    Survey {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        occur_time: Some(ts(at_secs)),
        ..Survey::default()
    }
}

pub fn survey_in(id: &str, customer: &str, at_secs: i64, attributes: &[(&str, &str)]) -> Survey {
    Survey {
        attributes: attrs(attributes),
        ..survey(id, customer, at_secs)
    }
}

pub fn csat(id: &str, customer: &str, at_secs: i64, value: i32) -> Survey {
    Survey {
        csat: Some(value),
        ..survey(id, customer, at_secs)
    }
}

pub fn rating(
    dimension: &str,
    expectation: i32,
    perception: i32,
    importance: Option<i32>,
) -> proto::DimensionRating {
    proto::DimensionRating {
        dimension: dimension.to_string(),
        expectation,
        perception,
        importance,
    }
}

pub fn interaction(id: &str, customer: &str, at_secs: i64, kind: InteractionKind) -> Interaction {
    Interaction {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        occur_time: Some(ts(at_secs)),
        kind: kind as i32,
        ..Interaction::default()
    }
}

pub fn purchase(id: &str, customer: &str, at_secs: i64, amount: f64) -> Interaction {
    Interaction {
        amount: Some(amount),
        ..interaction(id, customer, at_secs, InteractionKind::Purchase)
    }
}

/// A complaint step (`COMPLAINT_OPENED`/`_RESPONDED`/`_RESOLVED`).
pub fn complaint(
    id: &str,
    customer: &str,
    at_secs: i64,
    kind: InteractionKind,
    case_id: &str,
    severity: Severity,
) -> Interaction {
    Interaction {
        case_id: case_id.to_string(),
        severity: severity as i32,
        ..interaction(id, customer, at_secs, kind)
    }
}

pub fn survey_event(s: Survey) -> Event {
    Event {
        kind: Some(proto::event::Kind::Survey(s)),
    }
}

pub fn interaction_event(i: Interaction) -> Event {
    Event {
        kind: Some(proto::event::Kind::Interaction(i)),
    }
}

// ---------------------------------------------------------------------------
// Alerts.

/// Bound on one wait for a Subscribe message: a stuck stream fails the test
/// instead of hanging it (never an assertion on elapsed time).
pub const STREAM_WAIT: Duration = Duration::from_secs(120);

pub type AlertStream = tonic::Streaming<proto::SubscribeResponse>;

/// Subscribe from `from_sequence` (`None`: from the head), no filter.
pub fn subscribe_from(from_sequence: Option<u64>) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        from_sequence,
        ..proto::SubscribeRequest::default()
    }
}

/// Opens a Subscribe stream on any channel (in-process or child server).
pub async fn open_subscription(
    client: &AlertServiceClient<Channel>,
    request: proto::SubscribeRequest,
) -> Result<AlertStream, Status> {
    client
        .clone()
        .subscribe(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Every alert (all states, all kinds) through ListAlerts, in id order,
/// with the head sequence of the first page.
pub async fn list_every_alert(client: &AlertServiceClient<Channel>) -> (Vec<proto::Alert>, u64) {
    use proto::AlertState as S;
    let mut out = Vec::new();
    let mut token = String::new();
    let mut head = None;
    loop {
        let page = client
            .clone()
            .list_alerts(proto::ListAlertsRequest {
                states: vec![S::Firing as i32, S::Acknowledged as i32, S::Resolved as i32],
                page_size: 1000,
                page_token: token,
                ..proto::ListAlertsRequest::default()
            })
            .await
            .expect("ListAlerts")
            .into_inner();
        head.get_or_insert(page.head_sequence);
        out.extend(page.alerts);
        if page.next_page_token.is_empty() {
            return (out, head.expect("set above"));
        }
        token = page.next_page_token;
    }
}

impl TestServer {
    pub async fn try_subscribe(
        &self,
        request: proto::SubscribeRequest,
    ) -> Result<AlertStream, Status> {
        open_subscription(&self.alerts, request).await
    }

    pub async fn subscribe(&self, request: proto::SubscribeRequest) -> AlertStream {
        self.try_subscribe(request.clone())
            .await
            .unwrap_or_else(|s| panic!("Subscribe({request:?}) failed: {s:?}"))
    }

    pub async fn try_list_alerts(
        &self,
        request: proto::ListAlertsRequest,
    ) -> Result<proto::ListAlertsResponse, Status> {
        self.alerts
            .clone()
            .list_alerts(request)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn list_alerts(
        &self,
        request: proto::ListAlertsRequest,
    ) -> proto::ListAlertsResponse {
        self.try_list_alerts(request.clone())
            .await
            .unwrap_or_else(|s| panic!("ListAlerts({request:?}) failed: {s:?}"))
    }

    /// The alert log's head sequence (from ListAlerts).
    pub async fn alert_head(&self) -> u64 {
        self.list_alerts(proto::ListAlertsRequest::default())
            .await
            .head_sequence
    }

    pub async fn acknowledge(
        &self,
        id: &str,
        note: &str,
        rebaseline: bool,
    ) -> Result<proto::Alert, Status> {
        self.alerts
            .clone()
            .acknowledge_alert(proto::AcknowledgeAlertRequest {
                id: id.to_string(),
                note: note.to_string(),
                rebaseline,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The next Subscribe message; panics if the stream fails, ends or stays
/// silent for [`STREAM_WAIT`].
pub async fn next_message(stream: &mut AlertStream) -> proto::SubscribeResponse {
    match tokio::time::timeout(STREAM_WAIT, stream.message()).await {
        Err(_) => panic!("no Subscribe message within {STREAM_WAIT:?}"),
        Ok(Err(status)) => panic!("the Subscribe stream failed: {status:?}"),
        Ok(Ok(None)) => panic!("the Subscribe stream ended"),
        Ok(Ok(Some(message))) => message,
    }
}

/// The next alert transition, skipping heartbeats. Checks that the
/// message's sequence is the alert's.
pub async fn next_alert(stream: &mut AlertStream) -> proto::Alert {
    loop {
        let message = next_message(stream).await;
        if let Some(proto::subscribe_response::Message::Alert(alert)) = message.message {
            assert_eq!(message.sequence, alert.sequence, "{alert:?}");
            return alert;
        }
    }
}

pub async fn next_alerts(stream: &mut AlertStream, n: usize) -> Vec<proto::Alert> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_alert(stream).await);
    }
    out
}

/// Every alert delivered until the stream says it is at or past `head` (an
/// alert with that sequence, or a heartbeat: "every matching transition up
/// to it has been delivered").
pub async fn alerts_through(stream: &mut AlertStream, head: u64) -> Vec<proto::Alert> {
    let mut out = Vec::new();
    loop {
        let message = next_message(stream).await;
        let sequence = message.sequence;
        match message.message {
            Some(proto::subscribe_response::Message::Alert(alert)) => {
                assert_eq!(sequence, alert.sequence, "{alert:?}");
                out.push(alert);
            }
            Some(proto::subscribe_response::Message::Heartbeat(h)) => {
                assert_eq!(sequence, h.head_sequence, "heartbeat {h:?}");
            }
            None => panic!("a Subscribe message with no content at {sequence}"),
        }
        if sequence >= head {
            return out;
        }
    }
}

/// Reads until a heartbeat reports `head` and asserts no alert came first.
pub async fn assert_no_alert_through(stream: &mut AlertStream, head: u64) {
    let alerts = alerts_through(stream, head).await;
    assert!(alerts.is_empty(), "unexpected transitions {alerts:#?}");
}

/// A survey with only dimension ratings `(dimension, expectation,
/// perception)` (importance unset).
pub fn rated(
    id: &str,
    customer: &str,
    at_secs: i64,
    attributes: &[(&str, &str)],
    ratings: &[(&str, i32, i32)],
) -> Survey {
    Survey {
        ratings: ratings
            .iter()
            .map(|(d, e, p)| rating(d, *e, *p, None))
            .collect(),
        ..survey_in(id, customer, at_secs, attributes)
    }
}

// ---------------------------------------------------------------------------
// Assertions.

/// Relative (or, near 0, absolute) tolerance of float comparisons.
pub const TOLERANCE: f64 = 1e-9;

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
pub fn assert_close(actual: f64, expected: f64) {
    assert!(close(actual, expected), "got {actual}, expected {expected}");
}

#[track_caller]
pub fn assert_some_close(actual: Option<f64>, expected: f64) {
    match actual {
        Some(a) => assert!(close(a, expected), "got {a}, expected {expected}"),
        None => panic!("got None, expected {expected}"),
    }
}

/// The google.rpc.BadRequest violations of a status, as (field, description).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

/// Asserts `code` and exactly one violation on `field` whose description
/// contains `reason_part`.
#[track_caller]
pub fn assert_violation(status: &Status, code: Code, field: &str, reason_part: &str) {
    assert_eq!(status.code(), code, "unexpected status {status:?}");
    let v = violations(status);
    assert_eq!(v.len(), 1, "expected one violation on {field}, got {v:?}");
    assert_eq!(v[0].0, field, "violations {v:?}");
    assert!(
        v[0].1.contains(reason_part),
        "reason `{}` of {field} does not mention `{reason_part}`",
        v[0].1
    );
}

/// Compares two protobuf messages through their canonical JSON: same
/// shape, same strings/integers/enums, numbers within [`TOLERANCE`].
#[track_caller]
pub fn assert_json_close<T: serde::Serialize + std::fmt::Debug>(a: &T, b: &T) {
    let ja = serde_json::to_value(a).expect("serialize");
    let jb = serde_json::to_value(b).expect("serialize");
    if let Err(path) = json_close(&ja, &jb, "$") {
        panic!("messages differ at {path}:\n{a:#?}\n---\n{b:#?}");
    }
}

fn json_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Result<(), String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if close(x, y) {
                Ok(())
            } else {
                Err(format!("{path}: {x} vs {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: length {} vs {}", x.len(), y.len()));
            }
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                json_close(x, y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            if kx != ky {
                return Err(format!("{path}: keys {kx:?} vs {ky:?}"));
            }
            for (k, v) in x {
                json_close(v, &y[k], &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}
