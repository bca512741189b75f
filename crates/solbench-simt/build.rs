//! Builds the SIMT harness: every `kernels/*.cu` of the repository and every
//! `tests/kernels/*.cu` of this crate, compiled UNCHANGED as C++17 by the host compiler
//! with the emulation header `cpp/simt.h` force-included (`-DSB_EMULATION`), plus the
//! runtime `cpp/runtime.cpp`, into one static library.
//!
//! Each kernel file gets a generated wrapper translation unit that includes it and lists the
//! kernels found in it (every `SB_KERNEL`, found by scanning the source) in a table of
//! `(name, trampoline, parameter kinds)`; a generated registry lists every table. The
//! runtime refers to the registry, so nothing is dropped by the linker.
//!
//! `SOLBENCH_SIMT_TSAN=1` builds the kernels with `-fsanitize=thread` (the runtime stays
//! uninstrumented on purpose, see runtime.cpp) and links the test binaries against libtsan.

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// A kernel file and the names of the kernels it defines.
struct KernelFile {
    path: PathBuf,
    /// A C identifier unique among all files (for the table's symbol).
    ident: String,
    /// The file name shown in reports, e.g. `kernels/memory.cu`.
    display: String,
    kernels: Vec<String>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let kernels_dir = manifest.join("../../kernels").canonicalize()?;
    let tests_dir = manifest.join("tests/kernels");
    let cpp = manifest.join("cpp");
    for dir in [&kernels_dir, &tests_dir, &cpp, &cpp.join("include")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo:rerun-if-env-changed=SOLBENCH_SIMT_TSAN");
    let tsan = std::env::var("SOLBENCH_SIMT_TSAN").is_ok_and(|v| v == "1");

    let mut files = scan_dir(&kernels_dir, "kernels", "kernels")?;
    files.extend(scan_dir(
        &tests_dir,
        "tests",
        "crates/solbench-simt/tests/kernels",
    )?);
    check_unique(&files)?;

    // One wrapper per kernel file, and the registry of all tables.
    let gen = out.join("simt-gen");
    fs::create_dir_all(&gen)?;
    let mut sources = Vec::new();
    for f in &files {
        let path = gen.join(format!("{}.cc", f.ident));
        write_if_changed(&path, &wrapper(f)?)?;
        sources.push(path);
    }
    let registry = gen.join("registry.cc");
    write_if_changed(&registry, &registry_source(&files))?;
    sources.push(registry);

    // The runtime: never instrumented (its bookkeeping must stay invisible to TSan).
    let mut runtime = base_build(&cpp, &kernels_dir);
    runtime.file(cpp.join("runtime.cpp"));
    if tsan {
        runtime.define("SB_SIMT_TSAN", "1");
    }
    let runtime_objects = runtime.compile_intermediates();

    // The kernels (instrumented under TSan) and the runtime objects in one archive, so the
    // kernels' calls into the runtime and the runtime's reference to the registry resolve
    // in a single pass.
    let mut kernels = base_build(&cpp, &kernels_dir);
    kernels
        .files(&sources)
        .objects(&runtime_objects)
        // Kernel sources are written for nvcc: unused parameters and helpers are normal.
        .flag("-Wno-unused-parameter")
        .flag("-Wno-unused-function");
    if tsan {
        kernels.flag("-fsanitize=thread");
        println!("cargo:rustc-link-lib=dylib=tsan");
        // TSan calls this hook (weak in libtsan) for every report: keep it exported from the
        // executable so it replaces TSan's own.
        println!(
            "cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=__sanitizer_report_error_summary"
        );
    }
    kernels.compile("solbench_simt");
    println!("cargo:rustc-link-lib=dylib=pthread");
    Ok(())
}

/// The flags every harness translation unit shares.
fn base_build(cpp: &Path, kernels_dir: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .define("SB_EMULATION", "1")
        .include(cpp)
        .include(cpp.join("include"))
        .include(kernels_dir)
        .flag("-include")
        .flag(cpp.join("simt.h").to_string_lossy().as_ref())
        .flag("-pthread")
        .flag("-fno-omit-frame-pointer")
        // `#pragma unroll` is nvcc's; the host compiler ignores it.
        .flag("-Wno-unknown-pragmas")
        .warnings(true)
        .extra_warnings(true);
    b
}

/// The `*.cu` files of `dir` (sorted), with the kernels each defines.
fn scan_dir(dir: &Path, prefix: &str, shown: &str) -> Result<Vec<KernelFile>, Box<dyn Error>> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        return Ok(files);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("cu") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("kernel file name is not UTF-8: {}", path.display()))?
            .to_string();
        let stem = name.trim_end_matches(".cu");
        let ident: String = format!("{prefix}_{stem}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let text = fs::read_to_string(&path)?;
        let kernels =
            kernel_names(&strip_comments(&text)).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(KernelFile {
            path: path.canonicalize()?,
            ident,
            display: format!("{shown}/{name}"),
            kernels,
        });
    }
    files.sort_by(|a, b| a.ident.cmp(&b.ident));
    Ok(files)
}

