//! ScoreService and ConfigService over real gRPC, against numbers computed
//! by hand from DOMAIN.md (half-life H = 30 days; every query passes an
//! explicit `as_of_time`).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proto::{HealthBand, NpsCategory, Tier};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::Code;

/// `2^-(days/30)`: the weight of an observation `days` older than the
/// reference time.
fn decay(days: f64) -> f64 {
    2f64.powf(-days / 30.0)
}

fn loyalty(score: &proto::CustomerScore) -> proto::LoyaltyBreakdown {
    score.loyalty.expect("loyalty breakdown")
}

// ---------------------------------------------------------------------------
// GetCustomerScore

#[tokio::test]
async fn customer_satisfaction_advocacy_and_intent() {
    let server = TestServer::start().await;
    let first = Survey {
        csat: Some(4),
        ces: Some(7),
        nps: Some(9),
        repurchase: Some(8),
        ratings: vec![
            rating("responsiveness", 6, 3, Some(2)),
            rating("reliability", 4, 5, None),
        ],
        ..survey("a1", "alice", T0)
    };
    // The later answer is sent first: "latest" is by event time.
    server
        .accept_survey(Survey {
            csat: Some(2),
            nps: Some(3),
            ..survey("a2", "alice", T0 + 30 * DAY)
        })
        .await;
    server.accept_survey(first.clone()).await;
    server
        .accept_survey(Survey {
            event_id: "m1".into(),
            customer_id: "amy".into(),
            ..first
        })
        .await;

    // One response: overall 25·(4−1) = 75; ρ = (2·3 + 1·5)/(2·6 + 1·4)
    // = 11/16 → confirmation 100·(11/16)/1.5 = 275/6 ≈ 45.83; ease
    // 100·(7−1)/6 = 100; satisfaction (75 + 275/6 + 100)/3 = 1325/18 ≈ 73.61.
    let amy = server.customer("amy", T0 + DAY).await;
    assert_some_close(amy.satisfaction_index, 1325.0 / 18.0);
    let l = loyalty(&amy);
    // advocacy 10·9 = 90, intent 10·8 = 80, index (0.3·90 + 0.3·80)/0.6 = 85.
    assert_some_close(l.advocacy, 90.0);
    assert_some_close(l.intent, 80.0);
    assert_eq!((l.activity, l.recovery), (None, None));
    assert_some_close(l.index, 85.0);
    assert_eq!(amy.health_band(), HealthBand::Green);
    assert_eq!(amy.nps_category(), NpsCategory::Promoter);
    assert!(!amy.at_risk);

    // alice: a1 (73.61) at T0 weighs 2^-1 = 0.5 against a2 (csat 2 → 25)
    // at T0+30d: (0.5·1325/18 + 25)/1.5 = 2225/54 ≈ 41.20.
    let as_of = T0 + 30 * DAY;
    let alice = server.customer("alice", as_of).await;
    assert_eq!(alice.customer_id, "alice");
    assert_eq!(alice.as_of_time, Some(ts(as_of)));
    assert_some_close(alice.satisfaction_index, 2225.0 / 54.0);
    let l = loyalty(&alice);
    // advocacy (0.5·90 + 30)/1.5 = 50; intent 80 (one answer);
    // index (0.3·50 + 0.3·80)/0.6 = 65 → yellow.
    assert_some_close(l.advocacy, 50.0);
    assert_some_close(l.intent, 80.0);
    assert_eq!((l.activity, l.recovery), (None, None));
    assert_some_close(l.index, 65.0);
    assert_eq!(alice.health_band(), HealthBand::Yellow);
    assert!(!alice.at_risk);
    // The latest answer by event time is nps 3 (a2), though sent first.
    assert_eq!(alice.nps_category(), NpsCategory::Detractor);
    assert_eq!(alice.value, 0.0);
    assert_eq!(alice.tier(), Tier::Prospect);
    assert_eq!(
        (
            alice.survey_count,
            alice.interaction_count,
            alice.purchase_count,
            alice.open_complaints
        ),
        (2, 0, 0, 0)
    );
    assert_eq!(alice.last_event_time, Some(ts(T0 + 30 * DAY)));

    let status = server
        .try_customer("nobody", as_of)
        .await
        .expect_err("unknown customer");
    assert_eq!(status.code(), Code::NotFound);
    let status = server.try_customer("", as_of).await.expect_err("empty id");
    assert_violation(
        &status,
        Code::InvalidArgument,
        "customer_id",
        "must not be empty",
    );
    server.stop().await;
}

