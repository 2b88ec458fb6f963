//! Customer figures against hand-computed values (DOMAIN.md "Customer").

use gapwatch::domain::{
    Body, Event, Interaction, InteractionKind, Millis, Severity, Survey, MILLIS_PER_DAY,
};
use gapwatch::scoring::event_tag::EventTag;
use gapwatch::scoring::{
    CustomerState, HealthBand, NpsCategory, Params, ScopeOp, Target, Tier, ValueHistogram,
};

const DAY: Millis = 86_400_000;
const HOUR: Millis = 3_600_000;

fn event(id: &str, at: Millis, attrs: &[(&str, &str)], body: Body) -> Event {
    Event {
        id: id.into(),
        customer: "c".into(),
        at,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
    }
}

fn purchase(id: &str, at: Millis, amount: f64) -> Event {
    let mut i = Interaction::of_kind(InteractionKind::Purchase);
    i.amount = Some(amount);
    event(id, at, &[], Body::Interaction(i))
}

fn step(id: &str, at: Millis, kind: InteractionKind, case: &str, severity: Severity) -> Event {
    let mut i = Interaction::of_kind(kind);
    i.case_id = Some(case.into());
    i.severity = severity;
    event(id, at, &[], Body::Interaction(i))
}

fn survey(id: &str, at: Millis, s: Survey) -> Event {
    event(id, at, &[], Body::Survey(s))
}

fn apply_all(events: &[Event], p: &Params) -> CustomerState {
    let mut c = CustomerState::default();
    for e in events {
        c.apply(e, p);
    }
    c
}

fn assert_close(got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("expected {want}, got None"));
    assert!((got - want).abs() < 1e-6, "expected {want}, got {got}");
}

#[test]
fn loyalty_renormalises_over_present_components() {
    let p = Params::default();
    let nps = Survey {
        nps: Some(8),
        ..Survey::default()
    };
    let intent = Survey {
        repurchase: Some(4),
        ..Survey::default()
    };
    let mut c = apply_all(&[survey("s1", 0, nps), survey("s2", 0, intent)], &p);
    let r = c.report(0, &p, None);
    // advocacy 80, intent 40, no activity, no recovery:
    // (0.3·80 + 0.3·40)/0.6 = 60 → yellow.
    assert_close(r.loyalty.advocacy, 80.0);
    assert_close(r.loyalty.intent, 40.0);
    assert_eq!(r.loyalty.activity, None);
    assert_eq!(r.loyalty.recovery, None);
    assert_close(r.loyalty.index, 60.0);
    assert_eq!(r.health_band, Some(HealthBand::Yellow));
    assert_eq!(r.satisfaction_index, None);
    // A purchase at as_of adds activity 100: (24 + 12 + 0.2·100)/0.8 = 70.
    c.apply(&purchase("p1", 0, 10.0), &p);
    let r = c.report(0, &p, None);
    assert_close(r.loyalty.activity, 100.0);
    assert_close(r.loyalty.index, 70.0);
    assert_eq!(r.tier, Tier::Standard);
}

#[test]
fn activity_uses_default_gap_until_two_purchases() {
    let p = Params::default();
    let c = apply_all(&[purchase("p1", 0, 10.0)], &p);
    // g = 30 d, since = 45 d → overdue = 15/30 = 0.5 → 100·2^-0.5 = 70.71.
    assert_close(
        c.report(45 * DAY, &p, None).loyalty.activity,
        100.0 * 0.5f64.sqrt(),
    );
    // Not yet overdue at day 30.
    assert_close(c.report(30 * DAY, &p, None).loyalty.activity, 100.0);
}

#[test]
fn same_basket_purchases_do_not_shrink_the_rhythm() {
    let p = Params::default();
    // Two purchases 10 minutes apart are one basket: g stays the 30-day
    // default, so 20 days later the customer is not overdue at all.
    let c = apply_all(
        &[purchase("p1", 0, 10.0), purchase("p2", 10 * 60_000, 5.0)],
        &p,
    );
    let r = c.report(20 * DAY, &p, None);
    assert_close(r.loyalty.activity, 100.0);
    assert_eq!(r.health_band, Some(HealthBand::Green));
    // A third purchase 10 days on is a real gap: g = 10 d, so 15 days after
    // it the customer is half a rhythm overdue: 100·2^-0.5.
    let c = apply_all(
        &[
            purchase("p1", 0, 10.0),
            purchase("p2", 10 * 60_000, 5.0),
            purchase("p3", 10 * 60_000 + 10 * DAY, 5.0),
        ],
        &p,
    );
    let r = c.report(10 * 60_000 + 25 * DAY, &p, None);
    assert_close(r.loyalty.activity, 100.0 * 0.5f64.sqrt());
}

