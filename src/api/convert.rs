//! Scoring reports to protobuf messages.

use crate::domain::Millis;
use crate::proto;
use crate::scoring::{self as s, CustomerReport, ScopeReport};

pub fn timestamp(ms: Millis) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn loyalty(l: &s::Loyalty) -> proto::LoyaltyBreakdown {
    proto::LoyaltyBreakdown {
        index: l.index,
        advocacy: l.advocacy,
        intent: l.intent,
        activity: l.activity,
        recovery: l.recovery,
    }
}

fn band(b: Option<s::HealthBand>) -> proto::HealthBand {
    match b {
        None => proto::HealthBand::Unspecified,
        Some(s::HealthBand::Red) => proto::HealthBand::Red,
        Some(s::HealthBand::Yellow) => proto::HealthBand::Yellow,
        Some(s::HealthBand::Green) => proto::HealthBand::Green,
    }
}

pub fn tier(t: s::Tier) -> proto::Tier {
    match t {
        s::Tier::Prospect => proto::Tier::Prospect,
        s::Tier::Standard => proto::Tier::Standard,
        s::Tier::Vip => proto::Tier::Vip,
    }
}

fn nps(c: Option<s::NpsCategory>) -> proto::NpsCategory {
    match c {
        None => proto::NpsCategory::Unspecified,
        Some(s::NpsCategory::Detractor) => proto::NpsCategory::Detractor,
        Some(s::NpsCategory::Passive) => proto::NpsCategory::Passive,
        Some(s::NpsCategory::Promoter) => proto::NpsCategory::Promoter,
    }
}

fn kano(k: s::KanoClass) -> proto::KanoClass {
    match k {
        s::KanoClass::Unclassified => proto::KanoClass::Unspecified,
        s::KanoClass::Basic => proto::KanoClass::Basic,
        s::KanoClass::Desired => proto::KanoClass::Desired,
        s::KanoClass::Surprise => proto::KanoClass::Surprise,
    }
}

fn measured(g: &Option<s::MeasuredGap>) -> Option<proto::MeasuredGap> {
    g.as_ref().map(|g| proto::MeasuredGap {
        rate_percent: g.rate_percent,
        mean_relative_shortfall: g.mean_relative_shortfall,
        count: g.count,
    })
}

pub fn customer(id: &str, as_of: Millis, r: &CustomerReport) -> proto::CustomerScore {
    proto::CustomerScore {
        customer_id: id.to_string(),
        as_of_time: Some(timestamp(as_of)),
        satisfaction_index: r.satisfaction_index,
        loyalty: Some(loyalty(&r.loyalty)),
        health_band: band(r.health_band).into(),
        at_risk: r.at_risk,
        value: r.value,
        tier: tier(r.tier).into(),
        nps_category: nps(r.nps_category).into(),
        open_complaints: r.open_complaints,
        survey_count: r.survey_count,
        interaction_count: r.interaction_count,
        purchase_count: r.purchase_count,
        last_event_time: r.last_event_at.map(timestamp),
    }
}

pub fn scope(name: &str, as_of: Millis, r: &ScopeReport) -> proto::ScopeScore {
    proto::ScopeScore {
        scope: name.to_string(),
        as_of_time: Some(timestamp(as_of)),
        satisfaction_index: r.satisfaction_index,
        loyalty: Some(loyalty(&r.loyalty)),
        csat_percent: r.csat_percent,
        nps: r.nps,
        ces_mean: r.ces_mean,
        ces_easy_percent: r.ces_easy_percent,
        complaints: Some(proto::ComplaintFigures {
            open: r.complaints.open,
            responded_within_sla_percent: r.complaints.responded_within_sla_percent,
            resolved_within_sla_percent: r.complaints.resolved_within_sla_percent,
            mean_hours_to_resolve: r.complaints.mean_hours_to_resolve,
        }),
        response_count: r.response_count,
        customer_count: r.customer_count,
        event_count: r.event_count,
        dimensions: r
            .dimensions
            .iter()
            .map(|d| proto::DimensionScore {
                dimension: d.dimension.clone(),
                mean_expectation: d.mean_expectation,
                mean_perception: d.mean_perception,
                total_gap: d.total_gap,
                promotion_gap: measured(&d.promotion_gap),
                understanding_gap: d.understanding_gap,
                procedure_gap: d.procedure_gap,
                behavior_gap: measured(&d.behavior_gap),
                perception_gap: d.perception_gap,
                importance: d.importance,
                kano_class: kano(d.kano_class).into(),
                rating_count: d.rating_count,
            })
            .collect(),
        shortboard: r
            .shortboard
            .iter()
            .map(|(dimension, weight)| proto::ShortboardEntry {
                dimension: dimension.clone(),
                weight: *weight,
            })
            .collect(),
    }
}