#[tokio::test]
async fn customer_purchase_activity_value_and_tier() {
    let server = TestServer::start().await;
    server
        .accept_interaction(purchase("b1", "bob", T0, 100.0))
        .await;
    server
        .accept_interaction(purchase("b2", "bob", T0 + 10 * DAY, 50.0))
        .await;
    server
        .accept_interaction(purchase("c1", "carol", T0 + 60 * DAY, 100.0))
        .await;
    server
        .accept_interaction(purchase("c2", "carol", T0 + 60 * DAY, 50.0))
        .await;

    // bob: one gap of 10 d → g = 10 d. As of 5 d after the last purchase:
    // overdue = max(0, 5 − 10)/10 = 0 → activity 100 → index 100, green.
    let bob = server.customer("bob", T0 + 15 * DAY).await;
    let l = loyalty(&bob);
    assert_some_close(l.activity, 100.0);
    assert_some_close(l.index, 100.0);
    assert_eq!((l.advocacy, l.intent, l.recovery), (None, None, None));
    assert_eq!(bob.health_band(), HealthBand::Green);
    assert!(!bob.at_risk);
    // value: 100·2^-(15/30) + 50·2^-(5/30) ≈ 70.711 + 44.545 = 115.256.
    assert_close(bob.value, 100.0 * decay(15.0) + 50.0 * decay(5.0));
    assert_eq!(
        (bob.purchase_count, bob.interaction_count, bob.survey_count),
        (2, 2, 0)
    );
    assert_eq!(bob.last_event_time, Some(ts(T0 + 10 * DAY)));
    assert_eq!(bob.nps_category(), NpsCategory::Unspecified);

    // As of 25 d after the last purchase: overdue = (25 − 10)/10 = 1.5 →
    // activity 100·2^-1.5 ≈ 35.355 → red → at risk.
    let bob = server.customer("bob", T0 + 35 * DAY).await;
    let l = loyalty(&bob);
    assert_some_close(l.activity, 100.0 * 2f64.powf(-1.5));
    assert_some_close(l.index, 35.355_339_059_327_37);
    assert_eq!(bob.health_band(), HealthBand::Red);
    assert!(bob.at_risk);
    // value: 100·2^-(35/30) + 50·2^-(25/30) ≈ 44.545 + 28.061 = 72.606.
    assert_close(bob.value, 100.0 * decay(35.0) + 50.0 * decay(25.0));

    // carol: both purchases at as_of → plain sum 150; 30 d later half.
    let carol = server.customer("carol", T0 + 60 * DAY).await;
    assert_close(carol.value, 150.0);
    assert_some_close(loyalty(&carol).activity, 100.0);
    assert_close(server.customer("carol", T0 + 90 * DAY).await.value, 75.0);
    // Before any purchase of hers the sum is not "un-decayed": still 150.
    assert_close(server.customer("carol", T0).await.value, 150.0);

    // Two purchasing customers: the top ⌈2·0.2⌉ = 1 is VIP. Compared at a
    // common time, T0+60d: carol 150 against bob's 100·2^-(60/30) +
    // 50·2^-(50/30) ≈ 25 + 15.75 = 40.75, so carol is VIP, bob STANDARD.
    assert_eq!(carol.tier(), Tier::Vip);
    assert_eq!(bob.tier(), Tier::Standard);
    server.stop().await;
}

#[tokio::test]
async fn customer_complaint_recovery_and_open_complaints() {
    use InteractionKind::{ComplaintOpened, ComplaintResolved, ComplaintResponded};
    let server = TestServer::start().await;
    // dave, case k1 (MINOR): opened T0, responded +1 h, resolved +48 h
    // (within 72 h) → TARP 95. Steps sent out of order.
    server
        .accept_interaction(complaint(
            "d3",
            "dave",
            T0 + 48 * HOUR,
            ComplaintResolved,
            "k1",
            Severity::Unspecified,
        ))
        .await;
    server
        .accept_interaction(complaint(
            "d1",
            "dave",
            T0,
            ComplaintOpened,
            "k1",
            Severity::Minor,
        ))
        .await;
    server
        .accept_interaction(complaint(
            "d2",
            "dave",
            T0 + HOUR,
            ComplaintResponded,
            "k1",
            Severity::Unspecified,
        ))
        .await;
    // Case k2 (MAJOR) opened at T0+10d, never resolved (SLA 24 h).
    server
        .accept_interaction(complaint(
            "d4",
            "dave",
            T0 + 10 * DAY,
            ComplaintOpened,
            "k2",
            Severity::Major,
        ))
        .await;

    // Within k2's SLA only k1 has an outcome: recovery 95 → green.
    let dave = server.customer("dave", T0 + 10 * DAY + 12 * HOUR).await;
    let l = loyalty(&dave);
    assert_some_close(l.recovery, 95.0);
    assert_some_close(l.index, 95.0);
    assert_eq!(dave.health_band(), HealthBand::Green);
    assert_eq!(dave.open_complaints, 1);
    assert_eq!((dave.interaction_count, dave.purchase_count), (4, 0));
    assert_eq!(dave.tier(), Tier::Prospect);

    // Past k2's SLA it counts as "open past SLA, MAJOR" → 19, weighted at
    // its opening (T0+10d) against k1's 95 at T0 (weight 2^-(10/30) ≈
    // 0.7937): (0.7937·95 + 19)/(0.7937 + 1) ≈ 52.63 → yellow, not at
    // risk.
    let dave = server.customer("dave", T0 + 12 * DAY).await;
    let expected = (decay(10.0) * 95.0 + 19.0) / (decay(10.0) + 1.0);
    assert_some_close(loyalty(&dave).recovery, expected);
    assert_some_close(loyalty(&dave).index, expected);
    assert!((expected - 52.63).abs() < 0.01, "{expected}");
    assert_eq!(dave.health_band(), HealthBand::Yellow);
    assert!(!dave.at_risk);
    assert_eq!(dave.open_complaints, 1);

    // dora: MINOR resolved after 100 h (> 72 h) → resolved late → 70.
    server
        .accept_interaction(complaint(
            "o1",
            "dora",
            T0,
            ComplaintOpened,
            "k3",
            Severity::Minor,
        ))
        .await;
    server
        .accept_interaction(complaint(
            "o2",
            "dora",
            T0 + 100 * HOUR,
            ComplaintResolved,
            "k3",
            Severity::Minor,
        ))
        .await;
    let dora = server.customer("dora", T0 + 20 * DAY).await;
    assert_some_close(loyalty(&dora).recovery, 70.0);
    assert_eq!(dora.health_band(), HealthBand::Yellow);
    assert_eq!(dora.open_complaints, 0);
    server.stop().await;
}