#[test]
fn activity_with_decayed_purchase_rhythm() {
    let p = Params::default();
    let c = apply_all(
        &[
            purchase("p3", 30 * DAY, 1.0),
            purchase("p1", 0, 1.0),
            purchase("p2", 10 * DAY, 1.0),
        ],
        &p,
    );
    // Gaps 10 d (weighted at day 10: 2^(-20/30) = 0.62996 relative to day
    // 30) and 20 d (weight 1): g = (10·0.62996 + 20)/1.62996 = 16.135 d.
    let w = 2f64.powf(-20.0 / 30.0);
    let g_days = (10.0 * w + 20.0) / (w + 1.0);
    assert!((g_days - 16.135).abs() < 1e-3);
    // since = 30 d + 2g − 30 d = 2g → overdue = (2g − g)/g = 1 → 50.
    let as_of = 30 * DAY + (2.0 * g_days * MILLIS_PER_DAY).round() as Millis;
    assert_close(c.report(as_of, &p, None).loyalty.activity, 50.0);
    // since = 3g → overdue 2 → 25.
    let as_of = 30 * DAY + (3.0 * g_days * MILLIS_PER_DAY).round() as Millis;
    assert_close(c.report(as_of, &p, None).loyalty.activity, 25.0);
}

#[test]
fn recovery_by_outcome_and_severity() {
    use InteractionKind::*;
    let p = Params::default();
    let events = [
        // Minor, resolved after 10 h (SLA 72 h) → 95. RESOLVED arrives first.
        step("a2", 10 * HOUR, ComplaintResolved, "a", Severity::Minor),
        step("a1", 0, ComplaintOpened, "a", Severity::Minor),
        // Major, resolved after 30 h (SLA 24 h) → 54.
        step("b1", 0, ComplaintOpened, "b", Severity::Major),
        step("b2", 30 * HOUR, ComplaintResolved, "b", Severity::Major),
        // Minor, never resolved: counts (46) once 72 h have passed.
        step("c1", 0, ComplaintOpened, "c", Severity::Minor),
    ];
    let c = apply_all(&events, &p);
    assert_eq!(c.open_complaints(), 1);
    // At 48 h case c is still within SLA: (95 + 54)/2 = 74.5.
    let r = c.report(48 * HOUR, &p, None);
    assert_close(r.loyalty.recovery, 74.5);
    assert_eq!(r.open_complaints, 1);
    // At 72 h it is past SLA: (95 + 54 + 46)/3 = 65.
    assert_close(c.report(72 * HOUR, &p, None).loyalty.recovery, 65.0);
    // A major case open past its 24 h SLA → 19.
    let c = apply_all(&[step("d1", 0, ComplaintOpened, "d", Severity::Major)], &p);
    assert_eq!(c.report(24 * HOUR - 1, &p, None).loyalty.recovery, None);
    assert_close(c.report(24 * HOUR, &p, None).loyalty.recovery, 19.0);
    // Minor resolved late → 70; an earlier RESOLVED arriving later wins.
    let c = apply_all(
        &[
            step("e1", 0, ComplaintOpened, "e", Severity::Minor),
            step("e2", 100 * HOUR, ComplaintResolved, "e", Severity::Minor),
        ],
        &p,
    );
    assert_close(c.report(200 * HOUR, &p, None).loyalty.recovery, 70.0);
    let mut c = c;
    c.apply(
        &step("e3", 50 * HOUR, ComplaintResolved, "e", Severity::Minor),
        &p,
    );
    assert_close(c.report(200 * HOUR, &p, None).loyalty.recovery, 95.0);
    assert_eq!(c.open_complaints(), 0);
}

#[test]
fn value_nets_returns_and_decays() {
    let p = Params::default();
    let mut ret = Interaction::of_kind(InteractionKind::Return);
    ret.amount = Some(40.0);
    let c = apply_all(
        &[
            event("r1", 30 * DAY, &[], Body::Interaction(ret)),
            purchase("p1", 0, 100.0),
        ],
        &p,
    );
    // At day 30: 100·0.5 − 40 = 10; at day 60: 10·0.5 = 5.
    assert_close(Some(c.report(30 * DAY, &p, None).value), 10.0);
    assert_close(Some(c.report(60 * DAY, &p, None).value), 5.0);
    assert_eq!(c.report(30 * DAY, &p, None).purchase_count, 1);
    assert_eq!(c.report(30 * DAY, &p, None).interaction_count, 2);
}

