//! gapwatch: real-time customer satisfaction, loyalty and service-gap
//! scoring over gRPC.
//!
//! Data flows one way: gRPC handler → validate → engine (single writer,
//! group commit to sled) → acks. Reads come from committed state.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod proto;
pub mod scoring;
pub mod server;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use server::{run, run_with_ready, run_with_telemetry, Bound};
