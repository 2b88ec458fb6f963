//! The alert side of one group commit: feeds observations to the monitors
//! of the subjects an event touches, turns their signals into transitions
//! (FIRING / ACKNOWLEDGED / RESOLVED), and stages everything for the same
//! atomic batch as the events that caused it. Only transitions are written.

use std::collections::BTreeMap;

use super::monitors::{gap_slot, loaded, GapSlots, Monitors};
use super::rules::AlertSettings;
use super::transitions::{Reading, Transitions};
use super::Map;
use crate::domain::alert::{
    Alert, AlertKind, AlertSeverity, AlertState, ComplaintStage, GapKind, ScopeSubject, Subject,
};
use crate::domain::{DimensionSpec, Millis, Severity, MILLIS_PER_HOUR};
use crate::error::{Error, Result};
use crate::scoring::complaint::CaseView;
use crate::scoring::detector::Direction;
use crate::scoring::monitor::Detector;
use crate::scoring::response::advocacy_score;
use crate::scoring::{CustomerReport, ScopeOp, ScopeState, Tier};
use crate::store::{Store, WriteBatch};

pub(super) struct Alerting<'a> {
    settings: &'a AlertSettings,
    transitions: Transitions<'a>,
    monitors: Monitors,
    overdue_new: Vec<(Millis, String)>,
    overdue_done: Vec<Vec<u8>>,
    pruned: Vec<(Alert, bool)>,
    pruned_through: Option<u64>,
}

/// A scope's state after an op, read for a dimension's derived gaps.
struct Derived<'s> {
    store: &'s Store,
    scope: &'s str,
    state: &'s ScopeState,
}

impl Derived<'_> {
    /// Checks the understanding, procedure and perception gaps of `spec`'s
    /// dimension (whose monitors are `gaps`).
    fn check(
        self,
        log: &mut Transitions,
        s: &AlertSettings,
        gaps: &mut GapSlots,
        spec: &DimensionSpec,
        at: Millis,
    ) -> Result<()> {
        let Some(derived) = self.state.derived_gaps(spec) else {
            return Ok(());
        };
        if derived.rating_count < s.derived_min_ratings {
            return Ok(());
        }
        for (gap, value, threshold) in [
            (
                GapKind::Understanding,
                derived.understanding,
                s.understanding_threshold,
            ),
            (GapKind::Procedure, derived.procedure, s.procedure_threshold),
            (
                GapKind::Perception,
                derived.perception,
                s.perception_threshold,
            ),
        ] {
            if let Some(value) = value {
                let subject = ScopeSubject {
                    kind: AlertKind::GapWidening,
                    scope: self.scope,
                    dimension: Some(&spec.name),
                    gap: Some(gap),
                };
                let monitor = loaded(&mut gaps[gap_slot(gap)], self.store, &subject)?;
                let (fraction, count) = (s.resolve_fraction, derived.rating_count);
                log.level(monitor, subject, value, threshold, fraction, count, at)?;
            }
        }
        Ok(())
    }
}

impl<'a> Alerting<'a> {
    pub(super) fn new(
        store: &'a Store,
        settings: &'a AlertSettings,
        now: Millis,
        next_sequence: u64,
    ) -> Self {
        Self {
            settings,
            transitions: Transitions {
                store,
                now,
                next_sequence,
                latest: Map::default(),
                log: Vec::new(),
            },
            monitors: Monitors::default(),
            overdue_new: Vec::new(),
            overdue_done: Vec::new(),
            pruned: Vec::new(),
            pruned_through: None,
        }
    }

    /// Opens an alert on a monitored subject.
    fn open(
        &mut self,
        subject: Subject,
        severity: AlertSeverity,
        reading: Reading,
        message: String,
    ) -> Result<()> {
        let monitor = self.monitors.get(self.transitions.store, &subject)?;
        self.transitions
            .open(monitor, subject, severity, reading, message);
        Ok(())
    }

    /// Resolves the open alert of a monitored subject, if any.
    fn close(&mut self, subject: Subject, reading: Reading, message: String) -> Result<()> {
        let monitor = self.monitors.get(self.transitions.store, &subject)?;
        self.transitions.close(monitor, reading, message)
    }

