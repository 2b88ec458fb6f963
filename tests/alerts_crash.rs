//! Alerts against the real binary: alert transitions survive `kill -9`
//! together with the events that caused them, and a subscriber that reads
//! nothing while 100,000 events are ingested neither blocks ingest nor
//! costs unbounded server memory, and still gets every transition.

mod common;

use common::child::{Producer, ServerProcess};
use common::*;
use proto::alert_service_client::AlertServiceClient;
use proto::ingest_service_client::IngestServiceClient;
use proto::{AlertKind, AlertState, EventStatus, StreamEventsRequest};
use tempfile::TempDir;
use tonic::transport::Channel;

/// Every transition of the log, from 1 to the head, over Subscribe.
async fn whole_log(client: &AlertServiceClient<Channel>) -> Vec<proto::Alert> {
    let (_, head) = list_every_alert(client).await;
    if head == 0 {
        return Vec::new();
    }
    let mut stream = open_subscription(client, subscribe_from(Some(1)))
        .await
        .expect("Subscribe from 1");
    let log = alerts_through(&mut stream, head).await;
    assert_eq!(
        log.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>(),
        "the log is 1..=head without gaps"
    );
    log
}

/// Transitions without their wall-clock commit time (the one field two
/// servers given the same events do not share).
fn without_update_time(alerts: &[proto::Alert]) -> Vec<proto::Alert> {
    alerts
        .iter()
        .map(|a| proto::Alert {
            update_time: None,
            ..a.clone()
        })
        .collect()
}

/// Index of the event behind a transition: event `i` happens at T0 + i s.
fn causing_event(a: &proto::Alert) -> u64 {
    let t = a.event_time.as_ref().expect("event_time");
    u64::try_from(t.seconds - T0).expect("after T0")
}