/// Kernel names must be unique across all files (they are `extern "C"` symbols).
fn check_unique(files: &[KernelFile]) -> Result<(), Box<dyn Error>> {
    let mut seen = std::collections::BTreeMap::new();
    for f in files {
        for k in &f.kernels {
            if let Some(other) = seen.insert(k.clone(), f.display.clone()) {
                return Err(
                    format!("kernel {k} is defined in both {other} and {}", f.display).into(),
                );
            }
        }
    }
    Ok(())
}

/// The source with comments, string and character literals blanked out (newlines kept), so
/// that `SB_KERNEL` in a comment is never taken for a kernel.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            i += 1;
            while i < b.len() && b[i] != q {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The names of the kernels defined with `SB_KERNEL [qualifiers] void
/// [__launch_bounds__(...)] NAME(`, in order, without duplicates (a declaration and its
/// definition name the same kernel).
fn kernel_names(src: &str) -> Result<Vec<String>, String> {
    let b = src.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(pos) = src[i..].find("SB_KERNEL") {
        let start = i + pos;
        let end = start + "SB_KERNEL".len();
        i = end;
        let whole =
            (start == 0 || !is_ident(b[start - 1])) && (end >= b.len() || !is_ident(b[end]));
        if !whole {
            continue;
        }
        let mut j = end;
        let mut last: Option<String> = None;
        loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= b.len() {
                return Err("SB_KERNEL at the end of the file".into());
            }
            if is_ident(b[j]) {
                let s = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                last = Some(src[s..j].to_string());
            } else if b[j] == b'(' {
                let Some(name) = last.take() else {
                    return Err(format!(
                        "cannot read the kernel name after SB_KERNEL at byte {start}"
                    ));
                };
                if name != "__launch_bounds__" {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                    break;
                }
                // Skip the balanced parentheses of __launch_bounds__(...).
                let mut depth = 0usize;
                while j < b.len() {
                    match b[j] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                j += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            } else if b[j] == b'*' || b[j] == b'&' {
                j += 1;
            } else {
                return Err(format!(
                    "unexpected '{}' after SB_KERNEL at byte {start}",
                    b[j] as char
                ));
            }
        }
    }
    Ok(names)
}

/// The wrapper translation unit of one kernel file: the file itself, then its table.
fn wrapper(f: &KernelFile) -> Result<String, Box<dyn Error>> {
    let path = f
        .path
        .to_str()
        .ok_or_else(|| format!("kernel path is not UTF-8: {}", f.path.display()))?;
    let mut s = String::new();
    writeln!(
        s,
        "// Generated by crates/solbench-simt/build.rs from {}.",
        f.display
    )?;
    writeln!(s, "#include {path:?}")?;
    writeln!(s)?;
    if f.kernels.is_empty() {
        writeln!(
            s,
            "static const ::sb_emu::KernelEntry* const sb_emu_entries = nullptr;"
        )?;
    } else {
        writeln!(
            s,
            "static const ::sb_emu::KernelEntry sb_emu_entries[] = {{"
        )?;
        for k in &f.kernels {
            writeln!(s, "    SB_EMU_ENTRY({k}),")?;
        }
        writeln!(s, "}};")?;
    }
    writeln!(
        s,
        "extern \"C\" const ::sb_emu::KernelTable sb_emu_table_{} = {{{:?}, sb_emu_entries, {}u}};",
        f.ident,
        f.display,
        f.kernels.len()
    )?;
    Ok(s)
}

/// The registry: every table, referenced by the runtime.
fn registry_source(files: &[KernelFile]) -> String {
    let mut s = String::from("// Generated by crates/solbench-simt/build.rs.\n");
    for f in files {
        let _ = writeln!(
            s,
            "extern \"C\" const ::sb_emu::KernelTable sb_emu_table_{};",
            f.ident
        );
    }
    s.push_str("extern \"C\" const ::sb_emu::KernelTable* const sb_emu_tables[] = {\n");
    for f in files {
        let _ = writeln!(s, "    &sb_emu_table_{},", f.ident);
    }
    s.push_str("    nullptr,\n};\n");
    let _ = writeln!(
        s,
        "extern \"C\" const unsigned sb_emu_table_count = {}u;",
        files.len()
    );
    s
}

/// Writes only when the content changed, so cc does not rebuild unchanged wrappers' objects
/// needlessly (and file times stay meaningful).
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    fs::write(path, text)
}
