//! The alert monitors one group commit has loaded: detector states, read
//! from the store on first use and written back when changed.
//!
//! Scope-wide subjects are found by scope and then by what they watch. An
//! event feeds about twenty monitors in each of its scopes (satisfaction
//! and advocacy, then for every rated dimension its total gap and three
//! derived ones); looked up by whole subject, each of them hashed and
//! compared the scope's and the dimension's names again (13% of a stream
//! writer's instructions). Here `Alerting::scope_op` finds a scope's
//! monitors with one lookup, and a dimension's with one more. Customers'
//! and complaints' monitors are kept by subject.

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use crate::domain::alert::{AlertKind, GapKind, ScopeSubject, Subject};
use crate::error::Result;
use crate::scoring::monitor::MonitorState;
use crate::store::Store;

pub(super) struct Monitor {
    pub(super) state: MonitorState,
    pub(super) dirty: bool,
}

impl Monitor {
    /// The monitor stored under `key` (a fresh one if none), unchanged.
    fn read(store: &Store, key: &str) -> Result<Self> {
        Ok(Monitor {
            state: store.monitor(key)?.unwrap_or_default(),
            dirty: false,
        })
    }
}

/// Every monitor a commit has loaded.
#[derive(Default)]
pub(super) struct Monitors {
    /// Customers' and complaints' (and any scope subject of a shape
    /// `ScopeMonitors` has no slot for).
    by_subject: HashMap<Subject, Monitor, foldhash::quality::RandomState>,
    pub(super) scopes: ScopeMonitors,
}

impl Monitors {
    /// The subject's monitor, read from the store on its first use.
    pub(super) fn get(&mut self, store: &Store, subject: &Subject) -> Result<&mut Monitor> {
        if let Some(view) = subject.as_scope() {
            if let Some(slot) = self.scopes.slot(&view) {
                return loaded(slot, store, &view);
            }
        }
        match self.by_subject.entry_ref(subject) {
            EntryRef::Occupied(entry) => Ok(entry.into_mut()),
            EntryRef::Vacant(entry) => Ok(entry.insert(Monitor::read(store, &subject.key())?)),
        }
    }

    /// Calls `f` with the storage key and state of every changed monitor.
    pub(super) fn try_for_each_changed(
        &self,
        mut f: impl FnMut(&str, &MonitorState) -> Result<()>,
    ) -> Result<()> {
        for (subject, monitor) in &self.by_subject {
            if monitor.dirty {
                f(&subject.key(), &monitor.state)?;
            }
        }
        self.scopes
            .try_for_each(|subject, monitor| match monitor.dirty {
                true => f(&subject.key(), &monitor.state),
                false => Ok(()),
            })
    }
}

type ByName<V> = HashMap<String, V, foldhash::quality::RandomState>;

/// Every gap kind, in the order of [`GapSlots`].
const GAP_KINDS: [GapKind; 6] = [
    GapKind::Total,
    GapKind::Promotion,
    GapKind::Understanding,
    GapKind::Procedure,
    GapKind::Behavior,
    GapKind::Perception,
];

/// A dimension's GAP_WIDENING monitors, one per gap kind.
pub(super) type GapSlots = [Option<Monitor>; GAP_KINDS.len()];

/// Where `gap`'s monitor is in [`GapSlots`].
pub(super) fn gap_slot(gap: GapKind) -> usize {
    match gap {
        GapKind::Total => 0,
        GapKind::Promotion => 1,
        GapKind::Understanding => 2,
        GapKind::Procedure => 3,
        GapKind::Behavior => 4,
        GapKind::Perception => 5,
    }
}

/// The scope monitors one commit has loaded.
#[derive(Default)]
pub(super) struct ScopeMonitors(ByName<ScopeSlots>);

/// The monitors of one scope.
#[derive(Default)]
pub(super) struct ScopeSlots {
    /// SATISFACTION_DROP.
    pub(super) satisfaction: Option<Monitor>,
    /// LOYALTY_DROP.
    pub(super) loyalty: Option<Monitor>,
    /// GAP_WIDENING, by dimension.
    gaps: ByName<GapSlots>,
}

impl ScopeSlots {
    pub(super) fn gaps(&mut self, dimension: &str) -> &mut GapSlots {
        self.gaps.entry_ref(dimension).or_default()
    }
}

impl ScopeMonitors {
    /// The monitors of `scope` (none loaded yet on its first use).
    pub(super) fn scope(&mut self, scope: &str) -> &mut ScopeSlots {
        self.0.entry_ref(scope).or_default()
    }

    /// The slot of `subject`'s monitor; `None` for a subject of another
    /// shape than the ones above (kept with the other subjects).
    pub(super) fn slot(&mut self, subject: &ScopeSubject<'_>) -> Option<&mut Option<Monitor>> {
        match (subject.kind, subject.dimension, subject.gap) {
            (AlertKind::SatisfactionDrop, None, None) => {
                Some(&mut self.scope(subject.scope).satisfaction)
            }
            (AlertKind::LoyaltyDrop, None, None) => Some(&mut self.scope(subject.scope).loyalty),
            (AlertKind::GapWidening, Some(dimension), Some(gap)) => {
                Some(&mut self.scope(subject.scope).gaps(dimension)[gap_slot(gap)])
            }
            _ => None,
        }
    }

