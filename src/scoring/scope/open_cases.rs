//! A scope's open complaints, kept so that a report can count those past
//! their resolution deadline at any `as_of` without one entry per case.
//!
//! Each open case adds its TARP "open past SLA" rate, weighted at its
//! opening, to the bucket of its deadline *hour* (rounded up, so a bucket
//! counted as past due never holds a case that is not). Buckets whose hour
//! lies more than [`FOLD_LAG_HOURS`] behind the scope's latest event are
//! folded into one sum: a busy scope then holds at most the hours of its
//! longest SLA plus the lag, where one bucket per deadline minute grew with
//! every complaint left open (hundreds of KB per scope after a few million
//! events, rewritten on every commit).
//!
//! Both steps are exact for the sums: a [`Decayed`] is a sum of terms, so
//! retracting a case from the folded sum removes exactly its term, and a
//! case's place follows from its deadline and the fold point alone (the fold
//! point only moves forward). What they cost is resolution in `as_of`: a
//! case counts as past due from the end of its deadline hour, and a report
//! as of more than the lag before the scope's latest event counts every
//! folded case as past due.

use super::super::decay::Decayed;
use super::Delta;
use crate::domain::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MILLIS_PER_HOUR: Millis = 3_600_000;

/// How far behind the latest event a deadline hour is folded: reports as
/// of up to a day before the scope's latest event stay exact to the hour.
pub const FOLD_LAG_HOURS: i64 = 24;

/// The hour key of a deadline, rounded up.
pub fn deadline_hour(deadline_ms: Millis) -> i64 {
    let hour = deadline_ms.div_euclid(MILLIS_PER_HOUR);
    if deadline_ms.rem_euclid(MILLIS_PER_HOUR) > 0 {
        hour.saturating_add(1)
    } else {
        hour
    }
}

