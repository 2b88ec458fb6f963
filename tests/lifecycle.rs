//! Graceful shutdown of the real binary: SIGTERM mid-stream. Health goes
//! NOT_SERVING, the stream is told to finish after its acks, in-flight
//! events are committed, the process exits 0 within the drain bound, and
//! after a restart every acknowledged event is there (resending it is a
//! duplicate with the same sequence).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use proto::ingest_service_client::IngestServiceClient;
use proto::{EventStatus, RecordBatchRequest, StreamEventsRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

fn event(i: u64) -> Event {
    survey_event(Survey {
        attributes: attrs(&[("region", &format!("r{}", i % 3))]),
        csat: Some((i % 5) as i32 + 1),
        ..survey(&format!("term-{i}"), &format!("c{}", i % 40), T0 + i as i64)
    })
}

/// Starts `gapwatch serve` on `dir`; returns the child and its address.
fn start(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gapwatch"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env("GAPWATCH__SERVER__SHUTDOWN_TIMEOUT_SECS", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn gapwatch");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("gapwatch listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_commits_acks_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

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

    // Exit 0, within the drain bound.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // Restart: every acknowledged event is durable under its sequence.
    let (mut child, addr) = start(dir.path());
    let mut ingest = IngestServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
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
    let _ = child.kill();
    let _ = child.wait();
}
