//! Per-response scores and the fixed scales of DOMAIN.md (NPS buckets,
//! CSAT/CES "good" answers, TARP repurchase rates, health bands).

use super::params::Params;
use super::report::{HealthBand, NpsCategory};
use crate::domain::{Rating, Severity, Survey};

/// ACSI-style overall score: csat 1..=5 mapped onto 0..=100.
pub fn overall(csat: u8) -> f64 {
    25.0 * (f64::from(csat) - 1.0)
}

/// Expectation confirmation: `100·min(ρ, 1.5)/1.5` with `ρ = P̄/Ē`, both
/// importance-weighted (importance 1 when not stated). `None` without
/// ratings. Since both means share the same weights, `ρ = Σ iP / Σ iE`.
pub fn confirmation(ratings: &[Rating]) -> Option<f64> {
    if ratings.is_empty() {
        return None;
    }
    let (mut p, mut e) = (0.0, 0.0);
    for r in ratings {
        let i = f64::from(r.importance.unwrap_or(1));
        p += i * f64::from(r.perception);
        e += i * f64::from(r.expectation);
    }
    // Validated ratings are 1..=7, so `e >= 1`; the guard keeps the
    // function total for unvalidated input.
    if e <= 0.0 {
        return None;
    }
    let rho = p / e;
    Some(100.0 * rho.min(1.5) / 1.5)
}

/// CES 2.0 ease: 1..=7 mapped onto 0..=100.
pub fn ease(ces: u8) -> f64 {
    100.0 * (f64::from(ces) - 1.0) / 6.0
}

/// Equal-weight mean of the components present; `None` when the response
/// has none of csat, ratings, ces (it then counts for NPS/loyalty only).
pub fn response_satisfaction(s: &Survey) -> Option<f64> {
    let parts = [
        s.csat.map(overall),
        confirmation(&s.ratings),
        s.ces.map(ease),
    ];
    let present: Vec<f64> = parts.into_iter().flatten().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

pub fn nps_category(nps: u8) -> NpsCategory {
    match nps {
        0..=6 => NpsCategory::Detractor,
        7..=8 => NpsCategory::Passive,
        _ => NpsCategory::Promoter,
    }
}

/// Scope NPS contribution: the mean of these is %promoters − %detractors.
pub fn advocacy_score(nps: u8) -> f64 {
    match nps_category(nps) {
        NpsCategory::Detractor => -100.0,
        NpsCategory::Passive => 0.0,
        NpsCategory::Promoter => 100.0,
    }
}

/// CSAT counts 4 and 5 as satisfied.
pub fn csat_satisfied(csat: u8) -> bool {
    csat >= 4
}

/// CES counts 5..=7 as easy.
pub fn ces_easy(ces: u8) -> bool {
    ces >= 5
}

/// How a complaint ended (or has not), for the TARP repurchase rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComplaintOutcome {
    ResolvedWithinSla,
    ResolvedLate,
    OpenPastSla,
}

/// TARP: % of complainants who buy again, by outcome and severity.
pub fn tarp_rate(outcome: ComplaintOutcome, severity: Severity) -> f64 {
    match (outcome, severity) {
        (ComplaintOutcome::ResolvedWithinSla, Severity::Minor) => 95.0,
        (ComplaintOutcome::ResolvedWithinSla, Severity::Major) => 82.0,
        (ComplaintOutcome::ResolvedLate, Severity::Minor) => 70.0,
        (ComplaintOutcome::ResolvedLate, Severity::Major) => 54.0,
        (ComplaintOutcome::OpenPastSla, Severity::Minor) => 46.0,
        (ComplaintOutcome::OpenPastSla, Severity::Major) => 19.0,
    }
}

/// Gainsight-style band: red below `red_below`, green from `green_from`.
pub fn health_band(loyalty_index: f64, p: &Params) -> HealthBand {
    if loyalty_index < p.red_below {
        HealthBand::Red
    } else if loyalty_index >= p.green_from {
        HealthBand::Green
    } else {
        HealthBand::Yellow
    }
}

