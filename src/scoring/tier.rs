//! The VIP threshold: a bounded, order-independent estimate of the
//! `vip_percentile` of purchasing customers' values.
//!
//! Every customer's value decays at the same rate, so two customers compare
//! the same at every instant. Comparing `log2(S) + t_ref/H` (the value
//! normalised to the epoch) therefore ranks customers without choosing an
//! evaluation time, and changes only when the customer's own purchases or
//! returns change. Values are bucketed at 1/16 of a doubling (≈4.4%
//! resolution), which bounds the histogram and makes it a function of the
//! set of customers' buckets only.

use super::decay::Decayed;
use super::params::Params;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Buckets per doubling of value.
const BUCKETS_PER_DOUBLING: f64 = 16.0;

/// Bucket of a customer whose net value is zero or negative (returns at
/// least cancel the purchases).
pub const NON_POSITIVE_BUCKET: i64 = i64::MIN;

/// The bucket of a decayed value sum; `gross` is the decayed sum of
/// absolute amounts, used to tell a real positive value from rounding
/// residue of purchases cancelled by returns.
pub fn value_bucket_of(value: &Decayed, gross: &Decayed, h_ms: f64) -> Option<i64> {
    let (s, t_ref) = value.sum_and_ref()?;
    let scale = gross.sum_and_ref().map_or(0.0, |(g, _)| g.abs());
    if s <= 1e-9 * scale || s <= 0.0 {
        return Some(NON_POSITIVE_BUCKET);
    }
    let normalised = s.log2() + t_ref as f64 / h_ms;
    // `as` saturates, so even absurd inputs give a bucket, never a panic.
    Some((BUCKETS_PER_DOUBLING * normalised).floor() as i64)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredHistogram")]
pub struct ValueHistogram {
    counts: BTreeMap<i64, u64>,
    /// The sum of `counts`, which the VIP threshold needs after every
    /// purchase (summing the buckets each time showed in the writer's
    /// profile). Not stored: the stored value is `counts` alone.
    #[serde(skip_serializing)]
    customers: u64,
}

/// The stored layout (what `ValueHistogram` serializes to).
#[derive(Deserialize)]
struct StoredHistogram {
    counts: BTreeMap<i64, u64>,
}

impl From<StoredHistogram> for ValueHistogram {
    fn from(stored: StoredHistogram) -> Self {
        let customers = stored.counts.values().sum();
        Self {
            counts: stored.counts,
            customers,
        }
    }
}

impl ValueHistogram {
    /// Moves one customer from bucket `old` to bucket `new` (`None` = not a
    /// purchasing customer). Removing from an empty bucket is ignored.
    pub fn replace(&mut self, old: Option<i64>, new: Option<i64>) {
        if old == new {
            return;
        }
        if let Some(b) = old {
            if let Some(c) = self.counts.get_mut(&b) {
                if *c > 0 {
                    *c -= 1;
                    self.customers = self.customers.saturating_sub(1);
                }
                if *c == 0 {
                    self.counts.remove(&b);
                }
            }
        }
        if let Some(b) = new {
            *self.counts.entry(b).or_insert(0) += 1;
            self.customers += 1;
        }
    }

    /// Purchasing customers counted.
    pub fn customers(&self) -> u64 {
        self.customers
    }

    /// The lowest VIP bucket, by nearest rank: with `N` customers the top
    /// `k = max(1, ⌈N·(1 − vip_percentile)⌉)` are VIP, and the threshold is
    /// the largest bucket `b` with at least `k` customers at or above it.
    /// Customers sharing the threshold bucket are all VIP, so ties can make
    /// the VIP set larger than `k`. 10 distinct customers at 0.8 → the top
    /// 2; a single customer is VIP. `None` with no purchasing customer.
    pub fn vip_threshold(&self, p: &Params) -> Option<i64> {
        let n = self.customers();
        if n == 0 {
            return None;
        }
        // The epsilon absorbs float noise such as 10·(1 − 0.8) = 1.9999….
        let share = (1.0 - p.vip_percentile).clamp(0.0, 1.0);
        let k = ((n as f64 * share - 1e-9).ceil() as u64).clamp(1, n);
        let mut at_or_above = 0;
        for (bucket, count) in self.counts.iter().rev() {
            at_or_above += count;
            if at_or_above >= k {
                return Some(*bucket);
            }
        }
        self.counts.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MILLIS_PER_DAY;

    const H: f64 = 30.0 * MILLIS_PER_DAY;

    fn sum(amounts: &[(f64, i64)]) -> (Decayed, Decayed) {
        let (mut v, mut g) = (Decayed::default(), Decayed::default());
        for &(a, t) in amounts {
            v.add(a, 1.0, t, H);
            g.add(a.abs(), 1.0, t, H);
        }
        (v, g)
    }

    #[test]
    fn buckets_compare_values_across_times() {
        // The same 100 bought one half-life later is worth twice as much at
        // any common time: its normalised log is one higher (16 buckets).
        let (a, ga) = sum(&[(100.0, 0)]);
        let (b, gb) = sum(&[(100.0, 30 * 86_400_000)]);
        let ba = value_bucket_of(&a, &ga, H);
        let bb = value_bucket_of(&b, &gb, H);
        // 16·log2(100) = 106.3 → 106; b: 16·(log2(100) + 1) = 122.3 → 122.
        assert_eq!(ba, Some(106));
        assert_eq!(bb, Some(122));
        let (c, gc) = sum(&[(50.0, 0), (-50.0, 0)]);
        assert_eq!(value_bucket_of(&c, &gc, H), Some(NON_POSITIVE_BUCKET));
        assert_eq!(
            value_bucket_of(&Decayed::default(), &Decayed::default(), H),
            None
        );
    }

    #[test]
    fn ten_customers_top_two_are_vip() {
        let p = Params::default();
        let mut h = ValueHistogram::default();
        for b in 1..=10 {
            h.replace(None, Some(b * 100));
        }
        assert_eq!(h.customers(), 10);
        // k = ⌈10·0.2⌉ = 2: buckets 1000 and 900 are VIP.
        assert_eq!(h.vip_threshold(&p), Some(900));
        // Five customers: k = ⌈1⌉ = 1 → only the top.
        let mut five = ValueHistogram::default();
        for b in 1..=5 {
            five.replace(None, Some(b));
        }
        assert_eq!(five.vip_threshold(&p), Some(5));
        // Eleven: k = ⌈2.2⌉ = 3.
        h.replace(None, Some(50));
        assert_eq!(h.vip_threshold(&p), Some(800));
    }

    #[test]
    fn the_stored_layout_is_the_counts_alone_and_the_total_is_rebuilt() {
        let mut h = ValueHistogram::default();
        for (old, new) in [
            (None, Some(3)),
            (None, Some(3)),
            (None, Some(-2)),
            (Some(3), None),
        ] {
            h.replace(old, new);
        }
        assert_eq!(h.customers(), 2);
        let bytes = postcard::to_allocvec(&h).unwrap();
        // What every earlier build wrote and reads: the map, nothing after.
        assert_eq!(bytes, postcard::to_allocvec(&h.counts).unwrap());
        let read: ValueHistogram = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read, h);
        assert_eq!(read.customers(), 2);
        // Removing a customer from a bucket it is not in changes nothing.
        let mut emptied = read.clone();
        emptied.replace(Some(7), None);
        assert_eq!(emptied, read);
    }

    #[test]
    fn single_and_empty() {
        let p = Params::default();
        let mut h = ValueHistogram::default();
        assert_eq!(h.vip_threshold(&p), None);
        h.replace(None, Some(-7));
        assert_eq!(h.vip_threshold(&p), Some(-7));
        // Moving and removing.
        h.replace(Some(-7), Some(3));
        assert_eq!(h.vip_threshold(&p), Some(3));
        h.replace(Some(3), None);
        assert_eq!(h.customers(), 0);
        assert_eq!(h, ValueHistogram::default());
        // Never underflows.
        h.replace(Some(3), None);
        assert_eq!(h.customers(), 0);
    }

    #[test]
    fn ties_share_the_threshold() {
        let p = Params::default();
        let mut h = ValueHistogram::default();
        for b in [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9] {
            h.replace(None, Some(b));
        }
        // k = ⌈11·0.2⌉ = 3 → bucket 9 holds three customers.
        assert_eq!(h.vip_threshold(&p), Some(9));
        h.replace(Some(9), Some(8));
        // Now 9 holds two, 8 two more: threshold 8 (four VIPs).
        assert_eq!(h.vip_threshold(&p), Some(8));
    }
}
