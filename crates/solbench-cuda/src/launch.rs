//! Launch configurations of the CUDA kernels, computed from the device's properties.
//! Pure functions, so they are unit-tested here and can be reused unchanged by the CPU
//! emulation harness that runs the same kernels on the host.

/// Threads per block of the streaming kernels: 256 keeps occupancy at the per-SM thread
/// limit on every generation while leaving enough blocks for the grid-stride tail.
pub const STREAM_BLOCK: u32 = 256;
/// Independent 16-byte loads each thread keeps in flight per array (`SB_MEM_UNROLL`).
pub const STREAM_UNROLL: u64 = 4;
/// `SB_SMEM_VECS`: 16-byte shared-memory slots per thread in `sb_smem_bw`.
pub const SMEM_VECS: u64 = 4;

/// A 1-D launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch1d {
    pub grid: u32,
    pub block: u32,
    pub shared_bytes: u32,
}

/// Grid of a grid-stride streaming kernel over `n` elements of `elem_bytes`: every SM full
/// (`sms × blocks_per_sm`, the occupancy limit), but no more blocks than there are 16-byte
/// vectors to hand out, and at least one.
pub fn streaming(n: u64, elem_bytes: u64, sms: u32, blocks_per_sm: u32) -> Launch1d {
    let width = (16 / elem_bytes).max(1);
    let vectors = n.div_ceil(width);
    let needed = vectors.div_ceil(STREAM_BLOCK as u64).max(1);
    let full = (sms.max(1) as u64) * (blocks_per_sm.max(1) as u64);
    Launch1d {
        grid: needed.min(full) as u32,
        block: STREAM_BLOCK,
        shared_bytes: 0,
    }
}

/// Bytes each SM has in flight per array when the grid fills it: the figure that must
/// cover bandwidth × latency (Little's law) for the kernel to reach peak.
pub fn bytes_in_flight_per_sm(blocks_per_sm: u32) -> u64 {
    blocks_per_sm as u64 * STREAM_BLOCK as u64 * STREAM_UNROLL * 16
}

/// Dynamic shared memory `sb_smem_bw` needs for `block` threads.
pub fn smem_bytes(block: u32) -> u32 {
    (block as u64 * SMEM_VECS * 16) as u32
}

/// The shared-memory bandwidth launch: one block of 1024 threads for the per-SM figure
/// (64 KiB, above the 48 KiB default, so the caller must raise the function's dynamic
/// shared-memory limit), or `sms × blocks_per_sm` blocks of 256 threads for the whole GPU.
pub fn shared_memory(per_sm: bool, sms: u32, blocks_per_sm: u32) -> Launch1d {
    if per_sm {
        Launch1d {
            grid: 1,
            block: 1024,
            shared_bytes: smem_bytes(1024),
        }
    } else {
        Launch1d {
            grid: sms.max(1) * blocks_per_sm.max(1),
            block: 256,
            shared_bytes: smem_bytes(256),
        }
    }
}

/// Bytes `sb_smem_bw` moves through shared memory in one launch (read + written).
pub fn smem_traffic(l: Launch1d, iters: u32) -> u64 {
    l.grid as u64 * l.block as u64 * iters as u64 * SMEM_VECS * 16 * 2
}

/// What every `out[block]` of `sb_smem_bw` must hold: Σ over threads and slots of the
/// values read, `block · SMEM_VECS · iters · (iters − 1) / 2`, modulo 2^32.
pub fn smem_expected(block: u32, iters: u32) -> u32 {
    let it = iters as u128;
    let v = block as u128 * SMEM_VECS as u128 * it * it.saturating_sub(1) / 2;
    (v % (1u128 << 32)) as u32
}

/// Elements each thread of a streaming grid visits at most (for the read tolerance).
pub fn elements_per_thread(n: u64, l: Launch1d) -> u64 {
    n.div_ceil(l.grid as u64 * l.block as u64)
}

/// Theoretical DRAM bandwidth in GB/s from the driver's attributes: memory clock (kHz,
/// the DDR command clock) × 2 transfers per clock × bus width in bytes.
pub fn theoretical_memory_gb_s(memory_clock_khz: i32, bus_width_bits: i32) -> f64 {
    2.0 * memory_clock_khz as f64 * 1e3 * (bus_width_bits as f64 / 8.0) / 1e9
}

/// Theoretical shared-memory bandwidth in GB/s: 32 banks × 4 bytes per clock per SM.
pub fn theoretical_smem_gb_s(sms: i32, clock_khz: i32) -> f64 {
    sms as f64 * 128.0 * clock_khz as f64 * 1e3 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_grid_fills_the_gpu_but_no_more_than_needed() {
        // H100 SXM: 132 SMs x 8 blocks of 256 threads.
        let big = streaming(1 << 30, 8, 132, 8);
        assert_eq!(
            big,
            Launch1d {
                grid: 1056,
                block: 256,
                shared_bytes: 0
            }
        );
        // 1000 f64 = 500 vectors: two blocks cover them.
        assert_eq!(streaming(1000, 8, 132, 8).grid, 2);
        // 1001 f32 = 251 vectors (the last one partial): one block.
        assert_eq!(streaming(1001, 4, 132, 8).grid, 1);
        assert_eq!(streaming(0, 8, 132, 8).grid, 1);
        // 8 blocks x 256 threads x 4 loads x 16 B = 128 KiB per SM per array in flight.
        assert_eq!(bytes_in_flight_per_sm(8), 128 << 10);
        assert_eq!(
            elements_per_thread(1 << 30, big),
            (1u64 << 30).div_ceil(1056 * 256)
        );
    }

    #[test]
    fn shared_memory_launches_and_expected_values() {
        let one = shared_memory(true, 132, 8);
        assert_eq!((one.grid, one.block, one.shared_bytes), (1, 1024, 64 << 10));
        let all = shared_memory(false, 132, 8);
        assert_eq!(
            (all.grid, all.block, all.shared_bytes),
            (1056, 256, 16 << 10)
        );
        assert_eq!(smem_traffic(one, 10), 1024 * 10 * 4 * 16 * 2);
        // 1024 threads x 4 slots x (0 + 1 + 2 + 3) = 24,576.
        assert_eq!(smem_expected(1024, 4), 24_576);
        // Wraps modulo 2^32 like the device's u32 sum.
        let big = (1024u128 * 4 * 100_000 * 99_999 / 2) % (1u128 << 32);
        assert_eq!(smem_expected(1024, 100_000) as u128, big);
        assert_eq!(smem_expected(256, 1), 0);
    }

    #[test]
    fn theoretical_bandwidths_from_attributes() {
        // H100 SXM reports 2,619,000 kHz on a 5120-bit bus: 3352 GB/s (spec 3350).
        let h100 = theoretical_memory_gb_s(2_619_000, 5120);
        assert!((h100 - 3352.3).abs() < 0.1, "{h100}");
        // A100 SXM4 80GB: 1,593,000 kHz x 5120 bits = 2039 GB/s (spec 2039).
        let a100 = theoretical_memory_gb_s(1_593_000, 5120);
        assert!((a100 - 2039.0).abs() < 0.1, "{a100}");
        // 132 SMs x 128 B x 1.98 GHz = 33.45 TB/s of shared memory.
        assert!((theoretical_smem_gb_s(132, 1_980_000) - 33_454.08).abs() < 0.01);
    }
}
