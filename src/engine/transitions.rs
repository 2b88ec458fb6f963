//! The alert transitions one group commit writes (FIRING, ACKNOWLEDGED,
//! RESOLVED), numbered in the alert log's sequence, and the detectors'
//! updates that cause them.

use super::monitors::Monitor;
use super::Map;
use crate::domain::alert::{
    Alert, AlertKind, AlertSeverity, AlertState, GapKind, ScopeSubject, Subject,
};
use crate::domain::Millis;
use crate::error::Result;
use crate::scoring::detector::{DetectorParams, Direction, Signal};
use crate::store::Store;

/// What a transition reports besides its state.
pub(super) struct Reading {
    pub(super) value: Option<f64>,
    pub(super) baseline: Option<f64>,
    pub(super) threshold: Option<f64>,
    pub(super) observations: u64,
    pub(super) event_at: Millis,
}

/// The transitions a commit writes, and the sequence they take.
pub(super) struct Transitions<'a> {
    pub(super) store: &'a Store,
    /// Wall clock of this commit.
    pub(super) now: Millis,
    pub(super) next_sequence: u64,
    /// Latest transition of alerts changed in this commit.
    pub(super) latest: Map<u64, Alert>,
    /// New transitions, in sequence order.
    pub(super) log: Vec<Alert>,
}

impl Transitions<'_> {
    pub(super) fn latest_alert(&self, id: u64) -> Result<Option<Alert>> {
        match self.latest.get(&id) {
            Some(a) => Ok(Some(a.clone())),
            None => Ok(self.store.alert(id)?),
        }
    }

    pub(super) fn push(&mut self, alert: Alert) {
        self.latest.insert(alert.id, alert.clone());
        self.log.push(alert);
    }

    pub(super) fn next(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// Writes a FIRING transition; returns the new alert's id.
    pub(super) fn new_alert(
        &mut self,
        subject: Subject,
        severity: AlertSeverity,
        reading: Reading,
        message: String,
    ) -> u64 {
        let sequence = self.next();
        let dimension = match &subject {
            Subject::Scope { dimension, .. } => dimension.clone(),
            _ => None,
        };
        self.push(Alert {
            id: sequence,
            sequence,
            subject,
            state: AlertState::Firing,
            severity,
            dimension,
            value: reading.value,
            baseline: reading.baseline,
            threshold: reading.threshold,
            observations: reading.observations,
            event_at: reading.event_at,
            updated_at: self.now,
            message,
            note: String::new(),
        });
        sequence
    }

    /// Writes a RESOLVED transition for alert `id`.
    pub(super) fn resolve_alert(
        &mut self,
        id: u64,
        reading: Reading,
        message: String,
    ) -> Result<()> {
        let Some(mut alert) = self.latest_alert(id)? else {
            return Ok(());
        };
        alert.sequence = self.next();
        alert.state = AlertState::Resolved;
        alert.value = reading.value.or(alert.value);
        alert.observations = reading.observations;
        alert.event_at = reading.event_at;
        alert.updated_at = self.now;
        alert.message = message;
        self.push(alert);
        Ok(())
    }

    /// Opens an alert on a monitored subject.
    pub(super) fn open(
        &mut self,
        monitor: &mut Monitor,
        subject: Subject,
        severity: AlertSeverity,
        reading: Reading,
        message: String,
    ) {
        let id = self.new_alert(subject, severity, reading, message);
        monitor.state.open = Some(id);
        monitor.dirty = true;
    }

    /// Resolves the open alert of a monitored subject, if any.
    pub(super) fn close(
        &mut self,
        monitor: &mut Monitor,
        reading: Reading,
        message: String,
    ) -> Result<()> {
        let Some(id) = monitor.state.open.take() else {
            return Ok(());
        };
        monitor.dirty = true;
        self.resolve_alert(id, reading, message)
    }

    /// Feeds one observation of a CUSUM-monitored series.
    pub(super) fn series(
        &mut self,
        monitor: &mut Monitor,
        subject: ScopeSubject<'_>,
        x: f64,
        direction: Direction,
        params: &DetectorParams,
        at: Millis,
    ) -> Result<()> {
        let cusum = monitor.state.cusum();
        let signal = cusum.observe(x, direction, params);
        monitor.dirty = true;
        let reading = Reading {
            value: cusum.level(),
            baseline: cusum.baseline(),
            threshold: cusum.threshold(direction, params),
            observations: cusum.observations(),
            event_at: at,
        };
        let open = monitor.state.open.is_some();
        match signal {
            Some(Signal::Fired) if !open => {
                let message = describe_change(subject, &reading, true);
                let severity = AlertSeverity::Warning;
                self.open(monitor, subject.to_subject(), severity, reading, message);
                Ok(())
            }
            Some(Signal::Resolved) if open => {
                let message = describe_change(subject, &reading, false);
                self.close(monitor, reading, message)
            }
            _ => Ok(()),
        }
    }

    /// Checks a derived gap against its threshold.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn level(
        &mut self,
        monitor: &mut Monitor,
        subject: ScopeSubject<'_>,
        value: f64,
        threshold: f64,
        fraction: f64,
        count: u64,
        at: Millis,
    ) -> Result<()> {
        let level = monitor.state.level();
        let before = level.clone();
        let signal = level.observe(value, threshold, fraction);
        monitor.dirty |= *level != before;
        let open = monitor.state.open.is_some();
        let reading = Reading {
            value: Some(value),
            baseline: None,
            threshold: Some(threshold),
            observations: count,
            event_at: at,
        };
        let dimension = subject.dimension.unwrap_or_default();
        let gap = subject.gap.map_or("", GapKind::tag);
        let scope = subject.scope;
        match signal {
            Some(Signal::Fired) if !open => {
                let message = format!(
                    "{dimension} {gap} gap in {scope} reached {value:.2} points (threshold {threshold})"
                );
                let severity = AlertSeverity::Warning;
                self.open(monitor, subject.to_subject(), severity, reading, message);
                Ok(())
            }
            Some(Signal::Resolved) if open => {
                let message = format!(
                    "{dimension} {gap} gap in {scope} back to {value:.2} points (below {:.2})",
                    threshold * fraction
                );
                self.close(monitor, reading, message)
            }
            _ => Ok(()),
        }
    }
}