    /// Calls `f` with every loaded monitor and its subject.
    pub(super) fn try_for_each(
        &self,
        mut f: impl FnMut(ScopeSubject<'_>, &Monitor) -> Result<()>,
    ) -> Result<()> {
        for (scope, slots) in &self.0 {
            let subject = |kind, dimension, gap| ScopeSubject {
                kind,
                scope,
                dimension,
                gap,
            };
            for (kind, slot) in [
                (AlertKind::SatisfactionDrop, &slots.satisfaction),
                (AlertKind::LoyaltyDrop, &slots.loyalty),
            ] {
                if let Some(monitor) = slot {
                    f(subject(kind, None, None), monitor)?;
                }
            }
            for (dimension, gaps) in &slots.gaps {
                for (gap, slot) in GAP_KINDS.into_iter().zip(gaps) {
                    if let Some(monitor) = slot {
                        let kind = AlertKind::GapWidening;
                        f(subject(kind, Some(dimension), Some(gap)), monitor)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The monitor in `slot`, read from the store on its first use in a commit.
pub(super) fn loaded<'m>(
    slot: &'m mut Option<Monitor>,
    store: &Store,
    subject: &ScopeSubject<'_>,
) -> Result<&'m mut Monitor> {
    if slot.is_none() {
        *slot = Some(Monitor::read(store, &subject.key())?);
    }
    Ok(slot.as_mut().expect("loaded above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(open: u64) -> Monitor {
        Monitor {
            state: MonitorState {
                open: Some(open),
                ..MonitorState::default()
            },
            dirty: true,
        }
    }

    #[test]
    fn gap_slots_follow_the_gap_kinds() {
        for (index, gap) in GAP_KINDS.into_iter().enumerate() {
            assert_eq!(gap_slot(gap), index, "{gap:?}");
        }
    }

    /// Every subject shape gets a slot of its own, and is handed back with
    /// its monitor; other shapes have none.
    #[test]
    fn each_scope_subject_has_its_own_slot_and_is_listed_with_it() {
        let view = |kind, scope, dimension, gap| ScopeSubject {
            kind,
            scope,
            dimension,
            gap,
        };
        let mut subjects = Vec::new();
        for scope in ["all", "region=east"] {
            subjects.push(view(AlertKind::SatisfactionDrop, scope, None, None));
            subjects.push(view(AlertKind::LoyaltyDrop, scope, None, None));
            for dimension in ["speed", "care"] {
                for gap in GAP_KINDS {
                    let kind = AlertKind::GapWidening;
                    subjects.push(view(kind, scope, Some(dimension), Some(gap)));
                }
            }
        }
        let mut monitors = ScopeMonitors::default();
        for (n, subject) in subjects.iter().enumerate() {
            let slot = monitors.slot(subject).expect("indexed");
            assert!(slot.is_none(), "{subject:?} shares a slot");
            *slot = Some(monitor(n as u64));
        }
        let mut listed = Vec::new();
        monitors
            .try_for_each(|subject, monitor| {
                listed.push((subject.key(), monitor.state.open));
                Ok(())
            })
            .unwrap();
        listed.sort();
        let mut expected: Vec<_> = subjects
            .iter()
            .enumerate()
            .map(|(n, subject)| (subject.key(), Some(n as u64)))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
        for other in [
            view(AlertKind::GapWidening, "all", None, Some(GapKind::Total)),
            view(AlertKind::GapWidening, "all", Some("speed"), None),
            view(AlertKind::SatisfactionDrop, "all", Some("speed"), None),
            view(AlertKind::ChurnRisk, "all", None, None),
        ] {
            assert!(monitors.slot(&other).is_none(), "{other:?}");
        }
    }

    /// An acknowledgement finds its alert's monitor by `Subject`, an
    /// observation by its scope's slots: in one commit both must reach the
    /// same monitor, or the later write of its key would undo the other.
    #[test]
    fn a_subject_lookup_finds_the_monitor_its_scope_feeds() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            cache_capacity: 1 << 20,
            half_life_ms: crate::scoring::Params::default().half_life_ms(),
            sync_to_device: false,
            checkpoint_interval: std::time::Duration::from_secs(1),
        };
        let store = Store::open(dir.path(), &options).unwrap();
        let mut monitors = Monitors::default();
        for (n, view) in [
            ScopeSubject {
                kind: AlertKind::SatisfactionDrop,
                scope: "all",
                dimension: None,
                gap: None,
            },
            ScopeSubject {
                kind: AlertKind::GapWidening,
                scope: "region=east",
                dimension: Some("speed"),
                gap: Some(GapKind::Perception),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let slot = monitors.scopes.slot(&view).expect("indexed");
            loaded(slot, &store, &view).unwrap().state.open = Some(n as u64 + 7);
            let monitor = monitors.get(&store, &view.to_subject()).unwrap();
            assert_eq!(monitor.state.open, Some(n as u64 + 7), "{view:?}");
        }
        assert!(monitors.by_subject.is_empty(), "no second copy");
    }
}
