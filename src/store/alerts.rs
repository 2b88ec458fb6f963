//! The alert log (`A`), the latest state of each alert (`L`), monitor states
//! (`a`) and the overdue-check index (`o`). Written only in group commits,
//! together with the events that caused them.

use super::{codec, keys, Result, Store, WriteBatch};
use crate::domain::alert::{Alert, OpenAlerts};
use crate::scoring::monitor::MonitorState;

impl Store {
    /// Alert transitions with sequence `>= from`, in order, at most `limit`.
    pub fn alert_log(&self, from: u64, limit: usize) -> Result<Vec<Alert>> {
        let start = keys::numbered(keys::ALERT_LOG, from);
        let end = keys::numbered(keys::ALERT_LOG, u64::MAX);
        self.settled()
            .range(start..=end)
            .take(limit)
            .map(|kv| codec::decode(&kv?.1))
            .collect()
    }

    /// The highest sequence ever written to the alert log (0 when none).
    pub fn last_alert_sequence(&self) -> Result<u64> {
        let last = self
            .settled()
            .scan_prefix([keys::ALERT_LOG])
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| keys::number(&k));
        Ok(last.max(self.alerts_pruned_through()?))
    }

    /// The highest sequence removed by retention (0 when none): a resume
    /// from at or below it cannot be served.
    pub fn alerts_pruned_through(&self) -> Result<u64> {
        Ok(self
            .get(&keys::with_prefix(keys::META, keys::META_ALERTS_PRUNED))?
            .unwrap_or(0))
    }

    /// The latest transition of alert `id`.
    pub fn alert(&self, id: u64) -> Result<Option<Alert>> {
        self.get(&keys::numbered(keys::ALERT, id))
    }

    /// Alerts (latest transitions) with id `> after`, in id order; `keep`
    /// filters; at most `limit`.
    pub fn alerts(
        &self,
        after: u64,
        limit: usize,
        mut keep: impl FnMut(&Alert) -> bool,
    ) -> Result<Vec<Alert>> {
        let start = keys::numbered(keys::ALERT, after.saturating_add(1));
        let end = keys::numbered(keys::ALERT, u64::MAX);
        let mut out = Vec::new();
        for kv in self.settled().range(start..=end) {
            let alert: Alert = codec::decode(&kv?.1)?;
            if keep(&alert) {
                out.push(alert);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The open alerts (FIRING or ACKNOWLEDGED) by kind: kept in meta by
    /// every commit that opens or resolves one; in a dir whose builds kept
    /// an open-alert index instead (`O`), counted from that index.
    pub fn open_alerts(&self) -> Result<OpenAlerts> {
        if let Some(open) = self.get(&keys::with_prefix(keys::META, keys::META_OPEN_ALERTS))? {
            return Ok(open);
        }
        let mut open = OpenAlerts::default();
        for kv in self.settled().scan_prefix([keys::OPEN_ALERT]) {
            open.open(codec::decode(&kv?.1)?);
        }
        Ok(open)
    }

    pub fn monitor(&self, subject_key: &str) -> Result<Option<MonitorState>> {
        self.get(&keys::with_prefix(keys::MONITOR, subject_key))
    }

    /// Overdue checks due at or before `now`: (raw key, due, subject key).
    pub fn overdue_due(&self, now: i64, limit: usize) -> Result<Vec<(Vec<u8>, i64, String)>> {
        let mut out = Vec::new();
        for kv in self.settled().scan_prefix([keys::OVERDUE]).take(limit) {
            let (k, _) = kv?;
            let (due, subject) = keys::parse_overdue(&k);
            if due > now {
                break;
            }
            out.push((k.to_vec(), due, subject));
        }
        Ok(out)
    }

    /// The oldest log transitions committed before `cutoff`, at most
    /// `limit`, for retention. Stops at the first newer one, so a check with
    /// nothing to prune reads one entry.
    pub fn alert_transitions_before(&self, cutoff: i64, limit: usize) -> Result<Vec<Alert>> {
        let mut out = Vec::new();
        for kv in self.settled().scan_prefix([keys::ALERT_LOG]).take(limit) {
            let alert: Alert = codec::decode(&kv?.1)?;
            if alert.updated_at >= cutoff {
                break;
            }
            out.push(alert);
        }
        Ok(out)
    }
}

impl WriteBatch {
    /// Appends a transition to the log and makes it the alert's latest.
    pub fn put_alert(&mut self, alert: &Alert) -> Result<()> {
        self.put(
            keys::numbered(keys::ALERT_LOG, alert.sequence).to_vec(),
            alert,
        )?;
        self.put(keys::numbered(keys::ALERT, alert.id).to_vec(), alert)
    }

    pub fn put_open_alerts(&mut self, open: &OpenAlerts) -> Result<()> {
        self.put(keys::with_prefix(keys::META, keys::META_OPEN_ALERTS), open)
    }

    /// Removes a transition from the log (retention); `forget_alert` also
    /// removes the alert's latest state (a resolved alert past retention).
    pub fn prune_alert(&mut self, alert: &Alert, forget_alert: bool) {
        self.delete(keys::numbered(keys::ALERT_LOG, alert.sequence).to_vec());
        if forget_alert {
            self.delete(keys::numbered(keys::ALERT, alert.id).to_vec());
        }
    }

    pub fn put_alerts_pruned_through(&mut self, sequence: u64) -> Result<()> {
        self.put(
            keys::with_prefix(keys::META, keys::META_ALERTS_PRUNED),
            &sequence,
        )
    }

    pub fn put_monitor(&mut self, subject_key: &str, state: &MonitorState) -> Result<()> {
        self.put(keys::with_prefix(keys::MONITOR, subject_key), state)
    }

    pub fn put_overdue(&mut self, due: i64, subject_key: &str) {
        self.writes.push((
            keys::overdue(due, subject_key).into(),
            Some(Default::default()),
        ));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key.into(), None));
    }
}
