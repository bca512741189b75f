//! Launch configurations of the decode attention kernels (`kernels/attention_decode.cu`):
//! which compiled shape serves a problem, its shared memory, the split count, the grid, the
//! partial buffers and the combine launch. Pure functions, unit-tested here and called
//! unchanged by the SIMT harness tests (`crates/solbench-simt/tests/attention_decode.rs`).
//!
//! The prefill kernels' launch logic lives in `attention_prefill_launch.rs`.

use crate::launch::Launch1d;
use solbench_core::case::Dtype;
use std::ops::Range;

/// Most splits of one KV sequence. The partial buffers grow with it and the combine loops
/// over it; past ~2 waves of blocks more splits only add partial traffic (the cost model
/// below never asks for more on today's GPUs).
pub const MAX_SPLITS: u32 = 128;
/// Resident blocks an SM needs before it streams at its share of HBM bandwidth. A block is
/// double-buffered (one tile loading while one is computed) but stops issuing loads at its
/// barriers and during the softmax, so one block alone leaves the load pipe idle part of
/// the time; two interleave. An assumption of the split model, documented in
/// docs/attention.md.
pub const SATURATING_BLOCKS: u32 = 2;
/// Threads of the combine kernel's blocks: four warps, one output row each.
pub const COMBINE_BLOCK: u32 = 128;
/// Elements of padding after every shared-memory row (`PAD` in the kernel).
const SMEM_PAD: u32 = 8;
/// Warps sharing one 16-row tile (`SLICES` in the kernel).
const SLICES: u32 = 4;
/// K/V tiles in flight (`STAGES` in the kernel).
const STAGES: u32 = 2;

/// One compiled split-kernel shape of attention_decode.cu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeKernel {
    /// `d64`, `d128`, `d256`, `mla_h16` or `mla_h64`: the part of the kernel name after
    /// the type.
    pub shape: &'static str,
    pub head_dim_qk: u32,
    pub head_dim_v: u32,
    /// V is the first `head_dim_v` columns of the K row (absorbed MLA): one latent read.
    pub mla: bool,
    /// Query rows (query heads × positions of one KV head) per block.
    pub rows: u32,
    /// Keys per K/V tile.
    pub kv_tile: u32,
    /// Threads per block: 4 warps per 16-row tile.
    pub threads: u32,
}

impl DecodeKernel {
    /// Dynamic shared memory the kernel needs (its launch contract).
    pub fn shared_bytes(&self) -> u32 {
        decode_shared_bytes(
            self.head_dim_qk,
            self.head_dim_v,
            self.mla,
            self.rows,
            self.kv_tile,
        )
    }

    /// The exported kernel name for `dtype` (bf16 or f16).
    pub fn name(&self, dtype: Dtype) -> Result<String, String> {
        Ok(match self.mla {
            true => format!(
                "sb_attn_decode_mla_{}_{}",
                type_suffix(dtype)?,
                &self.shape[4..]
            ),
            false => format!("sb_attn_decode_{}_{}", type_suffix(dtype)?, self.shape),
        })
    }
}

const fn gqa(shape: &'static str, d: u32, kv_tile: u32) -> DecodeKernel {
    DecodeKernel {
        shape,
        head_dim_qk: d,
        head_dim_v: d,
        mla: false,
        rows: 16,
        kv_tile,
        threads: 128,
    }
}

const fn mla(shape: &'static str, rows: u32) -> DecodeKernel {
    DecodeKernel {
        shape,
        head_dim_qk: 576,
        head_dim_v: 512,
        mla: true,
        rows,
        kv_tile: 32,
        threads: 128 * (rows / 16),
    }
}

/// Every split-kernel shape the file exports (per type). Tiles are 64 keys where K and V
/// of a tile fit twice (double-buffered) in ~70 KiB, 32 keys for the wider rows.
pub const DECODE_KERNELS: [DecodeKernel; 5] = [
    gqa("d64", 64, 64),
    gqa("d128", 128, 64),
    gqa("d256", 256, 32),
    mla("mla_h16", 16),
    mla("mla_h64", 64),
];

