//! Work accounting: how many bytes and FLOPs one iteration of a case does, counted the
//! way the field counts them, so our numbers compare with the tools users already know.
//!
//! * memory: bytes read plus bytes written (BabelStream's convention), no write-allocate
//!   traffic; copy engines count the copied bytes once (nvbandwidth's convention) and say so;
//! * GEMM: 2·M·N·K FLOPs per product;
//! * attention: FlashAttention's count, 2·b·h_q·s_q·s̄_k·(d_qk + d_v), which is
//!   4·b·s_q·s_k·h·d when d_qk = d_v; s̄_k is the mean number of keys a query sees:
//!   s_k without a mask, and FlashAttention-3's `(max(0, s_k − s_q) + s_k) / 2` with a
//!   causal mask (exactly s_k/2 when s_q = s_k: the FA2 "halved for causal" rule);
//!   bytes are the minimum traffic: Q and O once, K and V once **per KV head** (MLA's
//!   latent row once, since V is part of K);
//! * collectives: nccl-tests' `size` per operation and its bus-bandwidth factor.

use crate::case::{
    AttentionCase, AttentionPhase, AttentionVariant, Case, CollectiveCase, CollectiveOp, GemmCase,
    MemoryCase, MemoryOp,
};
use serde::{Deserialize, Serialize};

/// How a bandwidth figure counts bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteCounting {
    /// Every byte read plus every byte written (BabelStream, STREAM).
    ReadPlusWritten,
    /// The bytes copied, counted once (nvbandwidth, cudaMemcpy): a device-local copy
    /// moves twice this much through memory.
    CopiedOnce,
    /// The minimum bytes an algorithm must move (attention: Q, K, V, O once each).
    MinimumTraffic,
    /// nccl-tests' per-operation `size` (algorithm bandwidth) and bus bandwidth.
    Collective,
}

impl ByteCounting {
    pub fn describe(self) -> &'static str {
        match self {
            ByteCounting::ReadPlusWritten => "bytes read + bytes written",
            ByteCounting::CopiedOnce => "bytes copied, counted once",
            ByteCounting::MinimumTraffic => "minimum traffic (each tensor once)",
            ByteCounting::Collective => "nccl-tests size; busbw = algbw x bus factor",
        }
    }
}

/// Work done by one iteration of a case.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    pub bytes: f64,
    pub flops: f64,
    pub counting: ByteCounting,
    /// Collectives only: busbw = algbw × factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_factor: Option<f64>,
}

/// What a case's headline number is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Headline {
    /// GB/s (1e9 bytes per second).
    Bandwidth,
    /// TFLOP/s (1e12 per second).
    Flops,
    /// Collective bus bandwidth, GB/s.
    BusBandwidth,
}

impl Headline {
    pub fn unit(self) -> &'static str {
        match self {
            Headline::Bandwidth | Headline::BusBandwidth => "GB/s",
            Headline::Flops => "TFLOP/s",
        }
    }
}

impl Work {
    /// Headline throughput in the headline's unit for one iteration taking `seconds`.
    pub fn headline_value(&self, headline: Headline, seconds: f64) -> f64 {
        match headline {
            Headline::Bandwidth => self.bytes / seconds / 1e9,
            Headline::Flops => self.flops / seconds / 1e12,
            Headline::BusBandwidth => self.bytes / seconds / 1e9 * self.bus_factor.unwrap_or(1.0),
        }
    }

    /// FLOPs per byte (arithmetic intensity), when both are counted.
    pub fn intensity(&self) -> Option<f64> {
        (self.bytes > 0.0 && self.flops > 0.0).then(|| self.flops / self.bytes)
    }
}

/// Bytes of one memory-case iteration: read + written for the streaming kernels (the
/// shared-memory kernels size themselves on the device and report their own work); the
/// copy size counted once for copy-engine transfers, summed over both directions for
/// `bidir` (nvbandwidth's convention; a device-local copy moves twice that through HBM).
pub fn memory_work(case: &MemoryCase) -> Work {
    let n = case.elements_per_array() as f64;
    let e = case.dtype.size_bytes() as f64;
    if case.op.is_copy_engine() {
        let directions = if case.op == MemoryOp::Bidir { 2.0 } else { 1.0 };
        return Work {
            bytes: directions * n * e,
            flops: 0.0,
            counting: ByteCounting::CopiedOnce,
            bus_factor: None,
        };
    }
    Work {
        bytes: case.op.arrays() as f64 * n * e,
        flops: 0.0,
        counting: ByteCounting::ReadPlusWritten,
        bus_factor: None,
    }
}

