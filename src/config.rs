//! Layered configuration: built-in defaults, then the TOML file given with
//! `--config`, then `GAPWATCH__SECTION__KEY` environment variables (e.g.
//! `GAPWATCH__SERVER__LISTEN=0.0.0.0:50051`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;
use crate::engine::{AlertSettings, EngineOptions};
use crate::scoring::Params;
use crate::store::StoreOptions;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub scoring: Params,
    pub alerts: AlertSettings,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight requests and streams.
    pub shutdown_timeout_secs: u64,
    /// Largest request message accepted, bytes.
    pub max_message_bytes: usize,
    /// Browser origins allowed to call over gRPC-Web (CORS), e.g.
    /// `https://dash.example.com`; `*` allows any. Empty: same-origin only.
    pub cors_allowed_origins: Vec<String>,
    /// A second, plaintext port serving only gRPC health (Kubernetes `grpc:`
    /// probes cannot speak TLS or send tokens). Off when unset.
    pub health_listen: Option<SocketAddr>,
    /// A plaintext HTTP port serving `GET /metrics` (Prometheus) and
    /// `GET /healthz`. Off when unset.
    pub admin_listen: Option<SocketAddr>,
    /// TLS on the main port; absent: plaintext.
    pub tls: Option<TlsConfig>,
    /// Deadline of unary requests, seconds (streams have their own limits).
    pub request_timeout_secs: u64,
    /// HTTP/2 streams (concurrent RPCs) one connection may open.
    pub max_concurrent_streams: u32,
    /// Requests in flight per connection; beyond it new requests are shed
    /// at once with UNAVAILABLE instead of queueing.
    pub max_inflight_per_connection: usize,
    /// HTTP/2 keepalive ping interval and ack timeout, seconds.
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// Connections are closed (GOAWAY) after this age so clients rebalance;
    /// 0 = never. In-flight RPCs get `max_connection_age_grace_secs`.
    pub max_connection_age_secs: u64,
    pub max_connection_age_grace_secs: u64,
    /// A StreamEvents stream that sends nothing for this long is ended
    /// (after acking what it sent), seconds.
    pub stream_idle_timeout_secs: u64,
    /// Longest life of a StreamEvents or Subscribe stream, seconds; clients
    /// reconnect (Subscribe resumes from its sequence). 0 = unlimited.
    pub stream_max_duration_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate signed by
    /// it (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            shutdown_timeout_secs: 10,
            max_message_bytes: 16 * 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            health_listen: None,
            admin_listen: None,
            tls: None,
            request_timeout_secs: 30,
            max_concurrent_streams: 256,
            max_inflight_per_connection: 1_024,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            max_connection_age_secs: 0,
            max_connection_age_grace_secs: 30,
            stream_idle_timeout_secs: 300,
            stream_max_duration_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The sled data directory (one process per directory).
    pub data_dir: PathBuf,
    /// sled page cache in MiB. 128 measured as fast as 256 at 100k and at
    /// 1M customers, for 30–120 MiB less RSS at 1M (docs/PERFORMANCE-LOG.md);
    /// 64 cost a third of the throughput at 1M.
    pub cache_capacity_mb: u64,
    /// Customer records the writer keeps decoded in memory (0: none), about
    /// 0.9 KB each (derived from RSS at 10,000 and 50,000). At 1M
    /// customers, with the default commits, RSS peaked at 475–478 MiB with
    /// 10,000 and 534 MiB with 50,000; a million customers drawn uniformly
    /// rarely hit either, and skewed traffic keeps its busiest customers in
    /// it (docs/PERFORMANCE-LOG.md, "Fewer allocations per event").
    pub cached_customers: usize,
    /// `fdatasync` each group commit's write-ahead log record before the
    /// ack, and what sled 0.34 leaves in the page cache at each checkpoint,
    /// so acknowledged events also survive a power cut or kernel crash, not
    /// only the process being killed (see `store::wal`,
    /// `store::device_sync`).
    pub sync_to_device: bool,
    /// How often sled is flushed as a checkpoint of the write-ahead log
    /// (sooner when the log reaches 64 MiB). Longer: fewer flushes; a start
    /// after a crash replays up to this much. 0: after every commit.
    pub checkpoint_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            cache_capacity_mb: 128,
            cached_customers: 10_000,
            sync_to_device: true,
            checkpoint_interval_ms: 1_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Most events in one RecordBatch request.
    pub max_batch_events: usize,
    /// Distinct values allowed per attribute key; past it events are
    /// refused with RESOURCE_EXHAUSTED.
    pub max_distinct_values_per_key: u64,
    /// Ids of each customer's latest events kept for duplicate detection: a
    /// repeat of one of them is a duplicate; an older one is not recognised.
    pub remembered_ids_per_customer: usize,
    /// Most events the writer applies in one group commit. 4,096 (8,192
    /// before 2026-12-01): at 1M customers RSS peaked at 475–478 MiB
    /// against 499–519 at the same throughput, for ~5% more disk per
    /// customer (docs/PERFORMANCE-LOG.md, "Fewer allocations per event").
    pub max_commit_events: usize,
    /// Requests queued for the writer before callers wait.
    pub queue_capacity: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 10_000,
            max_distinct_values_per_key: 10_000,
            remembered_ids_per_customer: 1_000,
            max_commit_events: 4_096,
            queue_capacity: 1_024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` env-filter directives; `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The environment variable prefix; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "GAPWATCH__";

