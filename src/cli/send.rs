//! `gapwatch send`: streams JSON-lines events over StreamEvents and prints a
//! summary. Each line is a `gapwatch.v1.Event` in the canonical proto3 JSON
//! mapping, e.g. `{"survey":{"eventId":"e1","customerId":"c1",
//! "occurTime":"2026-11-01T10:00:00Z","csat":5}}`.

use std::path::PathBuf;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use gapwatch::proto::{
    ingest_service_client::IngestServiceClient, Event, EventStatus, StreamEventsRequest,
};

#[derive(clap::Args)]
pub struct SendArgs {
    /// JSON-lines file; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    #[command(flatten)]
    server: super::ServerArg,
}

#[derive(Default)]
pub struct Summary {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// (line, event id, reason)
    pub problems: Vec<(usize, String, String)>,
}

pub async fn run(args: SendArgs) -> anyhow::Result<std::process::ExitCode> {
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        None => Box::new(tokio::io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(tokio::io::stdin()),
        Some(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
    };
    let client = IngestServiceClient::new(args.server.connect().await?)
        .max_decoding_message_size(64 * 1024 * 1024);
    let summary = send_lines(client, input).await?;
    println!(
        "accepted {}  duplicate {}  rejected {}",
        summary.accepted, summary.duplicate, summary.rejected
    );
    for (line, id, reason) in &summary.problems {
        println!("  line {line} (event_id {id:?}): {reason}");
    }
    Ok(if summary.rejected == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    })
}

/// Parses and streams every line; lines that are not valid JSON events are
/// counted as rejected without being sent.
pub async fn send_lines(
    mut client: IngestServiceClient<tonic::transport::Channel>,
    input: impl AsyncRead + Unpin + Send + 'static,
) -> anyhow::Result<Summary> {
    let (tx, rx) = mpsc::channel::<StreamEventsRequest>(1024);
    let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<usize>();
    let reader = tokio::spawn(async move {
        let mut local = Vec::new();
        let mut lines = BufReader::new(input).lines();
        let mut number = 0;
        while let Some(line) = lines.next_line().await? {
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    let _ = lines_tx.send(number);
                    if tx
                        .send(StreamEventsRequest { event: Some(event) })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => local.push((number, String::new(), format!("not a JSON event: {e}"))),
            }
        }
        anyhow::Ok(local)
    });
    let mut acks = client
        .stream_events(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut summary = Summary::default();
    while let Some(result) = acks.message().await? {
        let line = lines_rx.recv().await.unwrap_or(0);
        match EventStatus::try_from(result.status) {
            Ok(EventStatus::Accepted) => summary.accepted += 1,
            Ok(EventStatus::Duplicate) => summary.duplicate += 1,
            _ => {
                summary.rejected += 1;
                let reason = result.error.map(|e| e.reason).unwrap_or_default();
                summary.problems.push((line, result.event_id, reason));
            }
        }
    }
    let local = reader.await??;
    summary.rejected += local.len() as u64;
    summary.problems.extend(local);
    summary.problems.sort_by_key(|p| p.0);
    Ok(summary)
}
