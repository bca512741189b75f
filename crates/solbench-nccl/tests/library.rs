//! The binding against a real libnccl.so.2, without a GPU: the PyPI wheel
//! (`pip install nvidia-nccl-cu13`, its `nvidia/nccl/lib` on LD_LIBRARY_PATH, as
//! `eval "$(scripts/install-cuda-toolchain.sh)"` sets up) is enough.
//!
//! When libnccl is absent each test prints "skipped: <reason>" and passes, unless
//! SOLBENCH_REQUIRE_CUDA_TOOLCHAIN=1 (CI), where absence fails.

use solbench_nccl::sys::{self, Flavor, OPTIONAL_SYMBOLS, REQUIRED_SYMBOLS};
use solbench_nccl::{Comm, Nccl, UniqueId};
use std::io::Write;

fn nccl_or_skip(test: &str) -> Option<Nccl> {
    match Nccl::load(Flavor::Nccl) {
        Ok(n) => Some(n),
        Err(reason) => {
            if std::env::var("SOLBENCH_REQUIRE_CUDA_TOOLCHAIN").as_deref() == Ok("1") {
                panic!("libnccl is required here (SOLBENCH_REQUIRE_CUDA_TOOLCHAIN=1): {reason}");
            }
            eprintln!("{test}: skipped: {reason}");
            None
        }
    }
}

#[test]
fn loads_and_resolves_every_symbol() {
    let Some(nccl) = nccl_or_skip("loads_and_resolves_every_symbol") else {
        return;
    };
    // Loading succeeded, so every required symbol resolved (a missing one is a LoadError).
    eprintln!(
        "loaded {} ({}) version {} (code {})",
        nccl.library_name(),
        nccl.library_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "path unknown".into()),
        nccl.version_string(),
        nccl.version_code()
    );
    eprintln!(
        "required symbols, all resolved: {}",
        REQUIRED_SYMBOLS.join(", ")
    );
    let optional = nccl.sys().optional_symbols();
    for (name, present) in &optional {
        eprintln!(
            "optional {name}: {}",
            if *present { "resolved" } else { "absent" }
        );
    }
    assert_eq!(optional.len(), OPTIONAL_SYMBOLS.len());

    let (major, minor, _) = nccl.version();
    assert_eq!(major, 2, "unexpected NCCL major version");
    assert!(
        minor >= 7,
        "NCCL {} is older than any we support",
        nccl.version_string()
    );
    let has = |n: &str| optional.iter().any(|(s, p)| *s == n && *p);
    // What the version implies must agree with what resolved.
    if (major, minor) >= (2, 14) {
        for s in [
            "ncclCommInitRankConfig",
            "ncclCommFinalize",
            "ncclCommGetAsyncError",
            "ncclGetLastError",
        ] {
            assert!(has(s), "NCCL {} should export {s}", nccl.version_string());
        }
        assert!(nccl.supports_nonblocking());
    }
    if (major, minor) >= (2, 28) {
        assert!(has("ncclAlltoAll"), "NCCL ≥ 2.28 exports ncclAlltoAll");
        assert!(nccl.has_native_alltoall());
        assert_eq!(nccl.sys().alltoall().map(|(n, _)| n), Some("ncclAlltoAll"));
    }
    // NVIDIA never exported RCCL's spelling.
    assert!(!has("ncclAllToAll"));
    // The file the loader mapped is a libnccl.
    if let Some(p) = nccl.library_path() {
        let name = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(name.starts_with("libnccl"), "{}", p.display());
    }
}

#[test]
fn version_is_the_pinned_wheel_or_newer() {
    let Some(nccl) = nccl_or_skip("version_is_the_pinned_wheel_or_newer") else {
        return;
    };
    // scripts/install-cuda-toolchain.sh pins nvidia-nccl-cu13==2.32.3; a system NCCL may differ.
    let v = nccl.version();
    eprintln!("NCCL {}.{}.{}", v.0, v.1, v.2);
    if nccl.version_code() == 23203 {
        assert_eq!(v, (2, 32, 3));
        assert_eq!(nccl.version_string(), "2.32.3");
    }
    assert_eq!(solbench_nccl::decode_version(nccl.version_code()), v);
}

#[test]
fn unique_id_is_made_and_round_trips() {
    let Some(nccl) = nccl_or_skip("unique_id_is_made_and_round_trips") else {
        return;
    };
    let id = match UniqueId::new(&nccl) {
        Ok(id) => id,
        Err(e) => panic!("ncclGetUniqueId failed without a GPU: {e}"),
    };
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), 128);
    assert!(bytes.iter().any(|b| *b != 0), "the id is all zero");
    let back = UniqueId::from_bytes(bytes);
    assert_eq!(back, id);
    assert_eq!(UniqueId::from_slice(&bytes).ok(), Some(id));
    // Each call makes a new id (a new bootstrap root).
    let other = UniqueId::new(&nccl).map_err(|e| e.to_string());
    assert!(matches!(other, Ok(o) if o != id));
}

