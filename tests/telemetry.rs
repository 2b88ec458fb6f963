//! Telemetry end to end: an in-process fake OTLP collector receives the
//! spans and metrics of a real request (with a W3C `traceparent`), and the
//! admin port's `/metrics` moves as events are ingested.
//!
//! The OTLP endpoint is passed explicitly (`Telemetry::builder()
//! .otlp_endpoint`), so no `OTEL_*` variable is set in this process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gapwatch::config::LogConfig;
use gapwatch::proto::{self, ingest_service_client::IngestServiceClient};
use gapwatch::telemetry::Telemetry;
use gapwatch::{Bound, Config};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::{MetricsService, MetricsServiceServer},
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

// ---------------------------------------------------------------- collector

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (collector, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The latest exported value of a sum's data point whose attributes
    /// include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<i64> {
        let requests = self.metrics.lock().unwrap();
        let mut found = None;
        for request in requests.iter() {
            for rm in &request.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in sm.metrics.iter().filter(|m| m.name == name) {
                        let Some(metric::Data::Sum(sum)) = &m.data else {
                            continue;
                        };
                        for p in &sum.data_points {
                            let attrs = strings(&p.attributes);
                            if want
                                .iter()
                                .all(|(k, v)| attrs.get(*k).map(String::as_str) == Some(*v))
                            {
                                if let Some(number_data_point::Value::AsInt(v)) = p.value {
                                    found = Some(v);
                                }
                            }
                        }
                    }
                }
            }
        }
        found
    }
}