/// 2·M·N·K per product; minimum bytes read A and B once, write D once.
pub fn gemm_work(case: &GemmCase) -> Work {
    let (m, n, k, b) = (
        case.m as f64,
        case.n as f64,
        case.k as f64,
        case.batch as f64,
    );
    let ea = case.dtype.size_bytes() as f64;
    let eb = case.b_dtype.unwrap_or(case.dtype).size_bytes() as f64;
    let eo = case.out_dtype.unwrap_or(case.dtype).size_bytes() as f64;
    Work {
        bytes: b * (m * k * ea + k * n * eb + m * n * eo),
        flops: 2.0 * m * n * k * b,
        counting: ByteCounting::MinimumTraffic,
        bus_factor: None,
    }
}

/// Mean number of keys one query row attends to (see the module docs).
pub fn attention_mean_keys(case: &AttentionCase) -> f64 {
    let (sq, sk) = (case.q_len as f64, case.kv_len as f64);
    if case.causal && case.phase == AttentionPhase::Prefill {
        ((sk - sq).max(0.0) + sk) / 2.0
    } else {
        sk
    }
}

pub fn attention_work(case: &AttentionCase) -> Work {
    let b = case.batch as f64;
    let (sq, sk) = (case.q_len as f64, case.kv_len as f64);
    let (hq, hkv) = (case.q_heads as f64, case.kv_heads as f64);
    let (dqk, dv) = (case.head_dim_qk as f64, case.head_dim_v as f64);
    let e = case.dtype.size_bytes() as f64;
    let ekv = case.kv_dtype().size_bytes() as f64;
    let flops = 2.0 * b * hq * sq * attention_mean_keys(case) * (dqk + dv);
    let q_bytes = b * sq * hq * dqk * e;
    let o_bytes = b * sq * hq * dv * e;
    let k_bytes = b * sk * hkv * dqk * ekv;
    // MLA stores one latent row per token and V is a view of it: read once.
    let v_bytes = if case.variant == AttentionVariant::Mla {
        0.0
    } else {
        b * sk * hkv * dv * ekv
    };
    Work {
        bytes: q_bytes + k_bytes + v_bytes + o_bytes,
        flops,
        counting: ByteCounting::MinimumTraffic,
        bus_factor: None,
    }
}

/// nccl-tests' bus-bandwidth factor for `op` over `ranks` ranks.
pub fn bus_factor(op: CollectiveOp, ranks: u32) -> f64 {
    let n = ranks.max(1) as f64;
    match op {
        CollectiveOp::AllReduce => 2.0 * (n - 1.0) / n,
        CollectiveOp::AllGather | CollectiveOp::ReduceScatter | CollectiveOp::Alltoall => {
            (n - 1.0) / n
        }
        CollectiveOp::Broadcast | CollectiveOp::Reduce | CollectiveOp::Sendrecv => 1.0,
    }
}

/// Element count per rank as nccl-tests computes it from the printed `size`:
/// gather-like operations divide by the rank count and round down to 16 bytes.
pub fn collective_count(op: CollectiveOp, bytes: u64, elem: u64, ranks: u32) -> u64 {
    let count = bytes / elem;
    match op {
        CollectiveOp::AllGather | CollectiveOp::ReduceScatter | CollectiveOp::Alltoall => {
            let per_rank = count / ranks.max(1) as u64;
            let align = (16 / elem).max(1);
            per_rank & !(align - 1)
        }
        _ => count,
    }
}

/// The `size` nccl-tests reports (and divides by time for algbw) after rounding.
pub fn collective_effective_bytes(op: CollectiveOp, bytes: u64, elem: u64, ranks: u32) -> u64 {
    let count = collective_count(op, bytes, elem, ranks);
    match op {
        CollectiveOp::AllGather | CollectiveOp::ReduceScatter | CollectiveOp::Alltoall => {
            count * elem * ranks as u64
        }
        _ => count * elem,
    }
}

pub fn collective_work(case: &CollectiveCase) -> Work {
    let bytes =
        collective_effective_bytes(case.op, case.bytes, case.dtype.size_bytes(), case.ranks);
    Work {
        bytes: bytes as f64,
        flops: 0.0,
        counting: ByteCounting::Collective,
        bus_factor: Some(bus_factor(case.op, case.ranks)),
    }
}