#[test]
fn error_strings_for_every_code() {
    let Some(nccl) = nccl_or_skip("error_strings_for_every_code") else {
        return;
    };
    for code in 0..=8 {
        let s = nccl.error_string(sys::ncclResult_t(code));
        eprintln!("ncclGetErrorString({code}) = {s:?}");
        assert!(!s.is_empty(), "no text for code {code}");
    }
    assert_eq!(nccl.error_string(sys::ncclSuccess), "no error");
    assert!(nccl
        .error_string(sys::ncclInvalidArgument)
        .contains("invalid argument"));
    assert!(nccl.error_string(sys::ncclSystemError).contains("system"));
    // An unknown code still gets a string, not a crash.
    assert!(!nccl.error_string(sys::ncclResult_t(1000)).is_empty());
    // Asking for the last error with nothing failed yet must not crash either.
    let _ = nccl.last_error();
}

#[test]
fn bad_arguments_are_refused_before_nccl_sees_them() {
    let Some(nccl) = nccl_or_skip("bad_arguments_are_refused_before_nccl_sees_them") else {
        return;
    };
    let id = UniqueId::from_bytes([1; 128]);
    let e = Comm::init_rank(&nccl, &id, 4, 4, true)
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        e,
        Err("ncclCommInitRank failed with ncclInvalidArgument: rank 4 is not in 0..4".to_string())
    );
    let e = Comm::init_all(&nccl, &[])
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(matches!(&e, Err(s) if s.contains("no devices")), "{e:?}");
}

#[test]
fn init_without_a_gpu_fails_cleanly() {
    let Some(nccl) = nccl_or_skip("init_without_a_gpu_fails_cleanly") else {
        return;
    };
    if std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("init_without_a_gpu_fails_cleanly: skipped: this machine has an NVIDIA driver");
        return;
    }
    // One rank: nothing to wait for, so NCCL must fail on the missing CUDA driver at once.
    let id = match UniqueId::new(&nccl) {
        Ok(id) => id,
        Err(e) => panic!("{e}"),
    };
    for blocking in [true, false] {
        let r = Comm::init_rank(&nccl, &id, 0, 1, blocking);
        let r = match r {
            Ok(c) => c
                .wait_ready(std::time::Instant::now() + std::time::Duration::from_secs(60))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        eprintln!("init_rank(blocking={blocking}) without a GPU: {r:?}");
        assert!(r.is_err(), "a communicator came up without a GPU");
    }
}

#[test]
fn rccl_is_absent_here_and_says_so() {
    match Nccl::load(Flavor::Rccl) {
        Ok(r) => eprintln!(
            "rccl_is_absent_here_and_says_so: skipped: RCCL {} is installed",
            r.version_string()
        ),
        Err(e) => {
            eprintln!("{e}");
            assert!(
                e.starts_with("librccl.so.1 was not found (tried librccl.so.1, librccl.so, "),
                "{e}"
            );
            assert!(e.contains("RCCL") && e.contains("LD_LIBRARY_PATH"), "{e}");
            assert!(e.ends_with('.') && !e.contains('\n'), "{e}");
        }
    }
}

#[test]
fn bad_paths_fail_with_a_sentence() {
    // A path that does not exist.
    let e = Nccl::load_path(Flavor::Nccl, "/nonexistent/libnccl.so.2")
        .map(|_| ())
        .unwrap_err();
    assert!(
        e.starts_with("/nonexistent/libnccl.so.2 could not be loaded as NCCL ("),
        "{e}"
    );
    assert!(e.ends_with("give the path of libnccl.so.2."), "{e}");

    // A file that is not a library.
    let mut f = tempfile::Builder::new()
        .suffix(".so")
        .tempfile()
        .expect("temp file");
    f.write_all(b"not an ELF file").expect("write");
    let e = Nccl::load_path(Flavor::Nccl, f.path())
        .map(|_| ())
        .unwrap_err();
    assert!(e.contains("could not be loaded as NCCL"), "{e}");

    // A real library that is not NCCL: every required symbol is reported missing, in one line.
    let e = Nccl::load_path(Flavor::Rccl, "libc.so.6")
        .map(|_| ())
        .unwrap_err();
    assert!(
        e.starts_with("libc.so.6 lacks ncclGetVersion, ncclGetUniqueId, "),
        "{e}"
    );
    assert!(
        e.contains("ncclGroupEnd that solbench calls, so it is not RCCL 2.7 or newer"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}
