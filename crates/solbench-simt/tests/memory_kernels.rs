//! Every kernel of kernels/ (memory.cu, util.cu) run by the SIMT harness with the launch
//! configurations the CUDA backend computes (`solbench_cuda::launch`, the same functions,
//! with small SM counts), on small shapes that include the edge cases (n not a multiple of
//! the vector width, of the block, of the grid), against the host oracle
//! (`solbench_cuda::pattern`): bit for bit where the contract is exact.

use solbench_cuda::launch::{self, Launch1d};
use solbench_cuda::pattern::{self, Element};
use solbench_simt::{args, kernels, Buffer, Pod, Schedule, Simt};

/// Element counts: 0, below one vector, odd, one block's worth +1, several grid strides.
const SHAPES: &[u64] = &[0, 1, 3, 7, 64, 513, 1023, 4099, 9001, 20_003];
/// (SMs, blocks per SM) the launch functions are given: one block up to a 12-block grid.
const GPUS: &[(u32, u32)] = &[(1, 1), (2, 3), (3, 4)];
/// Seeds of the inputs, as distinct as the backend's.
const SEED_A: u64 = 0x5EED_0001;
const SEED_B: u64 = 0x5EED_0002;
const SEED_C: u64 = 0x5EED_0003;

/// Each machine shape runs under a different schedule, so every kernel sees all three.
fn simt_for(gpu: usize) -> Simt {
    let schedule = [
        Schedule::Serial,
        Schedule::Parallel,
        Schedule::SerialReverse,
    ][gpu % 3];
    Simt::new().with_schedule(schedule).with_sms(GPUS[gpu].0)
}

/// The backend's streaming launch for n elements of T on a `gpu`-shaped device.
fn streaming<T>(n: u64, gpu: usize) -> Launch1d {
    let (sms, per_sm) = GPUS[gpu];
    launch::streaming(n, std::mem::size_of::<T>() as u64, sms, per_sm)
}

/// A buffer of n random elements (the pattern `sb_fill_T(seed)` writes on the GPU).
fn random_buffer<T: Element + Pod>(label: &str, n: u64, seed: u64) -> Buffer {
    let data: Vec<T> = (0..n).map(|i| T::random(seed, i)).collect();
    Buffer::from_slice(label, &data).expect("allocate")
}

/// A buffer of n elements, poisoned (0xFF bytes: NaN), as the backend leaves outputs.
fn poisoned<T>(label: &str, n: u64) -> Buffer {
    Buffer::new(n as usize * std::mem::size_of::<T>(), label).expect("allocate")
}

fn context<T: Element>(kernel: &str, n: u64, l: Launch1d, gpu: usize) -> String {
    format!(
        "{kernel} ({}) n={n} grid={} block={} on {:?}",
        T::NAME,
        l.grid,
        l.block,
        GPUS[gpu]
    )
}

/// The first element where `got` and `want(i)` differ by more than `rel_tol` relative.
fn first_mismatch<T: Element>(got: &[T], rel_tol: f64, want: impl Fn(u64) -> T) -> Option<String> {
    got.iter().enumerate().find_map(|(i, &g)| {
        let w = want(i as u64);
        let ok = g == w || (g.to_f64() - w.to_f64()).abs() <= rel_tol * w.to_f64().abs();
        (!ok).then(|| format!("element {i}: got {g:?}, want {w:?}"))
    })
}

fn fill_case<T: Element + Pod>() {
    for gpu in 0..GPUS.len() {
        for &n in SHAPES {
            let l = streaming::<T>(n, gpu);
            let kernel = format!("sb_fill_{}", T::NAME);
            let a = poisoned::<T>("a", n);
            let seed = 0xC0FFEE ^ n;
            simt_for(gpu)
                .launch(
                    &kernel,
                    l.grid,
                    l.block,
                    l.shared_bytes,
                    &args![&a, n, seed],
                )
                .unwrap_or_else(|e| panic!("{}: {e}", context::<T>(&kernel, n, l, gpu)));
            // The device/host random contract, bit for bit.
            let bad = first_mismatch(&a.read::<T>(), 0.0, |i| T::random(seed, i));
            assert_eq!(bad, None, "{}", context::<T>(&kernel, n, l, gpu));
        }
    }
}

