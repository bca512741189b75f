//! Kernels that are wrong on purpose (tests/kernels/broken.cu, and the fragment bug in
//! tests/kernels/isa.cu): the harness must report each bug, naming the kernel, and must not
//! hang. Where a fixed twin exists it must pass, so the test shows the bug is what is caught.

use std::time::{Duration, Instant};

use solbench_simt::{args, tsan_enabled, Buffer, ErrorKind, Schedule, Simt};

/// Set in the child process that runs the racy launch under ThreadSanitizer.
const RACE_CHILD: &str = "SOLBENCH_SIMT_RACE_CHILD";

fn floats(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 + 0.5).collect()
}

/// Runs the staging kernel on 256 threads; Ok(true) when the output is right.
fn staging(kernel: &str, schedule: Schedule) -> Result<bool, solbench_simt::SimtError> {
    let n = 256usize;
    let input = Buffer::from_slice("in", &floats(n)).unwrap();
    let out = Buffer::new(n * 4, "out").unwrap();
    Simt::new().with_schedule(schedule).launch(
        kernel,
        1,
        n as u32,
        (n * 4) as u32,
        &args![&input, &out],
    )?;
    let want: Vec<f32> = (0..n).map(|t| (t + 1) as f32 % n as f32 + 0.5).collect();
    Ok(out.read::<f32>() == want)
}

#[test]
fn a_missing_barrier_is_caught() {
    // The fixed kernel passes under every schedule.
    for schedule in [
        Schedule::Serial,
        Schedule::SerialReverse,
        Schedule::Parallel,
    ] {
        assert_eq!(
            staging("fixed_missing_barrier", schedule),
            Ok(true),
            "{schedule:?}"
        );
    }
    if tsan_enabled() {
        // ThreadSanitizer flags the unordered write and read of shared memory whatever the
        // interleaving, and the harness turns its report into a launch error. A process that
        // reported a race exits with TSan's status 66, so the racy launch runs in a child.
        if std::env::var_os(RACE_CHILD).is_some() {
            let err = staging("broken_missing_barrier", Schedule::Parallel).unwrap_err();
            println!("launch error: {:?}: {}", err.kind, err.message);
            return;
        }
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_missing_barrier_is_caught",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RACE_CHILD, "1")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        let err = String::from_utf8_lossy(&child.stderr);
        assert_eq!(child.status.code(), Some(66), "{out}\n{err}");
        assert!(
            out.contains("launch error: Kernel: broken_missing_barrier: ThreadSanitizer: data race")
                // The racing pair: the write (line 14) and the read (line 15), either order.
                && (out.contains("broken.cu:14 in broken_missing_barrier")
                    || out.contains("broken.cu:15 in broken_missing_barrier")),
            "{out}\n{err}"
        );
        assert!(err.contains("WARNING: ThreadSanitizer: data race"), "{err}");
    } else {
        // The serial schedule runs thread 0 to its end before thread 1 starts: thread 0 reads
        // thread 1's slot before it is written, and finds the block's poison.
        assert_eq!(
            staging("broken_missing_barrier", Schedule::Serial),
            Ok(false)
        );
    }
}

#[test]
fn a_wrong_fragment_index_gives_a_wrong_product() {
    let a: Vec<f32> = (0..256).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..128).map(|i| (i % 5) as f32 - 2.0).collect();
    let c = vec![1.0f32; 128];
    let to_bits = |v: &[f32]| -> Vec<u16> {
        v.iter()
            .map(|&x| half::bf16::from_f32(x).to_bits())
            .collect()
    };
    let run = |kernel: &str| -> Vec<f32> {
        let ab = Buffer::from_slice("A", &to_bits(&a)).unwrap();
        let bb = Buffer::from_slice("B", &to_bits(&b)).unwrap();
        let cb = Buffer::from_slice("C", &c).unwrap();
        let db = Buffer::new(128 * 4, "D").unwrap();
        Simt::new()
            .launch(kernel, 1, 32, 0, &args![&ab, &bb, &cb, &db])
            .unwrap();
        db.read()
    };
    let mut want = vec![0f32; 128];
    for m in 0..16 {
        for n in 0..8 {
            want[m * 8 + n] = (0..16).map(|k| a[m * 16 + k] * b[k * 8 + n]).sum::<f32>() + 1.0;
        }
    }
    assert_eq!(run("isa_mma_bf16"), want);
    let wrong = run("broken_mma_fragment");
    // Rows 8..15 of A never reach the product, so rows 8..15 of D come out wrong.
    let bad_rows: Vec<usize> = (0..16)
        .filter(|&m| wrong[m * 8..][..8] != want[m * 8..][..8])
        .collect();
    assert!(!bad_rows.is_empty(), "the fragment bug went unnoticed");
    assert!(bad_rows.iter().all(|&m| m >= 8), "{bad_rows:?}");
}

