//! `IngestService`: unary, batch and bidirectional-stream ingest.

use std::pin::Pin;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{now_millis, status, Shared};
use crate::domain::validate::{self, Context, FieldViolation};
use crate::domain::Event;
use crate::engine::{Outcome, PendingOutcomes};
use crate::error::Error;
use crate::proto::{
    self, ingest_service_server::IngestService, EventError, EventResult, EventStatus,
    RecordBatchRequest, RecordBatchResponse, RecordEventResponse, RecordInteractionRequest,
    RecordSurveyRequest, StreamEventsRequest,
};
use crate::telemetry::{EventKind, EventTally};

/// Stream messages read and validated together, then submitted as one
/// engine command.
const STREAM_CHUNK: usize = 512;
/// Submitted chunks a stream may have waiting for their commit: 8 × 512 =
/// 4,096 events, half a full group commit. With 4 streams that is two
/// commits' worth, enough to keep the engine busy: 16 chunks measured
/// 101–102k events/s against 105–107k for 8 (one stream: the same for
/// both), with ~40% more ack latency (p99 597–608 against 433–452 ms),
/// events waiting in line
/// (docs/PERFORMANCE-LOG.md, "Fewer allocations per event").
const STREAM_PIPELINE: usize = 8;

pub struct IngestApi {
    shared: Shared,
}

impl IngestApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    async fn record_one(
        &self,
        validated: Result<Event, Vec<FieldViolation>>,
        kind: EventKind,
    ) -> Result<Response<RecordEventResponse>, Status> {
        let mut tally = EventTally::default();
        let event = validated.map_err(|violations| {
            tally.rejected(kind, tonic::Code::InvalidArgument);
            self.shared.metrics.events(&tally);
            Error::InvalidArgument(violations)
        })?;
        let outcome = self
            .shared
            .engine
            .ingest(vec![event])
            .await?
            .into_iter()
            .next();
        if let Some(outcome) = &outcome {
            tally.outcome(kind, outcome);
            self.shared.metrics.events(&tally);
        }
        match outcome {
            Some(Outcome::Accepted(sequence)) => Ok(Response::new(RecordEventResponse {
                sequence,
                duplicate: false,
            })),
            Some(Outcome::Duplicate(sequence)) => Ok(Response::new(RecordEventResponse {
                sequence,
                duplicate: true,
            })),
            Some(Outcome::Rejected(e)) => Err(e.into()),
            None => Err(Status::internal("the engine returned no outcome")),
        }
    }
}

/// What is kept of a wire event until it is answered: the id its result
/// echoes and its kind (counted then). The wire event itself is dropped
/// once validated, so that a stream's up to 4,096 unanswered events hold
/// ids, not whole requests, while they wait for their commit.
struct Echo {
    id: String,
    kind: EventKind,
}

/// Validates wire events; the valid ones are returned for the engine, the
/// invalid ones already have their result.
fn validate_all(
    events: Vec<proto::Event>,
    first_index: u64,
    field_prefix: Option<&str>,
    ctx: &Context,
) -> (Vec<Event>, Vec<Option<EventResult>>, Vec<Echo>) {
    let mut valid = Vec::with_capacity(events.len());
    let mut results = Vec::with_capacity(events.len());
    let mut echoes = Vec::with_capacity(events.len());
    for (offset, mut wire) in events.into_iter().enumerate() {
        let index = first_index + offset as u64;
        let prefix = field_prefix.map_or(String::new(), |p| format!("{p}[{offset}]"));
        match validate::event(&wire, ctx, &prefix) {
            Ok(event) => {
                valid.push(event);
                results.push(None);
            }
            Err(violations) => results.push(Some(rejected(
                index,
                validate::event_id(&wire),
                &Error::InvalidArgument(violations),
            ))),
        }
        echoes.push(Echo {
            kind: EventKind::of(&wire),
            id: validate::take_event_id(&mut wire),
        });
    }
    (valid, results, echoes)
}