#[test]
fn tier_with_ten_customers() {
    let p = Params::default();
    let mut hist = ValueHistogram::default();
    let mut customers = Vec::new();
    for k in 1..=10 {
        // Values 10, 20, …, 100 bought at the same time.
        let c = apply_all(&[purchase(&format!("p{k}"), 0, 10.0 * f64::from(k))], &p);
        hist.replace(None, c.value_bucket(&p));
        customers.push(c);
    }
    let prospect = apply_all(
        &[survey(
            "s",
            0,
            Survey {
                csat: Some(5),
                ..Survey::default()
            },
        )],
        &p,
    );
    hist.replace(None, prospect.value_bucket(&p));
    assert_eq!(hist.customers(), 10);
    let threshold = hist.vip_threshold(&p);
    let tiers: Vec<Tier> = customers
        .iter()
        .map(|c| c.report(0, &p, threshold).tier)
        .collect();
    let mut want = vec![Tier::Standard; 8];
    want.extend([Tier::Vip, Tier::Vip]);
    assert_eq!(tiers, want);
    assert_eq!(prospect.report(0, &p, threshold).tier, Tier::Prospect);
    // A lone customer is VIP.
    let mut one = ValueHistogram::default();
    one.replace(None, customers[0].value_bucket(&p));
    assert_eq!(
        customers[0].report(0, &p, one.vip_threshold(&p)).tier,
        Tier::Vip
    );
}

#[test]
fn at_risk_cancellation_window_edges() {
    let p = Params::default();
    let h = (p.half_life_days * MILLIS_PER_DAY) as Millis;
    let t = 100 * DAY;
    let c = apply_all(
        &[event(
            "x",
            t,
            &[],
            Body::Interaction(Interaction::of_kind(InteractionKind::Cancellation)),
        )],
        &p,
    );
    // Window is (as_of − H, as_of].
    assert!(!c.report(t - 1, &p, None).at_risk);
    assert!(c.report(t, &p, None).at_risk);
    assert!(c.report(t + h - 1, &p, None).at_risk);
    assert!(!c.report(t + h, &p, None).at_risk);
    assert_eq!(c.report(t, &p, None).health_band, None);
    // A red band alone is at risk: nps 2 → advocacy 20 < 50.
    let red = apply_all(
        &[survey(
            "s",
            0,
            Survey {
                nps: Some(2),
                ..Survey::default()
            },
        )],
        &p,
    );
    let r = red.report(0, &p, None);
    assert_eq!(r.health_band, Some(HealthBand::Red));
    assert!(r.at_risk);
}

#[test]
fn latest_nps_and_counts_regardless_of_order() {
    let p = Params::default();
    let s = |nps| Survey {
        nps: Some(nps),
        csat: Some(5),
        ..Survey::default()
    };
    // Same time: the larger event tag is the latest.
    let a = survey("a", 5 * DAY, s(10));
    let b = survey("b", 5 * DAY, s(3));
    let old = survey("0", DAY, s(9));
    let latest = if EventTag::of("a") > EventTag::of("b") {
        NpsCategory::Promoter
    } else {
        NpsCategory::Detractor
    };
    for order in [
        vec![a.clone(), b.clone(), old.clone()],
        vec![b.clone(), old.clone(), a.clone()],
    ] {
        let c = apply_all(&order, &p);
        let r = c.report(10 * DAY, &p, None);
        assert_eq!(r.nps_category, Some(latest));
        assert_eq!(r.survey_count, 3);
        assert_eq!(r.last_event_at, Some(5 * DAY));
        assert_close(r.satisfaction_index, 100.0);
    }
}

#[test]
fn earlier_first_purchase_revalues_the_old_one() {
    let p = Params::default();
    let mut c = CustomerState::default();
    let mut web = purchase("late", 10 * DAY, 5.0);
    web.attributes = vec![("channel".into(), "web".into())];
    let u = c.apply(&web, &p);
    assert_eq!(u.len(), 1);
    assert!(matches!(&u[0].op, ScopeOp::Interaction(f) if f.purchase == Some(false)));
    let u = c.apply(&purchase("early", 5 * DAY, 5.0), &p);
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].target, Target::EventScopes);
    assert!(matches!(&u[0].op, ScopeOp::Interaction(f) if f.purchase == Some(false)));
    assert_eq!(
        u[1].target,
        Target::Scopes(vec!["all".into(), "channel=web".into()])
    );
    assert_eq!(u[1].op, ScopeOp::PurchaseBecameRepeat { at: 10 * DAY });
    // A later purchase is a plain repeat.
    let u = c.apply(&purchase("third", 7 * DAY, 5.0), &p);
    assert_eq!(u.len(), 1);
    assert!(matches!(&u[0].op, ScopeOp::Interaction(f) if f.purchase == Some(true)));
}
