//! Compiles `proto/` with protox (pure Rust, no system protoc) and generates tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary can be reused by another checkout of the same
    // package, so a path baked in at compile time could point at the wrong tree.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest).join("../../proto");
    let files = [
        root.join("runnel/v1/runnel.proto"),
        root.join("runnel/internal/v1/internal.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
