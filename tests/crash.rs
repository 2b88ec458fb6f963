//! The real binary under `kill -9`: every acknowledged event must survive,
//! the log must be an unbroken prefix of what was streamed, and the state
//! must match a server that never crashed. Also: one process per data dir.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::{serve_command, wait_exit, Producer, ServerProcess};
use common::*;
use proto::ingest_service_client::IngestServiceClient;
use proto::EventStatus;
use tempfile::TempDir;
use tonic::transport::Channel;

/// Event `i` of the crash workload: every third a purchase, the others
/// surveys; 50 customers, 4 regions; all valid, ids unique.
fn crash_event(i: u64) -> Event {
    workload_event("crash", 50, i)
}

/// Event `i` of a workload over `customers` customers and 4 regions: every
/// third a purchase, the others surveys; ids `<prefix>-<i>`.
fn workload_event(prefix: &str, customers: u64, i: u64) -> Event {
    let customer = format!("c{}", i % customers);
    let region = format!("r{}", i % 4);
    let at = T0 + i as i64;
    let attributes = attrs(&[("region", &region)]);
    let id = format!("{prefix}-{i}");
    if i % 3 == 0 {
        interaction_event(Interaction {
            attributes,
            ..purchase(&id, &customer, at, (i % 97 + 1) as f64)
        })
    } else {
        survey_event(Survey {
            attributes,
            csat: Some((i % 5) as i32 + 1),
            nps: Some((i % 11) as i32),
            ..survey(&id, &customer, at)
        })
    }
}

fn is_survey(i: u64) -> bool {
    i % 3 != 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    const KILL_AFTER: usize = 1_500;
    const MAX_EVENTS: u64 = 1_000_000;
    let as_of = T0 + DAY;
    let dir = TempDir::new().expect("temp dir");
    let mut server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut client = IngestServiceClient::new(server.connect().await);

    // The producer streams until the connection dies.
    let (producer, requests) = Producer::spawn(crash_event, MAX_EVENTS);
    let mut acks = client
        .stream_events(requests)
        .await
        .expect("open the stream")
        .into_inner();
    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER {
        let ack = acks
            .message()
            .await
            .expect("ack")
            .expect("the stream ended before the kill");
        acked.push(ack);
    }
    // SIGKILL while the producer is still streaming.
    server.kill();
    // `sent`: what the producer tried to hand over (an upper bound).
    let sent = producer.stop().await;
    drop((acks, client));
    assert!(sent as usize >= acked.len());

    // Every ack: in order, accepted, and (fresh dir, unique valid events)
    // at sequence index + 1.
    for (i, ack) in acked.iter().enumerate() {
        assert_eq!(ack.index, i as u64);
        assert_eq!(ack.event_id, format!("crash-{i}"));
        assert_eq!(ack.status(), EventStatus::Accepted, "{ack:?}");
        assert_eq!(ack.sequence, i as u64 + 1);
    }

    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let channel = server.connect().await;
    let restarted = TestServerClients::new(channel);

    // What survived, before anything is resent.
    let all = restarted.scope("all", as_of).await;
    let durable = all.event_count;
    assert!(
        durable >= acked.len() as u64,
        "{durable} durable < {} acked",
        acked.len()
    );
    assert!(durable <= sent);
    let surveys = (0..durable).filter(|i| is_survey(*i)).count() as u64;
    assert_eq!(all.response_count, surveys);
    assert_eq!(all.customer_count, durable.min(50));

    // Resend everything that may have been sent. The durable events are
    // exactly an unbroken prefix 0..durable (duplicates at their original
    // sequence); the rest is accepted now, continuing the log.
    let mut duplicates = 0u64;
    for start in (0..sent).step_by(5_000) {
        let end = (start + 5_000).min(sent);
        let results = restarted
            .batch((start..end).map(crash_event).collect())
            .await;
        for (offset, r) in results.iter().enumerate() {
            let i = start + offset as u64;
            assert_eq!(r.event_id, format!("crash-{i}"));
            let expected = if i < durable {
                EventStatus::Duplicate
            } else {
                EventStatus::Accepted
            };
            assert_eq!(
                r.status(),
                expected,
                "event {i} of {sent}, {durable} durable: {r:?}"
            );
            assert_eq!(r.sequence, i + 1, "{r:?}");
            if r.status() == EventStatus::Duplicate {
                duplicates += 1;
            }
        }
    }
    assert_eq!(duplicates, durable);
    let all = restarted.scope("all", as_of).await;
    assert_eq!(all.event_count, sent);
    assert_eq!(
        all.response_count,
        (0..sent).filter(|i| is_survey(*i)).count() as u64
    );

    // No half-applied state survived the crash: the scores equal those of
    // a server that got the same events without crashing.
    let reference = TestServer::start().await;
    let events: Vec<Event> = (0..sent).map(crash_event).collect();
    reference.accept_all(&events).await;
    for scope in ["all", "region=r0", "region=r3"] {
        assert_json_close(
            &restarted.scope(scope, as_of).await,
            &reference.scope(scope, as_of).await,
        );
    }
    for c in 0..50 {
        let id = format!("c{c}");
        assert_json_close(
            &restarted.customer(&id, as_of).await,
            &reference.customer(&id, as_of).await,
        );
    }
    reference.stop().await;
    drop(server);
}

