//! Exponentially time-decayed sums and means, decayed by *event* time.
//!
//! A [`Decayed`] keeps `(S, W, t_ref)`. Adding `x` with weight `w` at time
//! `t` first rescales `S, W` by `2^-((t - t_ref)/H)` when `t > t_ref` (moving
//! `t_ref` to `t`), then adds `w·x·2^-((t_ref - t)/H)` to `S` and
//! `w·2^-((t_ref - t)/H)` to `W`.
//!
//! **Order independence.** After any sequence of adds, `t_ref` is the latest
//! time seen and `S = Σ wᵢ·xᵢ·2^-((t_ref - tᵢ)/H)` (likewise `W`): rescaling
//! multiplies every earlier term by the same factor, so the terms never
//! depend on when they arrived. Hence `S`, `W` and the mean `S/W` are
//! functions of the *set* of observations, up to float rounding. `retract`
//! subtracts the same term, so it is an exact inverse of `add` up to
//! rounding, and `add_to_sum` changes one term's value without touching its
//! weight.

use crate::domain::Millis;
use serde::{Deserialize, Serialize};

/// Weights at or below this are treated as "no data" by [`Decayed::mean`]:
/// `S/W` would be dominated by rounding.
const TINY_WEIGHT: f64 = 1e-300;

/// Values are clamped to this magnitude so sums of validated (finite but
/// unbounded) amounts cannot overflow to infinity and later become NaN.
const MAX_ABS_VALUE: f64 = 1e150;

/// `2^-(dt/H)` for `dt >= 0`; in `[0, 1]`. Underflows to 0 for `dt` far
/// beyond `H`, which simply drops the older contributions.
fn factor(dt_ms: f64, h_ms: f64) -> f64 {
    // A non-positive or non-finite half-life is refused by `Params::validate`;
    // treating it as "no decay" keeps this function total.
    if !(h_ms.is_finite() && h_ms > 0.0) {
        return 1.0;
    }
    (-(dt_ms / h_ms)).exp2()
}

