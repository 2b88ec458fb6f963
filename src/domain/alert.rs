//! Alerts as the engine writes them to the alert log and the API serves them.

use serde::{Deserialize, Serialize};

use super::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertKind {
    GapWidening,
    SatisfactionDrop,
    LoyaltyDrop,
    ChurnRisk,
    ComplaintOverdue,
}

impl AlertKind {
    /// Short stable tag used in monitor keys.
    pub fn tag(self) -> &'static str {
        match self {
            Self::GapWidening => "gap",
            Self::SatisfactionDrop => "sat",
            Self::LoyaltyDrop => "loy",
            Self::ChurnRisk => "churn",
            Self::ComplaintOverdue => "overdue",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertState {
    Firing,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Resolved)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GapKind {
    Total,
    Promotion,
    Understanding,
    Procedure,
    Behavior,
    Perception,
}

impl GapKind {
    pub fn tag(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Promotion => "promotion",
            Self::Understanding => "understanding",
            Self::Procedure => "procedure",
            Self::Behavior => "behavior",
            Self::Perception => "perception",
        }
    }
}

/// What one monitor watches: the key of "one open alert per key".
/// (`Hash` by hand: a [`ScopeSubject`] must hash like the `Scope` it views.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    /// A scope-wide series (GAP_WIDENING with its dimension and gap kind,
    /// SATISFACTION_DROP and LOYALTY_DROP without).
    Scope {
        kind: AlertKind,
        scope: String,
        dimension: Option<String>,
        gap: Option<GapKind>,
    },
    /// CHURN_RISK of one customer.
    Customer { customer: String },
    /// COMPLAINT_OVERDUE of one case and stage.
    Complaint {
        customer: String,
        case: String,
        stage: ComplaintStage,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ComplaintStage {
    Response,
    Resolution,
}

impl Subject {
    pub fn kind(&self) -> AlertKind {
        match self {
            Self::Scope { kind, .. } => *kind,
            Self::Customer { .. } => AlertKind::ChurnRisk,
            Self::Complaint { .. } => AlertKind::ComplaintOverdue,
        }
    }

    /// The customer, case and stage of a COMPLAINT_OVERDUE key.
    pub fn parse_complaint_key(key: &str) -> Option<(String, String, ComplaintStage)> {
        let mut parts = key.split('\0');
        if parts.next()? != "overdue" {
            return None;
        }
        let customer = parts.next()?.to_string();
        let case = parts.next()?.to_string();
        let stage = match parts.next()? {
            "response" => ComplaintStage::Response,
            "resolution" => ComplaintStage::Resolution,
            _ => return None,
        };
        Some((customer, case, stage))
    }

    /// The monitor's storage key: readable, unique per subject. Parts never
    /// contain NUL (validation rejects control characters).
    pub fn key(&self) -> String {
        match self {
            Self::Scope { .. } => self.as_scope().expect("a scope subject").key(),
            Self::Customer { customer } => nul_joined(&["churn", customer]),
            Self::Complaint {
                customer,
                case,
                stage,
            } => nul_joined(&[
                "overdue",
                customer,
                case,
                match stage {
                    ComplaintStage::Response => "response",
                    ComplaintStage::Resolution => "resolution",
                },
            ]),
        }
    }
}

/// `parts` joined by NUL, allocated once. Monitor keys are built for every
/// monitor a commit loads and again when it is written: with `format!`,
/// 8% of a unary writer's samples were in `core::fmt`.
fn nul_joined(parts: &[&str]) -> String {
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut key = String::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push('\0');
        }
        key.push_str(part);
    }
    key
}

impl std::hash::Hash for Subject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Self::Scope { .. } => self.as_scope().expect("a scope subject").hash(state),
            Self::Customer { customer } => (1u8, customer).hash(state),
            Self::Complaint {
                customer,
                case,
                stage,
            } => (2u8, customer, case, stage).hash(state),
        }
    }
}

impl Subject {
    /// A scope subject by reference; `None` for the other kinds.
    pub fn as_scope(&self) -> Option<ScopeSubject<'_>> {
        match self {
            Self::Scope {
                kind,
                scope,
                dimension,
                gap,
            } => Some(ScopeSubject {
                kind: *kind,
                scope,
                dimension: dimension.as_deref(),
                gap: *gap,
            }),
            _ => None,
        }
    }
}

/// A [`Subject::Scope`] by reference. The writer looks monitors up by it for
/// every observation of every event; building the owned subject each time
/// (two strings) put a third of the stream writer's allocation samples
/// under the alert monitors, with the dimension reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeSubject<'a> {
    pub kind: AlertKind,
    pub scope: &'a str,
    pub dimension: Option<&'a str>,
    pub gap: Option<GapKind>,
}

/// The owned subject a monitor is stored under, from the one it was looked
/// up by (`hashbrown`'s `entry_ref` inserts through it).
impl From<&Subject> for Subject {
    fn from(subject: &Subject) -> Self {
        subject.clone()
    }
}

impl ScopeSubject<'_> {
    pub fn to_subject(self) -> Subject {
        Subject::Scope {
            kind: self.kind,
            scope: self.scope.to_string(),
            dimension: self.dimension.map(str::to_string),
            gap: self.gap,
        }
    }

    /// [`Subject::key`] of the subject it views.
    pub fn key(self) -> String {
        nul_joined(&[
            self.kind.tag(),
            self.scope,
            self.dimension.unwrap_or(""),
            self.gap.map_or("", GapKind::tag),
        ])
    }

    /// Whether it views `subject`.
    pub fn views(self, subject: &Subject) -> bool {
        subject.as_scope() == Some(self)
    }
}

impl std::hash::Hash for ScopeSubject<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (0u8, self.kind, self.scope, self.dimension, self.gap).hash(state);
    }
}

