//! Wiring: open the store, start the engine, serve gRPC until shutdown,
//! then drain within a bound and stop the engine (which commits everything
//! already queued).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::api::{AlertApi, ConfigApi, IngestApi, ScoreApi, Shared};
use crate::config::Config;
use crate::engine::Engine;
use crate::proto::{
    alert_service_server::AlertServiceServer, config_service_server::ConfigServiceServer,
    ingest_service_server::IngestServiceServer, score_service_server::ScoreServiceServer,
};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Where a running server listens.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The main gRPC port (all services, TLS when configured).
    pub grpc: SocketAddr,
    /// The plaintext health-only port, when configured.
    pub health: Option<SocketAddr>,
    /// The admin HTTP port (`/metrics`, `/healthz`), when configured.
    pub admin: Option<SocketAddr>,
}

/// Runs gapwatch on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_ready(config, listener, shutdown, |_| {}).await
}

/// Like [`run`], calling `ready` with the bound addresses once the data dir
/// is open and the services are registered (so "listening" is never printed
/// for a server that then fails to open its store).
pub async fn run_with_ready(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    run_with_telemetry(config, listener, shutdown, ready, Telemetry::local()).await
}

/// Like [`run_with_ready`], recording metrics (and `/metrics`) with
/// `telemetry` instead of a fresh local one: `serve` passes the process's,
/// tests pass theirs to read what was recorded.
pub async fn run_with_telemetry(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(&Bound),
    telemetry: Telemetry,
) -> anyhow::Result<()> {
    config.validate()?;
    let auth = crate::auth::Authenticator::load(&config.auth)?;
    let tls = tls_config(config.server.tls.as_ref()).await?;
    let data_dir = config.storage.data_dir.clone();
    let store_options = config.store_options();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, &store_options))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", config.storage.data_dir.display()))?;
    let metrics = telemetry.metrics().clone();
    // The gauges read the store until the server stops.
    let _attached = metrics.attach(&store)?;
    let engine = Engine::start(
        store.clone(),
        config.scoring.clone(),
        config.engine_options(),
        metrics.clone(),
    )?;
    let token = CancellationToken::new();
    let config = Arc::new(config);
    let shared = Shared {
        engine: engine.handle(),
        store,
        config: config.clone(),
        shutdown: token.clone(),
        metrics,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let max_message = config.server.max_message_bytes;
    let ingest = IngestServiceServer::new(IngestApi::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let score = ScoreServiceServer::new(ScoreApi::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let config_api = ConfigServiceServer::new(ConfigApi::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let alerts = AlertServiceServer::new(AlertApi::new(shared.clone()))
        .max_decoding_message_size(max_message);
    health.set_serving::<IngestServiceServer<IngestApi>>().await;
    health.set_serving::<ScoreServiceServer<ScoreApi>>().await;
    health.set_serving::<ConfigServiceServer<ConfigApi>>().await;
    health.set_serving::<AlertServiceServer<AlertApi>>().await;

    let health_server = match config.server.health_listen {
        Some(addr) => {
            let health_listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("server.health_listen {addr}: {e}"))?;
            let bound = health_listener.local_addr()?;
            let serve = Server::builder()
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(health_listener),
                    token.clone().cancelled_owned(),
                );
            Some((bound, tokio::spawn(serve)))
        }
        None => None,
    };
    let admin_server = match config.server.admin_listen {
        Some(addr) => Some(crate::admin::serve(addr, telemetry.clone(), token.clone()).await?),
        None => None,
    };

    let srv = &config.server;
    let secs = Duration::from_secs;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder = builder
        .timeout(secs(srv.request_timeout_secs))
        .max_concurrent_streams(srv.max_concurrent_streams)
        .concurrency_limit_per_connection(srv.max_inflight_per_connection)
        .load_shed(true)
        .http2_keepalive_interval(Some(secs(srv.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(secs(srv.keepalive_timeout_secs)));
    if srv.max_connection_age_secs > 0 {
        builder = builder
            .max_connection_age(secs(srv.max_connection_age_secs))
            .max_connection_age_grace(secs(srv.max_connection_age_grace_secs));
    }
    let address = listener.local_addr()?;
    // HTTP/1.1 and gRPC-Web too, so browser dashboards need no proxy.
    let server = builder
        .accept_http1(true)
        .layer(crate::telemetry::rpc::RpcTraceLayer::new(
            telemetry.exporting(),
        ))
        .layer(cors_layer(&config.server.cors_allowed_origins))
        .layer(crate::auth::AuthLayer::new(auth))
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .add_service(score)
        .add_service(config_api)
        .add_service(alerts)
        .serve_with_incoming_shutdown(
            // Server::tcp_nodelay does not apply to a listener we pass in:
            // without NODELAY, small unary replies wait for delayed ACKs
            // (p99 43 ms instead of 7 ms in `gapwatch bench --mode unary`).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            token.clone().cancelled_owned(),
        );
    tokio::pin!(server);
    let bound = Bound {
        grpc: address,
        health: health_server.as_ref().map(|(addr, _)| *addr),
        admin: admin_server.as_ref().map(|(addr, _)| *addr),
    };
    tracing::info!(
        %address,
        health = ?bound.health,
        admin = ?bound.admin,
        tls = config.server.tls.is_some(),
        data_dir = %config.storage.data_dir.display(),
        "gapwatch serving"
    );
    ready(&bound);

    tokio::select! {
        result = &mut server => {
            result?;
        }
        () = shutdown => {
            tracing::info!("shutting down: draining requests and streams");
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            health.set_not_serving::<IngestServiceServer<IngestApi>>().await;
            health.set_not_serving::<ScoreServiceServer<ScoreApi>>().await;
            health.set_not_serving::<ConfigServiceServer<ConfigApi>>().await;
            health.set_not_serving::<AlertServiceServer<AlertApi>>().await;
            token.cancel();
            let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!(?grace, "drain timed out; closing remaining connections"),
            }
        }
    }
    if let Some((_, handle)) = health_server {
        handle.abort();
    }
    if let Some((_, handle)) = admin_server {
        handle.abort();
    }
    // Commits whatever handlers queued before they stopped.
    engine.shutdown().await;
    tracing::info!("gapwatch stopped");
    Ok(())
}

/// CORS for gRPC-Web callers from the configured origins (none: the layer
/// adds no headers and browsers allow same-origin pages only).
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use http::header::{HeaderName, HeaderValue};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers(
            [
                "content-type",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "authorization",
            ]
            .map(HeaderName::from_static),
        )
        .expose_headers(
            ["grpc-status", "grpc-message", "grpc-status-details-bin"].map(HeaderName::from_static),
        );
    if origins.is_empty() {
        layer
    } else if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        // Validated by Config::validate.
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Reads the TLS files; mutual TLS when a client CA is given.
async fn tls_config(
    tls: Option<&crate::config::TlsConfig>,
) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let Some(tls) = tls else {
        return Ok(None);
    };
    let read = |path: std::path::PathBuf, key: &'static str| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| anyhow::anyhow!("server.tls.{key} {}: {e}", path.display()))
    };
    let cert = read(tls.cert_file.clone(), "cert_file").await?;
    let key = read(tls.key_file.clone(), "key_file").await?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca_file {
        let ca = read(ca.clone(), "client_ca_file").await?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(config))
}
