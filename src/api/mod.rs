//! Thin tonic handlers: decode, validate, call the engine or read the
//! store, encode. Errors become statuses in `status` only.

mod alerts;
mod config_service;
mod convert;
mod ingest;
mod score;
pub mod status;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use alerts::AlertApi;
pub use config_service::ConfigApi;
pub use ingest::IngestApi;
pub use score::ScoreApi;

use crate::config::Config;
use crate::engine::EngineHandle;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    pub engine: EngineHandle,
    pub store: Store,
    pub config: Arc<Config>,
    /// Cancelled at shutdown: open streams finish their acks and end.
    pub shutdown: CancellationToken,
    /// Instruments (events answered, live subscribers, subscriber lag).
    pub metrics: crate::telemetry::Metrics,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Completes when a stream has lived `max_secs` (never when 0).
pub(crate) async fn stream_deadline(max_secs: u64) {
    if max_secs == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(max_secs)).await;
}