/// When the bucket of hour key `hour` is past due.
fn due_at(hour: i64) -> Millis {
    hour.saturating_mul(MILLIS_PER_HOUR)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenCases {
    /// Past-SLA rates by deadline hour, for hours after `folded_through`.
    by_deadline_hour: BTreeMap<i64, Decayed>,
    /// The cases of every hour up to `folded_through`, summed.
    folded: Decayed,
    folded_through: i64,
}

impl Default for OpenCases {
    fn default() -> Self {
        Self {
            by_deadline_hour: BTreeMap::new(),
            folded: Decayed::default(),
            folded_through: i64::MIN,
        }
    }
}

impl OpenCases {
    /// Buckets from minute keys (the layout of earlier builds): each goes to
    /// the hour its minute falls in, rounded up, which is where a retraction
    /// of one of its cases now looks.
    pub fn from_minute_buckets(by_minute: BTreeMap<i64, Decayed>, h_ms: f64) -> Self {
        let mut cases = Self::default();
        for (minute, bucket) in by_minute {
            let hour = deadline_hour(minute.saturating_mul(60_000));
            let slot = cases.by_deadline_hour.entry(hour).or_default();
            *slot = slot.merged(&bucket, h_ms);
        }
        cases
    }

    /// Open cases: each bucket counts the cases it holds.
    pub fn count(&self) -> u64 {
        self.by_deadline_hour
            .values()
            .fold(self.folded.count(), |n, bucket| {
                n.saturating_add(bucket.count())
            })
    }

    /// Adds or takes back one case due at `deadline` whose past-SLA rate is
    /// `rate`, weighted at `opened_at`.
    pub fn change(&mut self, delta: Delta, deadline: Millis, rate: f64, opened_at: Millis, h: f64) {
        let hour = deadline_hour(deadline);
        let bucket = if hour <= self.folded_through {
            &mut self.folded
        } else {
            self.by_deadline_hour.entry(hour).or_default()
        };
        match delta {
            Delta::Add => bucket.add(rate, 1.0, opened_at, h),
            Delta::Retract => bucket.retract(rate, 1.0, opened_at, h),
        }
        if bucket.is_empty() && hour > self.folded_through {
            self.by_deadline_hour.remove(&hour);
        }
    }

    /// Folds the buckets more than [`FOLD_LAG_HOURS`] behind an event at
    /// `at` (the scope calls this for every event it counts).
    pub fn event_seen(&mut self, at: Millis, h: f64) {
        let through = (at.div_euclid(MILLIS_PER_HOUR)).saturating_sub(FOLD_LAG_HOURS);
        if through <= self.folded_through {
            return;
        }
        self.folded_through = through;
        while let Some(entry) = self.by_deadline_hour.first_entry() {
            if *entry.key() > through {
                break;
            }
            self.folded = self.folded.merged(&entry.remove(), h);
        }
    }

    /// The past-SLA rates of the cases due by `as_of`, summed (with the
    /// folded ones, see the module doc).
    pub fn past_due(&self, as_of: Millis, h: f64) -> Decayed {
        self.by_deadline_hour
            .iter()
            .take_while(|(hour, _)| due_at(**hour) <= as_of)
            .fold(self.folded, |all, (_, bucket)| all.merged(bucket, h))
    }

    /// Deadline buckets held (folded ones aside).
    #[cfg(test)]
    pub fn bucket_count(&self) -> usize {
        self.by_deadline_hour.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: f64 = 30.0 * 86_400_000.0;
    const HOUR: Millis = MILLIS_PER_HOUR;
    const MINUTE: Millis = 60_000;

    fn mean_past_due(cases: &OpenCases, as_of: Millis) -> Option<f64> {
        cases.past_due(as_of, H).mean()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn a_case_is_past_due_from_the_end_of_its_deadline_hour() {
        let mut cases = OpenCases::default();
        cases.change(Delta::Add, 10 * HOUR + MINUTE, 46.0, 0, H);
        assert_eq!(mean_past_due(&cases, 10 * HOUR + MINUTE), None);
        assert_eq!(mean_past_due(&cases, 11 * HOUR - 1), None);
        assert!(close(mean_past_due(&cases, 11 * HOUR), 46.0));
        // A deadline on the hour is due at that hour.
        cases.change(Delta::Add, 5 * HOUR, 19.0, 0, H);
        assert!(close(mean_past_due(&cases, 5 * HOUR), 19.0));
        assert_eq!(cases.count(), 2);
    }

    #[test]
    fn folded_cases_count_as_past_due_and_retract_exactly() {
        let mut cases = OpenCases::default();
        cases.change(Delta::Add, 10 * HOUR, 46.0, 0, H);
        cases.change(Delta::Add, 12 * HOUR, 19.0, 0, H);
        cases.change(Delta::Add, 100 * HOUR, 70.0, 0, H);
        // An event a lag past hour 12 folds hours 10 and 12, not hour 100.
        cases.event_seen((12 + FOLD_LAG_HOURS) * HOUR, H);
        assert_eq!(cases.bucket_count(), 1);
        assert!(close(mean_past_due(&cases, 50 * HOUR), (46.0 + 19.0) / 2.0));
        // Resolving a folded case takes back exactly its term.
        cases.change(Delta::Retract, 12 * HOUR, 19.0, 0, H);
        assert!(close(mean_past_due(&cases, 50 * HOUR), 46.0));
        // A late-arriving case due in a folded hour goes to the fold.
        cases.change(Delta::Add, 11 * HOUR + 1, 54.0, 0, H);
        assert_eq!(cases.bucket_count(), 1);
        assert!(close(mean_past_due(&cases, 50 * HOUR), (46.0 + 54.0) / 2.0));
        cases.change(Delta::Retract, 10 * HOUR, 46.0, 0, H);
        cases.change(Delta::Retract, 11 * HOUR + 1, 54.0, 0, H);
        assert_eq!(mean_past_due(&cases, 50 * HOUR), None);
        assert!(close(mean_past_due(&cases, 100 * HOUR), 70.0));
        assert_eq!(cases.count(), 1);
    }

    #[test]
    fn the_same_cases_in_any_order_of_events_give_the_same_sums() {
        let steps: Vec<(Millis, Millis)> = (0..40).map(|i| (i * 7 * HOUR, i * 5 * HOUR)).collect();
        let mut forward = OpenCases::default();
        for &(deadline, opened) in &steps {
            forward.change(Delta::Add, deadline, 46.0 + opened as f64 / 1e7, opened, H);
            forward.event_seen(opened, H);
        }
        let mut backward = OpenCases::default();
        backward.event_seen(39 * 5 * HOUR, H);
        for &(deadline, opened) in steps.iter().rev() {
            backward.change(Delta::Add, deadline, 46.0 + opened as f64 / 1e7, opened, H);
        }
        for as_of in [0, 50 * HOUR, 150 * HOUR, 200 * HOUR, 400 * HOUR] {
            let (a, b) = (forward.past_due(as_of, H), backward.past_due(as_of, H));
            assert_eq!(a.count(), b.count(), "as of {as_of}");
            match (a.mean(), b.mean()) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "as of {as_of}"),
                (x, y) => assert_eq!(x, y, "as of {as_of}"),
            }
        }
    }

    #[test]
    fn buckets_stay_within_the_sla_and_the_lag_however_many_cases_stay_open() {
        let mut cases = OpenCases::default();
        let sla = 72 * HOUR;
        // A case opened every 10 minutes for 90 days, none resolved.
        for i in 0..(90 * 24 * 6) {
            let at = i * 10 * MINUTE;
            cases.event_seen(at, H);
            cases.change(Delta::Add, at + sla + MINUTE, 46.0, at, H);
        }
        assert_eq!(cases.count(), 90 * 24 * 6);
        assert!(
            cases.bucket_count() <= (72 + FOLD_LAG_HOURS + 1) as usize,
            "{} buckets",
            cases.bucket_count()
        );
        assert!(close(mean_past_due(&cases, 100 * 24 * HOUR), 46.0));
    }

    #[test]
    fn minute_buckets_of_earlier_builds_go_to_their_hour() {
        let mut by_minute = BTreeMap::new();
        for (minute, rate) in [(601, 46.0), (660, 19.0), (661, 70.0)] {
            let mut d = Decayed::default();
            d.add(rate, 1.0, 0, H);
            by_minute.insert(minute, d);
        }
        let cases = OpenCases::from_minute_buckets(by_minute, H);
        assert_eq!(cases.bucket_count(), 2);
        assert!(close(mean_past_due(&cases, 11 * HOUR), (46.0 + 19.0) / 2.0));
        // Retracting finds the case in the hour its deadline rounds up to.
        let mut cases = cases;
        cases.change(Delta::Retract, 661 * MINUTE, 70.0, 0, H);
        assert_eq!(cases.bucket_count(), 1);
        assert_eq!(cases.count(), 2);
    }
}