fn strings(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                any_value::Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------- server

struct Server {
    bound: Bound,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(data_dir: &Path, telemetry: Telemetry, admin: bool) -> Self {
        let mut config = Config::default();
        config.storage.data_dir = data_dir.to_path_buf();
        config.storage.cache_capacity_mb = 16;
        if admin {
            config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let handle = tokio::spawn(gapwatch::run_with_telemetry(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            move |bound| {
                let _ = ready_tx.send(*bound);
            },
            telemetry,
        ));
        let bound = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the server is ready within 30 s")
            .expect("the server started");
        let channel = Endpoint::from_shared(format!("http://{}", bound.grpc))
            .unwrap()
            .connect_lazy();
        Self {
            bound,
            channel,
            shutdown: Some(tx),
            handle,
        }
    }

    fn ingest(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel.clone())
    }

    async fn stop(mut self) {
        drop(self.channel);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle
            .await
            .expect("the server task panicked")
            .expect("run returned Ok");
    }
}

fn survey(id: &str, customer: &str, csat: Option<i32>) -> proto::Survey {
    proto::Survey {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        occur_time: Some(pbjson_types::Timestamp {
            seconds: T0,
            nanos: 0,
        }),
        attributes: [("region".to_string(), "east".to_string())].into(),
        csat,
        ..proto::Survey::default()
    }
}

fn record(survey: proto::Survey) -> proto::RecordSurveyRequest {
    proto::RecordSurveyRequest {
        survey: Some(survey),
    }
}

// ---------------------------------------------------------------- OTLP test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receives_the_rpc_span_with_its_traceparent_and_the_event_metrics() {
    let (collector, addr) = Collector::start().await;
    let telemetry = Telemetry::builder()
        .otlp_endpoint(format!("http://{addr}"))
        .build()
        .unwrap();
    // Global (the writer is another thread): the only test of this binary
    // that installs a subscriber.
    let quiet = LogConfig {
        filter: "warn".into(),
        ..LogConfig::default()
    };
    gapwatch::telemetry::install(&quiet, &telemetry);

    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), telemetry.clone(), false).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = Request::new(record(survey("otlp-1", "c-otlp", Some(5))));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    let reply = server
        .ingest()
        .record_survey(request)
        .await
        .expect("RecordSurvey")
        .into_inner();
    assert!(!reply.duplicate);

    // Spans and metrics are batched: push them now, then wait for them.
    let mut spans = Vec::new();
    let mut accepted = None;
    for _ in 0..50 {
        telemetry.flush().await;
        spans = collector.spans();
        accepted = collector.sum(
            "gapwatch.events",
            &[("kind", "survey"), ("outcome", "accepted")],
        );
        let ours = spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .count();
        if ours >= 3 && accepted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();

    let rpc = ours
        .iter()
        .find(|s| s.name == "gapwatch.v1.IngestService/RecordSurvey")
        .unwrap_or_else(|| panic!("no RPC span in {names:?}"));
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent_id,
        "the caller's span is the parent"
    );
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    let attrs = strings(&rpc.attributes);
    assert_eq!(attrs.get("rpc.system").map(String::as_str), Some("grpc"));
    assert_eq!(
        attrs.get("rpc.service").map(String::as_str),
        Some("gapwatch.v1.IngestService")
    );
    assert_eq!(
        attrs.get("rpc.method").map(String::as_str),
        Some("RecordSurvey")
    );
    assert_eq!(
        attrs.get("rpc.grpc.status_code").map(String::as_str),
        Some("0")
    );
    assert_eq!(attrs.get("trace_id").map(String::as_str), Some(trace_id));

    let batch = ours
        .iter()
        .find(|s| s.name == "engine.batch")
        .unwrap_or_else(|| panic!("no engine.batch span in {names:?}"));
    assert_eq!(
        batch.parent_span_id, rpc.span_id,
        "the batch is under the RPC"
    );
    assert_eq!(
        strings(&batch.attributes).get("events").map(String::as_str),
        Some("1")
    );
    let commit = ours
        .iter()
        .find(|s| s.name == "engine.commit")
        .unwrap_or_else(|| panic!("no engine.commit span in {names:?}"));
    assert_eq!(
        commit.parent_span_id, batch.span_id,
        "the commit is under the batch"
    );
    assert_eq!(
        strings(&commit.attributes)
            .get("events")
            .map(String::as_str),
        Some("1")
    );

    // Only gapwatch's own spans leave the process: no h2, hyper or tonic.
    for span in &spans {
        assert!(
            span.name.contains('/') || span.name.starts_with("engine."),
            "unexpected span exported: {}",
            span.name
        );
    }

    let accepted = accepted.expect("gapwatch.events{kind=survey,outcome=accepted} exported");
    assert!(accepted >= 1, "accepted = {accepted}");

    server.stop().await;
    telemetry.shutdown().await;
}

// ------------------------------------------------------------ /metrics test

/// One plain HTTP/1.1 GET; (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the admin port answers within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    // Content-Length bodies only (hyper sends a length for a full body).
    (status, body.to_string())
}

/// The value of the sample `series` (name and exact label set), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

