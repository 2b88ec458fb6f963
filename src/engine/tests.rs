//! The engine against a real store, without gRPC: duplicate detection.

use super::{Engine, EngineHandle, Outcome};
use crate::config::Config;
use crate::domain::{Body, Event, Survey};
use crate::scoring::Params;
use crate::store::{Store, WriteBatch};

fn survey(id: &str, customer: &str, csat: u8) -> Event {
    Event {
        id: id.into(),
        customer: customer.into(),
        at: 1_700_000_000_000,
        attributes: Vec::new(),
        body: Body::Survey(Survey {
            csat: Some(csat),
            nps: None,
            ces: None,
            repurchase: None,
            ratings: Vec::new(),
        }),
    }
}

fn start(store: Store, config: &Config) -> Engine {
    let meter = opentelemetry::global::meter("engine-tests");
    let metrics = crate::telemetry::Metrics::new(&meter);
    Engine::start(
        store,
        config.scoring.clone(),
        config.engine_options(),
        metrics,
    )
    .expect("engine")
}

/// Ingests one event: ("accepted" | "duplicate", its sequence).
async fn one(engine: &EngineHandle, event: Event) -> (&'static str, u64) {
    let outcomes = engine.ingest(vec![event]).await.expect("ingest");
    match outcomes.as_slice() {
        [Outcome::Accepted(seq)] => ("accepted", *seq),
        [Outcome::Duplicate(seq)] => ("duplicate", *seq),
        other => panic!("unexpected outcomes {other:?}"),
    }
}

fn surveys(store: &Store, customer: &str) -> u64 {
    let state = store.customer(customer).unwrap().expect("stored");
    state.report(0, &Params::default(), None).survey_count
}

fn config(remembered: usize) -> Config {
    let mut config = Config::default();
    config.ingest.remembered_ids_per_customer = remembered;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_a_duplicate_among_its_customers_latest_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &config(3).store_options()).unwrap();
    let engine = start(store.clone(), &config(3));
    let handle = engine.handle();

    assert_eq!(
        one(&handle, survey("e-1", "alice", 5)).await,
        ("accepted", 1)
    );
    // Another customer's event under the same id is another event.
    assert_eq!(one(&handle, survey("e-1", "bob", 4)).await, ("accepted", 2));
    assert_eq!(
        one(&handle, survey("e-1", "alice", 1)).await,
        ("duplicate", 1)
    );
    assert_eq!(
        one(&handle, survey("e-1", "bob", 1)).await,
        ("duplicate", 2)
    );
    // Three ids are remembered per customer: after e-2..e-4, e-1 is not.
    for (n, id) in ["e-2", "e-3", "e-4"].into_iter().enumerate() {
        let seq = 3 + n as u64;
        assert_eq!(
            one(&handle, survey(id, "alice", 3)).await,
            ("accepted", seq)
        );
    }
    assert_eq!(
        one(&handle, survey("e-2", "alice", 1)).await,
        ("duplicate", 3)
    );
    assert_eq!(
        one(&handle, survey("e-1", "alice", 1)).await,
        ("accepted", 6)
    );
    engine.shutdown().await;

    assert_eq!(surveys(&store, "alice"), 5);
    assert_eq!(surveys(&store, "bob"), 1);
    // The stored record keeps the three latest ids.
    let record = store.customer_record("alice").unwrap().unwrap();
    assert_eq!(record.ids.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_accepted_by_earlier_builds_are_still_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000);
    {
        // What an earlier build left: an id index entry per event.
        let store = Store::open(dir.path(), &config.store_options()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_events(1, vec![survey("old-1", "alice", 5)]);
        batch.put_legacy_event_id("old-1", 1).unwrap();
        store.commit(batch).unwrap();
    }
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    let engine = start(store, &config);
    let handle = engine.handle();
    assert_eq!(
        one(&handle, survey("old-1", "alice", 5)).await,
        ("duplicate", 1)
    );
    assert_eq!(
        one(&handle, survey("new-1", "alice", 5)).await,
        ("accepted", 2)
    );
    engine.shutdown().await;
}

/// With no cache at all, records still in flight must be read from the
/// cache (the store encodes them only when it commits): commits submitted
/// back to back all change one customer, and none of their changes or ids
/// may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_commits_see_each_others_records_without_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1_000);
    config.storage.cached_customers = 0;
    // One submitted batch per commit, so that commits follow each other.
    config.ingest.max_commit_events = 21;
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    let engine = start(store.clone(), &config);
    let handle = engine.handle();

    let mut pending = Vec::new();
    for batch in 0..50 {
        let mut events: Vec<Event> = (0..20)
            .map(|i| survey(&format!("e-{batch}-{i}"), "hot", 4))
            .collect();
        if batch > 0 {
            // A resend of the previous batch's first event.
            events.push(survey(&format!("e-{}-0", batch - 1), "hot", 1));
        }
        pending.push(handle.submit(events).await.expect("submit"));
    }
    let mut accepted = 0;
    for (batch, outcomes) in pending.into_iter().enumerate() {
        for outcome in outcomes.wait().await.expect("outcomes") {
            match outcome {
                Outcome::Accepted(_) => accepted += 1,
                // e-(b-1)-0 was accepted at sequence 20·(b-1) + 1.
                Outcome::Duplicate(seq) => assert_eq!(seq, 20 * (batch as u64 - 1) + 1),
                Outcome::Rejected(e) => panic!("rejected: {e}"),
            }
        }
    }
    assert_eq!(accepted, 1_000);
    engine.shutdown().await;
    assert_eq!(surveys(&store, "hot"), 1_000);
    let record = store.customer_record("hot").unwrap().unwrap();
    assert_eq!(record.ids.len(), 1_000);
}

