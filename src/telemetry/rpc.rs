//! One span per RPC, as a tower layer around every gRPC service.
//!
//! The span is a child of the caller's span when the request carries a W3C
//! `traceparent` (read by the global propagator), is named after the RPC
//! (`gapwatch.v1.IngestService/RecordSurvey`), has kind SERVER and the
//! `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`
//! attributes, and records `trace_id` as a field so log lines inside it
//! carry the trace id (without an exporter, only a caller's). The status is
//! the one of the response head: errors (trailers-only responses) are seen,
//! a stream failing after its first message is not.
//!
//! Without an exporter the span only serves the logs, and is built only
//! when it has something to give them: a caller's `traceparent` (its trace
//! id), or a log filter that enables this module at DEBUG (the RPC name on
//! every line). Built for every request, the log layer's formatting of its
//! fields took 10% of the server's user-space instructions per unary event.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Wraps services in [`RpcTrace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcTraceLayer {
    /// Spans are exported: one for every request.
    exporting: bool,
}

impl RpcTraceLayer {
    pub fn new(exporting: bool) -> Self {
        Self { exporting }
    }
}

impl<S> tower::Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace {
            inner,
            exporting: self.exporting,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RpcTrace<S> {
    inner: S,
    exporting: bool,
}

/// Whether a request gets a span (see the module docs).
fn wants_span<B>(exporting: bool, request: &http::Request<B>) -> bool {
    exporting
        || request.headers().contains_key("traceparent")
        || tracing::enabled!(tracing::Level::DEBUG)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one request, parented on its `traceparent`.
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    let caller_trace = parent.span().span_context().trace_id();
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_string());
    span.set_attribute("rpc.method", method.to_string());
    // With the OpenTelemetry layer (exporting), the span's own trace: the
    // caller's, or a new one. Without it, the caller's, if it sent one.
    let own_trace = span.context().span().span_context().trace_id();
    let trace = if own_trace != TraceId::INVALID {
        own_trace
    } else {
        caller_trace
    };
    if trace != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace));
    }
    span
}

/// The gRPC status of a response head: `grpc-status` when present (an
/// error), else OK.
fn record_status<B>(span: &tracing::Span, response: &http::Response<B>) {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(if response.status().is_success() { 0 } else { 2 });
    span.record("rpc.grpc.status_code", code);
    // Server errors, as the RPC semantic conventions list them.
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "ERROR");
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !wants_span(self.exporting, &request) {
            return Box::pin(self.inner.call(request));
        }
        let span = request_span(&request);
        let future = span.in_scope(|| self.inner.call(request));
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    record_status(&recorder, response);
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Every value a span's `trace_id` field is given.
    #[derive(Clone, Default)]
    struct TraceIds(Arc<Mutex<Vec<String>>>);

    struct Visit<'a>(&'a Mutex<Vec<String>>);

    impl tracing::field::Visit for Visit<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "trace_id" {
                self.0.lock().unwrap().push(format!("{value:?}"));
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for TraceIds {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: LayerContext<'_, S>,
        ) {
            values.record(&mut Visit(&self.0));
        }
    }

    /// Held by every test here that sets a subscriber: callsite interest
    /// is cached process-wide from the subscribers alive when it is
    /// computed, so one test's catch-all subscriber can answer for another
    /// test's `enabled!`.
    static SUBSCRIBERS: Mutex<()> = Mutex::new(());

    fn rpc_request(traceparent: bool) -> http::Request<()> {
        let mut request = http::Request::builder().uri("/gapwatch.v1.IngestService/RecordSurvey");
        if traceparent {
            request = request.header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
        }
        request.body(()).unwrap()
    }

    #[test]
    fn without_an_exporter_only_a_traced_request_or_debug_logging_gets_a_span() {
        let _one_at_a_time = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        let logs_at = |level: &str| {
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(tracing_subscriber::EnvFilter::new(level)),
            )
        };
        tracing::subscriber::with_default(logs_at("info"), || {
            assert!(!wants_span(false, &rpc_request(false)));
            assert!(wants_span(false, &rpc_request(true)), "its trace id");
            assert!(wants_span(true, &rpc_request(false)), "exported");
        });
        tracing::subscriber::with_default(logs_at("info,gapwatch::telemetry::rpc=debug"), || {
            assert!(wants_span(false, &rpc_request(false)), "the RPC name");
        });
    }

    #[test]
    fn without_an_exporter_a_callers_trace_id_is_still_recorded_for_the_logs() {
        let _one_at_a_time = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let ids = TraceIds::default();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        // Logs only: no OpenTelemetry layer, as when nothing is exported.
        let subscriber = tracing_subscriber::registry().with(ids.clone());
        tracing::subscriber::with_default(subscriber, || {
            let traced = http::Request::builder()
                .uri("/gapwatch.v1.IngestService/RecordSurvey")
                .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
                .body(())
                .unwrap();
            let _traced = request_span(&traced);
            let untraced = http::Request::builder()
                .uri("/gapwatch.v1.IngestService/RecordSurvey")
                .body(())
                .unwrap();
            let _untraced = request_span(&untraced);
        });
        assert_eq!(*ids.0.lock().unwrap(), vec![trace_id.to_string()]);
    }
}