#[tokio::test]
async fn cancellation_marks_at_risk_for_one_half_life() {
    let server = TestServer::start().await;
    server
        .accept_survey(Survey {
            nps: Some(10),
            repurchase: Some(10),
            ..survey("e1", "erin", T0)
        })
        .await;
    server
        .accept_interaction(interaction(
            "e2",
            "erin",
            T0 + 5 * DAY,
            InteractionKind::Cancellation,
        ))
        .await;
    // advocacy 100, intent 100 → index 100, green; cancelled 15 d before
    // as_of (< 30 d) → at risk anyway.
    let erin = server.customer("erin", T0 + 20 * DAY).await;
    assert_some_close(loyalty(&erin).index, 100.0);
    assert_eq!(erin.health_band(), HealthBand::Green);
    assert!(erin.at_risk);
    // 31 d after the cancellation: no longer at risk (still green).
    let erin = server.customer("erin", T0 + 36 * DAY).await;
    assert_eq!(erin.health_band(), HealthBand::Green);
    assert!(!erin.at_risk);
    // Before the cancellation happened it does not count.
    assert!(!server.customer("erin", T0 + 4 * DAY).await.at_risk);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// GetScopeScore

#[tokio::test]
async fn scope_csat_nps_ces_and_segments() {
    let server = TestServer::start().await;
    let east = [("region", "east")];
    for (i, (c, n, e)) in [(5, 10, 7), (4, 9, 5), (3, 7, 4), (2, 3, 1)]
        .into_iter()
        .enumerate()
    {
        server
            .accept_survey(Survey {
                csat: Some(c),
                nps: Some(n),
                ces: Some(e),
                ..survey_in(&format!("s{i}"), &format!("e{i}"), T0, &east)
            })
            .await;
    }
    server
        .accept_survey(Survey {
            csat: Some(1),
            ..survey_in("w0", "w0", T0, &[("region", "west")])
        })
        .await;

    let as_of = T0 + DAY;
    let s = server.scope("region=east", as_of).await;
    assert_eq!(s.scope, "region=east");
    assert_eq!(s.as_of_time, Some(ts(as_of)));
    // csat 5,4,3,2: two of four are 4–5 → 50 %.
    assert_some_close(s.csat_percent, 50.0);
    // nps 10,9 promoters, 7 passive, 3 detractor: 50 − 25 = 25.
    assert_some_close(s.nps, 25.0);
    // ces (7+5+4+1)/4 = 4.25; 7 and 5 are easy → 50 %.
    assert_some_close(s.ces_mean, 4.25);
    assert_some_close(s.ces_easy_percent, 50.0);
    // Satisfaction per response, mean of overall and ease:
    // (100+100)/2 = 100, (75+66.67)/2 = 70.83, (50+50)/2 = 50,
    // (25+0)/2 = 12.5 → mean 233.33/4 = 175/3 ≈ 58.33.
    assert_some_close(s.satisfaction_index, 175.0 / 3.0);
    let l = s.loyalty.expect("loyalty");
    // advocacy 10·(10+9+7+3)/4 = 72.5; the only component.
    assert_some_close(l.advocacy, 72.5);
    assert_some_close(l.index, 72.5);
    assert_eq!((l.intent, l.activity, l.recovery), (None, None, None));
    assert_eq!(
        (s.response_count, s.customer_count, s.event_count),
        (4, 4, 4)
    );
    let c = s.complaints.expect("complaints");
    assert_eq!(c.open, 0);
    assert_eq!(
        (
            c.responded_within_sla_percent,
            c.resolved_within_sla_percent,
            c.mean_hours_to_resolve
        ),
        (None, None, None)
    );
    assert!(s.shortboard.is_empty());

    // `all` adds west's csat 1: 2 of 5 satisfied → 40 %; satisfaction
    // (700/3 + 0)/5 = 140/3 ≈ 46.67; nps unchanged (west has none).
    let all = server.scope("all", as_of).await;
    assert_some_close(all.csat_percent, 40.0);
    assert_some_close(all.satisfaction_index, 140.0 / 3.0);
    assert_some_close(all.nps, 25.0);
    assert_eq!(
        (all.response_count, all.customer_count, all.event_count),
        (5, 5, 5)
    );
    let west = server.scope("region=west", as_of).await;
    assert_some_close(west.csat_percent, 0.0);
    assert_eq!(west.nps, None);
    assert_eq!(west.response_count, 1);

    assert_eq!(
        server
            .try_scope("region=south", as_of)
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    for bad in ["Bad Scope", "", "region", "Region=east"] {
        let status = server.try_scope(bad, as_of).await.expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violations(&status)[0].0, "scope", "{bad}");
    }
    server.stop().await;
}

fn dimension<'a>(s: &'a proto::ScopeScore, name: &str) -> &'a proto::DimensionScore {
    s.dimensions
        .iter()
        .find(|d| d.dimension == name)
        .unwrap_or_else(|| panic!("no dimension {name} in {s:?}"))
}