/// Weighted mean of the components present, weights renormalised over
/// them; `None` when no component with a positive weight is present.
pub fn weighted_mean(parts: &[(Option<f64>, f64)]) -> Option<f64> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for (value, w) in parts {
        if let Some(v) = value {
            if *w > 0.0 {
                sum += w * v;
                weight += w;
            }
        }
    }
    (weight > 0.0).then(|| sum / weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(e: u8, p: u8, i: Option<u8>) -> Rating {
        Rating {
            dimension: "reliability".into(),
            expectation: e,
            perception: p,
            importance: i,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn overall_and_ease_scales() {
        let overall_expected = [0.0, 25.0, 50.0, 75.0, 100.0];
        for (csat, want) in (1..=5).zip(overall_expected) {
            assert_eq!(overall(csat), want);
        }
        // 100·(ces−1)/6: 0, 16.67, 33.33, 50, 66.67, 83.33, 100
        for ces in 1..=7u8 {
            assert!((ease(ces) - 100.0 * f64::from(ces - 1) / 6.0).abs() < 1e-12);
        }
        assert_eq!(ease(4), 50.0);
        assert_eq!(ease(7), 100.0);
    }

    #[test]
    fn confirmation_ratio_and_cap() {
        // ρ = 1 → 100/1.5 = 66.67
        assert!(close(confirmation(&[rating(5, 5, None)]), 200.0 / 3.0));
        // ρ = 7/4 = 1.75 ≥ 1.5 → 100
        assert!(close(confirmation(&[rating(4, 7, None)]), 100.0));
        // ρ = 1.5 exactly → 100
        assert!(close(confirmation(&[rating(4, 6, None)]), 100.0));
        // Importance-weighted: (3·2 + 1·6)/(3·4 + 1·6) = 12/18 → ρ = 2/3
        // → 100·(2/3)/1.5 = 44.44
        let r = [rating(4, 2, Some(3)), rating(6, 6, None)];
        assert!(close(confirmation(&r), 400.0 / 9.0));
        assert_eq!(confirmation(&[]), None);
    }

    #[test]
    fn response_satisfaction_means_present_components() {
        // csat 4 → 75; E=6, P=4.5 → ρ = 0.75 → 50; ces 7 → 100; mean 75.
        // P=4.5 is not a valid rating, so two dimensions give P̄ = 4.5:
        // (4+5)/(6+6) = 0.75.
        let s = Survey {
            csat: Some(4),
            ces: Some(7),
            ratings: vec![rating(6, 4, None), rating(6, 5, None)],
            ..Survey::default()
        };
        assert!(close(response_satisfaction(&s), 75.0));
        // csat 2 only → 25.
        let s = Survey {
            csat: Some(2),
            ..Survey::default()
        };
        assert!(close(response_satisfaction(&s), 25.0));
        // NPS-only response has no satisfaction.
        let s = Survey {
            nps: Some(9),
            repurchase: Some(3),
            ..Survey::default()
        };
        assert_eq!(response_satisfaction(&s), None);
    }

    #[test]
    fn nps_csat_ces_buckets_for_every_value() {
        let nps_expected = [
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Detractor, -100.0),
            (NpsCategory::Passive, 0.0),
            (NpsCategory::Passive, 0.0),
            (NpsCategory::Promoter, 100.0),
            (NpsCategory::Promoter, 100.0),
        ];
        for (nps, (cat, score)) in (0..=10u8).zip(nps_expected) {
            assert_eq!(nps_category(nps), cat, "nps {nps}");
            assert_eq!(advocacy_score(nps), score, "nps {nps}");
        }
        let csat_expected = [false, false, false, true, true];
        for (csat, want) in (1..=5u8).zip(csat_expected) {
            assert_eq!(csat_satisfied(csat), want, "csat {csat}");
        }
        let ces_expected = [false, false, false, false, true, true, true];
        for (ces, want) in (1..=7u8).zip(ces_expected) {
            assert_eq!(ces_easy(ces), want, "ces {ces}");
        }
    }

    #[test]
    fn tarp_rates() {
        use ComplaintOutcome::*;
        assert_eq!(tarp_rate(ResolvedWithinSla, Severity::Minor), 95.0);
        assert_eq!(tarp_rate(ResolvedWithinSla, Severity::Major), 82.0);
        assert_eq!(tarp_rate(ResolvedLate, Severity::Minor), 70.0);
        assert_eq!(tarp_rate(ResolvedLate, Severity::Major), 54.0);
        assert_eq!(tarp_rate(OpenPastSla, Severity::Minor), 46.0);
        assert_eq!(tarp_rate(OpenPastSla, Severity::Major), 19.0);
    }

    #[test]
    fn health_band_edges() {
        let p = Params::default();
        assert_eq!(health_band(0.0, &p), HealthBand::Red);
        assert_eq!(health_band(49.999, &p), HealthBand::Red);
        assert_eq!(health_band(50.0, &p), HealthBand::Yellow);
        assert_eq!(health_band(74.999, &p), HealthBand::Yellow);
        assert_eq!(health_band(75.0, &p), HealthBand::Green);
        assert_eq!(health_band(100.0, &p), HealthBand::Green);
    }

    #[test]
    fn weighted_mean_renormalises() {
        // (0.3·80 + 0.2·30)/(0.5) = 60; missing parts drop out.
        let m = weighted_mean(&[
            (Some(80.0), 0.3),
            (None, 0.3),
            (Some(30.0), 0.2),
            (None, 0.2),
        ]);
        assert!(close(m, 60.0));
        assert_eq!(weighted_mean(&[(None, 0.3), (Some(5.0), 0.0)]), None);
    }
}
