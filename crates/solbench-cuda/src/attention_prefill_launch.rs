//! Launch configuration of the prefill attention kernels (`kernels/attention_prefill.cu`):
//! which kernel, the query tile, the number of K/V stages, the dynamic shared memory and the
//! grid, chosen from the device's SM count and its opt-in shared memory per block, plus the
//! work the tiled kernel really executes under a causal mask. Pure functions: the CUDA
//! workload and the SIMT harness tests call the same ones.

use solbench_core::case::Dtype;
use solbench_host::attention_reference::AttentionShape;

/// Keys per K/V tile (`kBlockN` in the kernel).
pub const BLOCK_N: u32 = 64;
/// Query rows each warp owns (one m16 tile).
pub const ROWS_PER_WARP: u32 = 16;
/// The largest block the kernels are compiled for (`__launch_bounds__(256, ...)`).
pub const MAX_WARPS: u32 = 8;
/// CUDA's limit on grid.y and grid.z.
const MAX_GRID_YZ: u64 = 65_535;

/// (d_qk, d_v) pairs that have a kernel: 64 (gpt-oss), 128 (Llama, Qwen, Mistral) and the
/// un-absorbed DeepSeek-V3 prefill (192 for Q/K, 128 for V).
pub const HEAD_DIMS: [(usize, usize); 3] = [(64, 64), (128, 128), (192, 128)];

/// What the launch choice needs to know about the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillDevice {
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Dynamic shared memory one block may use after opting in
    /// (`CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`): 163 KiB on A100, 227 KiB
    /// on H100 and B200, 99 KiB on the sm_86/89/120 parts.
    pub max_shared_per_block: u32,
}

/// One prefill launch: `kernel<<<grid, block, shared_bytes>>>` with `stages` as an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillLaunch {
    pub kernel: &'static str,
    /// (q_heads, batch, query tiles), the kernel's grid contract.
    pub grid: (u32, u32, u32),
    /// Threads per block: 32 per warp, 16 query rows per warp.
    pub block: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    /// Query rows per block (BM).
    pub block_m: u32,
    /// Keys per K/V tile (BN).
    pub block_n: u32,
    /// K/V buffers: 2 overlaps the next tile's load with a whole tile of compute, 1 with half.
    pub stages: u32,
}

/// The kernel for `dtype` inputs with head dims `d_qk` x `d_v`, if there is one.
pub fn kernel_name(dtype: Dtype, d_qk: usize, d_v: usize) -> Option<&'static str> {
    Some(match (dtype, d_qk, d_v) {
        (Dtype::Bf16, 64, 64) => "sb_attn_prefill_bf16_64x64",
        (Dtype::F16, 64, 64) => "sb_attn_prefill_f16_64x64",
        (Dtype::Bf16, 128, 128) => "sb_attn_prefill_bf16_128x128",
        (Dtype::F16, 128, 128) => "sb_attn_prefill_f16_128x128",
        (Dtype::Bf16, 192, 128) => "sb_attn_prefill_bf16_192x128",
        (Dtype::F16, 192, 128) => "sb_attn_prefill_f16_192x128",
        _ => return None,
    })
}

/// Every prefill kernel name (for the harness's coverage list).
pub fn kernel_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    for dtype in [Dtype::Bf16, Dtype::F16] {
        for (d_qk, d_v) in HEAD_DIMS {
            names.extend(kernel_name(dtype, d_qk, d_v));
        }
    }
    names
}

/// Dynamic shared memory of one block, in bytes: the Q tile (`block_m` x d_qk) and `stages`
/// K tiles (64 x d_qk) and V tiles (64 x d_v), all 16-bit.
pub fn shared_bytes(block_m: u32, d_qk: usize, d_v: usize, stages: u32) -> u64 {
    2 * (block_m as u64 * d_qk as u64 + stages as u64 * BLOCK_N as u64 * (d_qk + d_v) as u64)
}

