//! The scoring core: pure math on validated events. No I/O, no async.
//!
//! State is kept per customer ([`CustomerState`]) and per scope
//! ([`ScopeState`]); both are serde values the store persists. Applying an
//! event to a customer yields the [`ScopeUpdate`]s the engine routes to
//! scope states, so that every cross-entity figure (repeat purchases,
//! complaint outcomes) is computed in one place. Every figure is a function
//! of the *set* of events applied, not of their arrival order (up to float
//! rounding): see `decay`.

pub mod complaint;
pub mod customer;
pub mod decay;
pub mod detector;
pub mod dimension;
pub mod event_tag;
pub mod monitor;
pub mod params;
pub mod report;
pub mod response;
pub mod scope;
pub mod tier;
pub mod top_k;

pub use customer::CustomerState;
pub use params::Params;
pub use report::*;
pub use scope::{ScopeOp, ScopeState, ScopeUpdate, Target};
pub use tier::ValueHistogram;
