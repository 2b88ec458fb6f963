//! Validated domain events: what the engine and the scoring core work on.
//! Every value here has passed `validate`; code downstream may rely on the
//! documented ranges.

pub mod alert;
pub mod validate;

use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

pub const MILLIS_PER_HOUR: f64 = 3_600_000.0;
pub const MILLIS_PER_DAY: f64 = 86_400_000.0;

/// The scope every event counts in.
pub const SCOPE_ALL: &str = "all";

/// One validated event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub customer: String,
    pub at: Millis,
    /// Attribute pairs sorted by key, keys unique.
    pub attributes: Vec<(String, String)>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Survey(Survey),
    Interaction(Interaction),
}

/// A survey response; at least one field is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Survey {
    /// 1..=5
    pub csat: Option<u8>,
    /// 0..=10
    pub nps: Option<u8>,
    /// 1..=7
    pub ces: Option<u8>,
    /// 0..=10
    pub repurchase: Option<u8>,
    /// At most one per dimension, each dimension configured.
    pub ratings: Vec<Rating>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub dimension: String,
    /// 1..=7
    pub expectation: u8,
    /// 1..=7
    pub perception: u8,
    /// 1..=7
    pub importance: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InteractionKind {
    Purchase,
    Return,
    Service,
    ComplaintOpened,
    ComplaintResponded,
    ComplaintResolved,
    FollowUp,
    Cancellation,
}

impl InteractionKind {
    pub fn is_complaint(self) -> bool {
        matches!(
            self,
            Self::ComplaintOpened | Self::ComplaintResponded | Self::ComplaintResolved
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    #[default]
    Minor,
    Major,
}

/// A target and what was observed against it (`standard`/`actual` or
/// `promised`/`delivered`). Both finite.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub target: f64,
    pub observed: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub kind: InteractionKind,
    /// Finite and >= 0; always set for PURCHASE and RETURN.
    pub amount: Option<f64>,
    /// Set (and configured) whenever `service` or `promise` is set.
    pub dimension: Option<String>,
    /// Always set for complaint kinds.
    pub case_id: Option<String>,
    pub severity: Severity,
    /// `standard` vs `actual`.
    pub service: Option<Measure>,
    /// `promised` vs `delivered`.
    pub promise: Option<Measure>,
    pub lower_is_better: bool,
}

impl Interaction {
    /// An interaction that states only its kind: what validation makes of
    /// a request that sets nothing else (severity MINOR, lower is better).
    pub fn of_kind(kind: InteractionKind) -> Self {
        Self {
            kind,
            amount: None,
            dimension: None,
            case_id: None,
            severity: Severity::Minor,
            service: None,
            promise: None,
            lower_is_better: true,
        }
    }
}

impl Event {
    /// The scopes this event counts in: `all`, then each `key=value`.
    pub fn scopes(&self) -> Vec<String> {
        std::iter::once(SCOPE_ALL.to_string())
            .chain(self.attributes.iter().map(|(k, v)| scope_name(k, v)))
            .collect()
    }
}

pub fn scope_name(key: &str, value: &str) -> String {
    // Per attribute of every event: `format!` showed in the writer's
    // profile (3%), three appends do not.
    let mut name = String::with_capacity(key.len() + 1 + value.len());
    name.push_str(key);
    name.push('=');
    name.push_str(value);
    name
}

/// A configured service dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimensionSpec {
    pub name: String,
    pub display_name: String,
    /// Management's predicted expectation M_d (1..=7).
    pub predicted_expectation: Option<f64>,
    /// Designed service standard level S_d (1..=7).
    pub standard_level: Option<f64>,
}

impl DimensionSpec {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            display_name: name.to_string(),
            predicted_expectation: None,
            standard_level: None,
        }
    }
}

/// The SERVQUAL five, configured on a new data dir.
pub const DEFAULT_DIMENSIONS: [&str; 5] = [
    "tangibles",
    "reliability",
    "responsiveness",
    "assurance",
    "empathy",
];
