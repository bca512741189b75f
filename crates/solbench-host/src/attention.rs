//! Host attention workload: the reference implementation of
//! [`crate::attention_reference`] timed on the CPU, checked against the naive f64
//! softmax(QKᵀ)V.
//!
//! Prefill runs the FlashAttention-2-style tiled kernel; decode runs split-KV
//! (flash-decoding) with a log-sum-exp combine, with enough splits to give every core
//! work. Inputs are random, rounded to the case's type (bf16/f16) so the reference sees
//! exactly what a GPU kernel would; arithmetic is f32.

use crate::attention_reference::{
    self as reference, AttentionShape, KvSource, PagedKv, DEFAULT_KV_TILE,
};
use crate::pool::PinnedPool;
use half::{bf16, f16};
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{AttentionCase, AttentionPhase, AttentionVariant, Dtype, KvLayout};
use solbench_core::random::SplitMix64;
use solbench_core::work::{attention_work, Work};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Softmax scale the case's model uses: 1/√d_qk, except absorbed MLA, whose scores are
/// still scaled by 1/√(128 + 64) as in DeepSeek-V3 (YaRN's mscale is left out).
pub fn softmax_scale(case: &AttentionCase) -> f32 {
    let d = if case.variant == AttentionVariant::Mla {
        192.0
    } else {
        case.head_dim_qk as f32
    };
    1.0 / d.sqrt()
}

pub fn shape_of(case: &AttentionCase) -> AttentionShape {
    AttentionShape {
        batch: case.batch as usize,
        q_len: case.q_len as usize,
        kv_len: case.kv_len as usize,
        q_heads: case.q_heads as usize,
        kv_heads: case.kv_heads as usize,
        head_dim_qk: case.head_dim_qk as usize,
        head_dim_v: case.head_dim_v as usize,
        causal: case.causal,
        softmax_scale: softmax_scale(case),
    }
}

/// Random values in [-1, 1) rounded to `dtype`, kept as f32.
pub fn random_rounded(rng: &mut SplitMix64, n: usize, dtype: Dtype) -> Vec<f32> {
    let round = |x: f32| match dtype {
        Dtype::Bf16 => bf16::from_f32(x).to_f32(),
        Dtype::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    };
    (0..n).map(|_| round(rng.symmetric_f32())).collect()
}

/// Split count for decode: enough (batch, kv-head, split) work items for two per core,
/// never more splits than 64-key tiles.
pub fn host_decode_splits(shape: &AttentionShape, cores: usize) -> usize {
    let items = shape.batch * shape.kv_heads;
    let want = (2 * cores).div_ceil(items.max(1));
    want.clamp(1, shape.kv_len.div_ceil(DEFAULT_KV_TILE).max(1))
}

pub struct AttentionWorkload {
    case: AttentionCase,
    shape: AttentionShape,
    pool: Arc<PinnedPool>,
    q: Vec<f32>,
    /// Contiguous K/V, or K/V pages.
    k: Vec<f32>,
    v: Vec<f32>,
    /// Paged layout: block table and page geometry.
    paged: Option<(usize, usize, Vec<u32>)>,
    splits: usize,
    out: Vec<f32>,
}

