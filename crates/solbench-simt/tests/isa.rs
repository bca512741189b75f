//! The emulated intrinsics and inline-PTX wrappers against the documented behaviour, one at
//! a time, through the small kernels of tests/kernels/isa.cu: mma.m16n8k16 (bf16, f16)
//! against a host matmul with the fragments laid out by the PTX ISA's tables, ldmatrix
//! against the ISA's thread -> row mapping, cp.async groups, warp shuffles and votes,
//! atomics, and the bf16/f16 conversions against the `half` crate (round to nearest even).

use half::{bf16, f16};
use solbench_cuda::pattern::random_bits;
use solbench_simt::{args, Buffer, Schedule, Simt};

/// Small integers (exact in bf16 and f16, and every sum of products exact in f32).
fn small_ints(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| (random_bits(seed, i) % 9) as f32 - 4.0)
        .collect()
}

fn bits(values: &[f32], as_bf16: bool) -> Vec<u16> {
    values
        .iter()
        .map(|&v| {
            if as_bf16 {
                bf16::from_f32(v).to_bits()
            } else {
                f16::from_f32(v).to_bits()
            }
        })
        .collect()
}

/// D = A (16x16, row-major) * B (16x8, [k][n]) + C (16x8), exactly.
fn host_mma(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    let mut d = vec![0f32; 128];
    for m in 0..16 {
        for n in 0..8 {
            let dot: f64 = (0..16)
                .map(|k| a[m * 16 + k] as f64 * b[k * 8 + n] as f64)
                .sum();
            d[m * 8 + n] = (dot + c[m * 8 + n] as f64) as f32;
        }
    }
    d
}

/// Runs an isa_mma_* style kernel on A, B, C and returns D.
pub fn run_mma(kernel: &str, a: &[f32], b: &[f32], c: &[f32], as_bf16: bool) -> Vec<f32> {
    let ab = Buffer::from_slice("A", &bits(a, as_bf16)).unwrap();
    let bb = Buffer::from_slice("B", &bits(b, as_bf16)).unwrap();
    let cb = Buffer::from_slice("C", c).unwrap();
    let db = Buffer::new(128 * 4, "D").unwrap();
    Simt::new()
        .launch(kernel, 1, 32, 0, &args![&ab, &bb, &cb, &db])
        .unwrap_or_else(|e| panic!("{kernel}: {e}"));
    db.read()
}

