//! `SOLBENCH_NCCL_LIBRARY` / `SOLBENCH_RCCL_LIBRARY` replace the search. This file holds one
//! test so that setting the variables cannot race another test (each integration-test file
//! is its own process).

use solbench_nccl::{Flavor, Nccl};

#[test]
fn a_bogus_override_fails_cleanly_without_falling_back() {
    std::env::set_var("SOLBENCH_NCCL_LIBRARY", "/nonexistent/libnccl.so.2");
    let e = Nccl::load(Flavor::Nccl).map(|_| ()).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.starts_with("SOLBENCH_NCCL_LIBRARY=/nonexistent/libnccl.so.2 could not be loaded ("),
        "{e}"
    );
    assert!(
        e.ends_with("point it at libnccl.so.2 or unset it to search LD_LIBRARY_PATH."),
        "{e}"
    );

    // A library that exists but is not NCCL is named, with every missing symbol.
    std::env::set_var("SOLBENCH_NCCL_LIBRARY", "libm.so.6");
    let e = Nccl::load(Flavor::Nccl).map(|_| ()).unwrap_err();
    assert!(e.starts_with("libm.so.6 lacks ncclGetVersion, "), "{e}");

    // The RCCL variable is separate.
    std::env::set_var("SOLBENCH_RCCL_LIBRARY", "/nonexistent/librccl.so.1");
    let e = Nccl::load(Flavor::Rccl).map(|_| ()).unwrap_err();
    assert!(
        e.starts_with("SOLBENCH_RCCL_LIBRARY=/nonexistent/librccl.so.1"),
        "{e}"
    );

    // An empty value means unset: the normal search runs again.
    std::env::set_var("SOLBENCH_NCCL_LIBRARY", "");
    if let Err(e) = Nccl::load(Flavor::Nccl) {
        assert!(!e.contains("SOLBENCH_NCCL_LIBRARY="), "{e}");
    }
}
