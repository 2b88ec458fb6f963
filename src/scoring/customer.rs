//! Customer state: satisfaction, loyalty, value and tier of one customer.
//!
//! Everything kept is either a decayed sum (order-independent by
//! construction, see `decay`) or a min/max/top-K over the events seen
//! (order-independent because a set's minimum or top K do not depend on the
//! order its elements arrive in). Figures that depend on the report time
//! (activity, open-past-SLA complaints, cancellation window) are computed in
//! [`CustomerState::report`].

use super::complaint::Complaints;
use super::decay::Decayed;
use super::dimension::Shortfall;
use super::event_tag::EventTag;
use super::params::Params;
use super::report::{CustomerReport, HealthBand, Loyalty, Tier};
use super::response::{health_band, nps_category, response_satisfaction, weighted_mean};
use super::scope::{InteractionFacts, ScopeOp, ScopeUpdate, SurveyFacts, Target};
use super::tier::{value_bucket_of, NON_POSITIVE_BUCKET};
use super::top_k::TopK;
use crate::domain::{
    Body, Event, Interaction, InteractionKind, Measure, Millis, Survey, MILLIS_PER_DAY,
};
use serde::{Deserialize, Serialize};

/// Purchases kept for the purchase rhythm: the most recent by (time, event
/// tag).
pub const RHYTHM_PURCHASES: usize = 32;
/// Cancellations kept for the at-risk window: the most recent.
pub const CANCELLATIONS_KEPT: usize = 16;
/// Shortest gap that counts towards the purchase rhythm `g`: purchases
/// closer than this are one basket split in several events (and a zero `g`
/// would divide by zero).
const MIN_PURCHASE_GAP_MS: f64 = 3_600_000.0;

/// The earliest purchase by (time, tag), and the scopes it counted in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FirstPurchase {
    at: Millis,
    event: EventTag,
    scopes: Vec<String>,
}

/// The latest NPS answer by (time, event tag).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LatestNps {
    at: Millis,
    event: EventTag,
    nps: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    satisfaction: Decayed,
    /// 10·nps.
    advocacy: Decayed,
    /// 10·repurchase.
    intent: Decayed,
    /// Purchases minus returns.
    value: Decayed,
    /// Purchases plus returns: the scale against which a net value of ~0 is
    /// recognised as rounding residue.
    gross: Decayed,
    recent_purchases: TopK<(Millis, EventTag)>,
    first_purchase: Option<FirstPurchase>,
    complaints: Complaints,
    cancellations: TopK<Millis>,
    latest_nps: Option<LatestNps>,
    surveys: u64,
    interactions: u64,
    purchases: u64,
    last_event_at: Option<Millis>,
}

impl CustomerState {
    /// Applies one event; returns what the scopes must do. The first update
    /// is always the event's own op (to its scopes), then any corrections.
    pub fn apply(&mut self, ev: &Event, p: &Params) -> Vec<ScopeUpdate> {
        self.last_event_at = Some(self.last_event_at.map_or(ev.at, |t| t.max(ev.at)));
        match &ev.body {
            Body::Survey(s) => vec![self.survey(ev, s, p)],
            Body::Interaction(i) => self.interaction(ev, i, p),
        }
    }

    fn survey(&mut self, ev: &Event, s: &Survey, p: &Params) -> ScopeUpdate {
        let h = p.half_life_ms();
        self.surveys += 1;
        let satisfaction = response_satisfaction(s);
        if let Some(sat) = satisfaction {
            self.satisfaction.add(sat, 1.0, ev.at, h);
        }
        if let Some(nps) = s.nps {
            self.advocacy.add(10.0 * f64::from(nps), 1.0, ev.at, h);
            let event = EventTag::of(&ev.id);
            let later = self
                .latest_nps
                .as_ref()
                .is_none_or(|l| (ev.at, event) > (l.at, l.event));
            if later {
                self.latest_nps = Some(LatestNps {
                    at: ev.at,
                    event,
                    nps,
                });
            }
        }
        if let Some(r) = s.repurchase {
            self.intent.add(10.0 * f64::from(r), 1.0, ev.at, h);
        }
        ScopeUpdate {
            target: Target::EventScopes,
            op: ScopeOp::Survey(SurveyFacts {
                at: ev.at,
                satisfaction,
                csat: s.csat,
                nps: s.nps,
                ces: s.ces,
                repurchase: s.repurchase,
                ratings: s.ratings.clone(),
            }),
        }
    }

    fn interaction(&mut self, ev: &Event, i: &Interaction, p: &Params) -> Vec<ScopeUpdate> {
        let h = p.half_life_ms();
        self.interactions += 1;
        let mut corrections = Vec::new();
        let mut purchase = None;
        let amount = i.amount.unwrap_or(0.0);
        match i.kind {
            InteractionKind::Purchase => {
                self.purchases += 1;
                self.value.add(amount, 1.0, ev.at, h);
                self.gross.add(amount, 1.0, ev.at, h);
                let event = EventTag::of(&ev.id);
                self.recent_purchases
                    .insert((ev.at, event), RHYTHM_PURCHASES);
                purchase = Some(self.note_purchase(ev, event, &mut corrections));
            }
            InteractionKind::Return => {
                self.value.add(-amount, 1.0, ev.at, h);
                self.gross.add(amount, 1.0, ev.at, h);
            }
            InteractionKind::Cancellation => {
                self.cancellations.insert(ev.at, CANCELLATIONS_KEPT);
            }
            kind if kind.is_complaint() => corrections = self.complaints.apply(ev, i, p),
            _ => {}
        }
        let measured =
            |m: &Option<Measure>| m.as_ref().map(|m| Shortfall::of(m, i.lower_is_better));
        let own = ScopeUpdate {
            target: Target::EventScopes,
            op: ScopeOp::Interaction(InteractionFacts {
                at: ev.at,
                dimension: i.dimension.clone(),
                service: measured(&i.service),
                promise: measured(&i.promise),
                purchase,
            }),
        };
        let mut updates = Vec::with_capacity(1 + corrections.len());
        updates.push(own);
        updates.extend(corrections);
        updates
    }