#[test]
fn fill_matches_the_host_pattern_bit_for_bit() {
    fill_case::<f64>();
    fill_case::<f32>();
    // The pattern itself, element 0 of seed 0, is SplitMix64's published first output.
    let a = poisoned::<f64>("a", 1);
    Simt::new()
        .launch("sb_fill_f64", 1, 256, 0, &args![&a, 1u64, 0u64])
        .unwrap();
    assert_eq!(
        a.read::<u64>()[0],
        0x3FF0_0000_0000_0000 | (0xE220_A839_7B1D_CDAFu64 >> 12)
    );
}

fn write_case<T: Element + Pod>() {
    let value = T::random(SEED_B, 7);
    for gpu in 0..GPUS.len() {
        for &n in SHAPES {
            let l = streaming::<T>(n, gpu);
            let kernel = format!("sb_write_{}", T::NAME);
            let a = poisoned::<T>("a", n);
            simt_for(gpu)
                .launch(
                    &kernel,
                    l.grid,
                    l.block,
                    0,
                    &[(&a).into(), n.into(), scalar_arg(value)],
                )
                .unwrap_or_else(|e| panic!("{}: {e}", context::<T>(&kernel, n, l, gpu)));
            let bad = first_mismatch(&a.read::<T>(), 0.0, |_| value);
            assert_eq!(bad, None, "{}", context::<T>(&kernel, n, l, gpu));
        }
    }
}

#[test]
fn write_sets_every_element_and_nothing_else() {
    write_case::<f64>();
    write_case::<f32>();
}

fn copy_case<T: Element + Pod>() {
    for gpu in 0..GPUS.len() {
        for &n in SHAPES {
            let l = streaming::<T>(n, gpu);
            let kernel = format!("sb_copy_{}", T::NAME);
            let a = random_buffer::<T>("a", n, SEED_A);
            let c = poisoned::<T>("c", n);
            simt_for(gpu)
                .launch(&kernel, l.grid, l.block, 0, &args![&a, &c, n])
                .unwrap_or_else(|e| panic!("{}: {e}", context::<T>(&kernel, n, l, gpu)));
            let bad = first_mismatch(&c.read::<T>(), 0.0, |i| T::random(SEED_A, i));
            assert_eq!(bad, None, "{}", context::<T>(&kernel, n, l, gpu));
            // The source is untouched.
            let bad = first_mismatch(&a.read::<T>(), 0.0, |i| T::random(SEED_A, i));
            assert_eq!(
                bad,
                None,
                "source changed: {}",
                context::<T>(&kernel, n, l, gpu)
            );
        }
    }
}

#[test]
fn copy_reproduces_the_source() {
    copy_case::<f64>();
    copy_case::<f32>();
}

/// The scalar as the kernel's parameter type.
fn scalar_arg<T: Element>(s: T) -> solbench_simt::Arg<'static> {
    if T::NAME == "f32" {
        solbench_simt::Arg::F32(s.to_f64() as f32)
    } else {
        solbench_simt::Arg::F64(s.to_f64())
    }
}

fn triad_case<T: Element + Pod>() {
    let scalar = T::from_f64(0.4);
    for gpu in 0..GPUS.len() {
        for &n in SHAPES {
            let l = streaming::<T>(n, gpu);
            let kernel = format!("sb_triad_{}", T::NAME);
            let a = poisoned::<T>("a", n);
            let b = random_buffer::<T>("b", n, SEED_B);
            let c = random_buffer::<T>("c", n, SEED_C);
            // Argument order as crates/solbench-cuda/src/memory.rs passes it: a, b, c, s, n.
            simt_for(gpu)
                .launch(
                    &kernel,
                    l.grid,
                    l.block,
                    0,
                    &[
                        (&a).into(),
                        (&b).into(),
                        (&c).into(),
                        scalar_arg(scalar),
                        n.into(),
                    ],
                )
                .unwrap_or_else(|e| panic!("{}: {e}", context::<T>(&kernel, n, l, gpu)));
            // The backend's check: b + s*c within 2 eps (FMA-contracted or not).
            let bad = first_mismatch(&a.read::<T>(), 2.0 * T::EPSILON, |i| {
                T::fma(scalar, T::random(SEED_C, i), T::random(SEED_B, i))
            });
            assert_eq!(bad, None, "{}", context::<T>(&kernel, n, l, gpu));
        }
    }
}

