//! Telemetry: logs, traces and metrics.
//!
//! - **Logs**: `tracing` with an env filter; human-readable by default, JSON
//!   on request. Log lines inside an RPC carry its `trace_id` (a field of the
//!   `rpc` span, so JSON lines list it under `span` / `spans`); without an
//!   exporter, only the one of a caller's `traceparent` (an untraced request
//!   then has no span, unless `gapwatch::telemetry::rpc` is at DEBUG).
//! - **Traces** (built only when exporting): one span per RPC
//!   ([`rpc::RpcTraceLayer`]) honouring an
//!   incoming W3C `traceparent`, and `engine.batch` / `engine.commit` spans
//!   on the writer thread (the batch is a child of the first request it
//!   serves and links the others). Only `gapwatch` spans are exported: h2,
//!   hyper and tonic internals stay out.
//! - **Metrics**: an OpenTelemetry meter ([`Metrics`], names `gapwatch.…`),
//!   read by a pull reader rendered as Prometheus text on the admin port
//!   (`GET /metrics`, [`crate::admin`]) and, when configured, pushed over
//!   OTLP.
//!
//! Export is configured by the standard variables only:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (unset: nothing is exported),
//! `OTEL_SERVICE_NAME` (default `gapwatch`), `OTEL_RESOURCE_ATTRIBUTES`,
//! plus the exporter's and SDK's own (`OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_SDK_DISABLED`…). OTLP is gRPC only.

mod metrics;
pub mod prometheus;
pub mod rpc;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub use metrics::{EventKind, EventTally, Metrics, SubscriberGuard};

use crate::config::{LogConfig, LogFormat};

/// The instrumentation scope of every gapwatch span and metric.
pub const SCOPE: &str = "gapwatch";
/// `service.name` when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "gapwatch";

/// The telemetry of one process (or one test): meter and tracer providers,
/// the Prometheus pull reader and the instruments. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    meter_provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
    scrape: prometheus::ScrapeReader,
    metrics: Metrics,
    exporting: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.inner.exporting)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Telemetry`]; see [`Telemetry::from_env`] and
/// [`Telemetry::local`].
#[derive(Debug, Default)]
pub struct TelemetryBuilder {
    otlp_endpoint: Option<String>,
    metric_interval: Option<Duration>,
}

impl TelemetryBuilder {
    /// Exports over OTLP/gRPC to `endpoint` (e.g. `http://127.0.0.1:4317`)
    /// whatever the environment says. For embedding and tests; `serve` uses
    /// [`Telemetry::from_env`].
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(endpoint.into());
        self
    }

    /// The OTLP metric push interval (default: `OTEL_METRIC_EXPORT_INTERVAL`,
    /// else 60 s).
    pub fn metric_interval(mut self, interval: Duration) -> Self {
        self.metric_interval = Some(interval);
        self
    }

    /// Creates the providers. With an endpoint, the OTLP exporters need a
    /// tokio runtime: call this from within one.
    pub fn build(self) -> anyhow::Result<Telemetry> {
        let resource = resource();
        let scrape = prometheus::ScrapeReader::new();
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(scrape.clone());
        let mut tracers = SdkTracerProvider::builder().with_resource(resource);
        let exporting = self.otlp_endpoint.is_some();
        if let Some(endpoint) = &self.otlp_endpoint {
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("OTLP span exporter for {endpoint}: {e}"))?;
            tracers = tracers.with_batch_exporter(spans);
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("OTLP metric exporter for {endpoint}: {e}"))?;
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(interval) = self.metric_interval {
                reader = reader.with_interval(interval);
            }
            meters = meters.with_reader(reader.build());
        }
        let meter_provider = meters.build();
        let metrics = Metrics::new(&meter_provider.meter(SCOPE));
        Ok(Telemetry {
            inner: Arc::new(Inner {
                meter_provider,
                tracer_provider: tracers.build(),
                scrape,
                metrics,
                exporting,
            }),
        })
    }
}

