//! Per-dimension statistics of a scope: expectation and perception means,
//! the measured provider gaps (promotion, behavior), the derived ones
//! (understanding, procedure, perception) and the Kano class.

use super::decay::Decayed;
use super::report::{DimensionReport, KanoClass, MeasuredGap};
use crate::domain::{DimensionSpec, Measure, Millis, Rating};
use serde::{Deserialize, Serialize};

/// Responses needed in every Kano cell before a class is given.
pub const KANO_MIN_RESPONSES: u64 = 20;

/// How one measured interaction fared against its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shortfall {
    /// The observation was worse than the target.
    pub missed: bool,
    /// `max(0, relative shortfall)`.
    pub relative: f64,
}

impl Shortfall {
    /// Shortfall is `observed − target` when lower is better, else
    /// `target − observed`; relative to `|target|`, or absolute when the
    /// target is 0 (a ratio to zero has no meaning, and a zero target —
    /// "no delay" — makes the absolute excess the natural measure).
    pub fn of(m: &Measure, lower_is_better: bool) -> Self {
        let shortfall = if lower_is_better {
            m.observed - m.target
        } else {
            m.target - m.observed
        };
        let relative = if m.target != 0.0 {
            shortfall / m.target.abs()
        } else {
            shortfall
        };
        Self {
            missed: shortfall > 0.0,
            relative: if relative.is_finite() {
                relative.max(0.0)
            } else {
                0.0
            },
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasureStats {
    /// 100 when missed, else 0.
    missed: Decayed,
    shortfall: Decayed,
    count: u64,
}

impl MeasureStats {
    fn add(&mut self, s: Shortfall, at: Millis, h_ms: f64) {
        self.missed
            .add(if s.missed { 100.0 } else { 0.0 }, 1.0, at, h_ms);
        self.shortfall.add(s.relative, 1.0, at, h_ms);
        self.count += 1;
    }

    fn report(&self) -> Option<MeasuredGap> {
        Some(MeasuredGap {
            rate_percent: self.missed.mean()?,
            mean_relative_shortfall: self.shortfall.mean()?,
            count: self.count,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct KanoCell {
    satisfaction: Decayed,
    count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DimStats {
    expectation: Decayed,
    perception: Decayed,
    importance: Decayed,
    ratings: u64,
    promotion: MeasureStats,
    behavior: MeasureStats,
    /// Responses rating this dimension below (P<E), at, above expectation.
    kano: [KanoCell; 3],
}

impl DimStats {
    /// Adds one rating; `satisfaction` is its response's satisfaction.
    pub fn rate(&mut self, r: &Rating, satisfaction: Option<f64>, at: Millis, h_ms: f64) {
        self.expectation
            .add(f64::from(r.expectation), 1.0, at, h_ms);
        self.perception.add(f64::from(r.perception), 1.0, at, h_ms);
        if let Some(i) = r.importance {
            self.importance.add(f64::from(i), 1.0, at, h_ms);
        }
        self.ratings += 1;
        if let Some(sat) = satisfaction {
            let cell = match r.perception.cmp(&r.expectation) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => 1,
                std::cmp::Ordering::Greater => 2,
            };
            self.kano[cell].satisfaction.add(sat, 1.0, at, h_ms);
            self.kano[cell].count += 1;
        }
    }

    pub fn service(&mut self, s: Shortfall, at: Millis, h_ms: f64) {
        self.behavior.add(s, at, h_ms);
    }

    pub fn promise(&mut self, s: Shortfall, at: Millis, h_ms: f64) {
        self.promotion.add(s, at, h_ms);
    }

    /// Decayed mean stated importance, else 1.
    pub fn importance(&self) -> f64 {
        self.importance.mean().unwrap_or(1.0)
    }

    /// Kano class from the cell means: `penalty = at − below`,
    /// `reward = above − at`. When neither is positive, satisfaction does
    /// not rise with performance on this dimension (Kano's "indifferent"),
    /// which none of the three classes describes: Unclassified.
    pub fn kano_class(&self) -> KanoClass {
        if self.kano.iter().any(|c| c.count < KANO_MIN_RESPONSES) {
            return KanoClass::Unclassified;
        }
        let [Some(below), Some(at), Some(above)] =
            self.kano.each_ref().map(|c| c.satisfaction.mean())
        else {
            return KanoClass::Unclassified;
        };
        let penalty = at - below;
        let reward = above - at;
        if penalty <= 0.0 && reward <= 0.0 {
            KanoClass::Unclassified
        } else if penalty >= 2.0 * reward {
            KanoClass::Basic
        } else if reward >= 2.0 * penalty {
            KanoClass::Surprise
        } else {
            KanoClass::Desired
        }
    }

    pub fn report(&self, spec: &DimensionSpec) -> DimensionReport {
        let e = self.expectation.mean();
        let p = self.perception.mean();
        let derived = self.derived_gaps(spec);
        DimensionReport {
            dimension: spec.name.clone(),
            mean_expectation: e,
            mean_perception: p,
            total_gap: e.zip(p).map(|(e, p)| e - p),
            promotion_gap: self.promotion.report(),
            understanding_gap: derived.understanding,
            procedure_gap: derived.procedure,
            behavior_gap: self.behavior.report(),
            perception_gap: derived.perception,
            importance: self.importance(),
            kano_class: self.kano_class(),
            rating_count: self.ratings,
        }
    }

    /// The three gaps derived against the spec (what the alert monitors
    /// check after every rating, without building a whole report).
    pub fn derived_gaps(&self, spec: &DimensionSpec) -> DerivedGaps {
        let e = self.expectation.mean();
        let p = self.perception.mean();
        // Q_d: the perception that the measured delivery would justify.
        let delivered = self
            .behavior
            .report()
            .map(|b| 1.0 + 6.0 * (1.0 - b.rate_percent / 100.0));
        DerivedGaps {
            understanding: e
                .zip(spec.predicted_expectation)
                .map(|(e, m)| (e - m).abs()),
            procedure: e.zip(spec.standard_level).map(|(e, s)| (e - s).max(0.0)),
            perception: delivered.zip(p).map(|(q, p)| (q - p).max(0.0)),
            rating_count: self.ratings,
        }
    }
}

/// Understanding, procedure and perception gaps of one dimension (as in
/// its [`DimensionReport`]), and the ratings behind them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DerivedGaps {
    pub understanding: Option<f64>,
    pub procedure: Option<f64>,
    pub perception: Option<f64>,
    pub rating_count: u64,
}

/// A report for a configured dimension without any data.
pub fn empty_report(spec: &DimensionSpec) -> DimensionReport {
    DimStats::default().report(spec)
}
