//! Thin tonic handlers: decode, validate, call the engine or read the
//! store, encode. Errors become statuses in `status` only.

mod alerts;
pub mod codec;
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

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: i32 = 1000;

/// A listing's `page_size`: 0 means the default, 1..=1000 as asked.
pub(crate) fn page_size(requested: i32) -> Result<usize, crate::error::Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(requested as usize),
        _ => Err(crate::error::Error::invalid(
            "page_size",
            format!("must be between 0 and {MAX_PAGE_SIZE}, got {requested}"),
        )),
    }
}