#[tokio::test]
async fn scope_dimension_gaps_and_shortboard() {
    let server = TestServer::start().await;
    server
        .accept_survey(Survey {
            ratings: vec![
                rating("responsiveness", 6, 3, Some(3)),
                rating("reliability", 6, 5, None),
                rating("tangibles", 4, 5, None),
            ],
            ..survey("g1", "g1", T0)
        })
        .await;
    server
        .accept_survey(Survey {
            ratings: vec![
                rating("responsiveness", 5, 4, Some(1)),
                rating("tangibles", 4, 6, None),
            ],
            ..survey("g2", "g2", T0)
        })
        .await;
    // Behavior: standard 30 (lower is better), actual 20, 45, 30, 60 →
    // misses 45 (+50 %) and 60 (+100 %).
    for (i, actual) in [20.0, 45.0, 30.0, 60.0].into_iter().enumerate() {
        server
            .accept_interaction(Interaction {
                dimension: "responsiveness".into(),
                standard: Some(30.0),
                actual: Some(actual),
                ..interaction(&format!("sv{i}"), "g3", T0, InteractionKind::Service)
            })
            .await;
    }
    // Promotion: promised 10, higher is better; delivered 8 (−20 %) and 12.
    for (i, delivered) in [8.0, 12.0].into_iter().enumerate() {
        server
            .accept_interaction(Interaction {
                dimension: "reliability".into(),
                promised: Some(10.0),
                delivered: Some(delivered),
                lower_is_better: Some(false),
                ..interaction(&format!("pr{i}"), "g3", T0, InteractionKind::FollowUp)
            })
            .await;
    }

    let as_of = T0 + DAY;
    let s = server.scope("all", as_of).await;
    let names: Vec<&str> = s.dimensions.iter().map(|d| d.dimension.as_str()).collect();
    assert_eq!(
        names,
        [
            "assurance",
            "empathy",
            "reliability",
            "responsiveness",
            "tangibles"
        ]
    );
    assert_eq!(
        (s.response_count, s.customer_count, s.event_count),
        (2, 3, 8)
    );
    // g1: ρ = (3·3 + 5 + 5)/(3·6 + 6 + 4) = 19/28 → 100·(19/28)/1.5 = 950/21;
    // g2: ρ = (1·4 + 6)/(1·5 + 4) = 10/9 → 2000/27; mean ≈ 59.66.
    assert_some_close(s.satisfaction_index, (950.0 / 21.0 + 2000.0 / 27.0) / 2.0);

    let r = dimension(&s, "responsiveness");
    // Ē = (6+5)/2 = 5.5, P̄ = (3+4)/2 = 3.5, gap 2, importance (3+1)/2 = 2.
    assert_some_close(r.mean_expectation, 5.5);
    assert_some_close(r.mean_perception, 3.5);
    assert_some_close(r.total_gap, 2.0);
    assert_close(r.importance, 2.0);
    assert_eq!(r.rating_count, 2);
    assert_eq!(r.kano_class(), proto::KanoClass::Unspecified);
    let b = r.behavior_gap.expect("behavior gap");
    // 2 of 4 missed → 50 %; shortfalls (0 + 0.5 + 0 + 1)/4 = 0.375.
    assert_close(b.rate_percent, 50.0);
    assert_close(b.mean_relative_shortfall, 0.375);
    assert_eq!(b.count, 4);
    // Q = 1 + 6·(1 − 0.5) = 4; perception gap max(0, 4 − 3.5) = 0.5.
    assert_some_close(r.perception_gap, 0.5);
    assert_eq!(r.promotion_gap, None);
    // Not configured yet: absent, not zero.
    assert_eq!((r.understanding_gap, r.procedure_gap), (None, None));

    let rel = dimension(&s, "reliability");
    assert_some_close(rel.total_gap, 1.0);
    assert_close(rel.importance, 1.0);
    let p = rel.promotion_gap.expect("promotion gap");
    // 1 of 2 broken → 50 %; shortfalls (0.2 + 0)/2 = 0.1.
    assert_close(p.rate_percent, 50.0);
    assert_close(p.mean_relative_shortfall, 0.1);
    assert_eq!(p.count, 2);
    assert_eq!((rel.behavior_gap, rel.perception_gap), (None, None));

    let t = dimension(&s, "tangibles");
    // Ē 4, P̄ (5+6)/2 = 5.5: expectations exceeded, gap −1.5.
    assert_some_close(t.total_gap, -1.5);
    let empty = dimension(&s, "empathy");
    assert_eq!(
        (
            empty.mean_expectation,
            empty.mean_perception,
            empty.total_gap
        ),
        (None, None, None)
    );
    assert_eq!(empty.rating_count, 0);
    assert_close(empty.importance, 1.0);

    // Shortboard: responsiveness 2·2 = 4, reliability 1·1 = 1; tangibles
    // (negative gap) is not a short plank.
    let board: Vec<(&str, f64)> = s
        .shortboard
        .iter()
        .map(|e| (e.dimension.as_str(), e.weight))
        .collect();
    assert_eq!(board.len(), 2, "{board:?}");
    assert_eq!((board[0].0, board[1].0), ("responsiveness", "reliability"));
    assert_close(board[0].1, 4.0);
    assert_close(board[1].1, 1.0);

    // Configure M and S: understanding |Ē − M|, procedure max(0, Ē − S).
    server
        .put_dimension(proto::Dimension {
            name: "responsiveness".into(),
            display_name: "Responsiveness".into(),
            predicted_expectation: Some(4.5),
            standard_level: Some(5.0),
        })
        .await
        .expect("put responsiveness");
    server
        .put_dimension(proto::Dimension {
            name: "reliability".into(),
            predicted_expectation: Some(6.5),
            standard_level: Some(7.0),
            ..proto::Dimension::default()
        })
        .await
        .expect("put reliability");
    let s = server.scope("all", as_of).await;
    let r = dimension(&s, "responsiveness");
    // |5.5 − 4.5| = 1; max(0, 5.5 − 5) = 0.5.
    assert_some_close(r.understanding_gap, 1.0);
    assert_some_close(r.procedure_gap, 0.5);
    let rel = dimension(&s, "reliability");
    // |6 − 6.5| = 0.5; max(0, 6 − 7) = 0.
    assert_some_close(rel.understanding_gap, 0.5);
    assert_some_close(rel.procedure_gap, 0.0);
    // Tangibles not configured: still absent.
    assert_eq!(dimension(&s, "tangibles").understanding_gap, None);
    server.stop().await;
}

