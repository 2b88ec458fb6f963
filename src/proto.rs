//! Generated protobuf and gRPC code for `gapwatch.v1`, with the canonical
//! proto3 JSON mapping (serde) and the descriptor set for reflection.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gapwatch.v1");
include!(concat!(env!("OUT_DIR"), "/gapwatch.v1.serde.rs"));

/// Encoded `FileDescriptorSet` of every gapwatch proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gapwatch_descriptor");
