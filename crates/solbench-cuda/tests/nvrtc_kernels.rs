//! Compiles every embedded kernel with the real NVRTC for the architectures we ship for and
//! holds each kernel to zero register spills. Needs libnvrtc on LD_LIBRARY_PATH (see
//! scripts/install-cuda-toolchain.sh) but no GPU. Without NVRTC the tests print
//! "skipped: <reason>" and pass, unless SOLBENCH_REQUIRE_CUDA_TOOLCHAIN=1 (as in CI).

use std::time::Instant;

use solbench_cuda::compile::{kernel_files, Compiler};

/// The architectures every kernel must compile for without spilling: A100, H100, B200.
const ARCHS: &[&str] = &["sm_80", "sm_90a", "sm_100a"];

/// A compiler with the disk cache off, or None (after saying why) when NVRTC is missing.
fn compiler() -> Option<Compiler> {
    match Compiler::new() {
        Ok(compiler) => Some(compiler.with_cache_dir(None)),
        Err(reason) => {
            if std::env::var("SOLBENCH_REQUIRE_CUDA_TOOLCHAIN").as_deref() == Ok("1") {
                panic!("SOLBENCH_REQUIRE_CUDA_TOOLCHAIN=1 but NVRTC is unusable: {reason}");
            }
            println!("skipped: {reason}");
            None
        }
    }
}

#[test]
fn every_kernel_compiles_without_spills() {
    let Some(compiler) = compiler() else { return };
    let (major, minor) = compiler.nvrtc().version;
    println!(
        "NVRTC {major}.{minor}; CUDA headers: {}",
        compiler.headers().describe()
    );
    println!(
        "{:<10} {:<8} {:<16} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7}",
        "file", "arch", "function", "regs", "st", "ld", "stack", "smem", "ms"
    );
    let files: Vec<&str> = kernel_files().collect();
    assert!(!files.is_empty(), "no kernel files are embedded");
    let mut problems = Vec::new();
    for file in &files {
        for arch in ARCHS {
            let start = Instant::now();
            let compiled = match compiler.compile(file, arch, &[]) {
                Ok(compiled) => compiled,
                Err(e) => {
                    problems.push(format!("{file} for {arch}: {e}"));
                    continue;
                }
            };
            let ms = start.elapsed().as_secs_f64() * 1e3;
            assert!(!compiled.from_cache);
            if !compiled.cubin.starts_with(b"\x7fELF") {
                problems.push(format!("{file} for {arch}: the CUBIN is not an ELF image"));
            }
            // An empty report would let the spill check pass vacuously.
            if compiled.resources.is_empty() {
                problems.push(format!(
                    "{file} for {arch}: no ptxas resource report in the log:\n{}",
                    compiled.log
                ));
            }
            for r in &compiled.resources {
                println!(
                    "{file:<10} {arch:<8} {:<16} {:>5} {:>6} {:>6} {:>6} {:>6} {ms:>7.0}",
                    r.kernel,
                    r.registers,
                    r.spill_stores,
                    r.spill_loads,
                    r.stack_bytes,
                    r.shared_bytes
                );
                if r.spill_stores != 0 || r.spill_loads != 0 {
                    problems.push(format!(
                        "{file} for {arch}: {} spills ({} bytes stored, {} loaded)",
                        r.kernel, r.spill_stores, r.spill_loads
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn a_compile_error_carries_the_nvrtc_log() {
    let Some(compiler) = compiler() else { return };
    let source = "#include \"common.cuh\"\n\
                  SB_KERNEL void broken(float* out) { out[0] = undefined_thing; }\n";
    let err = compiler
        .compile_source("broken.cu", source, "sm_90a", &[])
        .expect_err("an undefined identifier must not compile");
    assert!(
        err.contains("broken.cu(2): error: identifier \"undefined_thing\" is undefined"),
        "{err}"
    );
    assert!(err.contains("NVRTC_ERROR_COMPILATION"), "{err}");
}

#[test]
fn cuda_headers_are_found() {
    let Some(compiler) = compiler() else { return };
    // cuda_bf16.h comes from the toolkit include directory or NVRTC's bundled copy.
    let source = "#include <cuda_bf16.h>\n#include \"common.cuh\"\n\
                  SB_KERNEL void one(__nv_bfloat16* p) { p[0] = __float2bfloat16(1.0f); }\n";
    match compiler.compile_source("bf16.cu", source, "sm_90a", &[]) {
        Ok(compiled) => assert_eq!(compiled.resources.len(), 1, "{}", compiled.log),
        Err(e) => panic!(
            "with CUDA headers at {}: {e}",
            compiler.headers().describe()
        ),
    }
}

#[test]
fn the_cache_returns_what_was_compiled() {
    let Some(compiler) = compiler() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let compiler = compiler.with_cache_dir(Some(dir.path().to_path_buf()));
    let defines = [("SB_MEM_UNROLL", "2")];
    let first = compiler
        .compile("util.cu", "sm_80", &defines)
        .expect("util.cu compiles");
    assert!(!first.from_cache);
    let second = compiler
        .compile("util.cu", "sm_80", &defines)
        .expect("util.cu loads from the cache");
    assert!(second.from_cache);
    assert_eq!(
        (&second.cubin, &second.log, &second.resources, &second.key),
        (&first.cubin, &first.log, &first.resources, &first.key)
    );
    assert!(second.options.contains(&"-DSB_MEM_UNROLL=2".to_string()));
    // Another define is another key, compiled afresh.
    let third = compiler
        .compile("util.cu", "sm_80", &[])
        .expect("util.cu compiles");
    assert!(!third.from_cache);
    assert_ne!(third.key, first.key);
}