#[test]
fn triad_matches_b_plus_s_times_c() {
    triad_case::<f64>();
    triad_case::<f32>();
}

fn read_case<T: Element + Pod>() {
    for gpu in 0..GPUS.len() {
        for &n in SHAPES {
            let l = streaming::<T>(n, gpu);
            let kernel = format!("sb_read_{}", T::NAME);
            let a = random_buffer::<T>("a", n, SEED_A);
            let partials = poisoned::<T>("partials", l.grid as u64);
            simt_for(gpu)
                .launch(&kernel, l.grid, l.block, 0, &args![&a, n, &partials])
                .unwrap_or_else(|e| panic!("{}: {e}", context::<T>(&kernel, n, l, gpu)));
            let got: Vec<T> = partials.read();
            let ctx = context::<T>(&kernel, n, l, gpu);
            // Every block writes its partial (no NaN poison left).
            assert!(got.iter().all(|p| !p.to_f64().is_nan()), "{ctx}: {got:?}");
            let sum: f64 = got.iter().map(|p| p.to_f64()).sum();
            let want: f64 = (0..n).map(|i| T::random(SEED_A, i).to_f64()).sum();
            if n == 0 {
                assert_eq!(sum, 0.0, "{ctx}");
                continue;
            }
            let per_thread = launch::elements_per_thread(n, l);
            let tol = pattern::read_sum_tolerance(per_thread, l.block, T::EPSILON);
            let rel = (sum - want).abs() / want;
            assert!(
                rel <= tol,
                "{ctx}: sum {sum} vs {want}: relative error {rel:e} > {tol:e}"
            );
        }
    }
}

#[test]
fn read_partials_sum_to_the_inputs() {
    read_case::<f64>();
    read_case::<f32>();
}

#[test]
fn read_with_a_block_not_a_multiple_of_32_breaks_its_contract_loudly() {
    // memory.cu: "blockDim.x a multiple of 32". The block reduction's full-mask shuffles
    // name lanes a 48-thread block does not have; the harness reports that, not a wrong sum.
    let a = random_buffer::<f64>("a", 100, SEED_A);
    let partials = poisoned::<f64>("partials", 1);
    let err = Simt::new()
        .launch("sb_read_f64", 1, 48, 0, &args![&a, 100u64, &partials])
        .unwrap_err();
    assert!(
        err.message
            .contains("with mask 0xffffffff, which names lanes 16-31 that do not exist"),
        "{err}"
    );
}

#[test]
fn smem_bandwidth_kernel_returns_the_expected_sums() {
    for (g, &(sms, per_sm)) in GPUS.iter().enumerate().skip(1) {
        for per_sm_case in [true, false] {
            // The backend's launch: one 1024-thread block per SM, or every SM full of
            // 256-thread blocks; 64 KiB or 16 KiB of dynamic shared memory.
            let l = launch::shared_memory(per_sm_case, sms, per_sm.min(2));
            for iters in [0u32, 1, 2, 5] {
                let out = poisoned::<u32>("out", l.grid as u64);
                simt_for(g)
                    .launch(
                        "sb_smem_bw",
                        l.grid,
                        l.block,
                        l.shared_bytes,
                        &args![iters, &out],
                    )
                    .unwrap_or_else(|e| panic!("sb_smem_bw {l:?} iters={iters}: {e}"));
                let want = launch::smem_expected(l.block, iters);
                assert_eq!(
                    out.read::<u32>(),
                    vec![want; l.grid as usize],
                    "{l:?} iters={iters}"
                );
            }
        }
    }
}