/// Event `i` of the crash workload, in blocks of 80: 70 in-control ratings
/// of responsiveness in region=east (E = P = 5), 5 widened ones (E = 7,
/// P = 4), 5 cancellations by new customers. Each block fires
/// SATISFACTION_DROP and GAP_WIDENING in `all` and region=east, the next
/// block resolves them, and every cancellation opens a CHURN_RISK.
fn crash_event(i: u64) -> Event {
    let at = T0 + i as i64;
    let id = format!("ac-{i}");
    match i % 80 {
        0..70 => survey_event(rated(
            &id,
            &format!("c{}", i % 50),
            at,
            &[("region", "east")],
            &[("responsiveness", 5, 5)],
        )),
        70..75 => survey_event(rated(
            &id,
            &format!("c{}", i % 50),
            at,
            &[("region", "east")],
            &[("responsiveness", 7, 4)],
        )),
        _ => interaction_event(interaction(
            &id,
            &format!("x{i}"),
            at,
            InteractionKind::Cancellation,
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_transitions_survive_kill_9_with_their_events() {
    const KILL_AFTER: usize = 2_400;
    const MAX_EVENTS: u64 = 1_000_000;
    let dir = TempDir::new().expect("temp dir");
    let mut server = ServerProcess::spawn(dir.path(), &[], &[]);
    let mut ingest = IngestServiceClient::new(server.connect().await);

    // Stream until the connection dies.
    let (producer, requests) = Producer::spawn(crash_event, MAX_EVENTS);
    let mut acks = ingest
        .stream_events(requests)
        .await
        .expect("open the stream")
        .into_inner();
    let mut acked = 0usize;
    while acked < KILL_AFTER {
        let ack = tokio::time::timeout(STREAM_WAIT, acks.message())
            .await
            .expect("an ack in time")
            .expect("ack")
            .expect("the stream ended before the kill");
        assert_eq!(ack.index, acked as u64);
        assert_eq!(ack.status(), EventStatus::Accepted, "{ack:?}");
        assert_eq!(ack.sequence, acked as u64 + 1);
        acked += 1;
    }
    // SIGKILL right after the acks, while the producer is still streaming.
    server.kill();
    // `sent`: what the producer tried to hand over (an upper bound).
    let sent = producer.stop().await;
    drop((acks, ingest));
    drop(server);

    let server = ServerProcess::spawn(dir.path(), &[], &[]);
    let channel = server.connect().await;
    let alerts = AlertServiceClient::new(channel.clone());
    let score = proto::score_service_client::ScoreServiceClient::new(channel.clone());
    let durable = score
        .clone()
        .get_scope_score(proto::GetScopeScoreRequest {
            scope: "all".into(),
            as_of_time: Some(ts(T0 + DAY)),
        })
        .await
        .expect("GetScopeScore(all)")
        .into_inner()
        .event_count;
    assert!(durable >= acked as u64, "{durable} durable < {acked} acked");
    assert!(durable <= sent);

    // The alert log after the crash.
    let log = whole_log(&alerts).await;
    let (listed, head) = list_every_alert(&alerts).await;
    assert_eq!(head, log.len() as u64);

    // What a server that never crashed writes for the durable events
    // 0..durable: the same transitions, numbered the same, nothing more.
    let reference = TestServer::start().await;
    let events: Vec<Event> = (0..durable).map(crash_event).collect();
    reference.accept_all(&events).await;
    let expected = whole_log(&reference.alerts).await;
    let (expected_listed, _) = list_every_alert(&reference.alerts).await;
    assert_eq!(without_update_time(&log), without_update_time(&expected));
    assert_eq!(
        without_update_time(&listed),
        without_update_time(&expected_listed)
    );

    // In particular every transition caused by an acknowledged event is
    // there, and none is caused by an event that was not made durable.
    let from_acked: Vec<_> = expected
        .iter()
        .filter(|a| causing_event(a) < acked as u64)
        .collect();
    assert!(from_acked.len() >= 300, "{} transitions", from_acked.len());
    for a in &from_acked {
        let got = &log[a.sequence as usize - 1];
        assert_eq!(
            (got.sequence, &got.id, got.state),
            (a.sequence, &a.id, a.state)
        );
    }
    assert!(log.iter().all(|a| causing_event(a) < durable));
    let kinds: std::collections::BTreeSet<_> = log.iter().map(|a| a.kind()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            AlertKind::GapWidening,
            AlertKind::SatisfactionDrop,
            AlertKind::ChurnRisk
        ]
    );
    assert!(log.iter().any(|a| a.state() == AlertState::Resolved));

    // The detectors' state survived with them: continuing the workload
    // gives the same transitions as on the server that never crashed.
    let more: Vec<Event> = (durable..durable + 240).map(crash_event).collect();
    let restarted = IngestServiceClient::new(channel.clone());
    for chunk in more.chunks(80) {
        let results = restarted
            .clone()
            .record_batch(proto::RecordBatchRequest {
                events: chunk.to_vec(),
            })
            .await
            .expect("RecordBatch")
            .into_inner()
            .results;
        for r in results {
            // Not in the log (`durable` counts every event there): new.
            assert_eq!(r.status(), EventStatus::Accepted, "{r:?}");
        }
    }
    reference.accept_all(&more).await;
    let log = whole_log(&alerts).await;
    let expected = whole_log(&reference.alerts).await;
    assert!(expected.len() > from_acked.len());
    assert_eq!(without_update_time(&log), without_update_time(&expected));

    reference.stop().await;
    drop(server);
}

/// Event `i` of the slow-subscriber workload: customer `i / 5` sends a
/// survey (CSAT 5, NPS 9), a purchase, a follow-up, another survey and a
/// cancellation, which makes them at risk: one CHURN_RISK per customer,
/// the one of customer `n` at alert sequence `n + 1`. The surveys never
/// vary, so no scope detector fires.
fn slow_event(i: u64) -> Event {
    let customer = format!("cust-{}", i / 5);
    let at = T0 + i as i64;
    let id = format!("slow-{i}");
    let attributes = attrs(&[(
        "region",
        ["north", "south", "east", "west"][(i / 5 % 4) as usize],
    )]);
    match i % 5 {
        0 | 3 => survey_event(Survey {
            attributes,
            csat: Some(5),
            nps: Some(9),
            ..survey(&id, &customer, at)
        }),
        1 => interaction_event(Interaction {
            attributes,
            ..purchase(&id, &customer, at, (i % 97 + 1) as f64)
        }),
        2 => interaction_event(Interaction {
            attributes,
            ..interaction(&id, &customer, at, InteractionKind::FollowUp)
        }),
        _ => interaction_event(Interaction {
            attributes,
            ..interaction(&id, &customer, at, InteractionKind::Cancellation)
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_neither_blocks_ingest_nor_grows_memory() {
    const EVENTS: u64 = 100_000;
    const CUSTOMERS: u64 = EVENTS / 5;
    // Generous: ingesting 100,000 events over one stream costs the server
    // ~250 MiB of RSS with no subscriber at all (measured in debug builds:
    // ~90 MiB of sled growth, the rest the stream's in-flight pipeline of
    // 64 × 512 events and allocator slack). A subscriber that buffered its
    // whole backlog would add far less than the slack here (20,000
    // transitions are ~10 MB), so the bound only catches gross growth,
    // such as a per-subscriber queue of every committed batch.
    const MEMORY_BOUND: u64 = 512 << 20;
    let dir = TempDir::new().expect("temp dir");
    // A modest sled cache (the default is 256 MiB).
    let server = ServerProcess::spawn(
        dir.path(),
        &[("GAPWATCH__STORAGE__CACHE_CAPACITY_MB", "64")],
        &[],
    );
    // The subscriber has its own connection and reads nothing until the
    // ingest is over.
    let subscriber = AlertServiceClient::new(server.connect().await);
    let mut stream = open_subscription(&subscriber, subscribe_from(Some(1)))
        .await
        .expect("Subscribe from 1");
    let channel = server.connect().await;
    let alerts = AlertServiceClient::new(channel.clone());
    let rss_before = server.rss();

    // 100,000 events over one StreamEvents stream; every ack must come (it
    // would not if the writer waited for the subscriber).
    let requests: Vec<StreamEventsRequest> = (0..EVENTS)
        .map(|i| StreamEventsRequest {
            event: Some(slow_event(i)),
        })
        .collect();
    let mut acks = IngestServiceClient::new(channel.clone())
        .stream_events(tokio_stream::iter(requests))
        .await
        .expect("open the stream")
        .into_inner();
    let mut acked = 0u64;
    while let Some(ack) = tokio::time::timeout(STREAM_WAIT, acks.message())
        .await
        .unwrap_or_else(|_| panic!("ingest stalled after {acked} acks"))
        .expect("ack")
    {
        assert_eq!(ack.index, acked);
        assert_eq!(ack.status(), EventStatus::Accepted, "{ack:?}");
        assert_eq!(ack.sequence, acked + 1);
        acked += 1;
    }
    assert_eq!(acked, EVENTS);
    let (_, head) = list_every_alert(&alerts).await;
    assert_eq!(head, CUSTOMERS, "one CHURN_RISK per customer");
    let peak = server.memory("VmHWM");
    let rss_after_ingest = server.rss();

    // Now the subscriber reads: every transition from 1, in order.
    let got = alerts_through(&mut stream, head).await;
    assert_eq!(got.len() as u64, CUSTOMERS);
    for (n, a) in got.iter().enumerate() {
        let n = n as u64;
        assert_eq!(a.sequence, n + 1);
        assert_eq!(a.id, (n + 1).to_string());
        assert_eq!(a.kind(), AlertKind::ChurnRisk, "{a:?}");
        assert_eq!(a.state(), AlertState::Firing, "{a:?}");
        assert_eq!(a.customer_id, format!("cust-{n}"));
        assert_eq!(causing_event(a), n * 5 + 4, "caused by the cancellation");
    }
    let rss_after_read = server.rss();
    println!(
        "server memory: RSS {} MiB before, peak {} MiB, {} MiB after ingest, {} MiB after reading",
        rss_before >> 20,
        peak >> 20,
        rss_after_ingest >> 20,
        rss_after_read >> 20
    );
    assert!(
        peak.saturating_sub(rss_before) < MEMORY_BOUND,
        "server memory grew from {} MiB to a peak of {} MiB",
        rss_before >> 20,
        peak >> 20
    );

    drop((stream, subscriber, alerts, channel));
    drop(server);
}
