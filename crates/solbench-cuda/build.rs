//! Embeds the CUDA kernel sources (`../../kernels/*.cu`, `*.cuh`, `*.h`) into the crate as
//! `KERNEL_SOURCES`, so the run-time compiler (src/compile.rs) needs no source tree: an
//! installed binary carries its kernels with it.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// File extensions that NVRTC compiles (`cu`) or that kernels include (`cuh`, `h`).
const EXTENSIONS: &[&str] = &["cu", "cuh", "h"];

/// The kernel files of `dir`, as (file name, absolute path), sorted by name so the
/// generated table (and every cache key derived from it) is stable.
fn kernel_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        if !wanted || !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("kernel file name is not UTF-8: {}", path.display()))?
            .to_string();
        files.push((name, fs::canonicalize(&path)?));
    }
    files.sort();
    Ok(files)
}

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let dir = manifest.join("../../kernels");
    // A directory here makes cargo rescan every file in it, so new kernels are picked up;
    // edits to embedded files are also tracked through include_str!.
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut code = String::from("pub static KERNEL_SOURCES: &[(&str, &str)] = &[\n");
    for (name, path) in kernel_files(&dir)? {
        let path = path
            .to_str()
            .ok_or_else(|| format!("kernel path is not UTF-8: {}", path.display()))?;
        // {:?} writes a valid Rust string literal (quotes and backslashes escaped).
        code.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    code.push_str("];\n");

    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kernel_sources.rs");
    fs::write(out, code)?;
    Ok(())
}
