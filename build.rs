//! Generates the gRPC code, the file descriptor set (for server reflection)
//! and the canonical proto3 JSON mapping (for `gapwatch send`).
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // A vendored protoc: no system install needed on a fresh machine.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    env::set_var("PROTOC", protoc);

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("gapwatch_descriptor.bin");
    let protos = [
        "proto/gapwatch/v1/events.proto",
        "proto/gapwatch/v1/ingest.proto",
        "proto/gapwatch/v1/score.proto",
        "proto/gapwatch/v1/config.proto",
        "proto/gapwatch/v1/alerts.proto",
    ];

    tonic_prost_build::configure()
        // prost's codec with undecodable messages as INVALID_ARGUMENT.
        .codec_path("crate::api::codec::ProtoCodec")
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types so that they carry the
        // canonical JSON mapping (RFC 3339 timestamps) as well.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&protos, &["proto"])?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .build(&[".gapwatch"])?;
    Ok(())
}