/// The combine kernel's name for `dtype`.
pub fn combine_name(dtype: Dtype) -> Result<String, String> {
    Ok(format!("sb_attn_combine_{}", type_suffix(dtype)?))
}

fn type_suffix(dtype: Dtype) -> Result<&'static str, String> {
    match dtype {
        Dtype::Bf16 => Ok("bf16"),
        Dtype::F16 => Ok("f16"),
        other => Err(format!(
            "the decode attention kernels take bf16 or f16 inputs, not {other}"
        )),
    }
}

/// The split kernel's dynamic shared memory in bytes (the launch contract's formula): Q rows,
/// two stages of K tiles (and of V tiles unless V lives in K), P, the row maxima and sums
/// of the four warps of each row tile, and two stages of key slots.
pub fn decode_shared_bytes(d_qk: u32, d_v: u32, v_in_k: bool, rows: u32, kv_tile: u32) -> u32 {
    let row = |d: u32| (d + SMEM_PAD) * 2;
    let q = rows * row(d_qk);
    let k = STAGES * kv_tile * row(d_qk);
    let v = if v_in_k {
        0
    } else {
        STAGES * kv_tile * row(d_v)
    };
    let p = rows * row(kv_tile);
    let stats = 2 * SLICES * rows * 4;
    let slots = STAGES * kv_tile * 4;
    q + k + v + p + stats + slots
}

/// A decode attention problem as the kernels see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeProblem {
    pub batch: u32,
    /// Query positions per sequence (1 in decode; up to a few for speculative decoding).
    pub q_len: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub kv_len: u32,
    pub head_dim_qk: u32,
    pub head_dim_v: u32,
    /// Absorbed MLA: V is the first `head_dim_v` columns of the single latent K head.
    pub mla: bool,
    /// Bytes per stored K/V element.
    pub kv_bytes: u32,
}

impl DecodeProblem {
    /// Query rows that share one KV head: `q_heads / kv_heads × q_len`.
    pub fn group_rows(&self) -> u32 {
        self.q_heads / self.kv_heads.max(1) * self.q_len
    }

    /// Bytes of K and V of one token of one KV head (the latent row once for MLA).
    pub fn kv_row_bytes(&self) -> u64 {
        let dims = if self.mla {
            self.head_dim_qk
        } else {
            self.head_dim_qk + self.head_dim_v
        };
        dims as u64 * self.kv_bytes as u64
    }
}

/// The kernel shape for `p` whose shared memory fits `smem_optin` (the device's
/// per-block opt-in limit). MLA takes 64-row blocks (one latent read per 64 heads) when
/// more than 16 rows share the latent head and the GPU has the shared memory for it (not
/// on the 100 KiB parts, sm_86/89/120), else 16-row blocks.
pub fn select_kernel(p: &DecodeProblem, smem_optin: u32) -> Result<DecodeKernel, String> {
    if p.kv_heads == 0 || !p.q_heads.is_multiple_of(p.kv_heads) {
        return Err(format!(
            "q_heads ({}) must be a multiple of kv_heads ({})",
            p.q_heads, p.kv_heads
        ));
    }
    let fits = |k: &DecodeKernel| k.shared_bytes() <= smem_optin;
    let kernel = if p.mla {
        if (p.head_dim_qk, p.head_dim_v, p.kv_heads) != (576, 512, 1) {
            return Err(format!(
                "the MLA decode kernel is compiled for DeepSeek-V3's absorbed shape (d_qk 576, d_v 512, one latent KV head), not d_qk {}, d_v {}, {} KV heads",
                p.head_dim_qk, p.head_dim_v, p.kv_heads
            ));
        }
        let [.., h16, h64] = DECODE_KERNELS;
        if p.group_rows() > 16 && fits(&h64) {
            h64
        } else {
            h16
        }
    } else {
        let Some(k) = DECODE_KERNELS
            .iter()
            .find(|k| !k.mla && k.head_dim_qk == p.head_dim_qk && k.head_dim_v == p.head_dim_v)
        else {
            return Err(format!(
                "the decode kernels are compiled for head dims 64, 128 and 256 with d_qk == d_v, not d_qk {}, d_v {}",
                p.head_dim_qk, p.head_dim_v
            ));
        };
        *k
    };
    if !fits(&kernel) {
        return Err(format!(
            "sb_attn_decode_*_{} needs {} bytes of shared memory per block; this GPU allows {}",
            kernel.shape,
            kernel.shared_bytes(),
            smem_optin
        ));
    }
    Ok(kernel)
}