/// A clean stop leaves nothing in the write-ahead log to replay at the
/// next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_checkpoints_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1_000);
    // No checkpoint before the stop.
    config.storage.checkpoint_interval_ms = 3_600_000;
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    let engine = start(store.clone(), &config);
    let handle = engine.handle();
    for n in 0..3 {
        let id = format!("e-{n}");
        assert_eq!(one(&handle, survey(&id, "alice", 4)).await.0, "accepted");
    }
    assert!(store.wal_pending_bytes() > 0, "commits are logged");
    engine.shutdown().await;
    assert_eq!(store.wal_pending_bytes(), 0);
    assert_eq!(surveys(&store, "alice"), 3);
}

/// The event log's chunks are encoded on the commit thread, after the
/// writer staged the commit: every accepted event is in the log under its
/// sequence, and a restart continues after the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_holds_every_accepted_event_under_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000);
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    let engine = start(store.clone(), &config);
    let handle = engine.handle();
    // One commit of three, then single events: chunks of several sizes.
    let batch: Vec<Event> = (0..3)
        .map(|n| survey(&format!("b-{n}"), "bob", 3))
        .collect();
    let outcomes = handle.ingest(batch.clone()).await.unwrap();
    assert!(matches!(
        outcomes[..],
        [
            Outcome::Accepted(1),
            Outcome::Accepted(2),
            Outcome::Accepted(3)
        ]
    ));
    let single = survey("a-0", "alice", 4);
    for (event, expected) in [
        (single.clone(), ("accepted", 4)),
        (survey("b-0", "bob", 3), ("duplicate", 1)),
    ] {
        assert_eq!(one(&handle, event).await, expected);
    }
    engine.shutdown().await;
    for (seq, event) in (1..).zip(batch.iter().chain([&single])) {
        assert_eq!(
            store.event(seq).unwrap().as_ref(),
            Some(event),
            "sequence {seq}"
        );
    }
    assert_eq!(store.event(5).unwrap(), None, "a duplicate is not logged");
    drop(store);

    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    assert_eq!(store.last_sequence().unwrap(), 4);
    let engine = start(store.clone(), &config);
    assert_eq!(
        one(&engine.handle(), survey("a-1", "alice", 5)).await,
        ("accepted", 5)
    );
    engine.shutdown().await;
    assert_eq!(
        store.event(5).unwrap().map(|e| e.id),
        Some("a-1".to_string())
    );
}

fn cancellation(id: &str, customer: &str) -> Event {
    use crate::domain::{Interaction, InteractionKind};
    Event {
        id: id.into(),
        customer: customer.into(),
        at: 1_700_000_000_000,
        attributes: Vec::new(),
        body: Body::Interaction(Interaction::of_kind(InteractionKind::Cancellation)),
    }
}

/// The open alerts are counted with the commits that open them, and a
/// restart reads the count. (The count is one more key of the commit: a
/// crash recovers it from the write-ahead log like any other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_alerts_are_counted_with_their_commits() {
    use crate::domain::alert::AlertKind;
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000);
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    assert_eq!(store.open_alerts().unwrap().count(AlertKind::ChurnRisk), 0);
    let engine = start(store.clone(), &config);
    let handle = engine.handle();
    for customer in ["ann", "bob"] {
        let id = format!("cancel-{customer}");
        assert_eq!(
            one(&handle, cancellation(&id, customer)).await.0,
            "accepted"
        );
    }
    // A cancellation by a new customer opens a CHURN_RISK alert.
    assert_eq!(store.open_alerts().unwrap().count(AlertKind::ChurnRisk), 2);
    drop(handle);
    engine.shutdown().await;
    drop(store);
    let reopened = Store::open(dir.path(), &config.store_options()).unwrap();
    let open = reopened.open_alerts().unwrap();
    assert_eq!(open.count(AlertKind::ChurnRisk), 2);
    assert_eq!(open.count(AlertKind::SatisfactionDrop), 0);
}

/// A commit whose record cannot be synced is answered UNAVAILABLE, and so
/// is every later write, the device healthy again or not (sled may hold
/// writes that were never made durable). After a restart nothing
/// acknowledged is missing, and retries are answered once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_refuses_every_later_write_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(1_000);
    let unavailable = |outcomes: Vec<Outcome>| {
        matches!(
            outcomes.as_slice(),
            [Outcome::Rejected(crate::error::Error::Unavailable(_))]
        )
    };
    {
        let store = Store::open(dir.path(), &config.store_options()).unwrap();
        let engine = start(store.clone(), &config);
        let handle = engine.handle();
        assert_eq!(one(&handle, survey("a", "alice", 4)).await.0, "accepted");
        store.fail_next_sync();
        let b = handle.ingest(vec![survey("b", "alice", 5)]).await.unwrap();
        assert!(unavailable(b), "the failed commit is not acknowledged");
        let c = handle.ingest(vec![survey("c", "bob", 3)]).await;
        assert!(c.map_or(true, unavailable), "a later commit is refused too");
        engine.shutdown().await;
    }
    let store = Store::open(dir.path(), &config.store_options()).unwrap();
    let engine = start(store.clone(), &config);
    let handle = engine.handle();
    assert_eq!(one(&handle, survey("a", "alice", 4)).await.0, "duplicate");
    // `b` reached the log before its sync failed, so the restart may have
    // kept it: a retry is then a duplicate, never a second copy.
    let (b, _) = one(&handle, survey("b", "alice", 5)).await;
    assert!(matches!(b, "accepted" | "duplicate"));
    assert_eq!(one(&handle, survey("c", "bob", 3)).await.0, "accepted");
    assert_eq!(surveys(&store, "alice"), 2);
    assert_eq!(surveys(&store, "bob"), 1);
    engine.shutdown().await;
}