/// Query tiles of `block_m` rows covering `q_len` rows.
pub fn q_tiles(q_len: usize, block_m: u32) -> u64 {
    (q_len as u64).div_ceil(block_m as u64)
}

/// Chooses the launch of `shape` in `dtype` on `dev`, or says why the kernels cannot run it.
///
/// - Query tile: 128 rows (8 warps) halves the K/V traffic from L2 per FLOP against 64 rows,
///   so it is the choice whenever the grid still has at least one block per SM; a smaller
///   problem (or a prompt of at most 64 rows) takes 64-row tiles (4 warps), which doubles
///   the blocks that spread over the SMs.
/// - Stages: two K/V buffers when they fit in the opt-in shared memory, else one; if even
///   that does not fit, the 64-row tile; else no launch.
pub fn plan(
    shape: &AttentionShape,
    dtype: Dtype,
    dev: PrefillDevice,
) -> Result<PrefillLaunch, String> {
    shape.validate()?;
    let (d_qk, d_v) = (shape.head_dim_qk, shape.head_dim_v);
    let kernel = kernel_name(dtype, d_qk, d_v).ok_or_else(|| {
        if matches!(dtype, Dtype::Bf16 | Dtype::F16) {
            format!(
                "the prefill kernels have head dims 64x64, 128x128 and 192x128 (d_qk x d_v), not {d_qk}x{d_v}"
            )
        } else {
            format!("the prefill kernels run on tensor cores in bf16 or f16, not {dtype}")
        }
    })?;
    // validate() rejected NaN and infinities; the kernel scales by a positive factor.
    if shape.softmax_scale <= 0.0 {
        return Err(format!(
            "the prefill kernel needs a positive softmax scale, not {}",
            shape.softmax_scale
        ));
    }
    for (name, value) in [
        ("q_len", shape.q_len),
        ("kv_len", shape.kv_len),
        ("q_heads", shape.q_heads),
        ("kv_heads", shape.kv_heads),
    ] {
        if u32::try_from(value).is_err() {
            return Err(format!(
                "the prefill kernel takes {name} as a 32-bit count, and {value} is too large"
            ));
        }
    }
    if shape.batch as u64 > MAX_GRID_YZ {
        return Err(format!(
            "the prefill grid has one row of blocks per sequence, at most {MAX_GRID_YZ}, not a batch of {}",
            shape.batch
        ));
    }
    let blocks =
        |block_m: u32| q_tiles(shape.q_len, block_m) * (shape.q_heads * shape.batch) as u64;
    let preferred = if shape.q_len as u64 > 64 && blocks(128) >= dev.sms.max(1) as u64 {
        128
    } else {
        64
    };
    let smem_limit = dev.max_shared_per_block as u64;
    let (block_m, stages) = [(preferred, 2), (preferred, 1), (64, 2), (64, 1)]
        .into_iter()
        .find(|&(m, s)| shared_bytes(m, d_qk, d_v, s) <= smem_limit)
        .ok_or_else(|| {
            format!(
                "the smallest prefill configuration for {d_qk}x{d_v} heads needs {} bytes of shared memory per block and the device allows {smem_limit}",
                shared_bytes(64, d_qk, d_v, 1)
            )
        })?;
    let tiles = q_tiles(shape.q_len, block_m);
    if tiles > MAX_GRID_YZ {
        return Err(format!(
            "a prompt of {} rows needs {tiles} query tiles of {block_m}, more than the grid's {MAX_GRID_YZ}",
            shape.q_len
        ));
    }
    Ok(PrefillLaunch {
        kernel,
        grid: (shape.q_heads as u32, shape.batch as u32, tiles as u32),
        block: block_m / ROWS_PER_WARP * 32,
        shared_bytes: shared_bytes(block_m, d_qk, d_v, stages) as u32,
        block_m,
        block_n: BLOCK_N,
        stages,
    })
}

