//! Alert settings (`[alerts]` in the config file): detector parameters per
//! series, thresholds of the derived gaps, retention, and the subscriber
//! feed's limits.

use serde::{Deserialize, Serialize};

use crate::scoring::detector::DetectorParams;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// GAP_WIDENING on the total gap `E − P` per rating (scale points).
    pub gap_widening: DetectorParams,
    /// GAP_WIDENING on the behavior and promotion relative shortfall per
    /// interaction (0 = met; 0.5 = 50% worse than the target).
    pub shortfall: DetectorParams,
    /// SATISFACTION_DROP on response satisfaction (0–100).
    pub satisfaction_drop: DetectorParams,
    /// LOYALTY_DROP on advocacy per NPS answer (+100 / 0 / −100).
    pub loyalty_drop: DetectorParams,
    /// Derived gaps fire above these levels (scale points) ...
    pub understanding_threshold: f64,
    pub procedure_threshold: f64,
    pub perception_threshold: f64,
    /// ... and resolve below this fraction of them.
    pub resolve_fraction: f64,
    /// Ratings a dimension needs in a scope before its derived gaps are
    /// checked (a mean of a handful of answers is noise).
    pub derived_min_ratings: u64,
    /// Alert log retention, days (by commit time).
    pub retention_days: f64,
    /// A complaint whose SLA deadline had already passed when it was
    /// recorded is checked this long after recording, so that steps sent
    /// right behind it (a backfill) are not reported as overdue.
    pub overdue_grace_secs: f64,
    /// How often overdue complaints and retention are checked.
    pub check_interval_ms: u64,
    /// Interval of Subscribe heartbeats.
    pub heartbeat_secs: f64,
    /// Messages buffered per subscriber; a subscriber that falls further
    /// behind is served from the log.
    pub subscriber_buffer: usize,
    /// Recent transitions kept in memory for subscribers near the head.
    pub recent_transitions: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            gap_widening: DetectorParams {
                sigma_min: 0.5,
                ..DetectorParams::default()
            },
            shortfall: DetectorParams {
                sigma_min: 0.05,
                ..DetectorParams::default()
            },
            satisfaction_drop: DetectorParams {
                sigma_min: 5.0,
                ..DetectorParams::default()
            },
            loyalty_drop: DetectorParams {
                sigma_min: 10.0,
                ..DetectorParams::default()
            },
            understanding_threshold: 1.0,
            procedure_threshold: 0.5,
            perception_threshold: 1.0,
            resolve_fraction: 0.8,
            derived_min_ratings: 30,
            retention_days: 30.0,
            overdue_grace_secs: 60.0,
            check_interval_ms: 1_000,
            heartbeat_secs: 5.0,
            subscriber_buffer: 256,
            recent_transitions: 16_384,
        }
    }
}

impl AlertSettings {
    pub fn validate(&self) -> Result<(), String> {
        self.gap_widening.validate("alerts.gap_widening")?;
        self.shortfall.validate("alerts.shortfall")?;
        self.satisfaction_drop
            .validate("alerts.satisfaction_drop")?;
        self.loyalty_drop.validate("alerts.loyalty_drop")?;
        for (name, v) in [
            ("understanding_threshold", self.understanding_threshold),
            ("procedure_threshold", self.procedure_threshold),
            ("perception_threshold", self.perception_threshold),
            ("retention_days", self.retention_days),
            ("heartbeat_secs", self.heartbeat_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("alerts.{name} must be a positive number, got {v}"));
            }
        }
        if !(self.resolve_fraction > 0.0 && self.resolve_fraction <= 1.0) {
            return Err(format!(
                "alerts.resolve_fraction must be in (0, 1], got {}",
                self.resolve_fraction
            ));
        }
        if !(self.overdue_grace_secs.is_finite() && self.overdue_grace_secs >= 0.0) {
            return Err("alerts.overdue_grace_secs must be >= 0".into());
        }
        if self.check_interval_ms == 0 || self.subscriber_buffer == 0 {
            return Err("alerts.check_interval_ms and subscriber_buffer must be positive".into());
        }
        Ok(())
    }

    pub fn retention_ms(&self) -> i64 {
        (self.retention_days * crate::domain::MILLIS_PER_DAY) as i64
    }
}