/// Milliseconds from `earlier` to `later`, without i64 overflow.
fn span_ms(earlier: Millis, later: Millis) -> f64 {
    later.abs_diff(earlier) as f64
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decayed {
    s: f64,
    w: f64,
    t_ref: Millis,
    /// Observations currently added (adds minus retracts). Zero means empty:
    /// the first add then sets `t_ref`. Counting (rather than testing `W`
    /// against an epsilon) keeps a legitimately tiny, long-decayed weight
    /// alive after a retract.
    n: u64,
}

impl Decayed {
    /// Moves `t_ref` forward to `t` if `t` is later, rescaling `S` and `W`;
    /// returns the factor for a contribution at `t`.
    fn align(&mut self, t: Millis, h_ms: f64) -> f64 {
        if self.n == 0 {
            *self = Self {
                t_ref: t,
                ..Self::default()
            };
        }
        if t > self.t_ref {
            let f = factor(span_ms(self.t_ref, t), h_ms);
            self.s *= f;
            self.w *= f;
            self.t_ref = t;
            1.0
        } else {
            factor(span_ms(t, self.t_ref), h_ms)
        }
    }

    /// Adds observation `x` with `weight` at event time `t`.
    pub fn add(&mut self, x: f64, weight: f64, t: Millis, h_ms: f64) {
        if x.is_nan() || !weight.is_finite() {
            return;
        }
        let x = x.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE);
        let f = self.align(t, h_ms);
        self.s += weight * x * f;
        self.w += weight * f;
        self.n = self.n.saturating_add(1);
    }

    /// Removes an observation previously added with the same arguments.
    /// When the last observation is removed the state resets to empty, so
    /// rounding residue cannot linger as a phantom mean.
    pub fn retract(&mut self, x: f64, weight: f64, t: Millis, h_ms: f64) {
        if self.n == 0 || x.is_nan() || !weight.is_finite() {
            return;
        }
        let x = x.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE);
        let f = self.align(t, h_ms);
        self.s -= weight * x * f;
        self.w = (self.w - weight * f).max(0.0);
        self.n -= 1;
        if self.n == 0 {
            *self = Self::default();
        }
    }

    /// Adds `dx` to the value of an observation made at `t` without changing
    /// its weight: re-values an earlier observation (a first purchase that
    /// became a repeat). A no-op on an empty state, which has no
    /// observation to re-value.
    pub fn add_to_sum(&mut self, dx: f64, t: Millis, h_ms: f64) {
        if self.n == 0 || dx.is_nan() {
            return;
        }
        let dx = dx.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE);
        let f = self.align(t, h_ms);
        self.s += dx * f;
    }

    /// `S / W`, or `None` without (meaningful) weight.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0 && self.w > TINY_WEIGHT).then(|| self.s / self.w)
    }

    /// `S` decayed to time `t` when `t` is later than the last observation;
    /// `S` itself otherwise (a sum is not "un-decayed" into the past).
    pub fn sum_at(&self, t: Millis, h_ms: f64) -> f64 {
        if self.n == 0 {
            0.0
        } else if t > self.t_ref {
            self.s * factor(span_ms(self.t_ref, t), h_ms)
        } else {
            self.s
        }
    }

    /// Raw `S` at `t_ref`, and `t_ref`; `None` when empty.
    pub fn sum_and_ref(&self) -> Option<(f64, Millis)> {
        (self.n > 0).then_some((self.s, self.t_ref))
    }

    /// `W` at `t_ref`.
    pub fn weight(&self) -> f64 {
        self.w
    }

    /// Number of observations currently added.
    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The union of two sets of observations: both brought to the later
    /// `t_ref` and summed, exactly as if every observation had been added to
    /// one state.
    pub fn merged(&self, other: &Decayed, h_ms: f64) -> Decayed {
        if other.n == 0 {
            return *self;
        }
        if self.n == 0 {
            return *other;
        }
        let t_ref = self.t_ref.max(other.t_ref);
        let fa = factor(span_ms(self.t_ref, t_ref), h_ms);
        let fb = factor(span_ms(other.t_ref, t_ref), h_ms);
        Decayed {
            s: self.s * fa + other.s * fb,
            w: self.w * fa + other.w * fb,
            t_ref,
            n: self.n.saturating_add(other.n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MILLIS_PER_DAY;

    const H: f64 = 30.0 * MILLIS_PER_DAY;
    const DAY: Millis = 86_400_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn two_observations_one_half_life_apart() {
        // x=10 at day 0, x=40 at day 30, H = 30 d: weights 0.5 and 1.
        // S = 0.5·10 + 1·40 = 45, W = 1.5, mean = 30.
        let mut d = Decayed::default();
        d.add(10.0, 1.0, 0, H);
        d.add(40.0, 1.0, 30 * DAY, H);
        assert!(close(d.weight(), 1.5));
        assert!(close(d.mean().unwrap_or(f64::NAN), 30.0));
        // Reverse order gives the same state.
        let mut r = Decayed::default();
        r.add(40.0, 1.0, 30 * DAY, H);
        r.add(10.0, 1.0, 0, H);
        assert!(close(r.weight(), 1.5));
        assert!(close(r.mean().unwrap_or(f64::NAN), 30.0));
        // Sum at day 60: 45 · 0.5 = 22.5; at an earlier time S itself.
        assert!(close(d.sum_at(60 * DAY, H), 22.5));
        assert!(close(d.sum_at(0, H), 45.0));
    }

    #[test]
    fn weights_scale_contributions() {
        // x=0 w=3 at day 0 (→ 1.5), x=100 w=1 at day 30: mean = 100/2.5 = 40.
        let mut d = Decayed::default();
        d.add(100.0, 1.0, 30 * DAY, H);
        d.add(0.0, 3.0, 0, H);
        assert!(close(d.mean().unwrap_or(f64::NAN), 40.0));
    }

    #[test]
    fn retract_restores_and_empties() {
        let mut d = Decayed::default();
        d.add(10.0, 1.0, 0, H);
        let before = d;
        d.add(40.0, 1.0, 30 * DAY, H);
        d.retract(40.0, 1.0, 30 * DAY, H);
        // t_ref stays at day 30, but the mean is the earlier one.
        assert!(close(d.mean().unwrap_or(f64::NAN), 10.0));
        assert_eq!(d.count(), 1);
        d.retract(10.0, 1.0, 0, H);
        assert!(d.is_empty());
        assert_eq!(d.mean(), None);
        assert_eq!(d, Decayed::default());
        assert_ne!(before, d);
        // Retracting from empty is a no-op.
        d.retract(1.0, 1.0, 0, H);
        assert!(d.is_empty());
    }

    #[test]
    fn add_to_sum_revalues_without_weight() {
        // Purchases at day 0 (value 0) and day 30 (100); the day-0 one is
        // re-valued to 100: S = 0.5·100 + 100 = 150, W = 1.5, mean = 100.
        let mut d = Decayed::default();
        d.add(0.0, 1.0, 0, H);
        d.add(100.0, 1.0, 30 * DAY, H);
        d.add_to_sum(100.0, 0, H);
        assert!(close(d.mean().unwrap_or(f64::NAN), 100.0));
        let mut e = Decayed::default();
        e.add_to_sum(5.0, 0, H);
        assert!(e.is_empty());
    }

    #[test]
    fn sums_of_extreme_values_stay_finite() {
        // Validation accepts any finite amount: two of f64::MAX at the same
        // instant must not sum to infinity (and a later retract to NaN).
        let mut d = Decayed::default();
        d.add(f64::MAX, 1.0, 0, H);
        d.add(f64::MAX, 1.0, 0, H);
        assert!(d.sum_at(0, H).is_finite());
        assert!(d.mean().is_some_and(f64::is_finite));
        d.add_to_sum(f64::MAX, 0, H);
        d.retract(-f64::MAX, 1.0, 0, H);
        assert!(d.sum_at(0, H).is_finite());
        assert!(d.mean().is_some_and(f64::is_finite));
    }

    #[test]
    fn extreme_spans_stay_finite() {
        let mut d = Decayed::default();
        d.add(f64::MAX, 1.0, Millis::MIN, H);
        d.add(f64::MAX, 1.0, Millis::MAX, H);
        d.add(1.0, 1.0, Millis::MIN, H);
        let m = d.mean().unwrap_or(f64::NAN);
        assert!(m.is_finite());
        assert!(d.sum_at(Millis::MAX, H).is_finite());
        // Ten years later the old observation has fully underflowed.
        let mut y = Decayed::default();
        y.add(7.0, 1.0, 0, H);
        y.add(3.0, 1.0, 3650 * DAY, H);
        assert!(close(y.mean().unwrap_or(f64::NAN), 3.0));
    }

    #[test]
    fn merged_equals_single_state() {
        let mut a = Decayed::default();
        a.add(10.0, 1.0, 0, H);
        let mut b = Decayed::default();
        b.add(40.0, 1.0, 30 * DAY, H);
        let m = a.merged(&b, H);
        assert!(close(m.mean().unwrap_or(f64::NAN), 30.0));
        assert_eq!(m.count(), 2);
        assert_eq!(Decayed::default().merged(&a, H), a);
    }
}
