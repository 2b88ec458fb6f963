//! Scoring parameters: the defaults of DOMAIN.md, overridable from the
//! `[scoring]` section of the config file and `GAPWATCH__SCORING__*`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Half-life H of every decayed figure, in days.
    pub half_life_days: f64,
    /// Purchase rhythm assumed until two purchases are seen, in days.
    pub default_purchase_gap_days: f64,
    /// Weights of the loyalty components.
    pub loyalty_weights: LoyaltyWeights,
    /// Complaint SLAs.
    pub sla: ComplaintSla,
    /// Value percentile at or above which a purchasing customer is VIP.
    pub vip_percentile: f64,
    /// Loyalty index below which the health band is red.
    pub red_below: f64,
    /// Loyalty index from which the health band is green.
    pub green_from: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            half_life_days: 30.0,
            default_purchase_gap_days: 30.0,
            loyalty_weights: LoyaltyWeights::default(),
            sla: ComplaintSla::default(),
            vip_percentile: 0.8,
            red_below: 50.0,
            green_from: 75.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoyaltyWeights {
    pub advocacy: f64,
    pub intent: f64,
    /// Customer: purchase activity; scope: repeat-purchase rate.
    pub activity: f64,
    pub recovery: f64,
}

impl Default for LoyaltyWeights {
    fn default() -> Self {
        Self {
            advocacy: 0.3,
            intent: 0.3,
            activity: 0.2,
            recovery: 0.2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComplaintSla {
    pub minor_response_hours: f64,
    pub major_response_hours: f64,
    pub minor_resolution_hours: f64,
    pub major_resolution_hours: f64,
}

impl Default for ComplaintSla {
    fn default() -> Self {
        Self {
            minor_response_hours: 2.0,
            major_response_hours: 1.0,
            minor_resolution_hours: 72.0,
            major_resolution_hours: 24.0,
        }
    }
}

impl Params {
    /// Half-life in milliseconds.
    pub fn half_life_ms(&self) -> f64 {
        self.half_life_days * crate::domain::MILLIS_PER_DAY
    }

    /// Checks ranges; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("half_life_days", self.half_life_days),
            ("default_purchase_gap_days", self.default_purchase_gap_days),
            ("sla.minor_response_hours", self.sla.minor_response_hours),
            ("sla.major_response_hours", self.sla.major_response_hours),
            (
                "sla.minor_resolution_hours",
                self.sla.minor_resolution_hours,
            ),
            (
                "sla.major_resolution_hours",
                self.sla.major_resolution_hours,
            ),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("scoring.{name} must be a positive number, got {v}"));
            }
        }
        let w = &self.loyalty_weights;
        for (name, v) in [
            ("advocacy", w.advocacy),
            ("intent", w.intent),
            ("activity", w.activity),
            ("recovery", w.recovery),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "scoring.loyalty_weights.{name} must be >= 0, got {v}"
                ));
            }
        }
        if !(self.vip_percentile > 0.0 && self.vip_percentile < 1.0) {
            return Err(format!(
                "scoring.vip_percentile must be in (0, 1), got {}",
                self.vip_percentile
            ));
        }
        if self.red_below.is_nan() || self.green_from.is_nan() || self.red_below > self.green_from {
            return Err("scoring.red_below must not exceed scoring.green_from".into());
        }
        Ok(())
    }
}