/// Fills the open slots of `results` with the engine's outcomes, in order,
/// and counts every result.
fn answer(
    results: Vec<Option<EventResult>>,
    echoes: Vec<Echo>,
    first_index: u64,
    outcomes: Vec<Outcome>,
    metrics: &crate::telemetry::Metrics,
) -> Vec<EventResult> {
    let mut outcomes = outcomes.into_iter();
    let mut tally = EventTally::default();
    let results = results
        .into_iter()
        .zip(echoes)
        .enumerate()
        .map(|(offset, (slot, echo))| {
            let result = slot.unwrap_or_else(|| {
                let index = first_index + offset as u64;
                match outcomes.next() {
                    Some(outcome) => result(index, echo.id, outcome),
                    None => rejected(
                        index,
                        &echo.id,
                        &Error::Unavailable("no outcome from the engine".into()),
                    ),
                }
            });
            tally.result(echo.kind, &result);
            result
        })
        .collect();
    metrics.events(&tally);
    results
}

fn result(index: u64, event_id: String, outcome: Outcome) -> EventResult {
    let (status, sequence) = match outcome {
        Outcome::Accepted(seq) => (EventStatus::Accepted, seq),
        Outcome::Duplicate(seq) => (EventStatus::Duplicate, seq),
        Outcome::Rejected(e) => return rejected(index, &event_id, &e),
    };
    EventResult {
        index,
        event_id,
        status: status.into(),
        sequence,
        error: None,
    }
}

