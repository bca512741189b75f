//! The `solbench` binary end to end: exit codes, one-sentence errors for bad input, a
//! real run whose result file parses back, and a run killed mid-sweep that keeps every
//! finished case.

use solbench_core::result::{Record, ResultFile};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn solbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_solbench"))
        .args(args)
        .output()
        .expect("run solbench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Bad input: exit code 2 and one sentence (one `error:` line) naming the problem.
fn assert_bad_input(args: &[&str], needle: &str) {
    let o = solbench(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?} should exit 2; stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks {needle:?}: {err}"
    );
    let error_lines = err.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(error_lines, 1, "{args:?}: expected one error line: {err}");
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("solbench-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn result_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bad_flags_and_profiles_exit_2() {
    assert_bad_input(&["run", "--profile", "quik"], "quik");
    assert_bad_input(&["run", "--backend", "tpu"], "tpu");
    assert_bad_input(&["run", "--frobnicate"], "--frobnicate");
    assert_bad_input(&["run", "--only", "gemmm"], "'gemmm' is not a family");
    assert_bad_input(
        &["run", "--device", "7", "--only", "memory"],
        "--device 7 does not exist",
    );
    assert_bad_input(&["specs", "h900"], "no spec sheet matches 'h900'");
    assert_bad_input(&["frobnicate"], "frobnicate");
}

#[test]
fn bad_suite_and_acceptance_files_exit_2_naming_the_field() {
    let d = temp_dir("badsuite");
    let cases = [
        ("size.toml", "[[memory]]\nsizes = [\"12Q\"]\n", "memory[0].sizes[0]: '12Q' is not a size"),
        ("field.toml", "[[memory]]\nsizs = [\"1M\"]\n", "unknown field `sizs`"),
        ("dtype.toml", "[[gemm]]\ndtypes = [\"fp7\"]\nshapes = [\"64x64x64\"]\n", "gemm[0].dtypes[0]: 'fp7' is not a data type"),
        ("shape.toml", "[[gemm]]\ndtypes = [\"f32\"]\nshapes = [\"64x64\"]\n", "gemm[0].shapes[0]"),
        ("heads.toml", "[[attention]]\nvariant = \"gqa\"\nphase = \"decode\"\nq_heads = 6\nkv_heads = 4\nhead_dim = 64\nkv_len = 64\n", "multiple of kv_heads"),
        ("syntax.toml", "[[memory]\n", "suite file"),
        ("empty.toml", "", "nothing to run"),
    ];
    for (name, text, needle) in cases {
        let p = write(&d, name, text);
        assert_bad_input(
            &["run", "--suite", &p, "--out", d.to_str().unwrap()],
            needle,
        );
    }
    assert_bad_input(
        &["run", "--suite", "/nonexistent/suite.toml"],
        "cannot read suite file /nonexistent/suite.toml",
    );
    let acc = write(
        &d,
        "acc.toml",
        "[expected]\n\"gemm.bf16\" = { pass = 0.5, warn = 0.9 }\n",
    );
    assert_bad_input(
        &["run", "--acceptance", &acc, "--only", "memory"],
        "warn <= pass",
    );
    let acc = write(&d, "acc2.toml", "[product.\"nvidia-h900\".expected]\n");
    assert_bad_input(
        &["run", "--acceptance", &acc, "--only", "memory"],
        "nvidia-h900",
    );
    assert!(
        result_files(&d).is_empty(),
        "bad input must not leave a result file"
    );
}

#[test]
fn list_and_specs_describe_the_machine_and_database() {
    let o = solbench(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("host") && out.contains("available"), "{out}");
    assert!(
        out.contains("DRAM")
            && out.contains("quick")
            && out.contains("standard")
            && out.contains("full"),
        "{out}"
    );
    let o = solbench(&["specs"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for id in [
        "nvidia-h100-sxm",
        "nvidia-h200-sxm",
        "nvidia-b200",
        "nvidia-gb200",
        "nvidia-a100-40gb",
        "nvidia-l40s",
        "nvidia-l4",
        "amd-mi250x",
        "amd-mi300x",
        "amd-mi325x",
        "amd-mi355x",
    ] {
        assert!(out.contains(id), "specs lacks {id}");
    }
    let o = solbench(&["specs", "nvidia-h100-sxm"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("989") && out.contains("3350") && out.contains("sparsity"),
        "{out}"
    );
}

const SMALL_SUITE: &str = r#"
name = "cli-test"
[settings]
warmup_ms = 5
min_time_ms = 20
min_samples = 5
max_case_ms = 2000
[[memory]]
ops = ["read", "triad"]
sizes = ["256K", "8M"]
[[gemm]]
dtypes = ["f32", "bf16"]
shapes = ["96x80x72"]
[[attention]]
variant = "gqa"
phase = "decode"
batch = 2
q_heads = 8
kv_heads = 2
head_dim = 64
kv_len = 300
page_size = 16
[[collective]]
ops = ["all_reduce"]
min_bytes = "1M"
max_bytes = "1M"
"#;

#[test]
fn a_run_writes_a_result_file_that_parses_back() {
    let d = temp_dir("run");
    let suite = write(&d, "suite.toml", SMALL_SUITE);
    let out = d.join("out");
    let o = solbench(&[
        "run",
        "--backend",
        "host",
        "--suite",
        &suite,
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        stderr(&o)
    );
    assert!(
        text.contains("NO SPEC")
            && text.contains("SKIPPED")
            && text.contains("verified")
            && text.contains("Results:"),
        "{text}"
    );
    let files = result_files(&out);
    assert_eq!(files.len(), 1);
    let (result, notes) = ResultFile::read(&files[0]).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let run = result.run.unwrap();
    assert_eq!(run.backend, "host");
    assert_eq!(run.planned_cases, 8);
    assert!(!run.solbench.git.is_empty() && !run.host.cpu.is_empty());
    assert_eq!(result.cases.len(), 8);
    assert_eq!(result.end.unwrap().measured, 7);
    for c in &result.cases {
        if let Some(m) = &c.measurement {
            assert!(m.value > 0.0 && m.value.is_finite());
            assert_eq!(c.checks.len(), 2);
            assert!(c.checks.iter().all(|k| k.passed));
        }
    }
    // `solbench report` renders the same file.
    let o = solbench(&["report", files[0].to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("triad"));
    // A file that is not a result file is bad input.
    let junk = write(&d, "junk.jsonl", "{\"hello\": 1}\n");
    assert_bad_input(&["report", &junk], "not a solbench result line");
}

#[test]
fn killing_a_run_mid_sweep_keeps_every_finished_case() {
    let d = temp_dir("kill");
    // Twelve cases of at least ~150 ms each: long enough to kill in the middle.
    let suite = write(
        &d,
        "suite.toml",
        "[settings]\nwarmup_ms = 10\nmin_time_ms = 150\nmin_samples = 5\n[[memory]]\nops = [\"copy\", \"triad\", \"write\"]\nsizes = [\"1M\", \"2M\", \"3M\", \"4M\"]\n",
    );
    let out = d.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_solbench"))
        .args([
            "run",
            "--backend",
            "host",
            "--suite",
            &suite,
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished_cases = |files: &[PathBuf]| -> usize {
        files
            .first()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .matches("\"record\":\"case\"")
                    .count()
            })
            .unwrap_or(0)
    };
    while finished_cases(&result_files(&out)) < 3 {
        assert!(Instant::now() < deadline, "the run wrote no cases in time");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let files = result_files(&out);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let mut cases = 0;
    for line in text.lines() {
        match Record::from_line(line).unwrap_or_else(|e| panic!("line did not parse ({e}): {line}"))
        {
            Record::Case(c) => {
                cases += 1;
                assert!(c.measurement.is_some(), "finished cases keep their numbers");
            }
            Record::End(_) => panic!("a killed run has no end record"),
            Record::Run(_) => {}
        }
    }
    assert!((3..12).contains(&cases), "{cases} cases kept");
    let (parsed, notes) = ResultFile::read(&files[0]).unwrap();
    assert_eq!(parsed.cases.len(), cases);
    assert!(notes.iter().any(|n| n.contains("interrupted")), "{notes:?}");
}

#[test]
fn gemm_command_runs_on_the_host_and_rejects_bad_flags() {
    assert_bad_input(
        &["gemm", "--dtype", "bf17"],
        "the gemm flags: --dtype[0]: 'bf17' is not a data type",
    );
    assert_bad_input(
        &["gemm", "--m", "1:8:1"],
        "a search needs all three of --m, --n and --k",
    );
    assert_bad_input(
        &["gemm", "--square", "1024"],
        "--square '1024': write FROM:TO",
    );
    assert_bad_input(
        &["gemm", "--preset", "gpt-5"],
        "--preset[0]: 'gpt-5' is not a GEMM model preset",
    );
    assert_bad_input(
        &["gemm", "--m", "1:20480:1", "--n", "1:20480:1", "--k", "64"],
        "the search covers 419430400 shapes",
    );
    assert_bad_input(
        &["gemm", "--backend", "cuda", "--shape", "64x64x64"],
        "cannot run",
    );
    let d = temp_dir("gemm");
    let o = solbench(&[
        "gemm",
        "--backend",
        "host",
        "--dtype",
        "f32,fp8",
        "--shape",
        "96x80x72",
        "--m",
        "64,128",
        "--n",
        "48",
        "--k",
        "40",
        "--warmup-ms",
        "5",
        "--min-time-ms",
        "20",
        "--out",
        d.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", stderr(&o));
    // f32 runs (3 shapes); FP8 has no host implementation and is skipped with a reason.
    assert!(text.contains("GEMM summary"), "{text}");
    assert!(text.contains("over 3 shapes"), "{text}");
    assert!(text.contains("SKIPPED"), "{text}");
    assert!(text.contains("128x48x40 (search)"), "{text}");
}

#[test]
fn collectives_command_rejects_bad_flags_before_touching_a_library() {
    assert_bad_input(
        &["collectives", "--op", "allgatherv"],
        "--op: 'allgatherv' is not",
    );
    assert_bad_input(
        &["collectives", "-b", "4Q"],
        "--min-bytes: '4Q' is not a size",
    );
    assert_bad_input(&["collectives", "-b", "1G", "-e", "1M"], "--max-bytes");
    assert_bad_input(
        &["collectives", "-o", "avgx"],
        "--redop: 'avgx' is not a reduction",
    );
    assert_bad_input(
        &["collectives", "-d", "f33"],
        "--dtype: 'f33' is not a data type",
    );
    assert_bad_input(
        &["collectives", "-n", "0"],
        "--iters and --samples must be at least 1",
    );
    assert_bad_input(
        &["collectives", "-f", "1"],
        "--step-factor: must be greater than 1",
    );
    // No GPU driver and (in the default build) no MPI: one sentence each, exit 2.
    let list = String::from_utf8_lossy(&solbench(&["list"]).stdout).into_owned();
    let cuda_missing = list
        .lines()
        .any(|l| l.trim_start().starts_with("cuda ") && l.contains("unavailable"));
    if cuda_missing {
        assert_bad_input(
            &["collectives", "--backend", "cuda"],
            "the cuda backend cannot run",
        );
    }
    if !cfg!(feature = "mpi") {
        assert_bad_input(&["collectives", "--backend", "host"], "built without it");
    }
}
