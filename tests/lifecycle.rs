//! Graceful shutdown of the real binary: SIGTERM mid-stream. Health goes
//! NOT_SERVING, the stream is told to finish after its acks, in-flight
//! events are committed, the process exits 0 within the drain bound, and
//! after a restart every acknowledged event is there (resending it is a
//! duplicate with the same sequence).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::child::ServerProcess;
use common::*;
use proto::ingest_service_client::IngestServiceClient;
use proto::{EventStatus, RecordBatchRequest, StreamEventsRequest};
use tokio_stream::wrappers::ReceiverStream;

fn event(i: u64) -> Event {
    survey_event(Survey {
        attributes: attrs(&[("region", &format!("r{}", i % 3))]),
        csat: Some((i % 5) as i32 + 1),
        ..survey(&format!("term-{i}"), &format!("c{}", i % 40), T0 + i as i64)
    })
}

/// Starts `gapwatch serve` on `dir` with a 10 s shutdown drain bound.
fn start(dir: &Path) -> ServerProcess {
    ServerProcess::spawn(
        dir,
        &[("GAPWATCH__SERVER__SHUTDOWN_TIMEOUT_SECS", "10")],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_commits_acks_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let channel = server.connect().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // A producer that keeps streaming until the server ends the stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamEventsRequest>(256);
    let producer = tokio::spawn(async move {
        for i in 0.. {
            let request = StreamEventsRequest {
                event: Some(event(i)),
            };
            if tx.send(request).await.is_err() {
                return;
            }
            if i % 100 == 99 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut acks = IngestServiceClient::new(channel.clone())
        .stream_events(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acked: HashMap<String, u64> = HashMap::new();
    while acked.len() < 2_000 {
        let ack = acks.message().await.unwrap().expect("acks flow");
        assert_eq!(ack.status(), EventStatus::Accepted);
        acked.insert(ack.event_id.clone(), ack.sequence);
    }

    server.terminate();

    // Health reports NOT_SERVING before the listener goes away.
    let not_serving = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(update)) = watch.message().await {
            if update.status() == tonic_health::pb::health_check_response::ServingStatus::NotServing
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(not_serving, "health must turn NOT_SERVING on SIGTERM");

    // The stream delivers the acks of what was committed, then ends with
    // UNAVAILABLE (resend what was not acknowledged).
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), acks.message())
            .await
            .expect("the stream ends within the drain bound")
        {
            Ok(Some(ack)) => {
                assert_eq!(ack.status(), EventStatus::Accepted);
                acked.insert(ack.event_id.clone(), ack.sequence);
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    if let Some(status) = end {
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ),
            "{status:?}"
        );
    }
    producer.abort();
    drop((acks, watch, health, channel));

    // Exit 0, within the drain bound (the timeout only bounds a hung child).
    let status = server.wait_exit(Duration::from_secs(120)).await;
    assert!(status.success(), "exit status {status:?}");

    // Restart: every acknowledged event is durable under its sequence.
    let server = start(dir.path());
    let mut ingest = IngestServiceClient::new(server.connect().await);
    let ids: Vec<(String, u64)> = acked.into_iter().collect();
    for chunk in ids.chunks(5_000) {
        let events = chunk
            .iter()
            .map(|(id, _)| {
                let i: u64 = id.trim_start_matches("term-").parse().unwrap();
                event(i)
            })
            .collect();
        let results = ingest
            .record_batch(RecordBatchRequest { events })
            .await
            .unwrap()
            .into_inner()
            .results;
        for ((id, sequence), result) in chunk.iter().zip(results) {
            assert_eq!(result.event_id, *id);
            assert_eq!(result.status(), EventStatus::Duplicate, "{id} was acked");
            assert_eq!(result.sequence, *sequence, "{id} keeps its sequence");
        }
    }
    drop(server);
}