impl AttentionWorkload {
    pub fn prepare(case: &AttentionCase, pool: Arc<PinnedPool>) -> Result<Self, PrepareError> {
        case.validate().map_err(PrepareError::Unsupported)?;
        if case.kv_dtype.is_some_and(|k| k != case.dtype) {
            return Err(PrepareError::Unsupported(
                "the host reference keeps K/V in the same type as Q".into(),
            ));
        }
        if !matches!(case.dtype, Dtype::Bf16 | Dtype::F16 | Dtype::F32) {
            return Err(PrepareError::Unsupported(format!(
                "host attention runs in bf16, f16 or f32, not {}",
                case.dtype
            )));
        }
        let shape = shape_of(case);
        shape.validate().map_err(PrepareError::Unsupported)?;
        let bytes =
            4 * (shape.q_elems() + shape.k_elems() + shape.v_elems() + 2 * shape.o_elems()) as u64;
        if let Some(avail) = solbench_core::env::available_memory_bytes() {
            if bytes > avail / 2 {
                return Err(PrepareError::Unsupported(
                    "this attention shape needs more memory than the host can spare".into(),
                ));
            }
        }
        let mut rng = SplitMix64::new(0xA77E ^ case.kv_len << 8 ^ case.batch);
        let q = random_rounded(&mut rng, shape.q_elems(), case.dtype);
        let k_contig = random_rounded(&mut rng, shape.k_elems(), case.dtype);
        // MLA: V is the first d_v dims of each latent K row (a copy here; the GPU kernel reads it in place).
        let v_contig = if case.variant == AttentionVariant::Mla {
            reference::mla_values_from_latent(&shape, &k_contig)
        } else {
            random_rounded(&mut rng, shape.v_elems(), case.dtype)
        };
        let (k, v, paged) = match case.kv_layout {
            KvLayout::Contiguous => (k_contig, v_contig, None),
            KvLayout::Paged { page_size } => {
                let page = page_size as usize;
                let pages_per_seq = shape.kv_len.div_ceil(page);
                let total = pages_per_seq * shape.batch;
                // A shuffled block table, so the paged path really gathers.
                let mut order: Vec<u32> = (0..total as u32).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                }
                let (row_k, row_v) = (
                    shape.kv_heads * shape.head_dim_qk,
                    shape.kv_heads * shape.head_dim_v,
                );
                let mut kp = vec![0.0f32; total * page * row_k];
                let mut vp = vec![0.0f32; total * page * row_v];
                for b in 0..shape.batch {
                    for t in 0..shape.kv_len {
                        let slot = order[b * pages_per_seq + t / page] as usize * page + t % page;
                        let src = b * shape.kv_len + t;
                        kp[slot * row_k..][..row_k]
                            .copy_from_slice(&k_contig[src * row_k..][..row_k]);
                        vp[slot * row_v..][..row_v]
                            .copy_from_slice(&v_contig[src * row_v..][..row_v]);
                    }
                }
                (kp, vp, Some((page, pages_per_seq, order)))
            }
        };
        let splits = match case.phase {
            AttentionPhase::Decode => host_decode_splits(&shape, pool.threads()),
            AttentionPhase::Prefill => 1,
        };
        Ok(AttentionWorkload {
            case: case.clone(),
            out: vec![f32::NAN; shape.o_elems()],
            shape,
            pool,
            q,
            k,
            v,
            paged,
            splits,
        })
    }

    fn source(&self) -> KvSource<'_> {
        match &self.paged {
            None => KvSource::Contiguous {
                k: &self.k,
                v: &self.v,
            },
            Some((page, per_seq, table)) => KvSource::Paged(PagedKv {
                page_size: *page,
                block_table: table,
                max_pages_per_seq: *per_seq,
                k_pages: &self.k,
                v_pages: &self.v,
            }),
        }
    }
}