/// Work of any case, and the number its report leads with.
pub fn case_work(case: &Case) -> (Work, Headline) {
    match case {
        Case::Memory(m) => (memory_work(m), Headline::Bandwidth),
        Case::Gemm(g) => (gemm_work(g), Headline::Flops),
        Case::Attention(a) => {
            // Decode of MHA/GQA is memory-bound: lead with bandwidth. MLA decode sits near
            // the ridge and prefill is compute-bound: lead with FLOP/s (both are recorded).
            let headline =
                if a.phase == AttentionPhase::Decode && a.variant != AttentionVariant::Mla {
                    Headline::Bandwidth
                } else {
                    Headline::Flops
                };
            (attention_work(a), headline)
        }
        Case::Collective(c) => (collective_work(c), Headline::BusBandwidth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Dtype, KvLayout};

    fn attn(
        variant: AttentionVariant,
        phase: AttentionPhase,
        causal: bool,
        dims: [u64; 7],
    ) -> AttentionCase {
        let [batch, q_len, kv_len, q_heads, kv_heads, head_dim_qk, head_dim_v] = dims;
        AttentionCase {
            variant,
            phase,
            causal,
            batch,
            q_len,
            kv_len,
            q_heads,
            kv_heads,
            head_dim_qk,
            head_dim_v,
            dtype: Dtype::Bf16,
            kv_dtype: None,
            kv_layout: KvLayout::Contiguous,
            model: None,
        }
    }

    #[test]
    fn memory_counts_read_plus_written() {
        // triad over 3 arrays of 1000 f64: 24,000 bytes per iteration.
        let w = memory_work(&MemoryCase {
            op: MemoryOp::Triad,
            working_set: 24_000,
            dtype: Dtype::F64,
            peer: None,
        });
        assert_eq!(w.bytes, 24_000.0);
        // copy of 2 arrays x 1000 f32 = 8,000 bytes; a remainder that does not fill an element is dropped.
        let w = memory_work(&MemoryCase {
            op: MemoryOp::Copy,
            working_set: 8_007,
            dtype: Dtype::F32,
            peer: None,
        });
        assert_eq!(w.bytes, 8_000.0);
        assert_eq!(w.counting, ByteCounting::ReadPlusWritten);
    }

    #[test]
    fn copy_engines_count_the_copy_once_and_bidir_both_directions() {
        let case = |op| MemoryCase {
            op,
            working_set: 512 << 20,
            dtype: Dtype::F64,
            peer: None,
        };
        for op in [
            MemoryOp::CeCopy,
            MemoryOp::H2d,
            MemoryOp::D2h,
            MemoryOp::Peer,
        ] {
            let w = memory_work(&case(op));
            assert_eq!(w.bytes, (512u64 << 20) as f64, "{op:?}");
            assert_eq!(w.counting, ByteCounting::CopiedOnce);
        }
        let w = memory_work(&case(MemoryOp::Bidir));
        assert_eq!(w.bytes, (1024u64 << 20) as f64);
        assert_eq!(w.counting, ByteCounting::CopiedOnce);
    }

    #[test]
    fn gemm_is_two_mnk() {
        let w = gemm_work(&GemmCase::new(8192, 8192, 8192, Dtype::Bf16));
        assert_eq!(w.flops, 1_099_511_627_776.0); // 2 * 8192^3
        let w = gemm_work(&GemmCase::new(4096, 14336, 4096, Dtype::Fp8E4m3));
        assert_eq!(w.flops, 481_036_337_152.0);
        // 1 ms for 2*8192^3 = 1099.5 TFLOP/s
        let w = gemm_work(&GemmCase::new(8192, 8192, 8192, Dtype::Bf16));
        assert!((w.headline_value(Headline::Flops, 1e-3) - 1099.511627776).abs() < 1e-6);
    }

    #[test]
    fn attention_matches_flash_attention_counts() {
        // FA2 benchmark: b=2, s=8192, h=16, d=128 -> 4*b*s*s*h*d.
        let full = attention_work(&attn(
            AttentionVariant::Mha,
            AttentionPhase::Prefill,
            false,
            [2, 8192, 8192, 16, 16, 128, 128],
        ));
        assert_eq!(full.flops, 4.0 * 2.0 * 8192.0 * 8192.0 * 16.0 * 128.0);
        let causal = attention_work(&attn(
            AttentionVariant::Mha,
            AttentionPhase::Prefill,
            true,
            [2, 8192, 8192, 16, 16, 128, 128],
        ));
        assert_eq!(causal.flops, full.flops / 2.0);
        // Causal with s_q < s_k (chunked prefill): FA3 average (max(0, 4096-1024) + 4096)/2 = 3584 keys.
        let chunk = attn(
            AttentionVariant::Gqa,
            AttentionPhase::Prefill,
            true,
            [1, 1024, 4096, 32, 8, 128, 128],
        );
        assert_eq!(attention_mean_keys(&chunk), 3584.0);
        assert_eq!(
            attention_work(&chunk).flops,
            2.0 * 32.0 * 1024.0 * 3584.0 * 256.0
        );
    }

    #[test]
    fn mla_decode_is_2176_flops_per_head_per_token_and_reads_latent_once() {
        let c = attn(
            AttentionVariant::Mla,
            AttentionPhase::Decode,
            false,
            [128, 1, 4096, 128, 1, 576, 512],
        );
        let w = attention_work(&c);
        assert_eq!(w.flops, 2.0 * (576.0 + 512.0) * 128.0 * 128.0 * 4096.0);
        // bytes: latent 576 bf16 per token once, plus Q (576/head) and O (512/head).
        let kv = 128.0 * 4096.0 * 576.0 * 2.0;
        let q = 128.0 * 128.0 * 576.0 * 2.0;
        let o = 128.0 * 128.0 * 512.0 * 2.0;
        assert_eq!(w.bytes, kv + q + o);
        // intensity ~ 1.89 * h_q = 242 FLOP/B ignoring Q and O (attention.md 1.6); with them ~228.
        let i = w.intensity().unwrap();
        assert!(i > 220.0 && i < 245.0, "{i}");
    }

    #[test]
    fn gqa_decode_bytes_are_per_kv_head() {
        // Llama-3-70B decode: 64 q heads share 8 kv heads.
        let c = attn(
            AttentionVariant::Gqa,
            AttentionPhase::Decode,
            false,
            [1, 1, 8192, 64, 8, 128, 128],
        );
        let w = attention_work(&c);
        let kv = 2.0 * 8192.0 * 8.0 * 128.0 * 2.0;
        let qo = 2.0 * 64.0 * 128.0 * 2.0;
        assert_eq!(w.bytes, kv + qo);
        // intensity ≈ g = 8 FLOP/B in bf16.
        let i = w.intensity().unwrap();
        assert!((i - 8.0).abs() < 0.1, "{i}");
        assert_eq!(case_work(&Case::Attention(c)).1, Headline::Bandwidth);
    }

    #[test]
    fn bus_factors_match_nccl_tests() {
        // (op, ranks, factor) hand-computed from nccl-tests' *GetBw.
        let table: &[(CollectiveOp, u32, f64)] = &[
            (CollectiveOp::AllReduce, 2, 1.0),
            (CollectiveOp::AllReduce, 4, 1.5),
            (CollectiveOp::AllReduce, 8, 1.75),
            (CollectiveOp::AllGather, 2, 0.5),
            (CollectiveOp::AllGather, 4, 0.75),
            (CollectiveOp::AllGather, 8, 0.875),
            (CollectiveOp::ReduceScatter, 2, 0.5),
            (CollectiveOp::ReduceScatter, 4, 0.75),
            (CollectiveOp::ReduceScatter, 8, 0.875),
            (CollectiveOp::Alltoall, 2, 0.5),
            (CollectiveOp::Alltoall, 4, 0.75),
            (CollectiveOp::Alltoall, 8, 0.875),
            (CollectiveOp::Broadcast, 8, 1.0),
            (CollectiveOp::Reduce, 8, 1.0),
            (CollectiveOp::Sendrecv, 8, 1.0),
        ];
        for &(op, n, f) in table {
            assert_eq!(bus_factor(op, n), f, "{op:?} n={n}");
        }
    }

    #[test]
    fn collective_sizes_round_like_nccl_tests() {
        // all_gather of 1 MiB f32 over 3 ranks: count/rank = 262144/3 = 87381, rounded down to
        // a multiple of 4 elements (16 bytes) = 87380; size = 87380 * 4 * 3.
        assert_eq!(
            collective_count(CollectiveOp::AllGather, 1 << 20, 4, 3),
            87380
        );
        assert_eq!(
            collective_effective_bytes(CollectiveOp::AllGather, 1 << 20, 4, 3),
            87380 * 12
        );
        assert_eq!(
            collective_effective_bytes(CollectiveOp::AllReduce, 1 << 20, 4, 3),
            1 << 20
        );
        // 8 ranks, 1 GiB all_reduce in 5 ms: algbw 214.7 GB/s, busbw x1.75.
        let w = collective_work(&CollectiveCase {
            op: CollectiveOp::AllReduce,
            bytes: 1 << 30,
            dtype: Dtype::Bf16,
            reduce: None,
            ranks: 8,
            in_place: false,
            root: 0,
        });
        let algbw = w.headline_value(Headline::Bandwidth, 5e-3);
        let busbw = w.headline_value(Headline::BusBandwidth, 5e-3);
        assert!((algbw - 214.748_364_8).abs() < 1e-6);
        assert!((busbw - algbw * 1.75).abs() < 1e-9);
    }
}