/// Blocks one split of `p` needs: (batch, KV head, head tile).
fn blocks_per_split(p: &DecodeProblem, k: &DecodeKernel) -> u64 {
    p.batch as u64 * p.kv_heads as u64 * p.group_rows().div_ceil(k.rows) as u64
}

/// The split count: the one that minimises a small model of the split kernel's and the
/// combine's time (ties go to fewer splits). Per split count `s`:
///
/// - each block streams `ceil(tiles / s)` K/V tiles, its Q rows and (when `s > 1`) writes
///   its partial O and LSE (f32);
/// - blocks spread evenly over the SMs, `ceil(blocks / sms)` per SM; an SM streams at its
///   share R = BW / sms once [`SATURATING_BLOCKS`] of them are resident together, slower
///   with fewer; `blocks_per_sm` (the occupancy limit) caps how many are;
/// - the kernel also cannot beat the whole GPU's bandwidth (K/V once per KV head, since the
///   head tiles of a KV head share it through L2);
/// - the combine reads every partial once and writes O.
///
/// Time is counted in bytes at rate R, so the device's bandwidth cancels out. This picks
/// enough blocks for about two per SM when the sequence is long enough (one block per SM
/// runs at half rate), never a split of less than one tile, and no split whose partial
/// round trip costs more than it gains in parallelism (wide MLA rows make that real: 64
/// heads × 512 × 4 B = 128 KiB of partial per block).
pub fn choose_splits(p: &DecodeProblem, k: &DecodeKernel, sms: u32, blocks_per_sm: u32) -> u32 {
    let tiles = p.kv_len.div_ceil(k.kv_tile).max(1);
    let sms = sms.max(1) as u64;
    let items = blocks_per_split(p, k);
    let rows_per_block = p.group_rows().min(k.rows) as u64;
    let tile_bytes = k.kv_tile as u64 * p.kv_row_bytes();
    let q_bytes = rows_per_block * p.head_dim_qk as u64 * p.kv_bytes as u64;
    let partial_bytes = rows_per_block * (p.head_dim_v as u64 + 1) * 4;
    let out_bytes = p.batch as u64 * p.q_heads as u64 * p.q_len as u64 * p.head_dim_v as u64 * 2;
    let kv_bytes = p.batch as u64 * p.kv_heads as u64 * tiles as u64 * tile_bytes;
    let max_splits = tiles.min(MAX_SPLITS);
    let mut best = (f64::INFINITY, 1u32);
    for s in 1..=max_splits {
        let split = s > 1;
        let partial = if split { partial_bytes } else { 0 };
        let block_bytes = tiles.div_ceil(s) as u64 * tile_bytes + q_bytes + partial;
        let blocks = items * s as u64;
        let per_sm = blocks.div_ceil(sms);
        let resident = per_sm
            .min(blocks_per_sm.max(1) as u64)
            .min(SATURATING_BLOCKS as u64);
        let sm_time = (per_sm * block_bytes) as f64 * SATURATING_BLOCKS as f64 / resident as f64;
        let gpu_time = (kv_bytes + blocks * (q_bytes + partial)) as f64 / sms as f64;
        let combine = if split {
            (blocks * partial_bytes + out_bytes) as f64 / sms as f64
        } else {
            0.0
        };
        let cost = sm_time.max(gpu_time) + combine;
        if cost < best.0 * (1.0 - 1e-9) {
            best = (cost, s);
        }
    }
    best.1
}