#[test]
fn mma_bf16_and_f16_match_a_host_matmul() {
    for seed in 1..4u64 {
        let (a, b, c) = (
            small_ints(256, seed),
            small_ints(128, seed + 10),
            small_ints(128, seed + 20),
        );
        let want = host_mma(&a, &b, &c);
        assert_eq!(
            run_mma("isa_mma_bf16", &a, &b, &c, true),
            want,
            "bf16, seed {seed}"
        );
        assert_eq!(
            run_mma("isa_mma_f16", &a, &b, &c, false),
            want,
            "f16, seed {seed}"
        );
    }
    // Non-integer inputs: the f32 result is within a rounding of the exact one.
    let a: Vec<f32> = (0..256)
        .map(|i| bf16::from_f32(1.0 + i as f32 / 300.0).to_f32())
        .collect();
    let b: Vec<f32> = (0..128)
        .map(|i| bf16::from_f32(0.5 - i as f32 / 500.0).to_f32())
        .collect();
    let c = vec![0.25f32; 128];
    let got = run_mma("isa_mma_bf16", &a, &b, &c, true);
    for (g, w) in got.iter().zip(host_mma(&a, &b, &c)) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// Register j of lane t after ldmatrix.x4 of four 8x8 matrices m[j][row][col], as the PTX
/// ISA states it: without .trans, elements 2*(t%4) and 2*(t%4)+1 of row t/4; with .trans,
/// column t/4 of rows 2*(t%4) and 2*(t%4)+1. Low half first.
fn ldmatrix_expected(m: &[u16], trans: bool) -> Vec<u32> {
    let at = |j: usize, row: usize, col: usize| m[(8 * j + row) * 8 + col] as u32;
    let mut out = vec![0u32; 128];
    for t in 0..32 {
        for j in 0..4 {
            let (lo, hi) = if trans {
                (at(j, 2 * (t % 4), t / 4), at(j, 2 * (t % 4) + 1, t / 4))
            } else {
                (at(j, t / 4, 2 * (t % 4)), at(j, t / 4, 2 * (t % 4) + 1))
            };
            out[t * 4 + j] = lo | (hi << 16);
        }
    }
    out
}

#[test]
fn ldmatrix_x4_follows_the_isa_thread_mapping() {
    // Distinct elements, so any permutation mistake shows.
    let m: Vec<u16> = (0..256u16).map(|i| i * 251 + 7).collect();
    let src = Buffer::from_slice("src", &m).unwrap();
    for trans in [0u32, 1] {
        let out = Buffer::new(128 * 4, "out").unwrap();
        Simt::new()
            .launch("isa_ldmatrix_x4", 1, 32, 0, &args![&src, &out, trans])
            .unwrap();
        assert_eq!(
            out.read::<u32>(),
            ldmatrix_expected(&m, trans == 1),
            "trans={trans}"
        );
    }
}

#[test]
fn ldmatrix_feeds_mma_as_kernels_use_it() {
    let (a, b) = (small_ints(256, 31), small_ints(128, 32));
    let ab = Buffer::from_slice("A", &bits(&a, true)).unwrap();
    let bb = Buffer::from_slice("B", &bits(&b, true)).unwrap();
    let db = Buffer::new(128 * 4, "D").unwrap();
    Simt::new()
        .launch("isa_ldmatrix_mma_bf16", 1, 32, 0, &args![&ab, &bb, &db])
        .unwrap();
    assert_eq!(db.read::<f32>(), host_mma(&a, &b, &[0.0; 128]));
}

#[test]
fn cp_async_groups_land_when_waited_for_and_zero_fill() {
    const N: usize = 64;
    let src: Vec<u32> = (0..(8 * N) as u32)
        .map(|i| 0x0101_0101u32.wrapping_mul(i + 1))
        .collect();
    for (zfill, schedule) in [
        (16u32, Schedule::Parallel),
        (5, Schedule::Serial),
        (0, Schedule::SerialReverse),
    ] {
        let s = Buffer::from_slice("src", &src).unwrap();
        let out = Buffer::new(2 * N * 16, "out").unwrap();
        Simt::new()
            .with_schedule(schedule)
            .launch(
                "isa_cp_async",
                1,
                N as u32,
                (2 * N * 16) as u32,
                &args![&s, &out, zfill],
            )
            .unwrap_or_else(|e| panic!("zfill {zfill}: {e}"));
        let got: Vec<u8> = out.read();
        let src_bytes: Vec<u8> = src.iter().flat_map(|w| w.to_le_bytes()).collect();
        for t in 0..N {
            let first = &src_bytes[((t + 1) % N) * 16..][..16];
            assert_eq!(&got[t * 16..][..16], first, "group 0, thread {t}");
            let second = &src_bytes[(N + (t + 1) % N) * 16..][..16];
            let mut want = [0u8; 16];
            want[..zfill as usize].copy_from_slice(&second[..zfill as usize]);
            assert_eq!(
                &got[(N + t) * 16..][..16],
                &want,
                "group 1, thread {t}, zfill {zfill}"
            );
        }
    }
}

#[test]
fn warp_shuffles_votes_and_block_counts() {
    for schedule in [
        Schedule::Parallel,
        Schedule::Serial,
        Schedule::SerialReverse,
    ] {
        let out = Buffer::new(64 * 8 * 4, "out").unwrap();
        Simt::new()
            .with_schedule(schedule)
            .launch("isa_warp_ops", 1, 64, 0, &args![&out])
            .unwrap();
        let got: Vec<u32> = out.read();
        let v = |t: usize| t as u32 * 3 + 1;
        for t in 0..64usize {
            let (warp, lane) = (t / 32 * 32, t % 32);
            let o = &got[t * 8..][..8];
            let base16 = lane & !15;
            let ballot = (0..32).filter(|l| l % 3 == 0).fold(0u32, |m, l| m | 1 << l);
            let sum: u32 = (0..32).map(|l| v(warp + l)).sum();
            let want = [
                v(warp + (lane + 5) % 32),
                v(warp + (lane ^ 3)),
                if lane + 4 < 32 { v(t + 4) } else { v(t) },
                if lane >= base16 + 2 { v(t - 2) } else { v(t) },
                ballot,
                if lane < 16 {
                    v(warp + 15)
                } else {
                    v(warp + 16)
                },
                13, // threads 0, 5, ..., 60
                sum,
            ];
            assert_eq!(o, &want, "thread {t} under {schedule:?}");
        }
    }
}

#[test]
fn atomics_and_block_sum() {
    let count = Buffer::from_slice("count", &[0u32]).unwrap();
    let sum = Buffer::from_slice("sum", &[0f32]).unwrap();
    let block0 = Buffer::from_slice("block0", &[0u32]).unwrap();
    Simt::new()
        .launch("isa_atomics", 3, 128, 0, &args![&count, &sum, &block0])
        .unwrap();
    assert_eq!(count.read::<u32>(), vec![384]);
    assert_eq!(sum.read::<f32>(), vec![192.0]);
    assert_eq!(block0.read::<u32>(), vec![(0..128).sum::<u32>()]);
}

#[test]
fn bf16_and_f16_conversions_round_to_nearest_even() {
    // Ties and boundaries, then random bit patterns over the whole float range.
    let mut inputs: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        1.0 + 1.0 / 256.0,    // bf16 tie: to even (1.0)
        1.0 + 3.0 / 256.0,    // bf16 tie: to even (1 + 1/64)
        1.0 + 1.0 / 2048.0,   // f16 tie: to even (1.0)
        1.0 + 3.0 / 2048.0,   // f16 tie: to even (1 + 1/512)
        65504.0,              // f16 max
        65519.0,              // rounds to 65504
        65520.0,              // ties to infinity (even)
        2f32.powi(-24),       // smallest f16 subnormal
        2f32.powi(-25),       // tie between 0 and 2^-24: to even (0)
        1.5 * 2f32.powi(-25), // rounds to 2^-24
        3.0 * 2f32.powi(-25), // tie between 2^-24 and 2^-23: to even (2^-23)
        2f32.powi(-14),       // smallest f16 normal
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40, // f32 subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    inputs.extend((0..20_000u64).map(|i| f32::from_bits(random_bits(99, i) as u32)));
    let n = inputs.len() as u64;
    let input = Buffer::from_slice("in", &inputs).unwrap();
    let bf = Buffer::new(inputs.len() * 2, "bf").unwrap();
    let h = Buffer::new(inputs.len() * 2, "h").unwrap();
    let bf_back = Buffer::new(inputs.len() * 4, "bf_back").unwrap();
    let h_back = Buffer::new(inputs.len() * 4, "h_back").unwrap();
    Simt::new()
        .launch(
            "isa_convert",
            8,
            256,
            0,
            &args![&input, &bf, &h, &bf_back, &h_back, n],
        )
        .unwrap();
    let (bf, h): (Vec<u16>, Vec<u16>) = (bf.read(), h.read());
    let (bf_back, h_back): (Vec<f32>, Vec<f32>) = (bf_back.read(), h_back.read());
    for (i, &x) in inputs.iter().enumerate() {
        if x.is_nan() {
            // CUDA's canonical NaN.
            assert_eq!(
                (bf[i], h[i]),
                (0x7FFF, 0x7FFF),
                "NaN input {:#x}",
                x.to_bits()
            );
            assert!(bf_back[i].is_nan() && h_back[i].is_nan());
            continue;
        }
        let (wb, wh) = (bf16::from_f32(x), f16::from_f32(x));
        assert_eq!(bf[i], wb.to_bits(), "bf16 of {x:e} ({:#010x})", x.to_bits());
        assert_eq!(h[i], wh.to_bits(), "f16 of {x:e} ({:#010x})", x.to_bits());
        assert_eq!(
            bf_back[i].to_bits(),
            wb.to_f32().to_bits(),
            "bf16 -> f32 of {x:e}"
        );
        assert_eq!(
            h_back[i].to_bits(),
            wh.to_f32().to_bits(),
            "f16 -> f32 of {x:e}"
        );
    }
}