    /// Whether this purchase is a repeat (the customer has an earlier one by
    /// (time, tag)). A purchase earlier than the recorded first one takes its
    /// place, and the old first is re-valued as a repeat in its own scopes.
    fn note_purchase(
        &mut self,
        ev: &Event,
        event: EventTag,
        corrections: &mut Vec<ScopeUpdate>,
    ) -> bool {
        if let Some(first) = &self.first_purchase {
            if (ev.at, event) > (first.at, first.event) {
                return true;
            }
            corrections.push(ScopeUpdate {
                target: Target::Scopes(first.scopes.clone()),
                op: ScopeOp::PurchaseBecameRepeat { at: first.at },
            });
        }
        self.first_purchase = Some(FirstPurchase {
            at: ev.at,
            event,
            scopes: ev.scopes(),
        });
        false
    }

    /// The customer's value bucket for the VIP histogram (see `tier`);
    /// `None` before the first purchase.
    pub fn value_bucket(&self, p: &Params) -> Option<i64> {
        if self.purchases == 0 {
            return None;
        }
        value_bucket_of(&self.value, &self.gross, p.half_life_ms())
    }

    /// One of the customer's complaint cases.
    pub fn complaint(&self, case_id: &str) -> Option<super::complaint::CaseView> {
        self.complaints.case(case_id)
    }

    pub fn open_complaints(&self) -> u32 {
        self.complaints.open_count()
    }

    pub fn last_event_at(&self) -> Option<Millis> {
        self.last_event_at
    }

    /// Purchase rhythm `g` in ms: the decayed mean gap between consecutive
    /// kept purchases, each gap weighted at its later purchase's time.
    fn purchase_gap_ms(&self, p: &Params) -> f64 {
        let h = p.half_life_ms();
        let mut gaps = Decayed::default();
        let times: Vec<Millis> = self.recent_purchases.iter().map(|(t, _)| *t).collect();
        for pair in times.windows(2) {
            if let [a, b] = pair {
                let gap = b.abs_diff(*a) as f64;
                // Purchases within the hour are one basket, not a rhythm: a
                // zero gap would make the customer overdue the next day.
                if gap >= MIN_PURCHASE_GAP_MS {
                    gaps.add(gap, 1.0, *b, h);
                }
            }
        }
        gaps.mean()
            .unwrap_or(p.default_purchase_gap_days * MILLIS_PER_DAY)
    }

    /// Activity `100·2^-overdue` at `as_of`; `None` without purchases.
    fn activity(&self, as_of: Millis, p: &Params) -> Option<f64> {
        let (last, _) = self.recent_purchases.last()?;
        let g = self.purchase_gap_ms(p);
        let since = as_of.saturating_sub(*last).max(0) as f64;
        let overdue = (since - g).max(0.0) / g;
        Some(100.0 * (-overdue).exp2())
    }

    fn cancelled_within(&self, as_of: Millis, h_ms: f64) -> bool {
        self.cancellations
            .last_at_most(&as_of)
            .is_some_and(|c| (as_of.saturating_sub(*c) as f64) < h_ms)
    }

    pub fn report(&self, as_of: Millis, p: &Params, vip_threshold: Option<i64>) -> CustomerReport {
        let h = p.half_life_ms();
        let w = &p.loyalty_weights;
        let mut loyalty = Loyalty {
            index: None,
            advocacy: self.advocacy.mean(),
            intent: self.intent.mean(),
            activity: self.activity(as_of, p),
            recovery: self.complaints.recovery(as_of, h),
        };
        loyalty.index = weighted_mean(&[
            (loyalty.advocacy, w.advocacy),
            (loyalty.intent, w.intent),
            (loyalty.activity, w.activity),
            (loyalty.recovery, w.recovery),
        ]);
        let health = loyalty.index.map(|i| health_band(i, p));
        let tier = match self.value_bucket(p) {
            None => Tier::Prospect,
            Some(b) if b != NON_POSITIVE_BUCKET && vip_threshold.is_some_and(|t| b >= t) => {
                Tier::Vip
            }
            Some(_) => Tier::Standard,
        };
        CustomerReport {
            satisfaction_index: self.satisfaction.mean(),
            loyalty,
            health_band: health,
            at_risk: health == Some(HealthBand::Red) || self.cancelled_within(as_of, h),
            value: self.value.sum_at(as_of, h),
            tier,
            nps_category: self.latest_nps.as_ref().map(|l| nps_category(l.nps)),
            open_complaints: self.open_complaints(),
            survey_count: self.surveys,
            interaction_count: self.interactions,
            purchase_count: self.purchases,
            last_event_at: self.last_event_at,
        }
    }
}
