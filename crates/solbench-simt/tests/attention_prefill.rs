//! The prefill attention kernels (kernels/attention_prefill.cu) run by the SIMT harness with
//! the launches the CUDA backend computes (`solbench_cuda::attention_prefill_launch::plan`,
//! the same function, for device shapes that make it choose each query tile and stage
//! count), against the host's naive f64 attention with the backend's own check
//! (`solbench_cuda::attention_prefill::SampledInputs`, every output element and LSE here).
//!
//! Shapes are tiny (the harness runs each CUDA thread as an OS thread and every mma as a warp
//! rendezvous) but cover what matters: MHA and GQA, causal and not, lengths 1, 17, 64, 65 and
//! 130 (below, at, just past and across the 64-key tiles and the 64/128-row query tiles),
//! more queries than keys (rows that see nothing), bf16 and f16, head dims 64, 128 and
//! 192x128, one and two K/V stages, 4- and 8-warp blocks, every thread schedule.

use half::bf16;
use solbench_core::case::Dtype;
use solbench_core::random::SplitMix64;
use solbench_cuda::attention_prefill::{decode, encode, Sample, SampledInputs};
use solbench_cuda::attention_prefill_launch::{self as plan, PrefillDevice, PrefillLaunch};
use solbench_host::attention::random_rounded;
use solbench_host::attention_reference::AttentionShape;
use solbench_simt::{args, Arg, Buffer, Schedule, Simt};
use std::sync::{Mutex, MutexGuard};

/// The tests of this file take turns. Launches are serialised by the harness anyway, but the
/// reference of one test (rayon, every core, spinning between jobs) would otherwise run
/// beside another test's launch and starve its OS threads: twice the wall time on 2 cores.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Devices that make `plan` pick each configuration for these small grids.
/// 132 SMs, 227 KiB: more SMs than blocks, so 64-row tiles (4 warps), two stages.
const H100: PrefillDevice = PrefillDevice {
    sms: 132,
    max_shared_per_block: 232_448,
};
/// One SM: any grid fills it, so 128-row tiles (8 warps) past 64 rows, two stages.
const ONE_SM: PrefillDevice = PrefillDevice {
    sms: 1,
    max_shared_per_block: 232_448,
};
/// 99 KiB per block (sm_86/89/120): 192x128 heads fall back to one stage.
const SMALL_SMEM: PrefillDevice = PrefillDevice {
    sms: 1,
    max_shared_per_block: 101_376,
};
/// 64 KiB: 128x128 heads in 128-row tiles with one stage.
const SMEM_64K: PrefillDevice = PrefillDevice {
    sms: 1,
    max_shared_per_block: 65_536,
};
/// 48 KiB: 128x128 heads only in 64-row tiles with one stage.
const SMEM_48K: PrefillDevice = PrefillDevice {
    sms: 1,
    max_shared_per_block: 49_152,
};

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    q_heads: usize,
    kv_heads: usize,
    d_qk: usize,
    d_v: usize,
    causal: bool,
    dtype: Dtype,
}

impl Case {
    fn shape(&self) -> AttentionShape {
        AttentionShape {
            batch: self.batch,
            q_len: self.q_len,
            kv_len: self.kv_len,
            q_heads: self.q_heads,
            kv_heads: self.kv_heads,
            head_dim_qk: self.d_qk,
            head_dim_v: self.d_v,
            causal: self.causal,
            softmax_scale: 1.0 / (self.d_qk as f32).sqrt(),
        }
    }
}

/// (heads, kv heads): MHA with 2 heads; GQA with both query heads on one KV head (cheap),
/// and 4 heads on 2 KV heads, where h / group and h % kv_heads differ (head 1 reads KV head 0).
const MHA: (usize, usize) = (2, 2);
const GQA: (usize, usize) = (2, 1);
const GQA4: (usize, usize) = (4, 2);

#[allow(clippy::too_many_arguments)]
fn case(
    batch: usize,
    q_len: usize,
    kv_len: usize,
    (q_heads, kv_heads): (usize, usize),
    (d_qk, d_v): (usize, usize),
    causal: bool,
    dtype: Dtype,
) -> Case {
    Case {
        batch,
        q_len,
        kv_len,
        q_heads,
        kv_heads,
        d_qk,
        d_v,
        causal,
        dtype,
    }
}

