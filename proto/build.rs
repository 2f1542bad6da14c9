//! Compiles `enifab/v1/*.proto` with protox (a protobuf compiler in Rust: no protoc needed) and
//! writes the descriptor set that gRPC reflection and the generic JSON codec use.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "enifab/v1/common.proto",
        "enifab/v1/vpc.proto",
        "enifab/v1/ecs.proto",
        "enifab/v1/slb.proto",
        "enifab/v1/emulator.proto",
        "enifab/v1/fabric.proto",
        "enifab/v1/shim.proto",
        "enifab/v1/lab.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("enifab_descriptor.bin"), fds.encode_to_vec())?;
    // Type names let the JSON codec find a generated message's descriptor (`prost::Name`).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds_with_config(fds, config)?;
    Ok(())
}