/// "responsiveness gap in region=east widened from 0.4 to 1.3 points".
fn describe_change(subject: ScopeSubject<'_>, r: &Reading, fired: bool) -> String {
    let ScopeSubject {
        kind,
        scope,
        dimension,
        gap,
    } = subject;
    let from = r.baseline.map_or("?".into(), |b| format!("{b:.2}"));
    let to = r.value.map_or("?".into(), |v| format!("{v:.2}"));
    let what = match (kind, gap) {
        (AlertKind::GapWidening, Some(GapKind::Total)) => {
            format!("{} gap in {scope}", dimension.unwrap_or(""))
        }
        (AlertKind::GapWidening, Some(g)) => format!(
            "{} {} shortfall in {scope}",
            dimension.unwrap_or(""),
            g.tag()
        ),
        (AlertKind::SatisfactionDrop, _) => format!("satisfaction in {scope}"),
        (AlertKind::LoyaltyDrop, _) => format!("advocacy in {scope}"),
        _ => scope.to_string(),
    };
    let moved = match (kind, fired) {
        (AlertKind::GapWidening, true) => "widened",
        (_, true) => "dropped",
        (_, false) => "back in control",
    };
    let unit = if gap == Some(GapKind::Total) {
        " points"
    } else {
        ""
    };
    if fired {
        format!("{what} {moved} from {from} to {to}{unit}")
    } else {
        format!("{what} {moved} (baseline {from}{unit})")
    }
}