const ACCEPTED: &str = "gapwatch_events_total{kind=\"survey\",outcome=\"accepted\"}";
const DUPLICATE: &str = "gapwatch_events_total{kind=\"survey\",outcome=\"duplicate\"}";
const INVALID: &str =
    "gapwatch_events_total{kind=\"survey\",outcome=\"rejected\",reason=\"INVALID_ARGUMENT\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_ingested_events_and_serves_healthz() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), Telemetry::local(), true).await;
    let admin = server.bound.admin.expect("admin port bound");

    let (status, body) = get(admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(get(admin, "/nope").await.0, 404);

    let before = scrape(admin).await;
    assert_eq!(sample(&before, ACCEPTED), None, "{before}");
    assert_eq!(sample(&before, "gapwatch_customers"), Some(0.0), "{before}");
    assert!(sample(&before, "gapwatch_store_size_bytes").is_some_and(|b| b > 0.0));

    let mut ingest = server.ingest();
    for i in 0..3 {
        ingest
            .record_survey(record(survey(
                &format!("m-{i}"),
                &format!("c-{i}"),
                Some(4),
            )))
            .await
            .expect("accepted");
    }
    let duplicate = ingest
        .record_survey(record(survey("m-0", "c-0", Some(4))))
        .await
        .unwrap()
        .into_inner();
    assert!(duplicate.duplicate);
    let invalid = ingest
        .record_survey(record(survey("m-bad", "c-0", None)))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    let after = scrape(admin).await;
    assert_eq!(sample(&after, ACCEPTED), Some(3.0), "{after}");
    assert_eq!(sample(&after, DUPLICATE), Some(1.0), "{after}");
    assert_eq!(sample(&after, INVALID), Some(1.0), "{after}");
    // Three customers; scopes `all` and `region=east`.
    assert_eq!(sample(&after, "gapwatch_customers"), Some(3.0), "{after}");
    assert_eq!(sample(&after, "gapwatch_scopes"), Some(2.0), "{after}");
    assert!(
        sample(&after, "gapwatch_ingest_ack_latency_seconds_count").is_some_and(|n| n >= 4.0),
        "{after}"
    );
    assert!(
        sample(&after, "gapwatch_engine_batch_size_count").is_some_and(|n| n >= 1.0),
        "{after}"
    );
    assert!(
        sample(&after, "gapwatch_engine_commit_latency_seconds_count").is_some_and(|n| n >= 3.0),
        "{after}"
    );
    assert!(
        after.contains("# TYPE gapwatch_events_total counter\n"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE gapwatch_engine_commit_latency_seconds histogram\n"),
        "{after}"
    );
    assert!(
        after.contains("gapwatch_alerts_open{kind=\"churn_risk\"} 0\n"),
        "{after}"
    );

    // A live subscriber is counted while its stream is open.
    let mut alerts = proto::alert_service_client::AlertServiceClient::new(server.channel.clone());
    let stream = alerts
        .subscribe(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let live = scrape(admin).await;
    assert_eq!(
        sample(&live, "gapwatch_alerts_subscribers"),
        Some(1.0),
        "{live}"
    );
    drop(stream);
    let mut gone = None;
    for _ in 0..50 {
        let text = scrape(admin).await;
        gone = sample(&text, "gapwatch_alerts_subscribers");
        if gone == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gone, Some(0.0), "the subscriber ended");

    server.stop().await;

    // The counts are kept with the commits: a restart reads them back.
    let server = Server::start(dir.path(), Telemetry::local(), true).await;
    let admin = server.bound.admin.unwrap();
    let restarted = scrape(admin).await;
    assert_eq!(
        sample(&restarted, "gapwatch_customers"),
        Some(3.0),
        "{restarted}"
    );
    assert_eq!(
        sample(&restarted, "gapwatch_scopes"),
        Some(2.0),
        "{restarted}"
    );
    assert_eq!(
        sample(&restarted, ACCEPTED),
        None,
        "a new process counts from 0"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_stream_events_are_counted_by_kind_and_outcome() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), Telemetry::local(), true).await;
    let admin = server.bound.admin.expect("admin port bound");
    let survey_event = |s: proto::Survey| proto::Event {
        kind: Some(proto::event::Kind::Survey(s)),
    };
    let interaction_event = |id: &str, kind: proto::InteractionKind| proto::Event {
        kind: Some(proto::event::Kind::Interaction(proto::Interaction {
            event_id: id.to_string(),
            customer_id: "c-9".to_string(),
            occur_time: Some(pbjson_types::Timestamp {
                seconds: T0,
                nanos: 0,
            }),
            kind: kind as i32,
            amount: Some(25.0),
            ..proto::Interaction::default()
        })),
    };

    let mut ingest = server.ingest();
    let batch = ingest
        .record_batch(proto::RecordBatchRequest {
            events: vec![
                interaction_event("b-1", proto::InteractionKind::Purchase),
                survey_event(survey("b-2", "c-9", Some(4))),
                survey_event(survey("b-3", "c-9", None)),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = batch.results.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["b-1", "b-2", "b-3"]);

    let requests = [
        survey_event(survey("b-2", "c-9", Some(4))),
        interaction_event("b-4", proto::InteractionKind::Unspecified),
    ]
    .map(|event| proto::StreamEventsRequest { event: Some(event) });
    let mut acks = ingest
        .stream_events(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(ack) = acks.message().await.unwrap() {
        streamed.push((ack.event_id, ack.status));
    }
    assert_eq!(
        streamed,
        [
            ("b-2".to_string(), proto::EventStatus::Duplicate as i32),
            ("b-4".to_string(), proto::EventStatus::Rejected as i32),
        ]
    );

    let text = scrape(admin).await;
    let interaction = |outcome: &str| {
        format!("gapwatch_events_total{{kind=\"interaction\",outcome=\"{outcome}\"")
    };
    assert_eq!(sample(&text, ACCEPTED), Some(1.0), "{text}");
    assert_eq!(sample(&text, DUPLICATE), Some(1.0), "{text}");
    assert_eq!(sample(&text, INVALID), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &format!("{}}}", interaction("accepted"))),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("{},reason=\"INVALID_ARGUMENT\"}}", interaction("rejected"))
        ),
        Some(1.0),
        "{text}"
    );
    server.stop().await;
}

fn interaction(id: &str, customer: &str, kind: proto::InteractionKind) -> proto::Interaction {
    proto::Interaction {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        occur_time: Some(pbjson_types::Timestamp {
            seconds: T0,
            nanos: 0,
        }),
        kind: kind as i32,
        amount: (kind == proto::InteractionKind::Purchase).then_some(100.0),
        ..proto::Interaction::default()
    }
}

const OPEN_CHURN: &str = "gapwatch_alerts_open{kind=\"churn_risk\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_alerts_gauge_follows_an_alert_and_is_read_back_after_a_restart() {
    use proto::alert_service_client::AlertServiceClient;
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), Telemetry::local(), true).await;
    let admin = server.bound.admin.unwrap();
    assert_eq!(sample(&scrape(admin).await, OPEN_CHURN), Some(0.0));

    // A purchase, then a cancellation: the customer is at risk.
    let mut ingest = server.ingest();
    for (id, kind) in [
        ("buy", proto::InteractionKind::Purchase),
        ("cancel", proto::InteractionKind::Cancellation),
    ] {
        ingest
            .record_interaction(proto::RecordInteractionRequest {
                interaction: Some(interaction(id, "vip-1", kind)),
            })
            .await
            .expect("accepted");
    }
    let fired = scrape(admin).await;
    assert_eq!(sample(&fired, OPEN_CHURN), Some(1.0), "{fired}");
    assert_eq!(
        sample(&fired, "gapwatch_alerts_open{kind=\"gap_widening\"}"),
        Some(0.0),
        "{fired}"
    );

    // Acknowledged is still open.
    let mut alerts = AlertServiceClient::new(server.channel.clone());
    let open = alerts
        .list_alerts(proto::ListAlertsRequest {
            kinds: vec![proto::AlertKind::ChurnRisk as i32],
            ..proto::ListAlertsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(open.len(), 1, "{open:?}");
    alerts
        .acknowledge_alert(proto::AcknowledgeAlertRequest {
            id: open[0].id.clone(),
            note: "called".into(),
            rebaseline: false,
        })
        .await
        .expect("acknowledged");
    let acknowledged = scrape(admin).await;
    assert_eq!(
        sample(&acknowledged, OPEN_CHURN),
        Some(1.0),
        "{acknowledged}"
    );
    server.stop().await;

    // The count is kept with the commits, not recounted from the log.
    let server = Server::start(dir.path(), Telemetry::local(), true).await;
    let restarted = scrape(server.bound.admin.unwrap()).await;
    assert_eq!(sample(&restarted, OPEN_CHURN), Some(1.0), "{restarted}");
    server.stop().await;
}
