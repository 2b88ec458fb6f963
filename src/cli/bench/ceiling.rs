//! The transport ceiling: an `IngestService` that decodes every request
//! and acknowledges it at once (a sequence counter; no validation, scoring
//! or storage), still answering one `EventResult` per event, in order, on
//! batches and streams. Whatever gapwatch does beyond this is what it costs
//! on top of tonic, HTTP/2 and protobuf on the same machine.
//!
//! Run as `gapwatch bench-ceiling-server` (a hidden subcommand), in its own
//! process so that it gets the same CPU split as a gapwatch server.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use gapwatch::domain::validate::event_id;
use gapwatch::proto::{
    ingest_service_server::{IngestService, IngestServiceServer},
    EventResult, EventStatus, RecordBatchRequest, RecordBatchResponse, RecordEventResponse,
    RecordInteractionRequest, RecordSurveyRequest, StreamEventsRequest,
};

#[derive(clap::Args)]
pub struct CeilingArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Acknowledges everything.
#[derive(Clone, Default)]
pub struct Ceiling {
    sequence: Arc<AtomicU64>,
}

impl Ceiling {
    fn next(&self, n: u64) -> u64 {
        self.sequence.fetch_add(n, Ordering::Relaxed) + 1
    }
}

fn accepted(index: u64, event_id: &str, sequence: u64) -> EventResult {
    EventResult {
        index,
        event_id: event_id.to_string(),
        status: EventStatus::Accepted.into(),
        sequence,
        error: None,
    }
}

type ResultStream = Pin<Box<dyn futures_util::Stream<Item = Result<EventResult, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for Ceiling {
    async fn record_survey(
        &self,
        _request: Request<RecordSurveyRequest>,
    ) -> Result<Response<RecordEventResponse>, Status> {
        Ok(Response::new(RecordEventResponse {
            sequence: self.next(1),
            duplicate: false,
        }))
    }

    async fn record_interaction(
        &self,
        _request: Request<RecordInteractionRequest>,
    ) -> Result<Response<RecordEventResponse>, Status> {
        Ok(Response::new(RecordEventResponse {
            sequence: self.next(1),
            duplicate: false,
        }))
    }

    async fn record_batch(
        &self,
        request: Request<RecordBatchRequest>,
    ) -> Result<Response<RecordBatchResponse>, Status> {
        let events = request.into_inner().events;
        let first = self.next(events.len() as u64);
        let results = events
            .iter()
            .enumerate()
            .map(|(i, e)| accepted(i as u64, event_id(e), first + i as u64))
            .collect();
        Ok(Response::new(RecordBatchResponse { results }))
    }

    type StreamEventsStream = ResultStream;

    async fn stream_events(
        &self,
        request: Request<Streaming<StreamEventsRequest>>,
    ) -> Result<Response<ResultStream>, Status> {
        let this = self.clone();
        let mut index = 0u64;
        let results = request.into_inner().map(move |message| {
            message.map(|m| {
                let id = m.event.as_ref().map_or("", event_id);
                let result = accepted(index, id, this.next(1));
                index += 1;
                result
            })
        });
        Ok(Response::new(Box::pin(results)))
    }
}

/// `gapwatch bench-ceiling-server`: serves [`Ceiling`] until SIGINT or
/// SIGTERM, printing the same "listening" line as `serve`.
pub async fn serve(args: CeilingArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("gapwatch listening on {}", listener.local_addr()?);
    // TCP_NODELAY on every accepted connection, as `Server::serve` would
    // set it (`serve_with_incoming` leaves sockets as accepted): without
    // it, small responses wait for the peer's delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let defaults = gapwatch::config::ServerConfig::default();
    tonic::transport::Server::builder()
        .add_service(
            IngestServiceServer::new(Ceiling::default())
                .max_decoding_message_size(defaults.max_message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, super::super::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