#[tokio::test]
async fn scope_complaint_figures() {
    use InteractionKind::{ComplaintOpened, ComplaintResolved, ComplaintResponded};
    let server = TestServer::start().await;
    let north = [("region", "north")];
    let opened = |id: &str, customer: &str, case: &str, severity: Severity| Interaction {
        attributes: attrs(&north),
        ..complaint(id, customer, T0, ComplaintOpened, case, severity)
    };
    // Sent out of order: resolutions and responses before their openings.
    // k1 MINOR: responded +1 h (SLA 2 h: within), resolved +48 h (72 h: within).
    // k2 MAJOR: responded +3 h (SLA 1 h: late), resolved +30 h (24 h: late).
    // k3 MINOR: open.
    server
        .accept_interaction(complaint(
            "q3",
            "h1",
            T0 + 48 * HOUR,
            ComplaintResolved,
            "k1",
            Severity::Minor,
        ))
        .await;
    server
        .accept_interaction(complaint(
            "q6",
            "h2",
            T0 + 30 * HOUR,
            ComplaintResolved,
            "k2",
            Severity::Major,
        ))
        .await;
    server
        .accept_interaction(opened("q1", "h1", "k1", Severity::Minor))
        .await;
    server
        .accept_interaction(complaint(
            "q2",
            "h1",
            T0 + HOUR,
            ComplaintResponded,
            "k1",
            Severity::Minor,
        ))
        .await;
    server
        .accept_interaction(complaint(
            "q5",
            "h2",
            T0 + 3 * HOUR,
            ComplaintResponded,
            "k2",
            Severity::Major,
        ))
        .await;
    server
        .accept_interaction(opened("q4", "h2", "k2", Severity::Major))
        .await;
    server
        .accept_interaction(opened("q7", "h3", "k3", Severity::Minor))
        .await;

    let s = server.scope("region=north", T0 + 10 * DAY).await;
    let c = s.complaints.expect("complaints");
    assert_eq!(c.open, 1);
    // Responses: k1 within, k2 late → 50 %. Resolutions likewise → 50 %.
    assert_some_close(c.responded_within_sla_percent, 50.0);
    assert_some_close(c.resolved_within_sla_percent, 50.0);
    // Hours to resolve: (48 + 30)/2 = 39.
    assert_some_close(c.mean_hours_to_resolve, 39.0);
    // Recovery: k1 95 (minor, in time), k2 54 (major, late), k3 open past
    // its 72 h SLA 46 → (95 + 54 + 46)/3 = 65 (all weighted at T0).
    let l = s.loyalty.expect("loyalty");
    assert_some_close(l.recovery, 65.0);
    assert_some_close(l.index, 65.0);
    // Only the openings carry region=north.
    assert_eq!(
        (s.event_count, s.customer_count, s.response_count),
        (3, 3, 0)
    );
    // One day in, k3 is still within its SLA: (95 + 54)/2 = 74.5.
    let early = server.scope("region=north", T0 + DAY).await;
    assert_some_close(early.loyalty.expect("loyalty").recovery, 74.5);

    let all = server.scope("all", T0 + 10 * DAY).await;
    assert_eq!(all.event_count, 7);
    assert_eq!(all.complaints.expect("complaints").open, 1);
    assert_eq!(server.customer("h3", T0 + DAY).await.open_complaints, 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// ListScopes

#[tokio::test]
async fn list_scopes_pages_in_name_order() {
    let server = TestServer::start().await;
    server
        .accept_survey(Survey {
            csat: Some(3),
            ..survey_in("l1", "a", T0, &[("region", "east"), ("brand", "acme")])
        })
        .await;
    server
        .accept_survey(Survey {
            csat: Some(3),
            ..survey_in(
                "l2",
                "b",
                T0,
                &[("region", "west"), ("brand", "zeta"), ("channel", "store")],
            )
        })
        .await;
    server
        .accept_survey(Survey {
            csat: Some(3),
            ..survey_in("l3", "a", T0, &[("region", "east")])
        })
        .await;

    let page = |size: i32, token: String, key: &str| {
        let mut client = server.score.clone();
        let key = key.to_string();
        async move {
            client
                .list_scopes(proto::ListScopesRequest {
                    attribute_key: key,
                    page_size: size,
                    page_token: token,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let p = page(2, token, "").await.expect("page");
        token = p.next_page_token.clone();
        pages.push(p.scopes);
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end");
    }
    let names: Vec<Vec<&str>> = pages
        .iter()
        .map(|p| p.iter().map(|s| s.scope.as_str()).collect())
        .collect();
    assert_eq!(
        names,
        [
            vec!["all", "brand=acme"],
            vec!["brand=zeta", "channel=store"],
            vec!["region=east", "region=west"],
        ]
    );
    let counts: Vec<(u64, u64)> = pages
        .iter()
        .flatten()
        .map(|s| (s.customer_count, s.event_count))
        .collect();
    // all: customers a, b, 3 events; region=east: customer a, 2 events.
    assert_eq!(counts, [(2, 3), (1, 1), (1, 1), (1, 1), (1, 2), (1, 1)]);

    let regions = page(0, String::new(), "region").await.expect("regions");
    let names: Vec<&str> = regions.scopes.iter().map(|s| s.scope.as_str()).collect();
    assert_eq!(names, ["region=east", "region=west"]);
    assert!(regions.next_page_token.is_empty());
    assert!(page(0, String::new(), "zone")
        .await
        .expect("zone")
        .scopes
        .is_empty());

    for (size, token, key, field) in [
        (2, "zz".to_string(), "", "page_token"),
        (2, "abc".to_string(), "", "page_token"),
        (1001, String::new(), "", "page_size"),
        (-1, String::new(), "", "page_size"),
        (2, String::new(), "Bad", "attribute_key"),
    ] {
        let status = page(size, token, key).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violations(&status)[0].0, field);
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------
// ListAtRiskCustomers

#[tokio::test]
async fn at_risk_customers_vip_first_then_by_value() {
    let server = TestServer::start().await;
    let east = [("region", "east")];
    // Six purchasing customers at T0; all but the whale cancel at T0+1d.
    server
        .accept_interaction(purchase("whale", "whale", T0, 5000.0))
        .await;
    for (customer, amount, in_east) in [
        ("a", 1000.0, false),
        ("b", 500.0, true),
        ("c", 200.0, false),
        ("d", 100.0, true),
        ("e", 50.0, false),
    ] {
        let mut p = purchase(&format!("p-{customer}"), customer, T0, amount);
        if in_east {
            p.attributes = attrs(&east);
        }
        server.accept_interaction(p).await;
        server
            .accept_interaction(interaction(
                &format!("x-{customer}"),
                customer,
                T0 + DAY,
                InteractionKind::Cancellation,
            ))
            .await;
    }
    // f never bought: PROSPECT, at risk through the cancellation only.
    server
        .accept_interaction(interaction(
            "x-f",
            "f",
            T0 + DAY,
            InteractionKind::Cancellation,
        ))
        .await;

    let as_of = T0 + 10 * DAY;
    let list = |tier: Tier, scope: &str, size: i32, token: String| {
        let mut client = server.score.clone();
        let scope = scope.to_string();
        async move {
            client
                .list_at_risk_customers(proto::ListAtRiskCustomersRequest {
                    scope,
                    tier: tier as i32,
                    page_size: size,
                    page_token: token,
                    as_of_time: Some(ts(as_of)),
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let ids = |r: &proto::ListAtRiskCustomersResponse| -> Vec<String> {
        r.customers.iter().map(|c| c.customer_id.clone()).collect()
    };

    // Six purchasing customers: the top ⌈6·0.2⌉ = 2 (whale, a) are VIP.
    // whale is green (activity 100: 10 d since its purchase < g = 30 d)
    // and never cancelled, so it is not listed.
    let all = list(Tier::Unspecified, "", 0, String::new())
        .await
        .expect("list");
    assert_eq!(ids(&all), ["a", "b", "c", "d", "e", "f"]);
    assert!(all.next_page_token.is_empty());
    let tiers: Vec<Tier> = all.customers.iter().map(|c| c.tier()).collect();
    assert_eq!(
        tiers,
        [
            Tier::Vip,
            Tier::Standard,
            Tier::Standard,
            Tier::Standard,
            Tier::Standard,
            Tier::Prospect
        ]
    );
    for (c, amount) in all
        .customers
        .iter()
        .zip([1000.0, 500.0, 200.0, 100.0, 50.0, 0.0])
    {
        // Bought at T0, as of T0+10d: amount·2^-(10/30) (a: ≈ 793.70).
        assert_close(c.value, amount * decay(10.0));
        assert!(c.at_risk);
        assert_eq!(c.as_of_time, Some(ts(as_of)));
    }
    assert_eq!(all.customers[0].health_band(), HealthBand::Green);
    assert_eq!(all.customers[5].health_band(), HealthBand::Unspecified);

    let vip = list(Tier::Vip, "", 0, String::new()).await.expect("vip");
    assert_eq!(ids(&vip), ["a"]);
    let standard = list(Tier::Standard, "", 0, String::new())
        .await
        .expect("standard");
    assert_eq!(ids(&standard), ["b", "c", "d", "e"]);
    let prospect = list(Tier::Prospect, "", 0, String::new())
        .await
        .expect("prospect");
    assert_eq!(ids(&prospect), ["f"]);
    let east_list = list(Tier::Unspecified, "region=east", 0, String::new())
        .await
        .expect("east");
    assert_eq!(ids(&east_list), ["b", "d"]);

    // Pages of two.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(Tier::Unspecified, "", 2, token).await.expect("page");
        assert!(page.customers.len() <= 2);
        seen.extend(ids(&page));
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["a", "b", "c", "d", "e", "f"]);

    // 41 d after the cancellations nobody is at risk any more (all green:
    // 41 d since the purchase is past g = 30 d, overdue (41−30)/30 → activity
    // 100·2^-(11/30) ≈ 77.5; f has no loyalty input).
    let later = server
        .score
        .clone()
        .list_at_risk_customers(proto::ListAtRiskCustomersRequest {
            as_of_time: Some(ts(T0 + 41 * DAY)),
            ..proto::ListAtRiskCustomersRequest::default()
        })
        .await
        .expect("later")
        .into_inner();
    assert!(later.customers.is_empty(), "{later:?}");

    let status = list(Tier::Unspecified, "", 2, "zz".into())
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = list(Tier::Unspecified, "Bad Scope", 0, String::new())
        .await
        .expect_err("bad scope");
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// ConfigService

#[tokio::test]
async fn dimensions_can_be_added_and_are_validated() {
    let server = TestServer::start().await;
    assert_eq!(
        server.dimension_names().await,
        [
            "assurance",
            "empathy",
            "reliability",
            "responsiveness",
            "tangibles"
        ]
    );
    let rated = |id: &str| Survey {
        ratings: vec![rating("delivery_speed", 6, 4, None)],
        ..survey(id, "alice", T0)
    };
    let status = server
        .record_survey(rated("d1"))
        .await
        .expect_err("unknown dimension");
    assert_violation(
        &status,
        Code::InvalidArgument,
        "survey.ratings[0].dimension",
        "unknown dimension",
    );

    let put = server
        .put_dimension(proto::Dimension {
            name: "delivery_speed".into(),
            display_name: String::new(),
            predicted_expectation: Some(5.5),
            standard_level: None,
        })
        .await
        .expect("put");
    assert_eq!(
        put,
        proto::Dimension {
            name: "delivery_speed".into(),
            // Defaults to the name.
            display_name: "delivery_speed".into(),
            predicted_expectation: Some(5.5),
            standard_level: None,
        }
    );
    let listed = server
        .config
        .clone()
        .list_dimensions(proto::ListDimensionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .dimensions;
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "assurance",
            "delivery_speed",
            "empathy",
            "reliability",
            "responsiveness",
            "tangibles"
        ]
    );
    assert_eq!(listed[1], put);

    assert_eq!(server.accept_survey(rated("d2")).await, 1);
    let s = server.scope("all", T0).await;
    let d = dimension(&s, "delivery_speed");
    // E 6, P 4: gap 2; understanding |6 − 5.5| = 0.5; no standard level.
    assert_some_close(d.total_gap, 2.0);
    assert_some_close(d.understanding_gap, 0.5);
    assert_eq!(d.procedure_gap, None);

    let status = server
        .put_dimension(proto::Dimension {
            name: "Bad".into(),
            predicted_expectation: Some(9.0),
            ..proto::Dimension::default()
        })
        .await
        .expect_err("bad dimension");
    assert_eq!(status.code(), Code::InvalidArgument);
    let v = violations(&status);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].0, "dimension.name");
    assert!(v[0].1.contains("[a-z0-9_]{1,32}"), "{v:?}");
    assert_eq!(v[1].0, "dimension.predicted_expectation");
    assert!(v[1].1.contains("between 1 and 7, got 9"), "{v:?}");
    let status = server
        .put_dimension(proto::Dimension {
            name: "ok".into(),
            display_name: "d".repeat(65),
            standard_level: Some(0.5),
            ..proto::Dimension::default()
        })
        .await
        .expect_err("bad display name and level");
    let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        ["dimension.display_name", "dimension.standard_level"]
    );
    let status = server
        .config
        .clone()
        .put_dimension(proto::PutDimensionRequest { dimension: None })
        .await
        .expect_err("missing dimension");
    assert_violation(&status, Code::InvalidArgument, "dimension", "is required");
    // Refused puts changed nothing.
    assert_eq!(server.dimension_names().await.len(), 6);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Order independence, end to end

const DIMENSIONS: [&str; 5] = [
    "tangibles",
    "reliability",
    "responsiveness",
    "assurance",
    "empathy",
];

/// 200 events from a seeded generator: surveys, purchases, returns,
/// measured services and promises, complaint cases (sometimes with two
/// openings), cancellations, follow-ups, and a few exact resends.
fn random_events(seed: u64) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut n = 0;
    while events.len() < 190 {
        n += 1;
        let id = format!("ev{n}");
        let customer = format!("r{}", rng.random_range(0..15));
        // Some events on whole days so that equal times (ties) occur.
        let at = if rng.random_bool(0.3) {
            T0 + rng.random_range(0..90) * DAY
        } else {
            T0 + rng.random_range(0..90 * DAY)
        };
        let mut pairs = Vec::new();
        if rng.random_bool(0.7) {
            pairs.push(("region", ["east", "west", "north"][rng.random_range(0..3)]));
        }
        if rng.random_bool(0.4) {
            pairs.push(("channel", ["store", "web"][rng.random_range(0..2)]));
        }
        let attributes = attrs(&pairs);
        let dim = DIMENSIONS[rng.random_range(0..5)].to_string();
        let lower_is_better = [None, Some(true), Some(false)][rng.random_range(0..3)];
        match rng.random_range(0..10) {
            0..=3 => {
                let mut dims = DIMENSIONS.to_vec();
                dims.shuffle(&mut rng);
                let ratings = dims[..rng.random_range(0..3)]
                    .iter()
                    .map(|d| {
                        let importance = rng.random_bool(0.5).then(|| rng.random_range(1..=7));
                        rating(
                            d,
                            rng.random_range(1..=7),
                            rng.random_range(1..=7),
                            importance,
                        )
                    })
                    .collect();
                let mut s = Survey {
                    attributes,
                    csat: rng.random_bool(0.7).then(|| rng.random_range(1..=5)),
                    nps: rng.random_bool(0.6).then(|| rng.random_range(0..=10)),
                    ces: rng.random_bool(0.4).then(|| rng.random_range(1..=7)),
                    repurchase: rng.random_bool(0.4).then(|| rng.random_range(0..=10)),
                    ratings,
                    ..survey(&id, &customer, at)
                };
                if s.csat.is_none()
                    && s.nps.is_none()
                    && s.ces.is_none()
                    && s.repurchase.is_none()
                    && s.ratings.is_empty()
                {
                    s.nps = Some(rng.random_range(0..=10));
                }
                events.push(survey_event(s));
            }
            4 | 5 => {
                let amount = f64::from(rng.random_range(100..50_000i32)) / 100.0;
                let kind = if rng.random_bool(0.8) {
                    InteractionKind::Purchase
                } else {
                    InteractionKind::Return
                };
                events.push(interaction_event(Interaction {
                    attributes,
                    amount: Some(amount),
                    ..interaction(&id, &customer, at, kind)
                }));
            }
            6 => {
                let standard = f64::from(rng.random_range(10..60i32));
                let actual = standard * rng.random_range(0.5..1.8);
                events.push(interaction_event(Interaction {
                    attributes,
                    dimension: dim,
                    standard: Some(standard),
                    actual: Some(actual),
                    lower_is_better,
                    ..interaction(&id, &customer, at, InteractionKind::Service)
                }));
            }
            7 => {
                let promised = f64::from(rng.random_range(1..10i32));
                let delivered = promised + f64::from(rng.random_range(-3..4i32));
                events.push(interaction_event(Interaction {
                    attributes,
                    dimension: dim,
                    promised: Some(promised),
                    delivered: Some(delivered),
                    lower_is_better,
                    ..interaction(&id, &customer, at, InteractionKind::FollowUp)
                }));
            }
            8 => {
                let case = format!("case{n}");
                let severity = if rng.random_bool(0.5) {
                    Severity::Minor
                } else {
                    Severity::Major
                };
                let step = |suffix: &str, offset: i64, kind: InteractionKind| {
                    complaint(
                        &format!("{id}{suffix}"),
                        &customer,
                        at + offset,
                        kind,
                        &case,
                        severity,
                    )
                };
                events.push(interaction_event(Interaction {
                    attributes: attributes.clone(),
                    ..step("o", 0, InteractionKind::ComplaintOpened)
                }));
                if rng.random_bool(0.7) {
                    let offset = rng.random_range(0..5 * HOUR);
                    events.push(interaction_event(step(
                        "a",
                        offset,
                        InteractionKind::ComplaintResponded,
                    )));
                }
                if rng.random_bool(0.6) {
                    let offset = rng.random_range(0..100 * HOUR);
                    events.push(interaction_event(step(
                        "z",
                        offset,
                        InteractionKind::ComplaintResolved,
                    )));
                }
                if rng.random_bool(0.2) {
                    // A second opening of the same case, later, elsewhere.
                    let offset = rng.random_range(1..10 * HOUR);
                    events.push(interaction_event(Interaction {
                        attributes: attrs(&[("region", "south")]),
                        severity: Severity::Major as i32,
                        ..step("o2", offset, InteractionKind::ComplaintOpened)
                    }));
                }
            }
            _ => {
                let kind = if rng.random_bool(0.5) {
                    InteractionKind::Cancellation
                } else {
                    InteractionKind::FollowUp
                };
                events.push(interaction_event(Interaction {
                    attributes,
                    ..interaction(&id, &customer, at, kind)
                }));
            }
        }
    }
    while events.len() < 200 {
        let resend = events[rng.random_range(0..events.len())].clone();
        events.push(resend);
    }
    events
}

fn event_id(e: &Event) -> &str {
    match &e.kind {
        Some(proto::event::Kind::Survey(s)) => &s.event_id,
        Some(proto::event::Kind::Interaction(i)) => &i.event_id,
        None => "",
    }
}

/// Sends `events` in batches of `batch` and returns how many were accepted;
/// the others must be duplicates.
async fn send(server: &TestServer, events: &[Event], batch: usize) -> usize {
    let mut accepted = 0;
    for chunk in events.chunks(batch) {
        for r in server.record_batch(chunk.to_vec()).await.expect("batch") {
            match r.status() {
                proto::EventStatus::Accepted => accepted += 1,
                proto::EventStatus::Duplicate => {}
                other => panic!("event {} {other:?}: {:?}", r.event_id, r.error),
            }
        }
    }
    accepted
}

#[tokio::test]
async fn scores_do_not_depend_on_arrival_order() {
    let events = random_events(20_260_101);
    assert_eq!(events.len(), 200);
    let distinct: BTreeSet<&str> = events.iter().map(event_id).collect();
    let mut shuffled = events.clone();
    shuffled.shuffle(&mut SmallRng::seed_from_u64(99));
    assert_ne!(shuffled, events);

    let a = TestServer::start().await;
    let b = TestServer::start().await;
    assert_eq!(send(&a, &events, 25).await, distinct.len());
    assert_eq!(send(&b, &shuffled, 7).await, distinct.len());

    let scopes_a = a.all_scopes("").await;
    assert_eq!(scopes_a, b.all_scopes("").await);
    assert!(scopes_a.len() >= 6, "{scopes_a:?}");
    assert_eq!(scopes_a[0].scope, "all");
    assert_eq!(scopes_a[0].event_count, distinct.len() as u64);

    // The sample exercises what it should: resends, complaints resolved
    // and open, repeat purchases, measured gaps, at-risk customers.
    assert!(distinct.len() < events.len());
    let all = a.scope("all", T0 + 100 * DAY).await;
    let complaints = all.complaints.expect("complaints");
    assert!(
        complaints.open > 0 && complaints.resolved_within_sla_percent.is_some(),
        "{all:?}"
    );
    let l = all.loyalty.expect("loyalty");
    assert!(
        l.activity.is_some_and(|r| r > 0.0) && l.recovery.is_some(),
        "{all:?}"
    );
    assert!(all
        .dimensions
        .iter()
        .all(|d| d.behavior_gap.is_some() && d.promotion_gap.is_some()));
    let mut at_risk_seen = 0;
    for as_of in [T0 + 45 * DAY, T0 + 100 * DAY] {
        for scope in &scopes_a {
            let sa = a.scope(&scope.scope, as_of).await;
            let sb = b.scope(&scope.scope, as_of).await;
            assert_json_close(&sa, &sb);
        }
        for i in 0..15 {
            let id = format!("r{i}");
            match (
                a.try_customer(&id, as_of).await,
                b.try_customer(&id, as_of).await,
            ) {
                (Ok(ca), Ok(cb)) => assert_json_close(&ca, &cb),
                (Err(ea), Err(eb)) => {
                    assert_eq!((ea.code(), eb.code()), (Code::NotFound, Code::NotFound));
                }
                (ra, rb) => panic!("customer {id}: {ra:?} vs {rb:?}"),
            }
        }
        let at_risk = |server: &TestServer| {
            let mut client = server.score.clone();
            async move {
                client
                    .list_at_risk_customers(proto::ListAtRiskCustomersRequest {
                        page_size: 1000,
                        as_of_time: Some(ts(as_of)),
                        ..proto::ListAtRiskCustomersRequest::default()
                    })
                    .await
                    .expect("at risk")
                    .into_inner()
                    .customers
                    .into_iter()
                    .map(|c| (c.customer_id.clone(), c))
                    .collect::<BTreeMap<_, _>>()
            }
        };
        let (ra, rb) = (at_risk(&a).await, at_risk(&b).await);
        assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
        at_risk_seen += ra.len();
        for (id, ca) in &ra {
            assert_json_close(ca, &rb[id]);
        }
    }
    assert!(at_risk_seen > 0);
    a.stop().await;
    b.stop().await;
}