/// Tiles `[s·tiles/splits, (s+1)·tiles/splits)` of split `s`: the kernel's partition (tile
/// counts differ by at most one; empty when `splits > tiles`).
pub fn split_tiles(tiles: u32, splits: u32, s: u32) -> Range<u32> {
    let bound = |i: u32| (i as u64 * tiles as u64 / splits.max(1) as u64) as u32;
    bound(s)..bound(s + 1)
}

/// Everything one decode call launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLaunch {
    pub kernel: DecodeKernel,
    /// The split kernel: `grid` blocks of `kernel.threads`, `shared_bytes` dynamic.
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: u32,
    pub splits: u32,
    /// Blocks per (batch, KV head, split): query-row tiles of one KV head's group.
    pub head_tiles: u32,
    /// K/V tiles per sequence.
    pub tiles: u32,
    /// The occupancy the split count was chosen for.
    pub blocks_per_sm: u32,
    /// f32 elements of `o_partial` (0 with one split: the split kernel writes O).
    pub partial_o_elems: u64,
    /// f32 elements of the LSE buffer: `splits × batch × q_heads × q_len` (the final LSE
    /// when there is one split; the combine writes its own LSE output).
    pub lse_elems: u64,
    /// The combine launch, when there is more than one split.
    pub combine: Option<Launch1d>,
}

/// The combine kernel's launch for `rows` output rows: one warp per row.
pub fn combine_launch(rows: u64) -> Launch1d {
    let per_block = (COMBINE_BLOCK / 32) as u64;
    Launch1d {
        grid: rows.div_ceil(per_block).max(1) as u32,
        block: COMBINE_BLOCK,
        shared_bytes: 0,
    }
}

/// The launch for `p` on a GPU of `sms` SMs where `blocks_per_sm` blocks of `k` fit, with
/// the split count of [`choose_splits`].
pub fn decode_launch(
    p: &DecodeProblem,
    k: &DecodeKernel,
    sms: u32,
    blocks_per_sm: u32,
) -> Result<DecodeLaunch, String> {
    let splits = choose_splits(p, k, sms, blocks_per_sm);
    decode_launch_with_splits(p, k, splits, blocks_per_sm)
}