fn rejected(index: u64, event_id: &str, error: &Error) -> EventResult {
    let reason = match error {
        Error::InvalidArgument(v) => v
            .iter()
            .map(|v| format!("{}: {}", v.field, v.reason))
            .collect::<Vec<_>>()
            .join("; "),
        Error::ResourceExhausted { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    EventResult {
        index,
        event_id: event_id.to_string(),
        status: EventStatus::Rejected.into(),
        sequence: 0,
        error: Some(EventError {
            code: status::code(error) as i32,
            field: error.field().to_string(),
            reason,
        }),
    }
}

type ResultStream = Pin<Box<dyn futures_util::Stream<Item = Result<EventResult, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn record_survey(
        &self,
        request: Request<RecordSurveyRequest>,
    ) -> Result<Response<RecordEventResponse>, Status> {
        let Some(survey) = request.into_inner().survey else {
            return Err(Error::invalid("survey", "is required").into());
        };
        let dimensions = self.shared.engine.dimensions().snapshot();
        let ctx = Context {
            now: now_millis(),
            dimensions: &dimensions,
        };
        self.record_one(validate::survey(&survey, &ctx, "survey"), EventKind::Survey)
            .await
    }

    async fn record_interaction(
        &self,
        request: Request<RecordInteractionRequest>,
    ) -> Result<Response<RecordEventResponse>, Status> {
        let Some(interaction) = request.into_inner().interaction else {
            return Err(Error::invalid("interaction", "is required").into());
        };
        let dimensions = self.shared.engine.dimensions().snapshot();
        let ctx = Context {
            now: now_millis(),
            dimensions: &dimensions,
        };
        self.record_one(
            validate::interaction(&interaction, &ctx, "interaction"),
            EventKind::Interaction,
        )
        .await
    }

    async fn record_batch(
        &self,
        request: Request<RecordBatchRequest>,
    ) -> Result<Response<RecordBatchResponse>, Status> {
        let events = request.into_inner().events;
        let max = self.shared.config.ingest.max_batch_events;
        if events.is_empty() {
            return Err(Error::invalid("events", "must not be empty").into());
        }
        if events.len() > max {
            return Err(Error::invalid(
                "events",
                format!("at most {max} events per batch, got {}", events.len()),
            )
            .into());
        }
        let dimensions = self.shared.engine.dimensions().snapshot();
        let ctx = Context {
            now: now_millis(),
            dimensions: &dimensions,
        };
        let (valid, results, echoes) = validate_all(events, 0, Some("events"), &ctx);
        let outcomes = if valid.is_empty() {
            Vec::new()
        } else {
            self.shared.engine.ingest(valid).await?
        };
        let results = answer(results, echoes, 0, outcomes, &self.shared.metrics);
        Ok(Response::new(RecordBatchResponse { results }))
    }

    type StreamEventsStream = ResultStream;

    async fn stream_events(
        &self,
        request: Request<Streaming<StreamEventsRequest>>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let inbound = request.into_inner();
        let (pending_tx, pending_rx) = mpsc::channel(STREAM_PIPELINE);
        let (out_tx, out_rx) = mpsc::channel(STREAM_CHUNK * 2);
        // The RPC's span lives as long as the stream, so each chunk's
        // engine batch is traced under it.
        tokio::spawn(tracing::Instrument::in_current_span(read_stream(
            self.shared.clone(),
            inbound,
            pending_tx,
        )));
        tokio::spawn(answer_stream(
            pending_rx,
            out_tx,
            self.shared.metrics.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// What the reader hands the answerer, in stream order.
enum StreamItem {
    Chunk(PendingChunk),
    /// End the response stream with this status once everything before it
    /// is answered.
    End(Status),
}

/// A chunk of stream events waiting for its commit.
struct PendingChunk {
    first_index: u64,
    echoes: Vec<Echo>,
    results: Vec<Option<EventResult>>,
    outcomes: Option<PendingOutcomes>,
}

/// Reads the producer's stream in chunks of whatever has arrived, validates
/// and submits each chunk without waiting for the previous commit.
async fn read_stream(
    shared: Shared,
    inbound: Streaming<StreamEventsRequest>,
    pending: mpsc::Sender<StreamItem>,
) {
    let mut chunks = inbound.ready_chunks(STREAM_CHUNK);
    let mut next_index = 0u64;
    let limits = &shared.config.server;
    let idle = std::time::Duration::from_secs(limits.stream_idle_timeout_secs);
    let max_duration = super::stream_deadline(limits.stream_max_duration_secs);
    tokio::pin!(max_duration);
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            () = tokio::time::sleep(idle) => {
                let status = Status::deadline_exceeded(format!(
                    "no event for {}s (server.stream_idle_timeout_secs); stream closed after acking what was received",
                    idle.as_secs()
                ));
                let _ = pending.send(StreamItem::End(status)).await;
                return;
            }
            () = &mut max_duration => {
                let status = Status::unavailable(
                    "stream reached server.stream_max_duration_secs; reconnect and resend unacknowledged events",
                );
                let _ = pending.send(StreamItem::End(status)).await;
                return;
            }
            () = shared.shutdown.cancelled() => {
                let status = Status::unavailable(
                    "server shutting down; reconnect and resend unacknowledged events",
                );
                let _ = pending.send(StreamItem::End(status)).await;
                return;
            }
        };
        let Some(chunk) = chunk else { return };
        let mut events = Vec::with_capacity(chunk.len());
        let mut stream_error = None;
        for message in chunk {
            match message {
                Ok(m) => events.push(m.event.unwrap_or_default()),
                Err(status) => {
                    stream_error = Some(status);
                    break;
                }
            }
        }
        if !events.is_empty() {
            let dimensions = shared.engine.dimensions().snapshot();
            let ctx = Context {
                now: now_millis(),
                dimensions: &dimensions,
            };
            let first_index = next_index;
            next_index += events.len() as u64;
            let (valid, results, echoes) = validate_all(events, first_index, None, &ctx);
            let outcomes = if valid.is_empty() {
                None
            } else {
                match shared.engine.submit(valid).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        let _ = pending.send(StreamItem::End(e.into())).await;
                        return;
                    }
                }
            };
            let chunk = PendingChunk {
                first_index,
                echoes,
                results,
                outcomes,
            };
            if pending.send(StreamItem::Chunk(chunk)).await.is_err() {
                return; // the client went away
            }
        }
        if let Some(status) = stream_error {
            // An undecodable message (INVALID_ARGUMENT, see `api::codec`)
            // ends the stream with its status once the events before it
            // are answered; a client that reset the stream reads nothing.
            tracing::debug!(%status, "ingest stream ended by a client error");
            let _ = pending.send(StreamItem::End(status)).await;
            return;
        }
    }
}

/// Sends results in stream order, each chunk once it is durable.
async fn answer_stream(
    mut pending: mpsc::Receiver<StreamItem>,
    out: mpsc::Sender<Result<EventResult, Status>>,
    metrics: crate::telemetry::Metrics,
) {
    while let Some(item) = pending.recv().await {
        let chunk = match item {
            StreamItem::Chunk(chunk) => chunk,
            StreamItem::End(status) => {
                let _ = out.send(Err(status)).await;
                return;
            }
        };
        let outcomes = match chunk.outcomes {
            Some(p) => match p.wait().await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    let _ = out.send(Err(e.into())).await;
                    return;
                }
            },
            None => Vec::new(),
        };
        let results = answer(
            chunk.results,
            chunk.echoes,
            chunk.first_index,
            outcomes,
            &metrics,
        );
        for result in results {
            if out.send(Ok(result)).await.is_err() {
                return;
            }
        }
    }
}
