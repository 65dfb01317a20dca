//! Compiles Corral's own `.proto` files (under `corral/`) without a system
//! `protoc`: `protox` parses them in pure Rust and `tonic-prost-build` turns
//! the descriptors into Rust.
//!
//! REAPI messages that our protocols carry are *not* generated here. The
//! files under `extern/` only declare their names so that the parser can
//! resolve them; `extern_path` then points the generated code at the types
//! of the `bazel-remote-apis` crate, so a `Command` in the worker protocol is
//! the very same Rust type the REAPI services use.
//!
//! ByteStream is the one protocol generated here although the crate has it
//! too: `bytestream/` compiles its payloads to `bytes::Bytes`, which saves a
//! copy of every chunk in each direction (see that file's header).

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut protos = Vec::new();
    collect(&root.join("corral"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed=corral");
    println!("cargo:rerun-if-changed=extern");
    println!("cargo:rerun-if-changed=bytestream");
    let bytestream = root.join("bytestream/google/bytestream/bytestream.proto");
    tonic_prost_build::configure()
        .bytes(".google.bytestream")
        .compile_fds(protox::compile([&bytestream], [root.join("bytestream")])?)?;
    if protos.is_empty() {
        return Ok(());
    }
    let fds = protox::compile(&protos, [root.clone(), root.join("extern")])?;
    tonic_prost_build::configure()
        .extern_path(
            ".build.bazel.remote.execution.v2",
            "::bazel_remote_apis::build::bazel::remote::execution::v2",
        )
        .extern_path(".google.rpc", "::bazel_remote_apis::google::rpc")
        .extern_path(
            ".google.longrunning",
            "::bazel_remote_apis::google::longrunning",
        )
        .compile_fds(fds)?;
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