/// The launch for `p` with a given split count (tests force 1, several, or more than the
/// tiles). Err when the problem breaks the kernel's 32-bit index limits.
pub fn decode_launch_with_splits(
    p: &DecodeProblem,
    k: &DecodeKernel,
    splits: u32,
    blocks_per_sm: u32,
) -> Result<DecodeLaunch, String> {
    if splits == 0 {
        return Err("the split count must be at least 1".into());
    }
    if p.batch == 0 || p.q_len == 0 || p.kv_len == 0 || p.kv_heads == 0 {
        return Err(format!("an empty decode problem: {p:?}"));
    }
    let tiles = p.kv_len.div_ceil(k.kv_tile);
    let rows = p.batch as u64 * p.q_heads as u64 * p.q_len as u64;
    let grid = blocks_per_split(p, k) * splits as u64;
    if grid > i32::MAX as u64
        || rows > i32::MAX as u64
        || tiles as u64 * splits as u64 > u32::MAX as u64
    {
        return Err(format!(
            "{grid} blocks, {rows} output rows or {splits} splits of {tiles} tiles exceed the decode kernel's 32-bit indices"
        ));
    }
    let lse_elems = splits as u64 * rows;
    let partial_o_elems = if splits > 1 {
        lse_elems * p.head_dim_v as u64
    } else {
        0
    };
    Ok(DecodeLaunch {
        kernel: *k,
        grid: grid as u32,
        block: k.threads,
        shared_bytes: k.shared_bytes(),
        splits,
        head_tiles: p.group_rows().div_ceil(k.rows),
        tiles,
        blocks_per_sm,
        partial_o_elems,
        lse_elems,
        combine: (splits > 1).then(|| combine_launch(rows)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(batch: u32, q_heads: u32, kv_heads: u32, kv_len: u32, d: u32) -> DecodeProblem {
        DecodeProblem {
            batch,
            q_len: 1,
            q_heads,
            kv_heads,
            kv_len,
            head_dim_qk: d,
            head_dim_v: d,
            mla: false,
            kv_bytes: 2,
        }
    }

    fn deepseek(batch: u32, kv_len: u32) -> DecodeProblem {
        DecodeProblem {
            head_dim_qk: 576,
            head_dim_v: 512,
            mla: true,
            ..problem(batch, 128, 1, kv_len, 0)
        }
    }

    const H100_SMEM: u32 = 232_448; // 227 KiB opt-in
    const A100_SMEM: u32 = 166_912; // 163 KiB
    const ADA_SMEM: u32 = 101_376; // 99 KiB (sm_89)

    #[test]
    fn shared_memory_matches_the_kernel_contract() {
        // The numbers in attention_decode.cu's launch contract (and its static_asserts).
        let bytes: Vec<u32> = DECODE_KERNELS.iter().map(|k| k.shared_bytes()).collect();
        assert_eq!(bytes, [42_496, 77_312, 78_080, 95_488, 156_928]);
        // d128 by hand: Q 16x136x2 = 4352, K and V 2x64x136x2 = 34,816 each, P 16x72x2 =
        // 2304, row stats 2x4x16x4 = 512, slots 2x64x4 = 512.
        assert_eq!(4352 + 2 * 34_816 + 2304 + 512 + 512, 77_312);
        // MLA h64: Q 64x584x2 = 74,752, K 2x32x584x2 = 74,752 (V lives in K), P 64x40x2 =
        // 5120, stats 2048, slots 256.
        assert_eq!(74_752 * 2 + 5120 + 2048 + 256, 156_928);
        let threads: Vec<u32> = DECODE_KERNELS.iter().map(|k| k.threads).collect();
        assert_eq!(threads, [128, 128, 128, 128, 512]);
    }

    #[test]
    fn kernel_names_and_selection() {
        let p = problem(1, 32, 8, 100, 128);
        let k = select_kernel(&p, H100_SMEM).unwrap();
        assert_eq!(k.name(Dtype::Bf16).unwrap(), "sb_attn_decode_bf16_d128");
        assert_eq!(k.name(Dtype::F16).unwrap(), "sb_attn_decode_f16_d128");
        assert!(k.name(Dtype::F32).is_err());
        assert_eq!(combine_name(Dtype::Bf16).unwrap(), "sb_attn_combine_bf16");
        let k = select_kernel(&problem(1, 64, 8, 100, 64), H100_SMEM).unwrap();
        assert_eq!(k.shape, "d64");
        // Unsupported dims and ratios say why.
        let err = select_kernel(&problem(1, 8, 8, 100, 96), H100_SMEM).unwrap_err();
        assert!(err.contains("64, 128 and 256"), "{err}");
        let mut uneven = problem(1, 8, 8, 100, 128);
        uneven.head_dim_v = 64;
        assert!(select_kernel(&uneven, H100_SMEM).is_err());
        assert!(select_kernel(&problem(1, 6, 4, 100, 128), H100_SMEM).is_err());
        // 77,312 B does not fit a 48 KiB default-only device.
        let err = select_kernel(&problem(1, 8, 8, 100, 128), 49_152).unwrap_err();
        assert!(err.contains("77312"), "{err}");

        // MLA: 128 heads take 64-row blocks where they fit, 16 heads 16-row blocks.
        let k = select_kernel(&deepseek(4, 2048), H100_SMEM).unwrap();
        assert_eq!(k.name(Dtype::Bf16).unwrap(), "sb_attn_decode_mla_bf16_h64");
        assert_eq!(
            select_kernel(&deepseek(4, 2048), A100_SMEM).unwrap().rows,
            64
        );
        assert_eq!(
            select_kernel(&deepseek(4, 2048), ADA_SMEM).unwrap().rows,
            16
        );
        let tp8 = DecodeProblem {
            q_heads: 16,
            ..deepseek(4, 2048)
        };
        let k = select_kernel(&tp8, H100_SMEM).unwrap();
        assert_eq!(k.name(Dtype::F16).unwrap(), "sb_attn_decode_mla_f16_h16");
        let wrong = DecodeProblem {
            head_dim_qk: 192,
            ..deepseek(1, 10)
        };
        assert!(select_kernel(&wrong, H100_SMEM)
            .unwrap_err()
            .contains("576"));
    }

    #[test]
    fn split_partition_covers_every_tile_once() {
        assert_eq!(split_tiles(10, 3, 0), 0..3);
        assert_eq!(split_tiles(10, 3, 1), 3..6);
        assert_eq!(split_tiles(10, 3, 2), 6..10);
        // More splits than tiles: some are empty, none overlap.
        let parts: Vec<_> = (0..5).map(|s| split_tiles(2, 5, s)).collect();
        assert_eq!(parts, [0..0, 0..0, 0..1, 1..1, 1..2]);
        for (tiles, splits) in [(1, 1), (7, 7), (64, 5), (4096, 128)] {
            let mut next = 0;
            for s in 0..splits {
                let r = split_tiles(tiles, splits, s);
                assert_eq!(r.start, next);
                assert!(r.len() as u32 <= tiles.div_ceil(splits));
                next = r.end;
            }
            assert_eq!(next, tiles);
        }
    }

    /// Hand-computed cases of the split model on an H100 (132 SMs) and an A100 (108 SMs).
    #[test]
    fn split_counts_on_h100_and_a100() {
        // Llama-3-8B, batch 4, 4096 keys: 4 x 8 = 32 blocks per split, 64 tiles of 32 KiB;
        // each block also reads 1 KiB of Q and (split) writes 2 KiB of partials (4 rows).
        // s = 4: 128 blocks, one per SM, so half rate: 2 x (16 tiles + 3 KiB) = 1.05 M.
        // s = 8: 256 blocks, two per SM resident together: 2 x (8 tiles + 3 KiB) = 530 K.
        // s = 16: four per SM: 4 x (4 tiles + 3 KiB) = 537 K, and more partials. So 8.
        let l8b = problem(4, 32, 8, 4096, 128);
        let k = select_kernel(&l8b, H100_SMEM).unwrap();
        assert_eq!(choose_splits(&l8b, &k, 132, 2), 8);
        // With one resident block per SM (occupancy 1), s = 8 runs its two blocks one after
        // the other at half rate, 4 x 265 K: no better than s = 4, which has fewer partials.
        assert_eq!(choose_splits(&l8b, &k, 132, 1), 4);
        // A100, 108 SMs: s = 6 gives 192 blocks, 2 per SM of 11 tiles (727 K); s = 13 gives
        // 416 blocks, at most 4 per SM of 5 tiles (668 K): finer pieces even out the SMs.
        assert_eq!(choose_splits(&l8b, &k, 108, 2), 13);

        // Llama-3-70B, batch 32, 8192 keys: 256 blocks already fill 132 SMs twice (1.94 per
        // SM): no split. On 108 SMs the same 256 blocks are 2.37 per SM, i.e. 3 on the
        // busiest (79% balanced); 8 splits make 2048 blocks of 16 tiles, 19 on the busiest
        // of 18.96 on average, which wins despite the partials.
        let l70 = problem(32, 64, 8, 8192, 128);
        assert_eq!(choose_splits(&l70, &k, 132, 2), 1);
        assert_eq!(choose_splits(&l70, &k, 108, 2), 8);
        // Batch 1, 1024 keys: 8 blocks per split and 16 tiles: one tile per split (the
        // cap), 128 blocks.
        let l70_b1 = problem(1, 64, 8, 1024, 128);
        assert_eq!(choose_splits(&l70_b1, &k, 132, 2), 16);
        // A split is never shorter than one tile: 100 keys are 2 tiles.
        assert_eq!(choose_splits(&problem(1, 8, 1, 100, 128), &k, 132, 2), 2);
        assert_eq!(choose_splits(&problem(1, 8, 1, 1, 128), &k, 132, 2), 1);
        // Very long single sequence: capped at MAX_SPLITS.
        let long = problem(1, 8, 1, 1 << 20, 128);
        assert_eq!(choose_splits(&long, &k, 132, 2), 128);

        // DeepSeek-V3 MLA, batch 4, 2048 keys, 128 heads in two 64-row tiles: 8 blocks per
        // split, 64 tiles of 36 KiB; each split block also reads 72 KiB of Q and writes
        // 128 KiB of partials, and only one block fits an SM. 16 splits (128 blocks, one
        // per SM, 4 tiles each) beat 8 (half the SMs idle) and 32 (two blocks per SM that
        // cannot be resident together, each with the same fixed Q and partial bytes):
        // 2 x (4 x 36 KiB + 72 KiB + 128 KiB) = 705 K against 1.0 M and 1.1 M. On 108 SMs:
        // 13 splits, 104 blocks of 5 tiles.
        let ds = deepseek(4, 2048);
        let k = select_kernel(&ds, H100_SMEM).unwrap();
        assert_eq!(choose_splits(&ds, &k, 132, 1), 16);
        assert_eq!(choose_splits(&ds, &k, 108, 1), 13);
    }

    #[test]
    fn launch_sizes_grid_and_buffers() {
        let p = problem(3, 32, 8, 300, 64);
        let k = select_kernel(&p, H100_SMEM).unwrap();
        let l = decode_launch_with_splits(&p, &k, 4, 2).unwrap();
        assert_eq!((l.tiles, l.head_tiles, l.splits), (5, 1, 4));
        assert_eq!(l.grid, 3 * 8 * 4);
        assert_eq!((l.block, l.shared_bytes), (128, 42_496));
        assert_eq!(l.lse_elems, 4 * 3 * 32);
        assert_eq!(l.partial_o_elems, 4 * 3 * 32 * 64);
        assert_eq!(
            l.combine,
            Some(Launch1d {
                grid: 24,
                block: 128,
                shared_bytes: 0
            })
        );
        // One split: no partials and no combine; the LSE buffer is the final LSE.
        let one = decode_launch_with_splits(&p, &k, 1, 2).unwrap();
        assert_eq!(
            (one.partial_o_elems, one.lse_elems, one.combine),
            (0, 96, None)
        );
        // 40 query heads on one KV head: 3 head tiles of 16 rows.
        let wide = problem(2, 40, 1, 300, 64);
        let l = decode_launch_with_splits(&wide, &k, 2, 2).unwrap();
        assert_eq!((l.head_tiles, l.grid), (3, 2 * 3 * 2));
        // q_len 3: 8 heads x 3 positions = 24 packed rows -> 2 tiles.
        let spec = DecodeProblem {
            q_len: 3,
            ..problem(1, 8, 1, 300, 64)
        };
        assert_eq!(
            decode_launch_with_splits(&spec, &k, 1, 2)
                .unwrap()
                .head_tiles,
            2
        );
        assert_eq!(combine_launch(1).grid, 1);
        assert_eq!(combine_launch(9).grid, 3);
        assert!(decode_launch_with_splits(&p, &k, 0, 2).is_err());
        let huge = problem(1 << 20, 4096, 1, 1 << 20, 64);
        assert!(decode_launch_with_splits(&huge, &k, 1, 2).is_err());
        // decode_launch = choose_splits + decode_launch_with_splits.
        let auto = decode_launch(&p, &k, 4, 2).unwrap();
        assert_eq!(auto.splits, choose_splits(&p, &k, 4, 2));
    }
}