/// The resource of every span and metric: the SDK's detectors (which read
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`), with `gapwatch` as
/// the service name when none was given.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let mut extra = Vec::new();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        extra.push(KeyValue::new("service.name", DEFAULT_SERVICE_NAME));
    }
    if detected
        .get(&Key::from_static_str("service.version"))
        .is_none()
    {
        extra.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    Resource::builder().with_attributes(extra).build()
}

/// The OTLP endpoint from the environment, when exporting is on.
fn endpoint_from_env() -> Option<String> {
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled {
        return None;
    }
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Telemetry {
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// As the standard `OTEL_*` variables say: OTLP export when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else metrics for `/metrics`
    /// only.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut builder = Self::builder();
        if let Some(endpoint) = endpoint_from_env() {
            builder = builder.otlp_endpoint(endpoint);
        }
        builder.build()
    }

    /// No export: metrics readable through [`Telemetry::collect`] and
    /// `/metrics`, spans go nowhere. What [`crate::run`] uses when not given
    /// a telemetry.
    pub fn local() -> Self {
        Self::builder()
            .build()
            .expect("a telemetry without exporters always builds")
    }

    /// The instruments.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether spans and metrics are pushed over OTLP.
    pub fn exporting(&self) -> bool {
        self.inner.exporting
    }

    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.inner.meter_provider
    }

    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.inner.tracer_provider
    }

    /// Collects every metric now (observable gauges included).
    pub fn collect(&self) -> anyhow::Result<opentelemetry_sdk::metrics::data::ResourceMetrics> {
        self.inner.scrape.collect()
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> anyhow::Result<String> {
        Ok(prometheus::encode(&self.collect()?))
    }

    /// A `tracing` layer sending `gapwatch` spans (only) to this telemetry's
    /// tracer.
    pub fn otel_layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.inner.tracer_provider.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target(SCOPE, tracing::Level::INFO))
    }

    /// Pushes what is buffered (spans and metrics) to the collector now.
    /// Blocks: call from a blocking context (or see [`Telemetry::flush`]).
    pub fn flush_blocking(&self) {
        if let Err(e) = self.inner.tracer_provider.force_flush() {
            tracing::debug!(error = %e, "flushing spans failed");
        }
        if let Err(e) = self.inner.meter_provider.force_flush() {
            tracing::debug!(error = %e, "flushing metrics failed");
        }
    }

    /// [`Telemetry::flush_blocking`] off the async workers.
    pub async fn flush(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush_blocking()).await;
    }

    /// Flushes, then stops the exporters. Later spans and metrics are
    /// dropped.
    pub async fn shutdown(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = this.inner.tracer_provider.shutdown() {
                tracing::debug!(error = %e, "stopping the span exporter failed");
            }
            if let Err(e) = this.inner.meter_provider.shutdown() {
                tracing::debug!(error = %e, "stopping the metric exporter failed");
            }
        })
        .await;
    }
}

/// `serve`'s setup: telemetry from the environment, the global W3C trace
/// context propagator and the global subscriber (logs, and spans to OTLP).
pub fn init(config: &LogConfig) -> anyhow::Result<Telemetry> {
    let telemetry = Telemetry::from_env()?;
    install(config, &telemetry);
    if telemetry.exporting() {
        tracing::info!("exporting traces and metrics over OTLP/gRPC");
    }
    Ok(telemetry)
}

/// Sets the global propagator (W3C `traceparent`) and installs the global
/// subscriber: the log layer filtered by `RUST_LOG` or `config.filter`, and,
/// when exporting, the OpenTelemetry layer filtered to `gapwatch` spans.
/// Later calls keep the first subscriber.
pub fn install(config: &LogConfig, telemetry: &Telemetry) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // Spans are only built for export: without an exporter the layer
    // measured 10% of the server's CPU per unary event.
    let otel = telemetry.exporting().then(|| telemetry.otel_layer());
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
}
