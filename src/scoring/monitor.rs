//! What the engine keeps per monitored subject: its detector and the id of
//! its open alert, if any ("one open alert per key").

use serde::{Deserialize, Serialize};

use super::detector::{Cusum, LevelMonitor};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Detector {
    /// Subjects whose state is a condition, not a series (CHURN_RISK,
    /// COMPLAINT_OVERDUE).
    #[default]
    Condition,
    /// A CUSUM over a per-observation series.
    Cusum(Cusum),
    /// A level crossing a threshold (derived gaps).
    Level(LevelMonitor),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    pub detector: Detector,
    /// The open alert's id (the sequence of its FIRING transition).
    pub open: Option<u64>,
}

impl MonitorState {
    /// The CUSUM detector; a monitor first fed a series starts one.
    pub fn cusum(&mut self) -> &mut Cusum {
        if !matches!(self.detector, Detector::Cusum(_)) {
            self.detector = Detector::Cusum(Cusum::default());
        }
        match &mut self.detector {
            Detector::Cusum(cusum) => cusum,
            _ => unreachable!("set above"),
        }
    }

    /// The level detector; a monitor first fed a level starts one.
    pub fn level(&mut self) -> &mut LevelMonitor {
        if !matches!(self.detector, Detector::Level(_)) {
            self.detector = Detector::Level(LevelMonitor::default());
        }
        match &mut self.detector {
            Detector::Level(level) => level,
            _ => unreachable!("set above"),
        }
    }
}