/// One alert as of one transition; the log stores one per transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The sequence of the FIRING transition that opened it.
    pub id: u64,
    /// The sequence of this transition.
    pub sequence: u64,
    pub subject: Subject,
    pub state: AlertState,
    pub severity: AlertSeverity,
    pub dimension: Option<String>,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub threshold: Option<f64>,
    pub observations: u64,
    /// Event time of the observation behind the transition.
    pub event_at: Millis,
    /// Wall-clock commit time.
    pub updated_at: Millis,
    pub message: String,
    pub note: String,
}

impl Alert {
    pub fn kind(&self) -> AlertKind {
        self.subject.kind()
    }

    pub fn scope(&self) -> Option<&str> {
        match &self.subject {
            Subject::Scope { scope, .. } => Some(scope),
            _ => None,
        }
    }

    pub fn gap(&self) -> Option<GapKind> {
        match &self.subject {
            Subject::Scope { gap, .. } => *gap,
            _ => None,
        }
    }

    pub fn customer(&self) -> Option<&str> {
        match &self.subject {
            Subject::Customer { customer } | Subject::Complaint { customer, .. } => Some(customer),
            Subject::Scope { .. } => None,
        }
    }

    pub fn case(&self) -> Option<&str> {
        match &self.subject {
            Subject::Complaint { case, .. } => Some(case),
            _ => None,
        }
    }
}

/// Open alerts (FIRING or ACKNOWLEDGED) by kind, kept with the commits
/// that open and resolve them so that a start reads one value instead of
/// an index written on every transition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlerts(std::collections::BTreeMap<AlertKind, u64>);

impl OpenAlerts {
    pub fn count(&self, kind: AlertKind) -> u64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }

    /// Counts one more open alert of `kind`.
    pub fn open(&mut self, kind: AlertKind) {
        *self.0.entry(kind).or_default() += 1;
    }

    /// Follows `transitions` (FIRING opens, RESOLVED closes, ACKNOWLEDGED
    /// leaves open); whether any count changed.
    pub fn follow(&mut self, transitions: &[Alert]) -> bool {
        let mut changed = false;
        for alert in transitions {
            match alert.state {
                AlertState::Firing => self.open(alert.kind()),
                AlertState::Resolved => {
                    let n = self.0.entry(alert.kind()).or_default();
                    *n = n.saturating_sub(1);
                }
                AlertState::Acknowledged => continue,
            }
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn open_alerts_follow_firing_and_resolved_transitions() {
        let transition = |kind, state| Alert {
            id: 1,
            sequence: 1,
            subject: match kind {
                AlertKind::ChurnRisk => Subject::Customer {
                    customer: "c".into(),
                },
                kind => Subject::Scope {
                    kind,
                    scope: "all".into(),
                    dimension: None,
                    gap: None,
                },
            },
            state,
            severity: AlertSeverity::Warning,
            dimension: None,
            value: None,
            baseline: None,
            threshold: None,
            observations: 0,
            event_at: 0,
            updated_at: 0,
            message: String::new(),
            note: String::new(),
        };
        use AlertKind::*;
        use AlertState::*;
        let mut open = OpenAlerts::default();
        assert!(open.follow(&[
            transition(ChurnRisk, Firing),
            transition(ChurnRisk, Firing),
            transition(SatisfactionDrop, Firing),
        ]));
        assert!(!open.follow(&[transition(ChurnRisk, Acknowledged)]));
        assert!(open.follow(&[transition(ChurnRisk, Resolved)]));
        assert_eq!(open.count(ChurnRisk), 1);
        assert_eq!(open.count(SatisfactionDrop), 1);
        assert_eq!(open.count(GapWidening), 0);
        // A count never goes below zero, whatever a dir held before.
        open.follow(&[transition(GapWidening, Resolved)]);
        assert_eq!(open.count(GapWidening), 0);
    }

    #[test]
    fn a_scope_subject_hashes_and_keys_like_the_subject_it_views() {
        let hasher = foldhash::quality::RandomState::default();
        let owned = Subject::Scope {
            kind: AlertKind::GapWidening,
            scope: "region=east".into(),
            dimension: Some("speed".into()),
            gap: Some(GapKind::Total),
        };
        let view = owned.as_scope().unwrap();
        assert!(view.views(&owned));
        assert_eq!(hasher.hash_one(&owned), hasher.hash_one(view));
        assert_eq!(view.key(), owned.key());
        assert_eq!(view.key(), "gap\0region=east\0speed\0total");
        assert_eq!(view.to_subject(), owned);

        let other = ScopeSubject {
            dimension: None,
            gap: None,
            kind: AlertKind::SatisfactionDrop,
            ..view
        };
        assert!(!other.views(&owned));
        assert_eq!(other.key(), "sat\0region=east\0\0");
        let customer = Subject::Customer {
            customer: "c-1".into(),
        };
        assert!(customer.as_scope().is_none());
        assert!(!view.views(&customer));
    }

    /// Monitor keys are stored: a change would orphan every monitor kept.
    #[test]
    fn customer_and_complaint_keys_keep_their_stored_form() {
        let customer = Subject::Customer {
            customer: "c-1".into(),
        };
        assert_eq!(customer.key(), "churn\0c-1");
        let complaint = Subject::Complaint {
            customer: "c-1".into(),
            case: "k-9".into(),
            stage: ComplaintStage::Resolution,
        };
        assert_eq!(complaint.key(), "overdue\0c-1\0k-9\0resolution");
        assert_eq!(
            Subject::parse_complaint_key(&complaint.key()),
            Some(("c-1".into(), "k-9".into(), ComplaintStage::Resolution))
        );
    }
}
