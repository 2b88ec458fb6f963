//! Subscribers that join while transitions are being committed, from any
//! sequence already in the log, get every transition from there on, once
//! and in order: the hand-over from reading the log to the live feed loses
//! and repeats nothing, whether the ring of recent transitions holds
//! everything or the log in sled has to be read first. Some also drop their
//! stream partway and resume from the last sequence they saw + 1, as a
//! dashboard does after a disconnect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    alerts_through, interaction, interaction_event, next_message, proto, subscribe_from, survey,
    survey_event, TestServer, HOUR, T0,
};
use proto::{subscribe_response::Message, InteractionKind, Survey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

const BATCHES: usize = 30;
const CUSTOMERS_PER_BATCH: usize = 10;
const SUBSCRIBERS: usize = 16;

/// A promoter who then cancels: one CHURN_RISK transition per customer.
fn churn(customer: &str, at: i64) -> Vec<proto::Event> {
    vec![
        survey_event(Survey {
            nps: Some(10),
            repurchase: Some(10),
            ..survey(&format!("{customer}-s"), customer, at)
        }),
        interaction_event(interaction(
            &format!("{customer}-x"),
            customer,
            at + HOUR,
            InteractionKind::Cancellation,
        )),
    ]
}

/// Reads `stream` from `from` until it has delivered the log through the
/// final head (once the producer is done); drops and resumes it after
/// `drop_after` alerts if given. Every alert's sequence, in order.
async fn follow(
    server: Arc<TestServer>,
    from: u64,
    mut drop_after: Option<usize>,
    mut final_head: watch::Receiver<Option<u64>>,
) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut stream = server.subscribe(subscribe_from(Some(from))).await;
    loop {
        let message = next_message(&mut stream).await;
        if let Some(Message::Alert(alert)) = &message.message {
            seen.push(alert.sequence);
            if drop_after == Some(seen.len()) {
                drop_after = None;
                stream = server
                    .subscribe(subscribe_from(Some(alert.sequence + 1)))
                    .await;
                continue;
            }
        }
        let done = *final_head.borrow_and_update();
        if done.is_some_and(|head| message.sequence >= head) {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_during_ingest_miss_and_repeat_nothing() {
    // Everything from the in-memory ring of recent transitions.
    joining_during_ingest(100_000, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_reading_the_log_then_the_ring_miss_and_repeat_nothing() {
    // A ring of 16: a subscriber from further back reads the log in sled
    // first, then catches up into the ring.
    joining_during_ingest(16, 11).await;
}

async fn joining_during_ingest(recent_transitions: usize, seed: u64) {
    let server = Arc::new(
        TestServer::start_with(|c| {
            c.alerts.heartbeat_secs = 0.1;
            c.alerts.recent_transitions = recent_transitions;
        })
        .await,
    );
    let (final_tx, final_rx) = watch::channel(None);

    let producer = {
        let server = server.clone();
        tokio::spawn(async move {
            for batch in 0..BATCHES {
                let events: Vec<_> = (0..CUSTOMERS_PER_BATCH)
                    .flat_map(|i| churn(&format!("c-{batch}-{i}"), T0 + batch as i64 * HOUR))
                    .collect();
                server.accept_all(&events).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut rng = SmallRng::seed_from_u64(seed);
    // Join once the first batch's transitions are in the log.
    while server.alert_head().await < CUSTOMERS_PER_BATCH as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut followers = Vec::new();
    let mut heads_at_join = Vec::new();
    for _ in 0..SUBSCRIBERS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        // From anywhere in the log so far, its start and the next
        // sequence included.
        let head = server.alert_head().await;
        heads_at_join.push(head);
        let from = rng.random_range(1..=head + 1);
        let drop_after = rng.random_bool(0.5).then(|| rng.random_range(1..40));
        followers.push((
            from,
            tokio::spawn(follow(server.clone(), from, drop_after, final_rx.clone())),
        ));
    }
    producer.await.expect("producer");
    let head = server.alert_head().await;
    assert!(
        head >= (BATCHES * CUSTOMERS_PER_BATCH) as u64,
        "one CHURN_RISK per customer at least: head {head}"
    );
    final_tx.send(Some(head)).expect("followers listen");

    let mut whole = server.subscribe(subscribe_from(Some(1))).await;
    let log: Vec<u64> = alerts_through(&mut whole, head)
        .await
        .iter()
        .map(|a| a.sequence)
        .collect();
    assert_eq!(log, (1..=head).collect::<Vec<_>>(), "the log has no gaps");
    let mut from_inside_the_log = 0;
    for (from, follower) in followers {
        let seen = follower.await.expect("follower");
        let expected: Vec<u64> = (from..=head).collect();
        assert_eq!(seen, expected, "a follower from {from}");
        if from > 1 && from <= head {
            from_inside_the_log += 1;
        }
    }
    assert!(
        from_inside_the_log > SUBSCRIBERS / 2,
        "{from_inside_the_log}"
    );
    assert!(
        heads_at_join.iter().any(|&h| h < head),
        "some joined while transitions were still coming: {heads_at_join:?}"
    );
    drop(whole);
    Arc::try_unwrap(server)
        .unwrap_or_else(|_| panic!("every follower is done"))
        .stop()
        .await;
}
