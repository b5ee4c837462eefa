//! Compiles `proto/*.proto` with `protox` (a pure-Rust protobuf compiler) and `prost-build`:
//! the build machines have no `protoc`.

fn main() {
    let protos = ["proto/paxsql.proto", "proto/forward.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"]).expect("the .proto files must compile");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)
        .expect("prost-build must generate Rust from the descriptors");
}
