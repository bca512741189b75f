//! The CUDA backend from the command line on a machine without an NVIDIA driver (CI):
//! `solbench list` says why CUDA is unavailable, `--backend cuda` is bad input (exit 2,
//! one sentence), and `--backend auto` falls back to the host and says which operations
//! it could not plan there. On a machine with a working driver the checks flip: CUDA must
//! be listed as available with its devices.

use solbench_core::result::ResultFile;
use std::process::{Command, Output};

fn solbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_solbench"))
        .args(args)
        .output()
        .expect("run solbench")
}

fn cuda_line(list: &str) -> String {
    list.lines()
        .find(|l| l.trim_start().starts_with("cuda "))
        .unwrap_or_else(|| panic!("`solbench list` has no cuda line:\n{list}"))
        .to_string()
}

#[test]
fn list_and_run_explain_a_missing_driver() {
    let o = solbench(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = cuda_line(&list);
    if line.contains(" available ") {
        // A GPU machine: devices are listed with their arch and a spec line.
        assert!(list.contains("cuda:0"), "{list}");
        println!("CUDA is available here; the no-driver checks do not apply: {line}");
        return;
    }
    assert!(line.contains("unavailable"), "{line}");
    // One sentence naming the library and the fix.
    assert!(
        line.contains("libcuda.so.1")
            || line.contains("NVIDIA driver")
            || line.contains("libnvrtc"),
        "{line}"
    );

    let o = solbench(&["run", "--backend", "cuda", "--profile", "quick"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: the cuda backend cannot run: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn auto_falls_back_to_the_host_and_skips_gpu_only_operations_with_a_note() {
    let list = String::from_utf8_lossy(&solbench(&["list"]).stdout).into_owned();
    if cuda_line(&list).contains(" available ") {
        println!("CUDA is available here, so auto picks it; the fallback does not apply");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("s.toml");
    std::fs::write(
        &suite,
        "[settings]\nwarmup_ms = 5\nmin_time_ms = 20\nmin_samples = 3\n\
         [[memory]]\nops = [\"triad\"]\nsizes = [\"4M\"]\n\
         [[memory]]\nops = [\"h2d\", \"smem\"]\nsizes = [\"1M\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = solbench(&[
        "run",
        "--suite",
        suite.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains(" on host "), "{err}");
    assert!(
        err.contains("note: the memory operations h2d, smem need a GPU backend"),
        "{err}"
    );
    let file = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (result, _) = ResultFile::read(&file).unwrap();
    assert_eq!(result.run.unwrap().backend, "host");
    assert_eq!(result.cases.len(), 1);
}