#[test]
fn smem_bandwidth_kernel_rejects_too_little_shared_memory() {
    // One byte short of its contract: the kernel writes past the block's dynamic shared
    // memory, and the harness's guard around it says so.
    let l = launch::shared_memory(false, 1, 1);
    let out = poisoned::<u32>("out", l.grid as u64);
    let err = Simt::new()
        .launch(
            "sb_smem_bw",
            l.grid,
            l.block,
            l.shared_bytes - 16,
            &args![1u32, &out],
        )
        .unwrap_err();
    assert!(err.message.contains("dynamic shared memory"), "{err}");
}

#[test]
fn wait_flag_returns_when_released_and_gives_up_after_its_timeout() {
    // Released (the host set the flag before the kernel looked): returns at once.
    let flag = Buffer::from_slice("flag", &[1u32]).unwrap();
    let timed_out = Buffer::from_slice("timed_out", &[0u32]).unwrap();
    let wait = |timeout_ns: u64| {
        Simt::new()
            .launch(
                "sb_wait_flag",
                1,
                1,
                0,
                &args![&flag, timeout_ns, &timed_out],
            )
            .unwrap()
    };
    wait(60_000_000_000);
    assert_eq!(timed_out.read::<u32>(), vec![0]);
    // Never released: gives up after timeout_ns of %globaltimer and says so.
    flag.write(&[0u32]).unwrap();
    let start = std::time::Instant::now();
    wait(20_000_000);
    assert_eq!(timed_out.read::<u32>(), vec![1]);
    assert!(start.elapsed() >= std::time::Duration::from_millis(20));
}

/// The kernels this file runs. A kernel added to kernels/ must be added here (with a test).
const COVERED: &[&str] = &[
    "sb_read_f64",
    "sb_read_f32",
    "sb_write_f64",
    "sb_write_f32",
    "sb_copy_f64",
    "sb_copy_f32",
    "sb_triad_f64",
    "sb_triad_f32",
    "sb_smem_bw",
    "sb_fill_f64",
    "sb_fill_f32",
    "sb_wait_flag",
    // kernels/attention_decode.cu: tests/attention_decode.rs.
    "sb_attn_decode_bf16_d64",
    "sb_attn_decode_bf16_d128",
    "sb_attn_decode_bf16_d256",
    "sb_attn_decode_f16_d64",
    "sb_attn_decode_f16_d128",
    "sb_attn_decode_f16_d256",
    "sb_attn_decode_mla_bf16_h16",
    "sb_attn_decode_mla_f16_h16",
    "sb_attn_decode_mla_bf16_h64",
    "sb_attn_decode_mla_f16_h64",
    "sb_attn_combine_bf16",
    "sb_attn_combine_f16",
    // kernels/attention_prefill.cu: tests/attention_prefill.rs.
    "sb_attn_prefill_bf16_64x64",
    "sb_attn_prefill_f16_64x64",
    "sb_attn_prefill_bf16_128x128",
    "sb_attn_prefill_f16_128x128",
    "sb_attn_prefill_bf16_192x128",
    "sb_attn_prefill_f16_192x128",
];

#[test]
fn every_kernel_in_kernels_dir_runs_under_the_harness() {
    let registered: Vec<_> = kernels()
        .into_iter()
        .filter(|k| k.file.starts_with("kernels/"))
        .collect();
    let missing: Vec<&str> = registered
        .iter()
        .map(|k| k.name.as_str())
        .filter(|k| !COVERED.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "kernels without a harness test: {missing:?}"
    );
    for name in COVERED {
        assert!(
            registered.iter().any(|k| k.name == *name),
            "{name} is not compiled into the harness"
        );
    }
    // Every .cu file the backend embeds is compiled into the harness.
    for file in solbench_cuda::compile::kernel_files() {
        assert!(
            registered
                .iter()
                .any(|k| k.file == format!("kernels/{file}")),
            "kernels/{file} has no kernel in the harness"
        );
    }
}