#[test]
fn an_off_by_one_tail_write_is_caught_by_the_guard() {
    let n = 1001u64; // not a multiple of anything the grid uses
    for kernel in ["fixed_tail", "broken_tail"] {
        let a = Buffer::from_slice("a", &floats(n as usize)).unwrap();
        let r = Simt::new().launch(kernel, 2, 128, 0, &args![&a, n]);
        if kernel == "fixed_tail" {
            r.unwrap();
            continue;
        }
        let err = r.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Kernel, "{err}");
        // Element n is bytes [4004, 4008); the guard sees the bytes whose value changed
        // (doubling the guard pattern 0xA5A5A5A5 as a float changes its upper two).
        assert!(
            err.message.contains(
                "broken_tail wrote out of bounds past the end of buffer 'a' (4004 bytes): bytes [400"
            ) && err.message.contains(", 4008)"),
            "{err}"
        );
    }
}

#[test]
fn an_out_of_bounds_cache_hinted_read_is_caught_as_it_happens() {
    let n = 100u64;
    let a = Buffer::from_slice("a", &floats(n as usize)).unwrap();
    let out = Buffer::new(n as usize * 4, "out").unwrap();
    let err = Simt::new()
        .launch("broken_read_past_end", 1, 128, 0, &args![&a, &out, n])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Kernel);
    assert!(
        err.message.contains("thread (99,0,0) of block (0,0,0): __ldcg reads 4 bytes out of bounds of buffer 'a' (400 bytes) at byte offset 400"),
        "{err}"
    );
}

#[test]
fn a_barrier_not_every_thread_reaches_is_a_reported_deadlock() {
    let out = Buffer::new(64 * 4, "out").unwrap();
    for schedule in [Schedule::Parallel, Schedule::Serial] {
        let start = Instant::now();
        let err = Simt::new()
            .with_schedule(schedule)
            .launch("broken_divergent_barrier", 1, 64, 0, &args![&out])
            .unwrap_err();
        // Found exactly, not by the 10 s watchdog.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.kind, ErrorKind::Aborted, "{err}");
        assert!(
            err.message
                .starts_with("broken_divergent_barrier: deadlock in block (0,0,0)"),
            "{err}"
        );
        assert!(
            err.message.contains(
                "__syncthreads(): 32 of 64 threads arrived, 32 exited without reaching it"
            ),
            "{err}"
        );
    }
    // The harness is still usable afterwards.
    Simt::new()
        .launch("fixed_missing_barrier", 1, 32, 128, &args![&out, &out])
        .unwrap();
}

#[test]
fn a_thread_spinning_while_others_wait_is_stopped_by_the_watchdog() {
    let flag = Buffer::from_slice("flag", &[0u32]).unwrap();
    let out = Buffer::new(64 * 4, "out").unwrap();
    let start = Instant::now();
    let err = Simt::new()
        .with_timeout(Duration::from_secs(1))
        .launch("broken_spin", 1, 64, 0, &args![&flag, &out])
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.kind, ErrorKind::Aborted, "{err}");
    assert!(
        err.message
            .contains("broken_spin: block (0,0,0) made no progress for 1.0 s"),
        "{err}"
    );
    assert!(
        err.message
            .contains("__syncthreads(): 63 of 64 threads arrived"),
        "{err}"
    );
    assert!(
        err.message.contains("1 thread(s) still running: (0,0,0)"),
        "{err}"
    );
    // The spinning thread left at its next checked access: later launches work.
    Simt::new()
        .launch("fixed_tail", 1, 32, 0, &args![&out, 4u64])
        .unwrap();
}

#[test]
fn a_shuffle_mask_without_the_callers_lane_is_reported() {
    let out = Buffer::new(32 * 4, "out").unwrap();
    let err = Simt::new()
        .launch("broken_shfl_mask", 1, 32, 0, &args![&out])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Aborted, "{err}");
    assert!(
        err.message.contains(
            "called __shfl_sync with mask 0x0000ffff, which does not include its own lane"
        ),
        "{err}"
    );
}

#[test]
fn bad_launches_are_refused_with_the_reason() {
    let a = Buffer::new(64, "a").unwrap();
    let cases: Vec<(Result<(), solbench_simt::SimtError>, &str)> = vec![
        (
            Simt::new().launch("no_such_kernel", 1, 32, 0, &[]),
            "no kernel named 'no_such_kernel'",
        ),
        (
            Simt::new().launch("fixed_tail", 1, 32, 0, &args![&a]),
            "fixed_tail takes 2 arguments, 1 given",
        ),
        (
            Simt::new().launch("fixed_tail", 1, 32, 0, &args![&a, 4u32]),
            "argument 1 is a 32-bit integer, the kernel's parameter is a 64-bit integer",
        ),
        (
            Simt::new().launch("fixed_tail", 1, 2048, 0, &args![&a, 4u64]),
            "exceeds CUDA's limits",
        ),
        (
            Simt::new().launch("fixed_tail", 1, 32, 300 << 10, &args![&a, 4u64]),
            "227 KiB",
        ),
    ];
    for (r, want) in cases {
        let err = r.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadLaunch, "{err}");
        assert!(err.message.contains(want), "{err}");
    }
}

#[test]
fn thread_sanitizer_is_on_exactly_when_asked_for() {
    // CI's TSan step must really run under TSan (the build script reads this variable).
    let asked = std::env::var("SOLBENCH_SIMT_TSAN").as_deref() == Ok("1");
    assert_eq!(tsan_enabled(), asked);
}
