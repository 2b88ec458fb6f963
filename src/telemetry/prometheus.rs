//! `/metrics`: a pull reader registered beside the OTLP one, collected on
//! each scrape and rendered in the Prometheus text exposition format
//! (version 0.0.4) by [`encode`].
//!
//! Mapping (as the OpenTelemetry → Prometheus compatibility rules):
//! dots and other invalid characters become `_`; a unit `s` / `ms` / `By`
//! adds `_seconds` / `_milliseconds` / `_bytes`; monotonic sums are
//! counters named `…_total`; other sums and gauges are gauges; histograms
//! give cumulative `_bucket{le=…}` series, `_sum` and `_count`; attributes
//! become labels (values escaped). Exponential histograms are not
//! rendered (gapwatch records none).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A [`ManualReader`] that can be registered with a provider and still be
/// collected from afterwards (cumulative temporality).
#[derive(Clone, Debug, Default)]
pub struct ScrapeReader(Arc<ManualReader>);

impl ScrapeReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every metric of the provider, now.
    pub fn collect(&self) -> anyhow::Result<ResourceMetrics> {
        let mut metrics = ResourceMetrics::default();
        self.0
            .collect(&mut metrics)
            .map_err(|e| anyhow::anyhow!("collecting metrics: {e}"))?;
        Ok(metrics)
    }
}

impl MetricReader for ScrapeReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyKind {
    Counter,
    Gauge,
    Histogram,
}

impl FamilyKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric family, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The exposed name (`…_total` for counters).
    pub name: String,
    pub help: String,
    pub kind: FamilyKind,
    pub samples: Vec<Sample>,
}

/// One line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Appended to the family name (`_bucket`, `_sum`, `_count`, or empty).
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: String,
}

/// Renders collected metrics in the text exposition format.
pub fn encode(metrics: &ResourceMetrics) -> String {
    render(&families(metrics))
}

/// Converts collected metrics into families sorted by name (samples sorted
/// by labels, so the output is stable).
pub fn families(metrics: &ResourceMetrics) -> Vec<Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let Some(family) = family(metric) else {
                continue;
            };
            match out.get_mut(&family.name) {
                Some(existing) if existing.kind == family.kind => {
                    existing.samples.extend(family.samples);
                }
                Some(_) => {} // same name, other type: keep the first
                None => {
                    out.insert(family.name.clone(), family);
                }
            }
        }
    }
    out.into_values().collect()
}

fn family(metric: &Metric) -> Option<Family> {
    let base = base_name(metric.name(), metric.unit());
    let help = metric.description().to_string();
    let (kind, points) = match metric.data() {
        AggregatedMetrics::F64(data) => points(data, fmt_f64),
        AggregatedMetrics::U64(data) => points(data, |v: u64| v.to_string()),
        AggregatedMetrics::I64(data) => points(data, |v: i64| v.to_string()),
    }?;
    let name = match kind {
        FamilyKind::Counter if !base.ends_with("_total") => format!("{base}_total"),
        _ => base,
    };
    Some(Family {
        name,
        help,
        kind,
        samples: points,
    })
}

type Labels = Vec<(String, String)>;

fn points<T: Copy>(
    data: &MetricData<T>,
    fmt: impl Fn(T) -> String,
) -> Option<(FamilyKind, Vec<Sample>)> {
    let mut rows: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let kind = match data {
        MetricData::Gauge(gauge) => {
            for p in gauge.data_points() {
                let labels = labels(p.attributes());
                rows.push((labels.clone(), vec![sample("", labels, fmt(p.value()))]));
            }
            FamilyKind::Gauge
        }
        MetricData::Sum(sum) => {
            for p in sum.data_points() {
                let labels = labels(p.attributes());
                rows.push((labels.clone(), vec![sample("", labels, fmt(p.value()))]));
            }
            if sum.is_monotonic() {
                FamilyKind::Counter
            } else {
                FamilyKind::Gauge
            }
        }
        MetricData::Histogram(histogram) => {
            for p in histogram.data_points() {
                let labels = labels(p.attributes());
                let mut samples = Vec::new();
                let mut cumulative = 0u64;
                for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                    cumulative += count;
                    samples.push(sample(
                        "_bucket",
                        with_le(&labels, fmt_f64(bound)),
                        cumulative.to_string(),
                    ));
                }
                samples.push(sample(
                    "_bucket",
                    with_le(&labels, "+Inf".into()),
                    p.count().to_string(),
                ));
                samples.push(sample("_sum", labels.clone(), fmt(p.sum())));
                samples.push(sample("_count", labels.clone(), p.count().to_string()));
                rows.push((labels, samples));
            }
            FamilyKind::Histogram
        }
        MetricData::ExponentialHistogram(_) => return None,
    };
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Some((kind, rows.into_iter().flat_map(|(_, s)| s).collect()))
}

fn sample(suffix: &'static str, labels: Labels, value: String) -> Sample {
    Sample {
        suffix,
        labels,
        value,
    }
}

fn with_le(labels: &Labels, le: String) -> Labels {
    let mut out = labels.clone();
    out.push(("le".into(), le));
    out
}

/// Attributes as labels, sorted by name; keys that collide once sanitized
/// are joined with `;` (as the compatibility rules say).
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Labels {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for kv in attributes {
        let key = label_name(kv.key.as_str());
        let value = kv.value.as_str().into_owned();
        map.entry(key)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map.into_iter().collect()
}

/// `gapwatch.commit.latency` + `s` → `gapwatch_commit_latency_seconds`.
pub fn base_name(name: &str, unit: &str) -> String {
    let mut out = sanitize(name, true);
    let suffix = match unit {
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        "By" => Some("bytes"),
        _ => None,
    };
    if let Some(suffix) = suffix {
        if !out.ends_with(suffix) {
            out.push('_');
            out.push_str(suffix);
        }
    }
    out
}

/// A valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(key: &str) -> String {
    sanitize(key, false)
}

