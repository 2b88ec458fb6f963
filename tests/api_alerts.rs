//! AlertService end to end on an in-process server: the Subscribe stream
//! (live, resumed, filtered, heartbeats, out of range, a thousand
//! subscribers), ListAlerts, AcknowledgeAlert (with re-baselining), the
//! wall-clock COMPLAINT_OVERDUE alert and gRPC-Web over HTTP/1.1.
//!
//! The detectors are driven deterministically. 40 identical in-control
//! ratings (E = P = 5) give a baseline with σ = 0, so `σ_min` (0.5 for
//! GAP_WIDENING, 5 for SATISFACTION_DROP) sets the scale; one rating with
//! E = 7, P = 4 then gives a gap z = (3 − 0)/0.5 = 6, C = 5.5 > h = 4.4, and
//! a satisfaction (confirmation 100·(4/7)/1.5 = 38.10 against 66.67)
//! z = −5.71, C = 5.21 > 4.4: both fire at once, in `all` and in the
//! event's `region=…` scope. While open, C is capped at h = 4.4; back in
//! control it drains by k = 0.5 per observation, reaches 0 at the 9th and
//! the alert resolves at the 18th (C at 0 for `resolve_after` = 10
//! observations).

mod common;

use std::time::Duration;

use common::*;
use proto::alert_service_client::AlertServiceClient;
use proto::{AlertKind, AlertSeverity, AlertState, GapKind, ListAlertsRequest, SubscribeRequest};
use tonic::transport::Endpoint;
use tonic::Code;

const RESP: &str = "responsiveness";
const EMPATHY: &str = "empathy";

/// Satisfaction of an in-control response (E = P = 5): 100·(5/5)/1.5.
fn steady_satisfaction() -> f64 {
    100.0 / 1.5
}

/// Satisfaction of a shifted response (E = 7, P = 4): 100·(4/7)/1.5.
fn shifted_satisfaction() -> f64 {
    100.0 * (4.0 / 7.0) / 1.5
}

/// `k + h`: one step from C = 0 must move C by this many σ to fire.
const FIRE_Z: f64 = 0.5 + 4.4;
const GAP_SIGMA_MIN: f64 = 0.5;
const SAT_SIGMA_MIN: f64 = 5.0;

/// Event ids and times of a scenario: one minute apart from T0.
#[derive(Default)]
struct Feed {
    n: i64,
}

impl Feed {
    fn next(&mut self) -> (String, i64) {
        self.n += 1;
        (format!("ev-{}", self.n), T0 + self.n * MINUTE)
    }

    /// Event time of the last event built.
    fn last_at(&self) -> i64 {
        T0 + self.n * MINUTE
    }

    fn surveys(&mut self, count: usize, region: &str, ratings: &[(&str, i32, i32)]) -> Vec<Event> {
        (0..count)
            .map(|_| {
                let (id, at) = self.next();
                let customer = format!("cust-{}", self.n % 7);
                survey_event(rated(&id, &customer, at, &[("region", region)], ratings))
            })
            .collect()
    }

    /// In control: E = P = 5 on `dimension` (gap 0, satisfaction 66.67).
    fn steady(&mut self, count: usize, region: &str, dimension: &str) -> Vec<Event> {
        self.surveys(count, region, &[(dimension, 5, 5)])
    }

    /// Widened: E = 7, P = 4 on `dimension` (gap 3, satisfaction 38.10).
    fn shifted(&mut self, count: usize, region: &str, dimension: &str) -> Vec<Event> {
        self.surveys(count, region, &[(dimension, 7, 4)])
    }

    fn interaction(&mut self, customer: &str, kind: InteractionKind) -> Interaction {
        let (id, at) = self.next();
        interaction(&id, customer, at, kind)
    }

    /// A purchase then a cancellation: the customer becomes at risk.
    fn churn(&mut self, customer: &str, amount: f64) -> Vec<Event> {
        let buy = Interaction {
            amount: Some(amount),
            ..self.interaction(customer, InteractionKind::Purchase)
        };
        let cancel = self.interaction(customer, InteractionKind::Cancellation);
        vec![interaction_event(buy), interaction_event(cancel)]
    }
}

fn kind(a: &proto::Alert) -> AlertKind {
    a.kind()
}

fn sequences(alerts: &[proto::Alert]) -> Vec<u64> {
    alerts.iter().map(|a| a.sequence).collect()
}

fn ids(alerts: &[proto::Alert]) -> Vec<String> {
    alerts.iter().map(|a| a.id.clone()).collect()
}

fn id_list(ids: &[u64]) -> Vec<String> {
    ids.iter().map(u64::to_string).collect()
}

fn assert_event_time(a: &proto::Alert, secs: i64) {
    let t = a.event_time.as_ref().expect("event_time");
    assert_eq!((t.seconds, t.nanos), (secs, 0), "event_time of {a:?}");
}

/// update_time is the wall clock of the commit: between `before` and now.
fn assert_update_time(a: &proto::Alert, before: i64) {
    let t = a.update_time.as_ref().expect("update_time").seconds;
    assert!(
        t >= before - 1 && t <= now_secs() + 1,
        "update_time {t} not within [{before}, now] in {a:?}"
    );
}

/// A GAP_WIDENING/TOTAL FIRING from an in-control level of 0 to a gap of 3.
#[track_caller]
fn assert_gap_fired(a: &proto::Alert, sequence: u64, scope: &str, dimension: &str, obs: u64) {
    assert_eq!(a.sequence, sequence, "{a:#?}");
    assert_eq!(
        a.id,
        sequence.to_string(),
        "a FIRING opens alert <sequence>"
    );
    assert_eq!(kind(a), AlertKind::GapWidening, "{a:#?}");
    assert_eq!(a.state(), AlertState::Firing, "{a:#?}");
    assert_eq!(a.severity(), AlertSeverity::Warning, "{a:#?}");
    assert_eq!(a.scope, scope, "{a:#?}");
    assert_eq!(a.dimension, dimension, "{a:#?}");
    assert_eq!(a.gap_kind(), GapKind::Total, "{a:#?}");
    assert_eq!((a.customer_id.as_str(), a.case_id.as_str()), ("", ""));
    assert_some_close(a.value, 3.0);
    assert_some_close(a.baseline, 0.0);
    assert_some_close(a.threshold, GAP_SIGMA_MIN * FIRE_Z);
    assert_eq!(a.observations, obs, "{a:#?}");
    assert_eq!(
        a.message,
        format!("{dimension} gap in {scope} widened from 0.00 to 3.00 points")
    );
    assert_eq!(a.note, "");
}