/// Event `i` of the small-commit workload: 5,000 customers, so that
/// commits stay small (log files of small commits are started over a
/// spare: see `store::spare`).
fn small_commit_event(i: u64) -> Event {
    workload_event("small", 5_000, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_small_commits_survive_kill_9_in_a_log_file_started_over_a_spare() {
    const CALLERS: u64 = 16;
    let dir = TempDir::new().expect("temp dir");
    let spare = dir.path().join("wal").join("spare");
    let mut server = ServerProcess::spawn(dir.path(), &[], &[]);
    let channel = server.connect().await;
    let stop = Arc::new(AtomicBool::new(false));
    // (event, sequence) of every acknowledged call.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let mut client = IngestServiceClient::new(channel.clone());
        let (stop, acked) = (stop.clone(), acked.clone());
        callers.push(tokio::spawn(async move {
            let mut i = caller;
            while !stop.load(Ordering::Relaxed) {
                let request = proto::RecordBatchRequest {
                    events: vec![small_commit_event(i)],
                };
                // The kill ends the connection.
                let Ok(response) = client.record_batch(request).await else {
                    break;
                };
                let result = &response.into_inner().results[0];
                assert_eq!(result.status(), EventStatus::Accepted, "{result:?}");
                acked.lock().unwrap().push((i, result.sequence));
                i += CALLERS;
            }
        }));
    }
    // A spare is made after the first checkpoint of small commits and taken
    // by the rotation after it: once it has come and gone, commits are
    // going to a log file started over it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = false;
    loop {
        let exists = spare.exists();
        if seen && !exists {
            break;
        }
        seen |= exists;
        assert!(Instant::now() < deadline, "no spare was made or taken");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("a caller failed");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() > 100, "{} acknowledged", acked.len());

    // Every acknowledged event is there, under the sequence it was given.
    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let restarted = TestServerClients::new(server.connect().await);
    for chunk in acked.chunks(5_000) {
        let events = chunk.iter().map(|(i, _)| small_commit_event(*i)).collect();
        let results = restarted.batch(events).await;
        for ((i, sequence), r) in chunk.iter().zip(&results) {
            assert_eq!(r.status(), EventStatus::Duplicate, "event {i}: {r:?}");
            assert_eq!(r.sequence, *sequence, "event {i}: {r:?}");
        }
    }
    drop(server);
}

/// Score/ingest calls on a channel to a child process.
struct TestServerClients {
    ingest: IngestServiceClient<Channel>,
    score: proto::score_service_client::ScoreServiceClient<Channel>,
}

impl TestServerClients {
    fn new(channel: Channel) -> Self {
        Self {
            ingest: IngestServiceClient::new(channel.clone()),
            score: proto::score_service_client::ScoreServiceClient::new(channel),
        }
    }

    async fn scope(&self, scope: &str, as_of_secs: i64) -> proto::ScopeScore {
        self.score
            .clone()
            .get_scope_score(proto::GetScopeScoreRequest {
                scope: scope.into(),
                as_of_time: Some(ts(as_of_secs)),
            })
            .await
            .unwrap_or_else(|s| panic!("GetScopeScore({scope}): {s:?}"))
            .into_inner()
    }

    async fn customer(&self, id: &str, as_of_secs: i64) -> proto::CustomerScore {
        self.score
            .clone()
            .get_customer_score(proto::GetCustomerScoreRequest {
                customer_id: id.into(),
                as_of_time: Some(ts(as_of_secs)),
            })
            .await
            .unwrap_or_else(|s| panic!("GetCustomerScore({id}): {s:?}"))
            .into_inner()
    }

    async fn batch(&self, events: Vec<Event>) -> Vec<proto::EventResult> {
        self.ingest
            .clone()
            .record_batch(proto::RecordBatchRequest { events })
            .await
            .expect("RecordBatch")
            .into_inner()
            .results
    }
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_data_dir() {
    let dir = TempDir::new().expect("temp dir");
    let first = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut client = IngestServiceClient::new(first.connect().await);
    let r = client
        .record_survey(proto::RecordSurveyRequest {
            survey: Some(csat("before", "alice", T0, 5)),
        })
        .await
        .expect("first process works")
        .into_inner();
    assert_eq!(r.sequence, 1);

    let mut second = serve_command(dir.path(), &[], &[])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second gapwatch");
    // The deadline only bounds a hung child.
    let status = wait_exit(&mut second, Duration::from_secs(120)).await;
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "the second process exited with {status}");
    assert!(
        stderr.contains("error: cannot open") && stderr.contains(&dir.path().display().to_string()),
        "stderr of the second process: {stderr}"
    );

    // The first process is unaffected and kept its data.
    let r = client
        .record_survey(proto::RecordSurveyRequest {
            survey: Some(csat("after", "alice", T0, 4)),
        })
        .await
        .expect("first process still works")
        .into_inner();
    assert_eq!((r.sequence, r.duplicate), (2, false));
    let r = client
        .record_survey(proto::RecordSurveyRequest {
            survey: Some(csat("before", "alice", T0, 1)),
        })
        .await
        .expect("duplicate")
        .into_inner();
    assert_eq!((r.sequence, r.duplicate), (1, true));
    drop(first);
}