impl Config {
    /// Defaults, then `file` (when given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.scoring.validate().map_err(anyhow::Error::msg)?;
        self.alerts.validate().map_err(anyhow::Error::msg)?;
        let i = &self.ingest;
        if i.max_batch_events == 0
            || i.max_commit_events == 0
            || i.queue_capacity == 0
            || i.remembered_ids_per_customer == 0
        {
            anyhow::bail!(
                "ingest.max_batch_events, max_commit_events, queue_capacity and \
                 remembered_ids_per_customer must be positive"
            );
        }
        let srv = &self.server;
        if srv.request_timeout_secs == 0
            || srv.max_concurrent_streams == 0
            || srv.max_inflight_per_connection == 0
            || srv.keepalive_interval_secs == 0
            || srv.keepalive_timeout_secs == 0
            || srv.stream_idle_timeout_secs == 0
        {
            anyhow::bail!(
                "server.request_timeout_secs, max_concurrent_streams, max_inflight_per_connection, \
                 keepalive_interval_secs, keepalive_timeout_secs and stream_idle_timeout_secs must be positive"
            );
        }
        if srv.max_message_bytes < 1024 {
            anyhow::bail!("server.max_message_bytes must be at least 1024");
        }
        for origin in &self.server.cors_allowed_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                anyhow::bail!("server.cors_allowed_origins: {origin:?} is not a valid origin");
            }
        }
        if self.storage.cache_capacity_mb == 0 {
            anyhow::bail!("storage.cache_capacity_mb must be positive");
        }
        Ok(())
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            cache_capacity: self.storage.cache_capacity_mb * 1024 * 1024,
            half_life_ms: self.scoring.half_life_ms(),
            sync_to_device: self.storage.sync_to_device,
            checkpoint_interval: std::time::Duration::from_millis(
                self.storage.checkpoint_interval_ms,
            ),
        }
    }

    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            max_batch_events: self.ingest.max_commit_events,
            queue_capacity: self.ingest.queue_capacity,
            max_distinct_values_per_key: self.ingest.max_distinct_values_per_key,
            remembered_ids_per_customer: self.ingest.remembered_ids_per_customer,
            cached_customers: self.storage.cached_customers,
            alerts: self.alerts.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gapwatch.toml",
                "[server]\nlisten = \"0.0.0.0:6000\"\n[scoring]\nhalf_life_days = 14.0\n",
            )?;
            jail.set_env("GAPWATCH__SCORING__HALF_LIFE_DAYS", "7");
            jail.set_env("GAPWATCH__INGEST__MAX_BATCH_EVENTS", "500");
            jail.set_env("GAPWATCH__ALERTS__GAP_WIDENING__H", "5.5");
            jail.set_env("GAPWATCH__SCORING__SLA__MAJOR_RESPONSE_HOURS", "0.5");
            jail.set_env("GAPWATCH__STORAGE__SYNC_TO_DEVICE", "false");
            jail.set_env("GAPWATCH__STORAGE__CHECKPOINT_INTERVAL_MS", "250");
            let config =
                Config::load(Some(Path::new("gapwatch.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen, "0.0.0.0:6000".parse().unwrap());
            assert_eq!(config.scoring.half_life_days, 7.0);
            assert_eq!(config.ingest.max_batch_events, 500);
            assert_eq!(config.alerts.gap_widening.h, 5.5);
            // Siblings of an overridden nested key keep their defaults.
            assert_eq!(config.alerts.gap_widening.sigma_min, 0.5);
            assert_eq!(config.scoring.sla.major_response_hours, 0.5);
            assert_eq!(config.scoring.sla.minor_response_hours, 2.0);
            assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
            assert!(!config.store_options().sync_to_device);
            assert!(
                Config::default().store_options().sync_to_device,
                "on by default"
            );
            let interval = |c: &Config| c.store_options().checkpoint_interval;
            assert_eq!(interval(&config), std::time::Duration::from_millis(250));
            assert_eq!(
                interval(&Config::default()),
                std::time::Duration::from_secs(1)
            );
            Ok(())
        });
    }

    #[test]
    fn the_deploy_config_loads_and_fits_its_memory_limit() {
        // Inside a jail: other tests set GAPWATCH__* variables in theirs.
        figment::Jail::expect_with(|_| {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/gapwatch.toml");
            let config = Config::load(Some(&file)).map_err(|e| e.to_string())?;
            config.validate().map_err(|e| e.to_string())?;
            // The values measured at 1M customers for the base's 640Mi
            // limit (peaks 506-518 MiB).
            assert_eq!(config.storage.cache_capacity_mb, 64);
            assert_eq!(config.ingest.max_commit_events, 4096);
            Ok(())
        });
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[server]\nlisen = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
            jail.create_file("neg.toml", "[scoring]\nhalf_life_days = -1.0\n")?;
            let err = Config::load(Some(Path::new("neg.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("half_life_days"), "{err}");
            Ok(())
        });
    }
}