fn sanitize(raw: &str, colons: bool) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    for (i, c) in raw.chars().enumerate() {
        let ok = c.is_ascii_alphabetic()
            || c == '_'
            || (colons && c == ':')
            || (i > 0 && c.is_ascii_digit());
        if ok {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A float as Prometheus reads it (`+Inf`, `-Inf`, `NaN`).
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The text exposition of `families`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for s in &family.samples {
            out.push_str(&family.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&s.value);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    fn provider() -> (SdkMeterProvider, ScrapeReader) {
        let reader = ScrapeReader::new();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        (provider, reader)
    }

    #[test]
    fn names_units_and_labels_are_sanitized() {
        assert_eq!(
            base_name("gapwatch.commit.latency", "s"),
            "gapwatch_commit_latency_seconds"
        );
        assert_eq!(
            base_name("gapwatch.store.size", "By"),
            "gapwatch_store_size_bytes"
        );
        assert_eq!(base_name("a.b_seconds", "s"), "a_b_seconds");
        assert_eq!(base_name("gapwatch.events", "{event}"), "gapwatch_events");
        assert_eq!(base_name("9lives-x", ""), "_9lives_x");
        assert_eq!(base_name("ns:metric", ""), "ns:metric");
        assert_eq!(label_name("rpc.grpc.status_code"), "rpc_grpc_status_code");
        assert_eq!(label_name("a:b"), "a_b");
        assert_eq!(label_name("1st"), "_1st");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_f64(f64::NAN), "NaN");
        assert_eq!(fmt_f64(0.25), "0.25");
        assert_eq!(fmt_f64(5.0), "5");
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let family = Family {
            name: "x_total".into(),
            help: "line one\nback\\slash".into(),
            kind: FamilyKind::Counter,
            samples: vec![
                sample("", vec![], "1".into()),
                sample(
                    "",
                    vec![("a".into(), "q\"x".into()), ("b".into(), "2".into())],
                    "3".into(),
                ),
            ],
        };
        assert_eq!(
            render(&[family]),
            "# HELP x_total line one\\nback\\\\slash\n# TYPE x_total counter\nx_total 1\nx_total{a=\"q\\\"x\",b=\"2\"} 3\n"
        );
    }

    #[test]
    fn counters_gauges_and_histograms_from_the_sdk() {
        let (provider, reader) = provider();
        let meter = provider.meter("test");
        let counter = meter
            .u64_counter("gapwatch.events")
            .with_description("Events by outcome")
            .build();
        counter.add(
            2,
            &[
                KeyValue::new("kind", "survey"),
                KeyValue::new("outcome", "accepted"),
            ],
        );
        counter.add(
            1,
            &[
                KeyValue::new("kind", "interaction"),
                KeyValue::new("outcome", "accepted"),
            ],
        );
        counter.add(
            3,
            &[
                KeyValue::new("kind", "survey"),
                KeyValue::new("outcome", "accepted"),
            ],
        );
        let updown = meter
            .i64_up_down_counter("gapwatch.alerts.subscribers")
            .build();
        updown.add(2, &[]);
        updown.add(-1, &[]);
        let _gauge = meter
            .u64_observable_gauge("gapwatch.store.size")
            .with_unit("By")
            .with_callback(|o| o.observe(4096, &[]))
            .build();
        let histogram = meter
            .f64_histogram("gapwatch.engine.commit_latency")
            .with_unit("s")
            .with_boundaries(vec![0.001, 0.01, 0.1])
            .build();
        for v in [0.0005, 0.005, 0.007, 2.0] {
            histogram.record(v, &[KeyValue::new("path", "a\"b")]);
        }

        let text = encode(&reader.collect().unwrap());
        let expected = "\
# TYPE gapwatch_alerts_subscribers gauge
gapwatch_alerts_subscribers 1
# TYPE gapwatch_engine_commit_latency_seconds histogram
gapwatch_engine_commit_latency_seconds_bucket{path=\"a\\\"b\",le=\"0.001\"} 1
gapwatch_engine_commit_latency_seconds_bucket{path=\"a\\\"b\",le=\"0.01\"} 3
gapwatch_engine_commit_latency_seconds_bucket{path=\"a\\\"b\",le=\"0.1\"} 3
gapwatch_engine_commit_latency_seconds_bucket{path=\"a\\\"b\",le=\"+Inf\"} 4
gapwatch_engine_commit_latency_seconds_sum{path=\"a\\\"b\"} 2.0125
gapwatch_engine_commit_latency_seconds_count{path=\"a\\\"b\"} 4
# HELP gapwatch_events_total Events by outcome
# TYPE gapwatch_events_total counter
gapwatch_events_total{kind=\"interaction\",outcome=\"accepted\"} 1
gapwatch_events_total{kind=\"survey\",outcome=\"accepted\"} 5
# TYPE gapwatch_store_size_bytes gauge
gapwatch_store_size_bytes 4096
";
        assert_eq!(text, expected);

        // Cumulative: a second scrape adds to the first.
        counter.add(
            1,
            &[
                KeyValue::new("kind", "interaction"),
                KeyValue::new("outcome", "accepted"),
            ],
        );
        let text = encode(&reader.collect().unwrap());
        assert!(
            text.contains("gapwatch_events_total{kind=\"interaction\",outcome=\"accepted\"} 2\n"),
            "{text}"
        );
    }
}