    /// The monitors an event's own op feeds in one scope; `state` is the
    /// scope after the op.
    pub(super) fn scope_op(
        &mut self,
        scope: &str,
        state: &ScopeState,
        op: &ScopeOp,
        dimensions: &BTreeMap<String, DimensionSpec>,
    ) -> Result<()> {
        let (store, s) = (self.transitions.store, self.settings);
        let log = &mut self.transitions;
        let subject = |kind, dimension, gap| ScopeSubject {
            kind,
            scope,
            dimension,
            gap,
        };
        match op {
            ScopeOp::Survey(f) => {
                let slots = self.monitors.scopes.scope(scope);
                if let Some(sat) = f.satisfaction {
                    let subj = subject(AlertKind::SatisfactionDrop, None, None);
                    let monitor = loaded(&mut slots.satisfaction, store, &subj)?;
                    let params = &s.satisfaction_drop;
                    log.series(monitor, subj, sat, Direction::Down, params, f.at)?;
                }
                if let Some(nps) = f.nps {
                    let subj = subject(AlertKind::LoyaltyDrop, None, None);
                    let monitor = loaded(&mut slots.loyalty, store, &subj)?;
                    let x = advocacy_score(nps);
                    log.series(monitor, subj, x, Direction::Down, &s.loyalty_drop, f.at)?;
                }
                for r in &f.ratings {
                    let gaps = slots.gaps(&r.dimension);
                    let gap = f64::from(r.expectation) - f64::from(r.perception);
                    let total = GapKind::Total;
                    let subj = subject(AlertKind::GapWidening, Some(&r.dimension), Some(total));
                    let monitor = loaded(&mut gaps[gap_slot(total)], store, &subj)?;
                    log.series(monitor, subj, gap, Direction::Up, &s.gap_widening, f.at)?;
                    if let Some(spec) = dimensions.get(&r.dimension) {
                        Derived {
                            store,
                            scope,
                            state,
                        }
                        .check(log, s, gaps, spec, f.at)?;
                    }
                }
            }
            ScopeOp::Interaction(f) => {
                let Some(dimension) = f.dimension.as_deref() else {
                    return Ok(());
                };
                if f.service.is_none() && f.promise.is_none() {
                    return Ok(());
                }
                let gaps = self.monitors.scopes.scope(scope).gaps(dimension);
                if let Some(short) = f.service {
                    let behavior = GapKind::Behavior;
                    let subj = subject(AlertKind::GapWidening, Some(dimension), Some(behavior));
                    let monitor = loaded(&mut gaps[gap_slot(behavior)], store, &subj)?;
                    let x = short.relative;
                    log.series(monitor, subj, x, Direction::Up, &s.shortfall, f.at)?;
                    // The perception gap depends on the behavior rate.
                    if let Some(spec) = dimensions.get(dimension) {
                        Derived {
                            store,
                            scope,
                            state,
                        }
                        .check(log, s, gaps, spec, f.at)?;
                    }
                }
                if let Some(short) = f.promise {
                    let promotion = GapKind::Promotion;
                    let subj = subject(AlertKind::GapWidening, Some(dimension), Some(promotion));
                    let monitor = loaded(&mut gaps[gap_slot(promotion)], store, &subj)?;
                    let x = short.relative;
                    log.series(monitor, subj, x, Direction::Up, &s.shortfall, f.at)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// CHURN_RISK: fires when a customer becomes at risk, resolves when
    /// they are no longer. `open` is the customer's open alert, kept in the
    /// customer's record (no monitor read per event).
    pub(super) fn customer(
        &mut self,
        customer: &str,
        report: &CustomerReport,
        at: Millis,
        red_below: f64,
        open: &mut Option<u64>,
    ) -> Result<()> {
        // Called for every event: nothing is built unless the state changes.
        let transition = match (report.at_risk, *open) {
            (true, None) => None,
            (false, Some(id)) => Some(id),
            _ => return Ok(()),
        };
        let subject = Subject::Customer {
            customer: customer.to_string(),
        };
        let reading = Reading {
            value: report.loyalty.index,
            baseline: None,
            threshold: Some(red_below),
            observations: report.survey_count + report.interaction_count,
            event_at: at,
        };
        let loyalty = report
            .loyalty
            .index
            .map_or("no loyalty index".to_string(), |l| {
                format!("loyalty {l:.1}")
            });
        match transition {
            None => {
                let vip = report.tier == Tier::Vip;
                let severity = if vip {
                    AlertSeverity::Critical
                } else {
                    AlertSeverity::Warning
                };
                let why = if report.loyalty.index.is_some_and(|l| l < red_below) {
                    format!("{loyalty}, below {red_below}")
                } else {
                    format!("{loyalty}, recent cancellation")
                };
                let who = if vip { "VIP customer" } else { "customer" };
                let message = format!("{who} {customer} is at risk of churning ({why})");
                *open = Some(
                    self.transitions
                        .new_alert(subject, severity, reading, message),
                );
                Ok(())
            }
            Some(id) => {
                *open = None;
                let message = format!("customer {customer} is no longer at risk ({loyalty})");
                self.transitions.resolve_alert(id, reading, message)
            }
        }
    }

    /// After a complaint step: schedules the overdue checks of a newly
    /// opened case and resolves overdue alerts of stages now done.
    pub(super) fn complaint(
        &mut self,
        customer: &str,
        case: &str,
        view: &CaseView,
        opened_now: bool,
        at: Millis,
    ) -> Result<()> {
        let grace = (self.settings.overdue_grace_secs * 1000.0) as Millis;
        for (stage, done, deadline) in [
            (
                ComplaintStage::Response,
                view.responded,
                view.response_deadline,
            ),
            (
                ComplaintStage::Resolution,
                view.resolved,
                view.resolution_deadline,
            ),
        ] {
            let subject = Subject::Complaint {
                customer: customer.to_string(),
                case: case.to_string(),
                stage,
            };
            if done {
                if self
                    .monitors
                    .get(self.transitions.store, &subject)?
                    .state
                    .open
                    .is_some()
                {
                    let reading = Reading {
                        value: None,
                        baseline: None,
                        threshold: None,
                        observations: 1,
                        event_at: at,
                    };
                    let message = format!(
                        "complaint {case} of customer {customer} got its {}",
                        stage_noun(stage)
                    );
                    self.close(subject, reading, message)?;
                }
            } else if opened_now {
                let due = deadline.max(self.transitions.now.saturating_add(grace));
                self.overdue_new.push((due, subject.key()));
            }
        }
        Ok(())
    }

    /// A due overdue check: `view` is the case now (`None` if unknown).
    pub(super) fn overdue_check(
        &mut self,
        raw_key: Vec<u8>,
        subject_key: &str,
        view: Option<CaseView>,
    ) -> Result<()> {
        self.overdue_done.push(raw_key);
        let Some((customer, case, stage)) = Subject::parse_complaint_key(subject_key) else {
            return Ok(());
        };
        let Some(view) = view else {
            return Ok(());
        };
        let (done, deadline) = match stage {
            ComplaintStage::Response => (view.responded, view.response_deadline),
            ComplaintStage::Resolution => (view.resolved, view.resolution_deadline),
        };
        let subject = Subject::Complaint {
            customer: customer.clone(),
            case: case.clone(),
            stage,
        };
        if done
            || self
                .monitors
                .get(self.transitions.store, &subject)?
                .state
                .open
                .is_some()
        {
            return Ok(());
        }
        let late_hours = (self.transitions.now - deadline) as f64 / MILLIS_PER_HOUR;
        let sla_hours = (deadline - view.opened_at) as f64 / MILLIS_PER_HOUR;
        let severity = match view.severity {
            Severity::Major => AlertSeverity::Critical,
            Severity::Minor => AlertSeverity::Warning,
        };
        let reading = Reading {
            value: Some(late_hours),
            baseline: None,
            threshold: Some(sla_hours),
            observations: 1,
            event_at: deadline,
        };
        let message = format!(
            "complaint {case} of customer {customer} got no {} within its {sla_hours:.1} h SLA",
            stage_noun(stage)
        );
        self.open(subject, severity, reading, message)
    }

    /// Acknowledges an open alert; `rebaseline` makes its detector relearn.
    pub(super) fn acknowledge(&mut self, id: u64, note: String, rebaseline: bool) -> Result<Alert> {
        let Some(mut alert) = self.transitions.latest_alert(id)? else {
            return Err(Error::NotFound(format!(
                "no alert {id} (unknown or past retention)"
            )));
        };
        if !alert.state.is_open() {
            return Err(Error::FailedPrecondition(format!(
                "alert {id} is already resolved"
            )));
        }
        if rebaseline {
            let monitor = self.monitors.get(self.transitions.store, &alert.subject)?;
            match &mut monitor.state.detector {
                Detector::Cusum(c) => {
                    c.rebaseline();
                    monitor.dirty = true;
                }
                Detector::Level(l) => l.rebaseline(),
                Detector::Condition => {}
            }
        }
        alert.sequence = self.transitions.next();
        alert.state = AlertState::Acknowledged;
        alert.note = note;
        alert.updated_at = self.transitions.now;
        self.transitions.push(alert.clone());
        Ok(alert)
    }

    /// Retention: drops log transitions committed before the cutoff.
    pub(super) fn prune(&mut self, limit: usize) -> Result<()> {
        let cutoff = self
            .transitions
            .now
            .saturating_sub(self.settings.retention_ms());
        for old in self
            .transitions
            .store
            .alert_transitions_before(cutoff, limit)?
        {
            // A resolved alert whose last transition leaves the log is
            // forgotten; an open one stays listable.
            let forget = old.state == AlertState::Resolved;
            self.pruned_through = Some(old.sequence);
            self.pruned.push((old, forget));
        }
        Ok(())
    }

    /// Stages everything in `batch`; returns the new transitions and the
    /// next sequence.
    pub(super) fn finish(self, batch: &mut WriteBatch) -> Result<(Vec<Alert>, u64)> {
        self.monitors
            .try_for_each_changed(|key, state| Ok(batch.put_monitor(key, state)?))?;
        for (old, forget) in &self.pruned {
            batch.prune_alert(old, *forget);
        }
        if let Some(seq) = self.pruned_through {
            batch.put_alerts_pruned_through(seq)?;
        }
        let Transitions {
            log, next_sequence, ..
        } = self.transitions;
        for alert in &log {
            batch.put_alert(alert)?;
        }
        for raw in self.overdue_done {
            batch.delete(raw);
        }
        for (due, key) in &self.overdue_new {
            batch.put_overdue(*due, key);
        }
        Ok((log, next_sequence))
    }
}

fn stage_noun(stage: ComplaintStage) -> &'static str {
    match stage {
        ComplaintStage::Response => "first response",
        ComplaintStage::Resolution => "resolution",
    }
}