/// A SATISFACTION_DROP FIRING from 66.67 to 38.10.
#[track_caller]
fn assert_satisfaction_fired(a: &proto::Alert, sequence: u64, scope: &str, obs: u64) {
    assert_eq!(a.sequence, sequence, "{a:#?}");
    assert_eq!(a.id, sequence.to_string());
    assert_eq!(kind(a), AlertKind::SatisfactionDrop, "{a:#?}");
    assert_eq!(a.state(), AlertState::Firing, "{a:#?}");
    assert_eq!(a.severity(), AlertSeverity::Warning, "{a:#?}");
    assert_eq!(a.scope, scope, "{a:#?}");
    assert_eq!(a.dimension, "", "{a:#?}");
    assert_eq!(a.gap_kind(), GapKind::Unspecified, "{a:#?}");
    assert_some_close(a.value, shifted_satisfaction());
    assert_some_close(a.baseline, steady_satisfaction());
    assert_some_close(a.threshold, steady_satisfaction() - SAT_SIGMA_MIN * FIRE_Z);
    assert_eq!(a.observations, obs, "{a:#?}");
    assert_eq!(
        a.message,
        format!("satisfaction in {scope} dropped from 66.67 to 38.10")
    );
}

/// The RESOLVED transition of `fired`: same alert, same reading except
/// observations, event time and message.
#[track_caller]
fn assert_resolved(a: &proto::Alert, fired: &proto::Alert, sequence: u64, obs: u64) {
    assert_eq!(a.sequence, sequence, "{a:#?}");
    assert_eq!(a.id, fired.id, "{a:#?}");
    assert_eq!(a.state(), AlertState::Resolved, "{a:#?}");
    assert_eq!(
        (kind(a), a.severity(), &a.scope, &a.dimension, a.gap_kind()),
        (
            kind(fired),
            fired.severity(),
            &fired.scope,
            &fired.dimension,
            fired.gap_kind()
        )
    );
    assert_eq!(a.value, fired.value, "C is 0: the value stays the change's");
    assert_eq!(a.baseline, fired.baseline, "the baseline was frozen");
    assert_eq!(a.threshold, fired.threshold);
    assert_eq!(a.observations, obs, "{a:#?}");
    let expected = match kind(fired) {
        AlertKind::GapWidening => format!(
            "{} gap in {} back in control (baseline 0.00 points)",
            fired.dimension, fired.scope
        ),
        AlertKind::SatisfactionDrop => format!(
            "satisfaction in {} back in control (baseline 66.67)",
            fired.scope
        ),
        other => panic!("unexpected kind {other:?}"),
    };
    assert_eq!(a.message, expected);
}

