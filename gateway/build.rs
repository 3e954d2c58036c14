//! Compiles the public gRPC contract (`schema/proto/conveyor/v1/*.proto`)
//! with protox, a protobuf compiler in Rust: no system `protoc` is needed.
//! The generated server and client code and the descriptor set (served by
//! reflection) land in `OUT_DIR`.

use std::path::PathBuf;

const PROTO_ROOT: &str = "../schema/proto";
const PROTOS: &[&str] = &["conveyor/v1/orders.proto", "conveyor/v1/event_store.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    let descriptor_path = out_dir.join("conveyor_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
