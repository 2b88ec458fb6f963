//! What the scoring core reports: plain values, converted to protobuf by the
//! API layer. `None` means "no input yet" (absent, not zero).

use crate::domain::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthBand {
    Red,
    Yellow,
    Green,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Prospect,
    Standard,
    Vip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpsCategory {
    Detractor,
    Passive,
    Promoter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KanoClass {
    Unclassified,
    Basic,
    Desired,
    Surprise,
}

/// Loyalty index and its components, each 0..=100.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loyalty {
    pub index: Option<f64>,
    pub advocacy: Option<f64>,
    pub intent: Option<f64>,
    /// Customer: purchase activity. Scope: repeat-purchase rate.
    pub activity: Option<f64>,
    pub recovery: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CustomerReport {
    pub satisfaction_index: Option<f64>,
    pub loyalty: Loyalty,
    pub health_band: Option<HealthBand>,
    pub at_risk: bool,
    pub value: f64,
    pub tier: Tier,
    pub nps_category: Option<NpsCategory>,
    pub open_complaints: u32,
    pub survey_count: u64,
    pub interaction_count: u64,
    pub purchase_count: u64,
    pub last_event_at: Option<Millis>,
}

/// A provider gap measured on interactions (promotion, behavior).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeasuredGap {
    /// Decayed % of measured interactions that fell short.
    pub rate_percent: f64,
    /// Decayed mean of max(0, relative shortfall).
    pub mean_relative_shortfall: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DimensionReport {
    pub dimension: String,
    pub mean_expectation: Option<f64>,
    pub mean_perception: Option<f64>,
    pub total_gap: Option<f64>,
    pub promotion_gap: Option<MeasuredGap>,
    pub understanding_gap: Option<f64>,
    pub procedure_gap: Option<f64>,
    pub behavior_gap: Option<MeasuredGap>,
    pub perception_gap: Option<f64>,
    pub importance: f64,
    pub kano_class: KanoClass,
    pub rating_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComplaintReport {
    pub open: u64,
    pub responded_within_sla_percent: Option<f64>,
    pub resolved_within_sla_percent: Option<f64>,
    pub mean_hours_to_resolve: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScopeReport {
    pub satisfaction_index: Option<f64>,
    pub loyalty: Loyalty,
    pub csat_percent: Option<f64>,
    pub nps: Option<f64>,
    pub ces_mean: Option<f64>,
    pub ces_easy_percent: Option<f64>,
    pub complaints: ComplaintReport,
    pub response_count: u64,
    pub customer_count: u64,
    pub event_count: u64,
    pub dimensions: Vec<DimensionReport>,
    /// (dimension, importance x max(0, total gap)), positive weights only,
    /// descending.
    pub shortboard: Vec<(String, f64)>,
}