/// K/V tiles the kernel processes for query tile `tile` (counted from the first rows): every
/// tile up to the one holding the last key its last row sees. The kernel computes the same.
pub fn kv_tiles(shape: &AttentionShape, block_m: u32, tile: u64) -> u64 {
    let first = tile * block_m as u64;
    if first >= shape.q_len as u64 {
        return 0;
    }
    let last_row = (first + block_m as u64).min(shape.q_len as u64) - 1;
    (shape.visible_keys(last_row as usize) as u64).div_ceil(BLOCK_N as u64)
}

/// (query tile, K/V tile) pairs the whole grid processes, over all heads and sequences.
pub fn tile_pairs(shape: &AttentionShape, launch: &PrefillLaunch) -> u64 {
    let per_head: u64 = (0..q_tiles(shape.q_len, launch.block_m))
        .map(|t| kv_tiles(shape, launch.block_m, t))
        .sum();
    per_head * (shape.q_heads * shape.batch) as u64
}

/// FLOPs the tensor cores execute: every processed tile pair is a full BM x BN block of
/// Q·Kᵀ and P·V, masked entries and padding rows included. Divided into the FLOPs the
/// benchmark counts (solbench_core::work::attention_work) it gives the share of the tensor
/// work that is useful: below 1 for causal masks (the diagonal tiles are computed whole) and
/// for lengths that are not multiples of the tiles.
pub fn executed_flops(shape: &AttentionShape, launch: &PrefillLaunch) -> f64 {
    let per_pair = 2.0
        * launch.block_m as f64
        * launch.block_n as f64
        * (shape.head_dim_qk + shape.head_dim_v) as f64;
    tile_pairs(shape, launch) as f64 * per_pair
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100: PrefillDevice = PrefillDevice {
        sms: 132,
        max_shared_per_block: 232_448,
    };
    const RTX4090: PrefillDevice = PrefillDevice {
        sms: 128,
        max_shared_per_block: 101_376,
    };

    #[allow(clippy::too_many_arguments)]
    fn shape(
        batch: usize,
        q_len: usize,
        kv_len: usize,
        q_heads: usize,
        kv_heads: usize,
        d_qk: usize,
        d_v: usize,
        causal: bool,
    ) -> AttentionShape {
        AttentionShape {
            batch,
            q_len,
            kv_len,
            q_heads,
            kv_heads,
            head_dim_qk: d_qk,
            head_dim_v: d_v,
            causal,
            softmax_scale: 1.0 / (d_qk as f32).sqrt(),
        }
    }

    #[test]
    fn kernel_names_cover_both_types_and_every_head_dim() {
        assert_eq!(
            kernel_name(Dtype::Bf16, 128, 128),
            Some("sb_attn_prefill_bf16_128x128")
        );
        assert_eq!(
            kernel_name(Dtype::F16, 192, 128),
            Some("sb_attn_prefill_f16_192x128")
        );
        assert_eq!(kernel_name(Dtype::Bf16, 128, 64), None);
        assert_eq!(kernel_name(Dtype::F32, 128, 128), None);
        assert_eq!(kernel_names().len(), 6);
    }

    #[test]
    fn shared_memory_by_hand() {
        // 2 B x (Q 128x128 + 2 x 64 x (128 + 128)) = 2 x (16384 + 32768) = 96 KiB.
        assert_eq!(shared_bytes(128, 128, 128, 2), 98_304);
        // 2 x (8192 + 32768) = 80 KiB.
        assert_eq!(shared_bytes(64, 128, 128, 2), 81_920);
        // 2 x (128x192 + 2 x 64 x 320) = 2 x (24576 + 40960) = 128 KiB; one stage 88 KiB.
        assert_eq!(shared_bytes(128, 192, 128, 2), 131_072);
        assert_eq!(shared_bytes(128, 192, 128, 1), 90_112);
        // 2 x (64x64 + 2 x 64 x 128) = 2 x (4096 + 16384) = 40 KiB.
        assert_eq!(shared_bytes(64, 64, 64, 2), 40_960);
        assert_eq!(q_tiles(130, 64), 3);
        assert_eq!(q_tiles(128, 128), 1);
    }

    #[test]
    fn long_prompts_take_128_row_tiles_with_two_stages() {
        // Llama-3-8B prefill of 4096 tokens: 32 tiles x 32 heads = 1024 blocks >= 132 SMs.
        let s = shape(1, 4096, 4096, 32, 8, 128, 128, true);
        let l = plan(&s, Dtype::Bf16, H100).unwrap();
        assert_eq!(
            l,
            PrefillLaunch {
                kernel: "sb_attn_prefill_bf16_128x128",
                grid: (32, 1, 32),
                block: 256,
                shared_bytes: 98_304,
                block_m: 128,
                block_n: 64,
                stages: 2,
            }
        );
        // DeepSeek-V3 un-absorbed prefill, 128 heads of 192/128: 128 KiB fits in 227.
        let s = shape(1, 4096, 4096, 128, 128, 192, 128, true);
        let l = plan(&s, Dtype::F16, H100).unwrap();
        assert_eq!((l.block_m, l.stages, l.shared_bytes), (128, 2, 131_072));
        assert_eq!(l.kernel, "sb_attn_prefill_f16_192x128");
    }

    #[test]
    fn small_grids_take_64_row_tiles() {
        // The quick profile: 8 heads x 512 tokens = 4 tiles of 128 x 8 = 32 blocks < 132 SMs,
        // so 64-row tiles give 64 blocks.
        let s = shape(1, 512, 512, 8, 2, 128, 128, true);
        let l = plan(&s, Dtype::Bf16, H100).unwrap();
        assert_eq!(
            (l.grid, l.block, l.block_m, l.shared_bytes),
            ((8, 1, 8), 128, 64, 81_920)
        );
        // On a one-SM device the same shape has enough blocks for 128-row tiles.
        let one = PrefillDevice { sms: 1, ..H100 };
        assert_eq!(plan(&s, Dtype::Bf16, one).unwrap().block_m, 128);
        // A prompt of at most 64 rows never takes 128-row tiles.
        let short = shape(64, 64, 64, 32, 32, 128, 128, false);
        assert_eq!(plan(&short, Dtype::Bf16, one).unwrap().block_m, 64);
    }

    #[test]
    fn stages_and_tiles_follow_the_opt_in_shared_memory() {
        let big = shape(4, 4096, 4096, 128, 128, 192, 128, true);
        // 99 KiB parts: 128 KiB of double buffers does not fit, one stage (88 KiB) does.
        let l = plan(&big, Dtype::Bf16, RTX4090).unwrap();
        assert_eq!((l.block_m, l.stages, l.shared_bytes), (128, 1, 90_112));
        // 128x128 heads keep two stages there: 96 KiB <= 99 KiB.
        let s = shape(4, 4096, 4096, 32, 8, 128, 128, false);
        assert_eq!(plan(&s, Dtype::Bf16, RTX4090).unwrap().stages, 2);
        // 64 KiB: 2 x (16384 + 16384) = 65536 bytes, exactly one stage of 128-row tiles.
        let dev = PrefillDevice {
            sms: 8,
            max_shared_per_block: 65_536,
        };
        let l = plan(&s, Dtype::Bf16, dev).unwrap();
        assert_eq!((l.block_m, l.stages, l.shared_bytes), (128, 1, 65_536));
        // 48 KiB: only 64-row tiles with one stage, 2 x (8192 + 16384) = 49152.
        let dev = PrefillDevice {
            sms: 8,
            max_shared_per_block: 49_152,
        };
        let l = plan(&s, Dtype::Bf16, dev).unwrap();
        assert_eq!(
            (l.block_m, l.stages, l.block, l.shared_bytes),
            (64, 1, 128, 49_152)
        );
        let dev = PrefillDevice {
            sms: 8,
            max_shared_per_block: 32 << 10,
        };
        let err = plan(&s, Dtype::Bf16, dev).unwrap_err();
        assert!(
            err.contains("49152 bytes") && err.contains("32768"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_shapes_are_explained() {
        let s = shape(1, 100, 100, 4, 4, 96, 96, false);
        let err = plan(&s, Dtype::Bf16, H100).unwrap_err();
        assert!(err.contains("not 96x96"), "{err}");
        let s = shape(1, 100, 100, 4, 4, 128, 128, false);
        let err = plan(&s, Dtype::F32, H100).unwrap_err();
        assert!(err.contains("bf16 or f16"), "{err}");
        let negative = AttentionShape {
            softmax_scale: -0.1,
            ..s
        };
        assert!(plan(&negative, Dtype::Bf16, H100)
            .unwrap_err()
            .contains("positive softmax scale"));
        let wide_batch = AttentionShape { batch: 70_000, ..s };
        assert!(plan(&wide_batch, Dtype::Bf16, H100)
            .unwrap_err()
            .contains("batch of 70000"));
        let bad = AttentionShape { kv_heads: 3, ..s };
        assert!(plan(&bad, Dtype::Bf16, H100).is_err());
    }

    #[test]
    fn causal_tiles_stop_at_the_diagonal() {
        // 130 x 130 causal, 64-row tiles: rows 0-63 see keys < 64 (1 tile), rows 64-127 < 128
        // (2 tiles), rows 128-129 < 130 (3 tiles): 6 tile pairs per head.
        let s = shape(2, 130, 130, 3, 1, 64, 64, true);
        let l = plan(&s, Dtype::Bf16, H100).unwrap();
        assert_eq!(l.block_m, 64);
        let per_tile: Vec<u64> = (0..3).map(|t| kv_tiles(&s, 64, t)).collect();
        assert_eq!(per_tile, [1, 2, 3]);
        assert_eq!(tile_pairs(&s, &l), 6 * 3 * 2);
        // Each pair is 2 x 64 x 64 x (64 + 64) = 1,048,576 FLOPs.
        assert_eq!(executed_flops(&s, &l), 36.0 * 1_048_576.0);
        // Not causal: every query tile sees all 3 key tiles.
        let full = AttentionShape { causal: false, ..s };
        assert_eq!(tile_pairs(&full, &l), 9 * 3 * 2);
        // q_len > kv_len (bottom-right aligned): rows 0-149 see nothing; row i >= 150 sees
        // i - 149 keys. Tiles 0 and 1 (rows 0-127) are skipped, tile 2 (rows 128-191, last
        // sees 42 keys) and tile 3 (rows 192-199, last sees 50) take one K/V tile each.
        let s = shape(1, 200, 50, 1, 1, 64, 64, true);
        let per_tile: Vec<u64> = (0..4).map(|t| kv_tiles(&s, 64, t)).collect();
        assert_eq!(per_tile, [0, 0, 1, 1]);
        assert_eq!(kv_tiles(&s, 64, 4), 0);
    }

    #[test]
    fn long_causal_prompts_execute_a_little_more_than_half() {
        // 4096 causal with 128 x 64 tiles: query tile t runs 2t + 2 key tiles, 1056 pairs out
        // of the 2048 a full mask would take; the counted work is exactly half of the full
        // 4096 x 4096, so the useful share is 1024 / 1056.
        let s = shape(1, 4096, 4096, 32, 8, 128, 128, true);
        let l = plan(&s, Dtype::Bf16, H100).unwrap();
        assert_eq!(tile_pairs(&s, &l), 1056 * 32);
        let useful = 2.0 * 32.0 * 4096.0 * 2048.0 * 256.0;
        let share = useful / executed_flops(&s, &l);
        assert!((share - 1024.0 / 1056.0).abs() < 1e-12, "{share}");
    }
}