/// The four FIRING transitions of one shifted response in region `region`,
/// from sequence `first`: satisfaction then gap, `all` then the region.
#[track_caller]
fn assert_shift_fired(alerts: &[proto::Alert], first: u64, region: &str, obs_all: u64, obs: u64) {
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    let scope = format!("region={region}");
    assert_satisfaction_fired(&alerts[0], first, "all", obs_all);
    assert_gap_fired(&alerts[1], first + 1, "all", RESP, obs_all);
    assert_satisfaction_fired(&alerts[2], first + 2, &scope, obs);
    assert_gap_fired(&alerts[3], first + 3, &scope, RESP, obs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_widening_fires_and_resolves_on_the_stream() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let started = now_secs();
    // From the head of an empty log.
    let mut stream = server.subscribe(subscribe_from(None)).await;
    let mut feed = Feed::default();

    // 40 in-control responses: the baseline, no alert.
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 0);
    assert_no_alert_through(&mut stream, 0).await;

    // One widened gap: FIRING in `all` and in region=east, for the gap and
    // for satisfaction, in one commit.
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let shift_at = feed.last_at();
    let fired = next_alerts(&mut stream, 4).await;
    assert_shift_fired(&fired, 1, "east", 41, 41);
    for a in &fired {
        assert_event_time(a, shift_at);
        assert_update_time(a, started);
    }
    assert_eq!(server.alert_head().await, 4);
    assert_no_alert_through(&mut stream, 4).await;

    // Back in control: C (capped at 4.4) reaches 0 at the 9th response;
    // 17 are not enough.
    server.accept_all(&feed.steady(17, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 4, "resolved too early");
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert_eq!(ids(&open.alerts), id_list(&[1, 2, 3, 4]));

    // The 18th: C has been 0 for 10 observations → RESOLVED, same order.
    server.accept_all(&feed.steady(1, "east", RESP)).await;
    let resolved_at = feed.last_at();
    let resolved = next_alerts(&mut stream, 4).await;
    assert_eq!(sequences(&resolved), vec![5, 6, 7, 8]);
    for (r, f) in resolved.iter().zip(&fired) {
        assert_resolved(r, f, f.sequence + 4, 59);
        assert_event_time(r, resolved_at);
    }
    assert_eq!(server.alert_head().await, 8);
    assert_no_alert_through(&mut stream, 8).await;
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert!(open.alerts.is_empty(), "{:#?}", open.alerts);
    assert_eq!(open.head_sequence, 8);

    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_the_last_sequence_gets_exactly_the_missed_transitions() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let mut feed = Feed::default();
    let mut stream = server.subscribe(subscribe_from(None)).await;
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;

    // Read two of the four, then go away.
    let seen = next_alerts(&mut stream, 2).await;
    assert_eq!(sequences(&seen), vec![1, 2]);
    drop(stream);

    // Meanwhile: the four resolve (5..=8) and the gap widens again (9..=12;
    // the baseline learned only in-control responses, so one shift fires).
    server.accept_all(&feed.steady(20, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 12);

    let last = seen.last().expect("two seen").sequence;
    let mut resumed = server.subscribe(subscribe_from(Some(last + 1))).await;
    let missed = alerts_through(&mut resumed, 12).await;
    assert_eq!(sequences(&missed), (3..=12).collect::<Vec<_>>());
    assert_eq!(
        missed.iter().map(|a| a.state()).collect::<Vec<_>>(),
        [
            [AlertState::Firing; 2].as_slice(),
            &[AlertState::Resolved; 4],
            &[AlertState::Firing; 4]
        ]
        .concat()
    );
    // The resolved ones close alerts 1..=4; the new firings open 9..=12.
    assert_eq!(ids(&missed), id_list(&[3, 4, 1, 2, 3, 4, 9, 10, 11, 12]));
    assert_shift_fired(&missed[6..], 9, "east", 62, 62);
    // Caught up: nothing more, and live transitions keep coming in order.
    assert_no_alert_through(&mut resumed, 12).await;
    let ack = server.acknowledge("10", "", false).await.expect("ack");
    assert_eq!(ack.sequence, 13);
    assert_eq!(next_alert(&mut resumed).await, ack);

    // From 0 (the whole log): everything, once, in order.
    let mut whole = server.subscribe(subscribe_from(Some(0))).await;
    let all = alerts_through(&mut whole, 13).await;
    assert_eq!(sequences(&all), (1..=13).collect::<Vec<_>>());
    assert_eq!(all[0..2], seen[..]);
    assert_eq!(all[2..12], missed[..]);

    drop((resumed, whole));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscribers_get_heartbeats_with_the_head() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 4);

    // From the head: nothing to replay, so the first message is a heartbeat.
    let mut stream = server.subscribe(subscribe_from(None)).await;
    let before = now_secs();
    for _ in 0..2 {
        let m = next_message(&mut stream).await;
        let Some(proto::subscribe_response::Message::Heartbeat(h)) = m.message else {
            panic!("expected a heartbeat, got {m:?}");
        };
        assert_eq!((m.sequence, h.head_sequence), (4, 4));
        let t = h.time.expect("heartbeat time").seconds;
        assert!(t >= before - 1 && t <= now_secs() + 1, "heartbeat time {t}");
    }

    // A narrow filter that matches nothing still learns the head, so it
    // can resume near it.
    let mut narrow = server
        .subscribe(SubscribeRequest {
            from_sequence: Some(1),
            kinds: vec![AlertKind::ChurnRisk as i32],
            ..SubscribeRequest::default()
        })
        .await;
    let m = next_message(&mut narrow).await;
    assert!(
        matches!(m.message, Some(proto::subscribe_response::Message::Heartbeat(ref h)) if h.head_sequence == 4),
        "{m:?}"
    );
    assert_eq!(m.sequence, 4);

    // A transition moves the head; the following heartbeats carry it.
    let ack = server.acknowledge("2", "on it", false).await.expect("ack");
    assert_eq!(ack.sequence, 5);
    assert_eq!(next_alert(&mut stream).await, ack);
    let m = next_message(&mut stream).await;
    assert!(
        matches!(m.message, Some(proto::subscribe_response::Message::Heartbeat(ref h)) if h.head_sequence == 5),
        "{m:?}"
    );
    // The narrow one skips the acknowledgement but its head moves too.
    assert_no_alert_through(&mut narrow, 5).await;
    assert_eq!(server.alert_head().await, 5);

    drop((stream, narrow));
    server.stop().await;
}

/// West fires SATISFACTION_DROP and GAP_WIDENING in `all` (1, 2) and west
/// (3, 4); 18 in-control west responses resolve all four (5..=8); then east
/// fires in `all` (9, 10) and east (11, 12); a VIP customer's cancellation
/// opens CHURN_RISK (13).
async fn two_region_scenario(server: &TestServer) {
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "west", RESP)).await;
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "west", RESP)).await;
    server.accept_all(&feed.steady(18, "west", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    server.accept_all(&feed.churn("vip-1", 100.0)).await;
    assert_eq!(server.alert_head().await, 13);
}

fn list(states: &[AlertState], kinds: &[AlertKind], scope: &str) -> ListAlertsRequest {
    ListAlertsRequest {
        states: states.iter().map(|s| *s as i32).collect(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        scope: scope.to_string(),
        ..ListAlertsRequest::default()
    }
}

#[tokio::test]
async fn list_alerts_filters_pages_and_reports_the_head() {
    use AlertState::{Acknowledged, Firing, Resolved};
    const HEAD: u64 = 13;
    let server = TestServer::start().await;
    two_region_scenario(&server).await;

    // Default: the open alerts, in id order, as of the head.
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert_eq!(open.head_sequence, HEAD);
    assert_eq!(ids(&open.alerts), id_list(&[9, 10, 11, 12, 13]));
    assert!(open.next_page_token.is_empty());
    // Each with its latest transition's sequence (= id for a FIRING).
    assert_eq!(sequences(&open.alerts), vec![9, 10, 11, 12, 13]);
    // `all` had 40 + 40 + 1 + 18 responses before this one.
    assert_satisfaction_fired(&open.alerts[0], 9, "all", 100);
    assert_gap_fired(&open.alerts[1], 10, "all", RESP, 100);
    assert_satisfaction_fired(&open.alerts[2], 11, "region=east", 41);
    assert_gap_fired(&open.alerts[3], 12, "region=east", RESP, 41);
    let churn = &open.alerts[4];
    assert_eq!(kind(churn), AlertKind::ChurnRisk);
    assert_eq!(churn.state(), Firing);
    assert_eq!(churn.severity(), AlertSeverity::Critical, "{churn:#?}");
    assert_eq!(
        (
            churn.scope.as_str(),
            churn.dimension.as_str(),
            churn.customer_id.as_str()
        ),
        ("", "", "vip-1")
    );
    assert_eq!(churn.gap_kind(), GapKind::Unspecified);
    // Loyalty: activity only (100, a purchase a minute ago); red below 50.
    assert_some_close(churn.value, 100.0);
    assert_eq!(churn.baseline, None);
    assert_some_close(churn.threshold, 50.0);
    assert_eq!(churn.observations, 2);
    assert_eq!(
        churn.message,
        "VIP customer vip-1 is at risk of churning (loyalty 100.0, recent cancellation)"
    );
    // Explicit open states are the default.
    let explicit = server
        .list_alerts(list(&[Firing, Acknowledged], &[], ""))
        .await;
    assert_eq!(explicit.alerts, open.alerts);

    // Filters.
    let by = |states: &[AlertState], kinds: &[AlertKind], scope: &str| {
        let request = list(states, kinds, scope);
        let server = &server;
        async move {
            let r = server.list_alerts(request).await;
            assert_eq!(r.head_sequence, HEAD);
            ids(&r.alerts)
        }
    };
    use AlertKind::{ChurnRisk, GapWidening, LoyaltyDrop, SatisfactionDrop};
    assert_eq!(by(&[], &[GapWidening], "").await, id_list(&[10, 12]));
    assert_eq!(by(&[], &[], "region=east").await, id_list(&[11, 12]));
    assert_eq!(by(&[], &[GapWidening], "all").await, id_list(&[10]));
    assert_eq!(by(&[], &[ChurnRisk], "").await, id_list(&[13]));
    assert_eq!(
        by(&[], &[ChurnRisk, SatisfactionDrop], "").await,
        id_list(&[9, 11, 13])
    );
    assert!(by(&[], &[], "region=west").await.is_empty());
    assert!(by(&[], &[LoyaltyDrop], "").await.is_empty());
    assert!(by(&[], &[], "region=nowhere").await.is_empty());
    // Resolved ones: their latest transition (5..=8), the RESOLVED state.
    let resolved = server.list_alerts(list(&[Resolved], &[], "")).await;
    assert_eq!(ids(&resolved.alerts), id_list(&[1, 2, 3, 4]));
    assert_eq!(sequences(&resolved.alerts), vec![5, 6, 7, 8]);
    assert!(resolved.alerts.iter().all(|a| a.state() == Resolved));
    assert_eq!(by(&[Resolved], &[], "region=west").await, id_list(&[3, 4]));
    assert!(by(&[Resolved], &[], "region=east").await.is_empty());
    assert_eq!(by(&[Resolved], &[GapWidening], "").await, id_list(&[2, 4]));
    assert_eq!(
        by(&[Firing, Resolved], &[], "").await,
        id_list(&[1, 2, 3, 4, 9, 10, 11, 12, 13])
    );
    assert_eq!(
        by(&[Resolved, Firing], &[], "all").await,
        id_list(&[1, 2, 9, 10])
    );
    assert!(by(&[Acknowledged], &[], "").await.is_empty());

    // Paging: page sizes 1 and 2 walk the same lists.
    for (request, expected) in [
        (ListAlertsRequest::default(), id_list(&[9, 10, 11, 12, 13])),
        (
            list(&[Firing, Resolved], &[], ""),
            id_list(&[1, 2, 3, 4, 9, 10, 11, 12, 13]),
        ),
        (list(&[Resolved], &[], ""), id_list(&[1, 2, 3, 4])),
        (list(&[], &[GapWidening], ""), id_list(&[10, 12])),
    ] {
        for page_size in [1, 2] {
            let mut token = String::new();
            let mut pages = Vec::new();
            loop {
                let page = server
                    .list_alerts(ListAlertsRequest {
                        page_size,
                        page_token: token,
                        ..request.clone()
                    })
                    .await;
                assert_eq!(page.head_sequence, HEAD);
                assert!(!page.alerts.is_empty() && page.alerts.len() <= page_size as usize);
                pages.push(ids(&page.alerts));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            assert_eq!(pages.concat(), expected, "page size {page_size}");
            assert_eq!(
                pages.len(),
                expected.len().div_ceil(page_size as usize),
                "no empty last page: {pages:?}"
            );
        }
    }

    // Bad requests name their field.
    let err = |request: ListAlertsRequest| {
        let server = &server;
        async move {
            server
                .try_list_alerts(request)
                .await
                .expect_err("must be refused")
        }
    };
    let bad_token = ListAlertsRequest {
        page_token: "not-a-token".into(),
        ..ListAlertsRequest::default()
    };
    assert_violation(
        &err(bad_token).await,
        Code::InvalidArgument,
        "page_token",
        "not a token",
    );
    for page_size in [-1, 1001] {
        let bad = ListAlertsRequest {
            page_size,
            ..ListAlertsRequest::default()
        };
        assert_violation(
            &err(bad).await,
            Code::InvalidArgument,
            "page_size",
            "between",
        );
    }
    let bad_state = ListAlertsRequest {
        states: vec![AlertState::Firing as i32, 42],
        ..ListAlertsRequest::default()
    };
    assert_violation(
        &err(bad_state).await,
        Code::InvalidArgument,
        "states[1]",
        "42",
    );
    let bad_kind = ListAlertsRequest {
        kinds: vec![AlertKind::Unspecified as i32],
        ..ListAlertsRequest::default()
    };
    assert_violation(
        &err(bad_kind).await,
        Code::InvalidArgument,
        "kinds[0]",
        "kind",
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_alert_records_a_transition_and_checks_its_input() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let fired = server
        .list_alerts(ListAlertsRequest::default())
        .await
        .alerts;
    assert_eq!(ids(&fired), id_list(&[1, 2, 3, 4]));
    let mut stream = server.subscribe(subscribe_from(None)).await;
    let started = now_secs();

    let acked = server
        .acknowledge("2", "checking the call centre staffing", false)
        .await
        .expect("acknowledge");
    assert_eq!(acked.id, "2");
    assert_eq!(acked.sequence, 5);
    assert_eq!(acked.state(), AlertState::Acknowledged);
    assert_eq!(acked.note, "checking the call centre staffing");
    assert_update_time(&acked, started);
    // Everything else is the alert as it fired.
    let expected = proto::Alert {
        state: AlertState::Acknowledged as i32,
        sequence: 5,
        note: acked.note.clone(),
        update_time: acked.update_time,
        ..fired[1].clone()
    };
    assert_eq!(acked, expected);
    // On the stream, and in the listing, as its latest transition.
    assert_eq!(next_alert(&mut stream).await, acked);
    assert_no_alert_through(&mut stream, 5).await;
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert_eq!(open.head_sequence, 5);
    assert_eq!(ids(&open.alerts), id_list(&[1, 2, 3, 4]));
    assert_eq!(open.alerts[1], acked);
    let only = server
        .list_alerts(list(&[AlertState::Acknowledged], &[], ""))
        .await;
    assert_eq!(only.alerts, vec![acked.clone()]);

    // Unknown, malformed, oversized: refused, nothing written.
    let s = server.acknowledge("999", "", false).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("999"), "{s:?}");
    for bad in ["x", "", "-1", "2.0"] {
        let s = server.acknowledge(bad, "", false).await.unwrap_err();
        assert_violation(&s, Code::InvalidArgument, "id", "alert id");
    }
    let long = "n".repeat(1025);
    let s = server.acknowledge("1", &long, false).await.unwrap_err();
    assert_violation(&s, Code::InvalidArgument, "note", "1024");
    assert_eq!(server.alert_head().await, 5);

    // Back in control: all four resolve; the acknowledged one keeps its note.
    server.accept_all(&feed.steady(20, "east", RESP)).await;
    let resolved = next_alerts(&mut stream, 4).await;
    assert_eq!(sequences(&resolved), vec![6, 7, 8, 9]);
    assert_eq!(ids(&resolved), id_list(&[1, 2, 3, 4]));
    assert!(resolved.iter().all(|a| a.state() == AlertState::Resolved));
    assert_eq!(resolved[1].note, "checking the call centre staffing");

    // A resolved alert cannot be acknowledged.
    for id in ["1", "2"] {
        let s = server.acknowledge(id, "too late", false).await.unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        assert!(s.message().contains(id), "{s:?}");
    }
    assert_eq!(server.alert_head().await, 9);
    assert_no_alert_through(&mut stream, 9).await;

    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebaseline_accepts_the_new_level_without_firing_again() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let mut stream = server.subscribe(subscribe_from(None)).await;

    // Gap 3 in region=east is the new normal.
    let acked = server
        .acknowledge("4", "new ticketing tool: slower but accepted", true)
        .await
        .expect("acknowledge");
    assert_eq!(
        (acked.sequence, acked.state()),
        (5, AlertState::Acknowledged)
    );
    assert_eq!(next_alert(&mut stream).await, acked);

    // The detector relearns (warm-up holds C at 0): RESOLVED after
    // resolve_after = 10 further observations, though the gap is still 3.
    server.accept_all(&feed.shifted(9, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 5);
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let resolved_at = feed.last_at();
    let resolved = next_alert(&mut stream).await;
    assert_eq!(resolved.sequence, 6);
    assert_eq!(resolved.id, "4");
    assert_eq!(resolved.state(), AlertState::Resolved);
    assert_eq!(
        (kind(&resolved), resolved.scope.as_str()),
        (AlertKind::GapWidening, "region=east")
    );
    assert_eq!(resolved.observations, 51);
    assert_eq!(resolved.note, "new ticketing tool: slower but accepted");
    assert_event_time(&resolved, resolved_at);
    assert!(
        resolved.message.contains(RESP) && resolved.message.contains("region=east"),
        "{}",
        resolved.message
    );

    // 30 more at the new level: the warm-up ends on a baseline of 3 and
    // nothing fires. Alerts not re-baselined stay open.
    server.accept_all(&feed.shifted(30, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 6);
    assert_no_alert_through(&mut stream, 6).await;
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert_eq!(ids(&open.alerts), id_list(&[1, 2, 3]));
    assert!(open.alerts.iter().all(|a| a.state() == AlertState::Firing));

    // The new baseline is live: a gap of 6 (E = 7, P = 1) is z = 6 above it.
    server
        .accept_all(&feed.surveys(1, "east", &[(RESP, 7, 1)]))
        .await;
    let refired = next_alert(&mut stream).await;
    assert_eq!(refired.sequence, 7);
    assert_eq!(refired.id, "7");
    assert_eq!(refired.state(), AlertState::Firing);
    assert_eq!(
        (refired.scope.as_str(), refired.dimension.as_str()),
        ("region=east", RESP)
    );
    assert_some_close(refired.baseline, 3.0);
    assert_some_close(refired.value, 6.0);
    assert_some_close(refired.threshold, 3.0 + GAP_SIGMA_MIN * FIRE_Z);
    assert_eq!(
        refired.message,
        "responsiveness gap in region=east widened from 3.00 to 6.00 points"
    );
    assert_no_alert_through(&mut stream, 7).await;

    drop(stream);
    server.stop().await;
}

/// East: satisfaction + responsiveness gap in `all` and east (1..=4), then
/// the empathy gap (5, 6; satisfaction is already open); CHURN_RISK of a
/// VIP (7, CRITICAL) and of a standard customer (8, WARNING).
async fn mixed_scenario(server: &TestServer) {
    let mut feed = Feed::default();
    server
        .accept_all(&feed.surveys(40, "east", &[(RESP, 5, 5), (EMPATHY, 5, 5)]))
        .await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", EMPATHY)).await;
    server.accept_all(&feed.churn("vip-1", 100.0)).await;
    server.accept_all(&feed.churn("std-1", 1.0)).await;
    assert_eq!(server.alert_head().await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_filters_by_kind_scope_dimension_and_severity() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    // A filtered live subscriber, open before anything happens.
    let mut live = server
        .subscribe(SubscribeRequest {
            kinds: vec![AlertKind::ChurnRisk as i32],
            min_severity: AlertSeverity::Critical as i32,
            ..SubscribeRequest::default()
        })
        .await;
    mixed_scenario(&server).await;

    // What the whole log holds.
    let mut everything = server.subscribe(subscribe_from(Some(1))).await;
    let all = alerts_through(&mut everything, 8).await;
    assert_eq!(sequences(&all), (1..=8).collect::<Vec<_>>());
    let summary: Vec<_> = all
        .iter()
        .map(|a| {
            (
                kind(a),
                a.scope.as_str(),
                a.dimension.as_str(),
                a.severity(),
            )
        })
        .collect();
    use AlertKind::{ChurnRisk as C, GapWidening as G, SatisfactionDrop as S};
    use AlertSeverity::{Critical, Warning};
    assert_eq!(
        summary,
        vec![
            (S, "all", "", Warning),
            (G, "all", RESP, Warning),
            (S, "region=east", "", Warning),
            (G, "region=east", RESP, Warning),
            (G, "all", EMPATHY, Warning),
            (G, "region=east", EMPATHY, Warning),
            (C, "", "", Critical),
            (C, "", "", Warning),
        ]
    );
    assert_eq!(all[6].customer_id, "vip-1");
    assert_eq!(all[7].customer_id, "std-1");
    assert_eq!(
        all[7].message,
        "customer std-1 is at risk of churning (loyalty 100.0, recent cancellation)"
    );
    assert!(
        all[4].message.contains("empathy gap in all"),
        "{}",
        all[4].message
    );

    // The live filtered subscriber got only the VIP's churn risk.
    let got = alerts_through(&mut live, 8).await;
    assert_eq!(got, vec![all[6].clone()]);

    // Replays with filters: exactly the matching transitions, in order.
    let request = |kinds: &[AlertKind], scopes: &[&str], dims: &[&str], min: AlertSeverity| {
        SubscribeRequest {
            from_sequence: Some(1),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            dimensions: dims.iter().map(|d| d.to_string()).collect(),
            min_severity: min as i32,
        }
    };
    let unspecified = AlertSeverity::Unspecified;
    let cases: Vec<(SubscribeRequest, Vec<u64>)> = vec![
        (request(&[C], &[], &[], unspecified), vec![7, 8]),
        (request(&[S], &[], &[], unspecified), vec![1, 3]),
        (request(&[S, C], &[], &[], unspecified), vec![1, 3, 7, 8]),
        (
            request(&[], &["region=east"], &[], unspecified),
            vec![3, 4, 6],
        ),
        (
            request(&[], &["all", "region=east"], &[], unspecified),
            vec![1, 2, 3, 4, 5, 6],
        ),
        (request(&[], &["region=west"], &[], unspecified), vec![]),
        (request(&[], &[], &[EMPATHY], unspecified), vec![5, 6]),
        (
            request(&[], &[], &[RESP, EMPATHY], unspecified),
            vec![2, 4, 5, 6],
        ),
        (request(&[], &[], &[], AlertSeverity::Critical), vec![7]),
        (request(&[], &[], &[], Warning), (1..=8).collect()),
        (
            request(&[], &[], &[], AlertSeverity::Info),
            (1..=8).collect(),
        ),
        (
            request(&[G], &["region=east"], &[RESP], unspecified),
            vec![4],
        ),
        (request(&[S], &[], &[RESP], unspecified), vec![]),
    ];
    for (request, expected) in cases {
        let mut stream = server.subscribe(request.clone()).await;
        let got = alerts_through(&mut stream, 8).await;
        assert_eq!(sequences(&got), expected, "{request:?}");
        for a in &got {
            assert_eq!(a, &all[a.sequence as usize - 1]);
        }
    }

    // Unknown enum values are refused.
    let bad = SubscribeRequest {
        kinds: vec![AlertKind::GapWidening as i32, 77],
        ..SubscribeRequest::default()
    };
    let s = server.try_subscribe(bad).await.unwrap_err();
    assert_violation(&s, Code::InvalidArgument, "kinds[1]", "77");
    let bad = SubscribeRequest {
        min_severity: 9,
        ..SubscribeRequest::default()
    };
    let s = server.try_subscribe(bad).await.unwrap_err();
    assert_violation(&s, Code::InvalidArgument, "min_severity", "9");

    drop((live, everything));
    server.stop().await;
}

#[tokio::test]
async fn subscribe_beyond_the_head_is_out_of_range() {
    let server = TestServer::start().await;
    // Empty log: head 0, so 0, 1 and "from the head" are fine, 2 is not.
    for ok in [None, Some(0), Some(1)] {
        server.subscribe(subscribe_from(ok)).await;
    }
    let s = server
        .try_subscribe(subscribe_from(Some(2)))
        .await
        .unwrap_err();
    assert_violation(&s, Code::OutOfRange, "from_sequence", "beyond the head");
    assert!(s.message().contains("(0)"), "{s:?}");

    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let mut stream = server.subscribe(subscribe_from(Some(5))).await;
    for beyond in [6, 7, u64::MAX] {
        let s = server
            .try_subscribe(subscribe_from(Some(beyond)))
            .await
            .unwrap_err();
        assert_violation(&s, Code::OutOfRange, "from_sequence", "beyond the head");
        assert!(
            s.message().contains(&format!(
                "sequence {beyond} is beyond the head of the log (4)"
            )),
            "{s:?}"
        );
    }
    // head + 1 waits for the next transition.
    let ack = server.acknowledge("1", "", false).await.expect("ack");
    assert_eq!(next_alert(&mut stream).await, ack);
    drop(stream);
    server.stop().await;
}

/// Polls Subscribe(from) until it fails with OUT_OF_RANGE (retention runs
/// on the wall-clock tick); returns the status.
async fn wait_out_of_range(server: &TestServer, from: u64) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    loop {
        match server.try_subscribe(subscribe_from(Some(from))).await {
            Err(s) if s.code() == Code::OutOfRange => return s,
            Err(s) => panic!("Subscribe({from}) failed with {s:?}"),
            Ok(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sequence {from} was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_the_log_and_old_sequences_are_out_of_range() {
    // ~0.9 ms of retention, checked every 50 ms: each commit's transitions
    // are pruned by the next tick or so.
    let server = TestServer::start_with(|c| {
        c.alerts.retention_days = 1e-8;
        c.alerts.check_interval_ms = 50;
        c.alerts.heartbeat_secs = 0.2;
    })
    .await;
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;

    let s = wait_out_of_range(&server, 1).await;
    assert_violation(
        &s,
        Code::OutOfRange,
        "from_sequence",
        "older than retention",
    );
    assert!(
        s.message()
            .contains("sequence 1 is older than retention; the oldest available sequence is 5"),
        "{s:?}"
    );
    for from in [2, 4] {
        let s = server
            .try_subscribe(subscribe_from(Some(from)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
        assert!(
            s.message().contains("oldest available sequence is 5"),
            "{s:?}"
        );
    }
    // 0 means "the oldest retained": never out of range, starts at 5.
    let mut oldest = server.subscribe(subscribe_from(Some(0))).await;
    assert_no_alert_through(&mut oldest, 4).await;
    drop(oldest);
    // The head survives pruning, and resuming from it works.
    let mut stream = server.subscribe(subscribe_from(Some(5))).await;
    assert_no_alert_through(&mut stream, 4).await;
    // Open alerts stay listable and can be acknowledged.
    let open = server.list_alerts(ListAlertsRequest::default()).await;
    assert_eq!(open.head_sequence, 4);
    assert_eq!(ids(&open.alerts), id_list(&[1, 2, 3, 4]));
    let ack = server
        .acknowledge("2", "still open", false)
        .await
        .expect("ack");
    assert_eq!(ack.sequence, 5);
    assert_eq!(next_alert(&mut stream).await, ack);

    // Resolve everything; once the RESOLVED transitions are past retention
    // the resolved alerts are forgotten.
    server.accept_all(&feed.steady(20, "east", RESP)).await;
    let resolved = next_alerts(&mut stream, 4).await;
    assert_eq!(sequences(&resolved), vec![6, 7, 8, 9]);
    let s = wait_out_of_range(&server, 9).await;
    assert!(
        s.message().contains("oldest available sequence is 10"),
        "{s:?}"
    );
    let every = server
        .list_alerts(list(
            &[
                AlertState::Firing,
                AlertState::Acknowledged,
                AlertState::Resolved,
            ],
            &[],
            "",
        ))
        .await;
    assert!(every.alerts.is_empty(), "{:#?}", every.alerts);
    assert_eq!(every.head_sequence, 9);
    let s = server.acknowledge("2", "", false).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    server.subscribe(subscribe_from(Some(10))).await;

    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_get_the_same_transitions() {
    const SUBSCRIBERS: usize = 1_000;
    // Spread over 8 connections (125 streams each), well under any
    // per-connection stream limit.
    const CONNECTIONS: usize = 8;
    let server = TestServer::start().await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        channels.push(AlertServiceClient::new(channel));
    }
    let mut streams = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let client = &channels[i % CONNECTIONS];
        let stream = open_subscription(client, subscribe_from(None))
            .await
            .unwrap_or_else(|s| panic!("subscriber {i}: {s:?}"));
        streams.push(stream);
    }

    // Every subscriber is registered at head 0; now 8 transitions happen.
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    server.accept_all(&feed.steady(20, "east", RESP)).await;
    assert_eq!(server.alert_head().await, 8);

    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { next_alerts(&mut stream, 8).await }))
        .collect();
    let mut received = Vec::with_capacity(SUBSCRIBERS);
    for reader in readers {
        received.push(reader.await.expect("reader task"));
    }
    let first = &received[0];
    assert_eq!(sequences(first), (1..=8).collect::<Vec<_>>());
    assert_shift_fired(&first[..4], 1, "east", 41, 41);
    for (i, got) in received.iter().enumerate() {
        assert_eq!(got, first, "subscriber {i}");
    }
    // And a replay is the same log.
    let mut replay = server.subscribe(subscribe_from(Some(1))).await;
    assert_eq!(&next_alerts(&mut replay, 8).await, first);

    drop((replay, received, channels));
    server.stop().await;
}

fn now_timestamp() -> (pbjson_types::Timestamp, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let millis = now.as_millis() as i64;
    (
        pbjson_types::Timestamp {
            seconds: millis / 1000,
            nanos: (millis % 1000) as i32 * 1_000_000,
        },
        millis,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_overdue_fires_on_the_wall_clock_and_resolves_on_response() {
    // First-response SLA 0.0003 h = 1.08 s, checked every 50 ms, no grace.
    const SLA_HOURS: f64 = 0.0003;
    let server = TestServer::start_with(|c| {
        c.scoring.sla.minor_response_hours = SLA_HOURS;
        c.scoring.sla.major_response_hours = SLA_HOURS;
        c.alerts.overdue_grace_secs = 0.0;
        c.alerts.check_interval_ms = 50;
    })
    .await;
    let mut stream = server.subscribe(subscribe_from(None)).await;
    let started = now_secs();
    let (opened, opened_ms) = now_timestamp();
    let open = |id: &str, customer: &str, case: &str, severity: Severity| Interaction {
        occur_time: Some(opened),
        ..complaint(
            id,
            customer,
            0,
            InteractionKind::ComplaintOpened,
            case,
            severity,
        )
    };
    server
        .accept_all(&[
            interaction_event(open("o-1", "alice", "case-minor", Severity::Minor)),
            interaction_event(open("o-2", "bob", "case-major", Severity::Major)),
        ])
        .await;
    assert_eq!(server.alert_head().await, 0, "not overdue yet");

    // Both deadlines pass (same instant: alice's key sorts first).
    let overdue = next_alerts(&mut stream, 2).await;
    assert_eq!(sequences(&overdue), vec![1, 2]);
    let deadline_ms = opened_ms + (SLA_HOURS * 3_600_000.0).round() as i64;
    for (a, customer, case, severity) in [
        (&overdue[0], "alice", "case-minor", AlertSeverity::Warning),
        (&overdue[1], "bob", "case-major", AlertSeverity::Critical),
    ] {
        assert_eq!(a.id, a.sequence.to_string());
        assert_eq!(kind(a), AlertKind::ComplaintOverdue, "{a:#?}");
        assert_eq!(a.state(), AlertState::Firing);
        assert_eq!(a.severity(), severity, "{a:#?}");
        assert_eq!(
            (a.customer_id.as_str(), a.case_id.as_str()),
            (customer, case)
        );
        assert_eq!((a.scope.as_str(), a.dimension.as_str()), ("", ""));
        assert_eq!(a.gap_kind(), GapKind::Unspecified);
        // Hours since the deadline: checked after it, and not long after.
        let late = a.value.expect("hours late");
        assert!((0.0..0.5).contains(&late), "late {late} h");
        assert_eq!(a.baseline, None);
        assert_some_close(a.threshold, SLA_HOURS);
        let t = a.event_time.as_ref().expect("event_time = the deadline");
        assert_eq!(
            t.seconds * 1000 + i64::from(t.nanos / 1_000_000),
            deadline_ms
        );
        assert_eq!(
            a.message,
            format!("complaint {case} of customer {customer} got no first response within its 0.0 h SLA")
        );
        assert_update_time(a, started);
    }

    // Alice's case gets its first response: her alert resolves.
    let (now, _) = now_timestamp();
    let respond = Interaction {
        occur_time: Some(now),
        ..complaint(
            "r-1",
            "alice",
            0,
            InteractionKind::ComplaintResponded,
            "case-minor",
            Severity::Minor,
        )
    };
    server.accept_all(&[interaction_event(respond)]).await;
    let resolved = next_alert(&mut stream).await;
    assert_eq!(resolved.sequence, 3);
    assert_eq!(resolved.id, overdue[0].id);
    assert_eq!(resolved.state(), AlertState::Resolved);
    assert_eq!(resolved.severity(), AlertSeverity::Warning);
    assert_eq!(resolved.case_id, "case-minor");
    assert_eq!(
        resolved.message,
        "complaint case-minor of customer alice got its first response"
    );
    let t = resolved.event_time.expect("event_time");
    assert_eq!((t.seconds, t.nanos), (now.seconds, now.nanos));
    // Bob's is still open, and nothing else happened.
    let open = server
        .list_alerts(list(&[], &[AlertKind::ComplaintOverdue], ""))
        .await;
    assert_eq!(open.alerts, vec![overdue[1].clone()]);
    assert_eq!(open.head_sequence, 3);

    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_without_resolution_goes_overdue_and_resolves_on_resolution() {
    // Resolution SLA 0.0003 h = 1.08 s; the first-response SLA (1 h) is met.
    const SLA_HOURS: f64 = 0.0003;
    let server = TestServer::start_with(|c| {
        c.scoring.sla.minor_response_hours = 1.0;
        c.scoring.sla.minor_resolution_hours = SLA_HOURS;
        c.alerts.overdue_grace_secs = 0.0;
        c.alerts.check_interval_ms = 50;
    })
    .await;
    let mut stream = server
        .subscribe(SubscribeRequest {
            kinds: vec![AlertKind::ComplaintOverdue as i32],
            ..SubscribeRequest::default()
        })
        .await;
    let (opened, opened_ms) = now_timestamp();
    let step = |id: &str, kind: InteractionKind| Interaction {
        occur_time: Some(now_timestamp().0),
        ..complaint(id, "carol", 0, kind, "case-7", Severity::Minor)
    };
    let open = Interaction {
        occur_time: Some(opened),
        ..step("o-7", InteractionKind::ComplaintOpened)
    };
    server
        .accept_all(&[
            interaction_event(open),
            interaction_event(step("r-7", InteractionKind::ComplaintResponded)),
        ])
        .await;

    let overdue = next_alert(&mut stream).await;
    assert_eq!(kind(&overdue), AlertKind::ComplaintOverdue, "{overdue:#?}");
    assert_eq!(overdue.state(), AlertState::Firing);
    assert_eq!(overdue.severity(), AlertSeverity::Warning);
    assert_eq!(
        (overdue.customer_id.as_str(), overdue.case_id.as_str()),
        ("carol", "case-7")
    );
    assert_some_close(overdue.threshold, SLA_HOURS);
    let t = overdue.event_time.expect("event_time = the deadline");
    assert_eq!(
        t.seconds * 1000 + i64::from(t.nanos / 1_000_000),
        opened_ms + 1080
    );
    assert_eq!(
        overdue.message,
        "complaint case-7 of customer carol got no resolution within its 0.0 h SLA"
    );

    server
        .accept_all(&[interaction_event(step(
            "z-7",
            InteractionKind::ComplaintResolved,
        ))])
        .await;
    let resolved = next_alert(&mut stream).await;
    assert_eq!(resolved.id, overdue.id);
    assert!(resolved.sequence > overdue.sequence);
    assert_eq!(resolved.state(), AlertState::Resolved);
    assert_eq!(
        resolved.message,
        "complaint case-7 of customer carol got its resolution"
    );
    // The met first-response SLA never produced an alert.
    let every = server
        .list_alerts(list(
            &[AlertState::Firing, AlertState::Resolved],
            &[AlertKind::ComplaintOverdue],
            "",
        ))
        .await;
    assert_eq!(every.alerts, vec![resolved]);

    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn shortfall_and_loyalty_drop_fire() {
    let server = TestServer::start().await;
    let mut feed = Feed::default();
    // 40 interactions meeting the standard (30 min) and the promise (2 d),
    // then one 50% worse on both: relative shortfall 0.5, σ_min 0.05 → z = 10.
    let measured = |feed: &mut Feed, actual: f64, delivered: f64| {
        let (id, at) = feed.next();
        interaction_event(Interaction {
            attributes: attrs(&[("region", "east")]),
            dimension: RESP.into(),
            standard: Some(30.0),
            actual: Some(actual),
            promised: Some(2.0),
            delivered: Some(delivered),
            ..interaction(&id, "svc-customer", at, InteractionKind::Service)
        })
    };
    let steady: Vec<_> = (0..40).map(|_| measured(&mut feed, 30.0, 2.0)).collect();
    server.accept_all(&steady).await;
    assert_eq!(server.alert_head().await, 0);
    server.accept_all(&[measured(&mut feed, 45.0, 3.0)]).await;
    let shortfall_at = feed.last_at();

    // 40 promoters (advocacy +100), then a detractor (−100): z = −20.
    let nps = |feed: &mut Feed, score: i32| {
        let (id, at) = feed.next();
        survey_event(Survey {
            nps: Some(score),
            ..survey_in(&id, "nps-customer", at, &[("region", "east")])
        })
    };
    let promoters: Vec<_> = (0..40).map(|_| nps(&mut feed, 10)).collect();
    server.accept_all(&promoters).await;
    server.accept_all(&[nps(&mut feed, 0)]).await;
    let detractor_at = feed.last_at();

    let mut stream = server
        .subscribe(SubscribeRequest {
            from_sequence: Some(1),
            kinds: vec![AlertKind::GapWidening as i32, AlertKind::LoyaltyDrop as i32],
            ..SubscribeRequest::default()
        })
        .await;
    let got = next_alerts(&mut stream, 6).await;
    let expected_gaps = [
        ("all", GapKind::Behavior),
        ("all", GapKind::Promotion),
        ("region=east", GapKind::Behavior),
        ("region=east", GapKind::Promotion),
    ];
    for (a, (scope, gap)) in got[..4].iter().zip(expected_gaps) {
        assert_eq!(kind(a), AlertKind::GapWidening, "{a:#?}");
        assert_eq!(a.state(), AlertState::Firing);
        assert_eq!(
            (a.scope.as_str(), a.dimension.as_str(), a.gap_kind()),
            (scope, RESP, gap)
        );
        assert_some_close(a.value, 0.5);
        assert_some_close(a.baseline, 0.0);
        assert_some_close(a.threshold, 0.05 * FIRE_Z);
        assert_eq!(a.observations, 41);
        assert_event_time(a, shortfall_at);
        let tag = if gap == GapKind::Behavior {
            "behavior"
        } else {
            "promotion"
        };
        assert_eq!(
            a.message,
            format!("{RESP} {tag} shortfall in {scope} widened from 0.00 to 0.50")
        );
    }
    for (a, scope) in got[4..].iter().zip(["all", "region=east"]) {
        assert_eq!(kind(a), AlertKind::LoyaltyDrop, "{a:#?}");
        assert_eq!((a.scope.as_str(), a.dimension.as_str()), (scope, ""));
        assert_eq!(a.gap_kind(), GapKind::Unspecified);
        assert_some_close(a.value, -100.0);
        assert_some_close(a.baseline, 100.0);
        assert_some_close(a.threshold, 100.0 - 10.0 * FIRE_Z);
        assert_eq!(a.observations, 41);
        assert_event_time(a, detractor_at);
        assert_eq!(
            a.message,
            format!("advocacy in {scope} dropped from 100.00 to -100.00")
        );
    }
    let sequences = sequences(&got);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(sequences[..4], [1, 2, 3, 4]);

    drop(stream);
    server.stop().await;
}

/// One HTTP/1.1 exchange over a raw socket; returns the status line, the
/// headers (lower-case names) and the de-chunked body.
async fn http1_exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> (String, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request).await.expect("write the request");
    let mut raw = Vec::new();
    tokio::time::timeout(STREAM_WAIT, socket.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").to_string();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = std::str::from_utf8(&rest[..line_end]).expect("chunk size");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("hex chunk size");
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    (status, headers, body)
}

/// Splits a gRPC-Web body into (flag, payload) frames.
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated frame header");
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        frames.push((flag, body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    frames
}

fn grpc_web_request(addr: std::net::SocketAddr, message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let mut request = format!(
        "POST /gapwatch.v1.AlertService/ListAlerts HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\n\
         Accept: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_list_alerts_over_http1() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut feed = Feed::default();
    server.accept_all(&feed.steady(40, "east", RESP)).await;
    server.accept_all(&feed.shifted(1, "east", RESP)).await;
    let native = server.list_alerts(list(&[], &[], "region=east")).await;
    assert_eq!(ids(&native.alerts), id_list(&[3, 4]));

    let request = grpc_web_request(server.addr, &list(&[], &[], "region=east"));
    let (status, headers, body) = http1_exchange(server.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("application/grpc-web+proto"),
        "{headers:?}"
    );
    let frames = grpc_web_frames(&body);
    assert_eq!(frames.len(), 2, "a message and the trailers: {frames:?}");
    assert_eq!(frames[0].0, 0x00);
    let response =
        proto::ListAlertsResponse::decode(frames[0].1.as_slice()).expect("ListAlertsResponse");
    assert_eq!(response, native);
    assert_eq!(response.head_sequence, 4);
    assert_eq!(frames[1].0, 0x80, "trailer frame");
    let trailers = String::from_utf8(frames[1].1.clone()).expect("text trailers");
    assert!(
        trailers.to_ascii_lowercase().contains("grpc-status:0"),
        "{trailers:?}"
    );

    // An error travels as grpc-status 3 (in the headers or a trailer frame).
    let bad = ListAlertsRequest {
        page_token: "nope".into(),
        ..ListAlertsRequest::default()
    };
    let (status, headers, body) =
        http1_exchange(server.addr, &grpc_web_request(server.addr, &bad)).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let in_headers = headers.iter().any(|(k, v)| k == "grpc-status" && v == "3");
    let in_trailers = grpc_web_frames(&body).iter().any(|(flag, payload)| {
        *flag == 0x80
            && String::from_utf8_lossy(payload)
                .to_ascii_lowercase()
                .contains("grpc-status:3")
    });
    assert!(in_headers || in_trailers, "{headers:?} {body:?}");

    server.stop().await;
}

/// CHURN_RISK follows the customer's at-risk state: a cancellation opens it
/// (the open alert is kept with the customer), and once the cancellation is
/// older than the half-life and the loyalty index is not red, the next event
/// resolves the same alert.
#[tokio::test]
async fn churn_risk_fires_on_cancellation_and_resolves_when_no_longer_at_risk() {
    let server = TestServer::start_with(|c| c.alerts.heartbeat_secs = 0.2).await;
    let mut stream = server.subscribe(subscribe_from(None)).await;
    let promoter = |id: &str, at: i64| {
        survey_event(Survey {
            nps: Some(10),
            repurchase: Some(10),
            ..survey(id, "loyal-1", at)
        })
    };
    server
        .accept_all(&[
            promoter("p-1", T0),
            interaction_event(interaction(
                "x-1",
                "loyal-1",
                T0 + HOUR,
                InteractionKind::Cancellation,
            )),
        ])
        .await;
    let fired = next_alert(&mut stream).await;
    assert_eq!(kind(&fired), AlertKind::ChurnRisk);
    assert_eq!(fired.state(), AlertState::Firing);
    assert_eq!(fired.customer_id, "loyal-1");
    assert_eq!(fired.severity(), AlertSeverity::Warning);
    assert_event_time(&fired, T0 + HOUR);
    assert!(
        fired.message.contains("recent cancellation"),
        "{}",
        fired.message
    );

    // Still within the 30-day window: nothing new.
    server.accept_all(&[promoter("p-2", T0 + 10 * DAY)]).await;
    assert_no_alert_through(&mut stream, 1).await;

    // 31 days after the cancellation, with advocacy and intent at 100.
    server
        .accept_all(&[promoter("p-3", T0 + HOUR + 31 * DAY)])
        .await;
    let resolved = next_alert(&mut stream).await;
    assert_eq!(resolved.id, fired.id);
    assert_eq!(resolved.state(), AlertState::Resolved);
    assert_eq!(resolved.sequence, 2);
    assert!(
        resolved.message.contains("no longer at risk"),
        "{}",
        resolved.message
    );
    assert!(server
        .list_alerts(ListAlertsRequest::default())
        .await
        .alerts
        .is_empty());
    server.stop().await;
}