/// Runs `c` with the launch `plan` chooses on `dev`, checks every output element (and the
/// LSE when `with_lse`) against the naive f64 reference, and returns the launch.
fn run(c: Case, dev: PrefillDevice, schedule: Schedule, with_lse: bool) -> PrefillLaunch {
    let _turn = one_at_a_time();
    let shape = c.shape();
    let launch = plan::plan(&shape, c.dtype, dev).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let seed = (c.q_len * 1_000_003 + c.kv_len * 1009 + c.q_heads * 31 + c.d_qk) as u64;
    let mut rng = SplitMix64::new(seed ^ u64::from(c.causal));
    let q = random_rounded(&mut rng, shape.q_elems(), c.dtype);
    let k = random_rounded(&mut rng, shape.k_elems(), c.dtype);
    let v = random_rounded(&mut rng, shape.v_elems(), c.dtype);
    let qb = Buffer::from_slice("q", &encode(&q, c.dtype)).unwrap();
    let kb = Buffer::from_slice("k", &encode(&k, c.dtype)).unwrap();
    let vb = Buffer::from_slice("v", &encode(&v, c.dtype)).unwrap();
    // Fresh buffers hold 0xFF bytes: NaN in bf16, f16 and f32, as the backend poisons them.
    let ob = Buffer::new(2 * shape.o_elems(), "o").unwrap();
    let lb = Buffer::new(4 * shape.lse_elems(), "lse").unwrap();
    let lse_arg = if with_lse { Arg::from(&lb) } else { Arg::Null };
    let what = format!("{} {c:?} with {launch:?} ({schedule:?})", launch.kernel);
    Simt::new()
        .with_schedule(schedule)
        .launch(
            launch.kernel,
            launch.grid,
            launch.block,
            launch.shared_bytes,
            &args![
                &qb,
                &kb,
                &vb,
                &ob,
                lse_arg,
                shape.q_len as u32,
                shape.kv_len as u32,
                shape.q_heads as u32,
                shape.kv_heads as u32,
                u32::from(shape.causal),
                launch.stages,
                shape.softmax_scale,
            ],
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let o = decode(&ob.read::<u16>(), c.dtype);
    let lse: Vec<f32> = lb.read();
    let row = shape.q_heads * shape.head_dim_v;
    let refs = SampledInputs::gather(&shape, c.dtype, Sample::whole(&shape), &q, &k, &v);
    let mut lse_row = |b: usize, h: usize| -> Result<Vec<f32>, String> {
        Ok(lse[(b * shape.q_heads + h) * shape.q_len..][..shape.q_len].to_vec())
    };
    let check = refs
        .check(
            |b, i| Ok(o[(b * shape.q_len + i) * row..][..row].to_vec()),
            if with_lse { Some(&mut lse_row) } else { None },
        )
        .unwrap();
    assert!(check.passed, "{what}: {check:?}");
    assert_eq!(
        check.compared as usize,
        shape.o_elems() + if with_lse { shape.lse_elems() } else { 0 }
    );
    if !with_lse {
        assert!(
            lse.iter().all(|x| x.is_nan()),
            "{what}: lse written through null"
        );
    }
    launch
}

const D128: (usize, usize) = (128, 128);
const D64: (usize, usize) = (64, 64);
const D192: (usize, usize) = (192, 128);

#[test]
fn head_dim_128_bf16_tails_and_both_masks() {
    use Schedule::*;
    let bf = Dtype::Bf16;
    // (case, device, schedule, expected (block_m, stages))
    let runs = [
        // 130 queries x 65 keys, MHA, not causal: 3 query tiles of 64 (the last 2 rows), 2 key
        // tiles (the last 1 key).
        (
            case(1, 130, 65, MHA, D128, false, bf),
            H100,
            Parallel,
            (64, 2),
        ),
        // 65 x 65 causal GQA, one stage of 128-row tiles (8 warps): the diagonal tile and a
        // 1-key tail tile.
        (
            case(1, 65, 65, GQA, D128, true, bf),
            SMEM_64K,
            SerialReverse,
            (128, 1),
        ),
        // 17 queries over 65 keys, GQA, not causal.
        (
            case(1, 17, 65, GQA4, D128, false, bf),
            H100,
            Parallel,
            (64, 2),
        ),
        // 64 x 64 causal with one stage of 64-row tiles: everything exactly one tile.
        (
            case(1, 64, 64, GQA, D128, true, bf),
            SMEM_48K,
            Serial,
            (64, 1),
        ),
    ];
    for (c, dev, schedule, want) in runs {
        let l = run(c, dev, schedule, true);
        assert_eq!((l.block_m, l.stages), want, "{c:?}");
    }
}

#[test]
fn single_rows_and_rows_that_see_no_key() {
    let bf = Dtype::Bf16;
    // One query row over 64 keys: bottom-right causal, it sees them all.
    run(
        case(1, 1, 64, GQA4, D128, true, bf),
        H100,
        Schedule::Parallel,
        true,
    );
    // One row over one key, two sequences (the batch index of every tensor).
    run(
        case(2, 1, 1, MHA, D64, false, bf),
        H100,
        Schedule::Serial,
        true,
    );
    // 130 queries over 17 keys, causal: rows 0-112 see nothing (o = 0, lse = -inf); the first
    // 64-row tile is skipped whole, the second has both kinds of rows.
    run(
        case(1, 130, 17, MHA, D128, true, bf),
        H100,
        Schedule::SerialReverse,
        true,
    );
}

#[test]
fn f16_and_no_lse() {
    // A null LSE pointer: O only, and nothing written through it.
    run(
        case(1, 65, 17, MHA, D128, false, Dtype::F16),
        H100,
        Schedule::Serial,
        false,
    );
}

#[test]
fn head_dim_64() {
    // 130 x 130 causal GQA in 128-row tiles (8 warps), two stages: query tile 0 takes key
    // tiles 0-1, query tile 1 (2 rows) key tiles 0-2, the last holding 2 keys.
    let l = run(
        case(1, 130, 130, GQA, D64, true, Dtype::Bf16),
        ONE_SM,
        Schedule::Parallel,
        true,
    );
    assert_eq!((l.block_m, l.stages), (128, 2));
    // f16, 40 KiB: 128-row tiles with one stage (2 x (8192 + 8192) bytes).
    let tight = PrefillDevice {
        sms: 1,
        max_shared_per_block: 40 << 10,
    };
    let l = run(
        case(1, 65, 130, MHA, D64, false, Dtype::F16),
        tight,
        Schedule::SerialReverse,
        true,
    );
    assert_eq!((l.block_m, l.stages, l.shared_bytes), (128, 1, 32_768));
}

#[test]
fn head_dims_192_by_128() {
    // DeepSeek-V3's un-absorbed prefill: Q/K 192 wide (Q read from shared memory per tile),
    // V and O 128 wide (O staged in the 192-wide Q tile). 65 queries over 130 keys, causal.
    let one_head = (1, 1);
    let l = run(
        case(1, 65, 130, one_head, D192, true, Dtype::Bf16),
        ONE_SM,
        Schedule::Serial,
        true,
    );
    assert_eq!((l.block_m, l.stages), (128, 2));
    let l = run(
        case(1, 65, 17, MHA, D192, false, Dtype::F16),
        SMALL_SMEM,
        Schedule::Parallel,
        true,
    );
    // 99 KiB: two stages would take 128 KiB; one takes 2 x (128x192 + 64x320) = 88 KiB.
    assert_eq!((l.block_m, l.stages, l.shared_bytes), (128, 1, 90_112));
}

#[test]
fn a_wrong_scale_or_mask_is_caught_by_the_same_check() {
    // The check the tests rely on is not vacuous: the kernel's real output, judged against
    // the reference of a different (non-causal) problem, fails.
    let _turn = one_at_a_time();
    let c = case(1, 65, 65, MHA, D64, true, Dtype::Bf16);
    let shape = c.shape();
    let launch = plan::plan(&shape, c.dtype, H100).unwrap();
    let mut rng = SplitMix64::new(77);
    let q = random_rounded(&mut rng, shape.q_elems(), c.dtype);
    let k = random_rounded(&mut rng, shape.k_elems(), c.dtype);
    let v = random_rounded(&mut rng, shape.v_elems(), c.dtype);
    let qb = Buffer::from_slice("q", &encode(&q, c.dtype)).unwrap();
    let kb = Buffer::from_slice("k", &encode(&k, c.dtype)).unwrap();
    let vb = Buffer::from_slice("v", &encode(&v, c.dtype)).unwrap();
    let ob = Buffer::new(2 * shape.o_elems(), "o").unwrap();
    Simt::new()
        .launch(
            launch.kernel,
            launch.grid,
            launch.block,
            launch.shared_bytes,
            &args![
                &qb,
                &kb,
                &vb,
                &ob,
                Arg::Null,
                65u32,
                65u32,
                2u32,
                2u32,
                1u32,
                launch.stages,
                shape.softmax_scale,
            ],
        )
        .unwrap();
    let o: Vec<f32> = ob
        .read::<u16>()
        .iter()
        .map(|&b| bf16::from_bits(b).to_f32())
        .collect();
    let row = 2 * 64;
    let judge = |s: &AttentionShape| {
        SampledInputs::gather(s, c.dtype, Sample::whole(s), &q, &k, &v)
            .check(|b, i| Ok(o[(b * 65 + i) * row..][..row].to_vec()), None)
            .unwrap()
    };
    assert!(judge(&shape).passed);
    let not_causal = AttentionShape {
        causal: false,
        ..shape
    };
    assert!(!judge(&not_causal).passed);
    let rescaled = AttentionShape {
        softmax_scale: shape.softmax_scale * 1.05,
        ..shape
    };
    assert!(!judge(&rescaled).passed);
}

#[test]
fn every_prefill_kernel_is_in_the_harness() {
    let registered: Vec<String> = solbench_simt::kernels()
        .into_iter()
        .filter(|k| k.file == "kernels/attention_prefill.cu")
        .map(|k| k.name)
        .collect();
    let mut planned = plan::kernel_names();
    planned.sort_unstable();
    let mut found: Vec<&str> = registered.iter().map(String::as_str).collect();
    found.sort_unstable();
    assert_eq!(found, planned);
}