impl Workload for AttentionWorkload {
    fn work(&self) -> Work {
        attention_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        let start = Instant::now();
        let mut out = Vec::new();
        self.pool.install(|| {
            let kv = self.source();
            for _ in 0..iters {
                out = match self.case.phase {
                    AttentionPhase::Prefill => {
                        reference::attention_forward(&self.shape, &self.q, &kv, DEFAULT_KV_TILE).0
                    }
                    AttentionPhase::Decode => {
                        reference::attention_split_kv(&self.shape, &self.q, &kv, self.splits).0
                    }
                };
            }
        });
        let elapsed = start.elapsed();
        self.out = out;
        Ok(elapsed)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        // The naive f64 reference on the first and last sequence of the batch (each one a
        // batch-1 problem), which covers the batch indexing without the full naive cost.
        let s = self.shape;
        let seqs: Vec<usize> = if s.batch == 1 {
            vec![0]
        } else {
            vec![0, s.batch - 1]
        };
        let one = AttentionShape { batch: 1, ..s };
        let (atol, rtol) = (1e-4, 1e-3);
        let (mut compared, mut mismatches, mut max_abs, mut max_rel, mut detail) =
            (0u64, 0u64, 0.0f64, 0.0f64, None);
        for &b in &seqs {
            let q = &self.q[b * one.q_elems()..][..one.q_elems()];
            let got = &self.out[b * one.o_elems()..][..one.o_elems()];
            let (want, _) = match &self.paged {
                None => {
                    let k = &self.k[b * one.k_elems()..][..one.k_elems()];
                    let v = &self.v[b * one.v_elems()..][..one.v_elems()];
                    reference::attention_naive_f64(&one, q, &KvSource::Contiguous { k, v })
                }
                Some((page, per_seq, table)) => {
                    let row = &table[b * per_seq..][..*per_seq];
                    let paged = PagedKv {
                        page_size: *page,
                        block_table: row,
                        max_pages_per_seq: *per_seq,
                        k_pages: &self.k,
                        v_pages: &self.v,
                    };
                    reference::attention_naive_f64(&one, q, &KvSource::Paged(paged))
                }
            };
            let c = reference::compare(got, &want, atol, rtol);
            compared += c.compared as u64;
            mismatches += c.mismatches as u64;
            max_abs = max_abs.max(c.max_abs_err);
            max_rel = max_rel.max(c.max_rel_err);
            if detail.is_none() {
                detail = c.first_mismatch.map(|i| {
                    format!(
                        "sequence {b}, output element {i}: got {}, reference {}",
                        got[i], want[i]
                    )
                });
            }
        }
        Ok(Check {
            passed: mismatches == 0,
            compared,
            mismatches,
            max_abs_err: max_abs,
            max_rel_err: max_rel,
            tolerance: format!("|err| <= {atol:e} + {rtol:e}*|ref| (f32 arithmetic vs f64)"),
            method: format!("output of sequence(s) {seqs:?} vs the naive f64 softmax(QK^T)V on the same rounded inputs"),
            detail,
        })
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::new();
        let algo = match self.case.phase {
            AttentionPhase::Prefill => format!(
                "FlashAttention-2-style tiles of {DEFAULT_KV_TILE} keys, online softmax (f32)"
            ),
            AttentionPhase::Decode => format!(
                "split-KV over {} splits with log-sum-exp combine (f32)",
                self.splits
            ),
        };
        n.insert("algorithm".into(), algo.into());
        n.insert("splits".into(), self.splits.into());
        n.insert(
            "softmax_scale".into(),
            (self.shape.softmax_scale as f64).into(),
        );
        n.insert("threads".into(), self.pool.threads().into());
        n.insert(
            "compute_path".into(),
            format!("{} inputs, f32 arithmetic on the CPU", self.case.dtype).into(),
        );
        if self.case.variant == AttentionVariant::Mla {
            n.insert("mla_values".into(), "the host keeps V as a copy of the first d_v latent dims; bytes are counted as the GPU reads them (latent once)".into());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(
        variant: AttentionVariant,
        phase: AttentionPhase,
        layout: KvLayout,
        dims: [u64; 7],
    ) -> AttentionCase {
        let [batch, q_len, kv_len, q_heads, kv_heads, head_dim_qk, head_dim_v] = dims;
        AttentionCase {
            variant,
            phase,
            causal: phase == AttentionPhase::Prefill,
            batch,
            q_len,
            kv_len,
            q_heads,
            kv_heads,
            head_dim_qk,
            head_dim_v,
            dtype: Dtype::Bf16,
            kv_dtype: None,
            kv_layout: layout,
            model: None,
        }
    }

    #[test]
    fn every_variant_and_phase_verifies() {
        let pool = Arc::new(PinnedPool::new().unwrap());
        let cases = [
            case(
                AttentionVariant::Gqa,
                AttentionPhase::Prefill,
                KvLayout::Contiguous,
                [2, 67, 67, 8, 2, 64, 64],
            ),
            case(
                AttentionVariant::Mha,
                AttentionPhase::Prefill,
                KvLayout::Paged { page_size: 16 },
                [1, 40, 100, 4, 4, 32, 32],
            ),
            case(
                AttentionVariant::Gqa,
                AttentionPhase::Decode,
                KvLayout::Contiguous,
                [3, 1, 300, 8, 2, 64, 64],
            ),
            case(
                AttentionVariant::Gqa,
                AttentionPhase::Decode,
                KvLayout::Paged { page_size: 7 },
                [2, 1, 129, 8, 1, 64, 64],
            ),
            case(
                AttentionVariant::Mla,
                AttentionPhase::Decode,
                KvLayout::Paged { page_size: 64 },
                [2, 1, 150, 4, 1, 576, 512],
            ),
        ];
        for c in cases {
            let mut w = AttentionWorkload::prepare(&c, pool.clone()).unwrap();
            assert!(
                !w.verify().unwrap().passed,
                "poisoned output must fail: {c:?}"
            );
            w.run(1).unwrap();
            let check = w.verify().unwrap();
            assert!(check.passed, "{c:?}: {check:?}");
        }
    }

    #[test]
    fn a_corrupted_output_is_caught() {
        let pool = Arc::new(PinnedPool::new().unwrap());
        let c = case(
            AttentionVariant::Gqa,
            AttentionPhase::Decode,
            KvLayout::Contiguous,
            [2, 1, 200, 8, 2, 64, 64],
        );
        let mut w = AttentionWorkload::prepare(&c, pool).unwrap();
        w.run(1).unwrap();
        let last = w.out.len() - 1;
        w.out[last] += 0.01;
        let check = w.verify().unwrap();
        assert!(!check.passed);
        assert!(check.detail.unwrap().starts_with("sequence 1"));
    }

    #[test]
    fn decode_splits_fill_the_cores() {
        let s = AttentionShape {
            batch: 1,
            q_len: 1,
            kv_len: 4096,
            q_heads: 32,
            kv_heads: 8,
            head_dim_qk: 128,
            head_dim_v: 128,
            causal: false,
            softmax_scale: 0.1,
        };
        assert_eq!(host_decode_splits(&s, 2), 1);
        assert_eq!(host_decode_splits(&s, 32), 8);
        let tiny = AttentionShape {
            kv_len: 100,
            kv_heads: 1,
            ..s
        };
        assert_eq!(host_decode_splits(&tiny, 64), 2);
    }
}
