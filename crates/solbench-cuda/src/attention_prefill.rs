//! Attention prefill on NVIDIA GPUs: the FlashAttention-2-style tensor-core kernels of
//! `kernels/attention_prefill.cu` on contiguous BF16/FP16 Q, K and V (MHA and GQA, causal or
//! not), timed with the batch timer and verified against the host's naive f64 attention on
//! the same rounded inputs.
//!
//! Inputs come from the host backend's own generator (the same seed, order and rounding as
//! `solbench_host::attention`), so a GPU case and a host case of the same shape see the same
//! numbers. The check compares every output row of a sample of (sequence, head) pairs (the
//! whole output of a small case) and their log-sum-exps; the output and LSE buffers are
//! poisoned with NaN before the first check and after every passing one, so each check sees
//! what the runs since the previous one wrote.
//!
//! The pure parts (inputs, sample, tolerance, the check itself) are public: the SIMT harness
//! tests check the same kernels with the same functions.

use crate::attention_prefill_launch::{self as plan, PrefillDevice, PrefillLaunch};
use crate::device::CudaDevice;
use crate::gpu::{allow_shared_memory, cuda_err, failed, BatchTimer, DeviceBuffer};
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use rayon::prelude::*;
use serde_json::json;
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{AttentionCase, AttentionPhase, AttentionVariant, Dtype, KvLayout};
use solbench_core::random::SplitMix64;
use solbench_core::size::format_size;
use solbench_core::work::{attention_work, Work};
use solbench_host::attention::{random_rounded, shape_of};
use solbench_host::attention_reference::{self as reference, AttentionShape, KvSource};
use std::time::Duration;

/// Absolute tolerance of the LSE (natural log units) and its relative part: f32 row sums of
/// up to ~10^5 terms and an approximate exp2 stay two orders of magnitude inside it, while a
/// lost or extra key moves the LSE of a row of n keys by about 1/n.
pub const LSE_ATOL: f64 = 1e-4;
pub const LSE_RTOL: f64 = 1e-5;
/// Floor of the output tolerance: f32 accumulation and the device's approximate exp2.
const F32_FLOOR: f64 = 2e-6;
/// Rows at each end of a long prompt that a sample always checks: one whole 128-row query
/// tile and the first row of its neighbour, where masking and tail handling live.
const EDGE_ROWS: usize = 129;
/// Rows spread evenly between the edges of a long prompt.
const MIDDLE_ROWS: usize = 128;
/// Prompts up to this many rows are checked on every row.
const ALL_ROWS_UP_TO: usize = 1024;

// ------------------------------------------------------------------------- pure parts

/// The unit roundoff of the kernels' 16-bit type: the largest relative error of rounding an
/// f32 to it (round to nearest even): 2^-8 for bf16 (8 significant bits), 2^-11 for f16.
pub fn unit_roundoff(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    }
}

/// Relative tolerance of an output element: its final rounding to the 16-bit type.
pub fn output_rtol(dtype: Dtype) -> f64 {
    unit_roundoff(dtype)
}

/// Absolute tolerance of an output element of a row that sees `keys` keys.
///
/// The kernel rounds each probability p_j to 16 bits (relative error δ_j, |δ_j| <= u)
/// before P·V, so an output element is off by Σ δ_j p_j v_j / Σ p_j. Its worst case is
/// u · max|v| = u (inputs lie in [-1, 1)); that bound is used up to 16 keys (one key gives
/// p = 1, exact). Beyond, the δ_j are independent and these inputs keep the p_j within a
/// factor of a few of each other, so the error is a sum of n terms of size ~u/n with a
/// standard deviation near u / (3·√n); 4u/√n is about 12 of those. A key lost or counted
/// twice moves an element by up to ~1/n, far above it. Plus the rounding of the output
/// itself, `output_rtol`, relative to the element.
pub fn output_atol(dtype: Dtype, keys: usize) -> f64 {
    let u = unit_roundoff(dtype);
    let spread = if keys <= 16 {
        1.0
    } else {
        4.0 / (keys as f64).sqrt()
    };
    (1.0 + u) * u * spread + F32_FLOOR
}

/// The tolerance, in words, for the record.
pub fn tolerance_text(dtype: Dtype) -> String {
    format!(
        "per output row of n visible keys: |err| <= (1+u)·u·min(1, 4/sqrt(n)) + {F32_FLOOR:e} + u·|ref| with u = 2^{} ({dtype} P and O rounding); LSE |err| <= {LSE_ATOL:e} + {LSE_RTOL:e}·|ref|",
        if dtype == Dtype::F16 { -11 } else { -8 }
    )
}

/// Q, K and V of `case` exactly as the host backend generates them (solbench_host's
/// `AttentionWorkload::prepare`: the same seed, the same order, rounded to the case's type).
pub fn inputs(case: &AttentionCase) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let shape = shape_of(case);
    let mut rng = SplitMix64::new(0xA77E ^ case.kv_len << 8 ^ case.batch);
    let q = random_rounded(&mut rng, shape.q_elems(), case.dtype);
    let k = random_rounded(&mut rng, shape.k_elems(), case.dtype);
    let v = random_rounded(&mut rng, shape.v_elems(), case.dtype);
    (q, k, v)
}

/// Decode's 16-bit encodings (one definition for both attention workloads).
pub use crate::attention::{decode, encode};

/// `values` in `dtype`, as the little-endian bytes a device buffer holds.
pub fn encode_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    crate::attention::to_le_bytes(&encode(values, dtype))
}

/// The outputs a check compares: every `rows` row of every (batch, head) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub batches: Vec<usize>,
    pub heads: Vec<usize>,
    pub rows: Vec<usize>,
}

impl Sample {
    /// Every output of `shape`.
    pub fn whole(shape: &AttentionShape) -> Sample {
        Sample {
            batches: (0..shape.batch).collect(),
            heads: (0..shape.q_heads).collect(),
            rows: (0..shape.q_len).collect(),
        }
    }

    /// What the GPU workload checks: the first and last sequence (batch indexing), the
    /// first, a middle and the last head (for GQA, different KV heads), and every row of a
    /// prompt up to 1024 rows; of a longer one the 129 rows at each end (the first and last
    /// query tiles, where the causal diagonal starts and the tails end) and 128 rows spread
    /// evenly between them. The reference costs O(rows · keys · d) in f64 per pair.
    pub fn for_gpu(shape: &AttentionShape) -> Sample {
        let mut batches = vec![0, shape.batch - 1];
        batches.dedup();
        let mut heads = vec![0, shape.q_heads / 2, shape.q_heads - 1];
        heads.dedup();
        let n = shape.q_len;
        let rows = if n <= ALL_ROWS_UP_TO {
            (0..n).collect()
        } else {
            let middle = n - 2 * EDGE_ROWS;
            let mut rows: Vec<usize> = (0..EDGE_ROWS).collect();
            rows.extend((0..MIDDLE_ROWS).map(|i| EDGE_ROWS + i * middle / MIDDLE_ROWS));
            rows.extend(n - EDGE_ROWS..n);
            rows.dedup();
            rows
        };
        Sample {
            batches,
            heads,
            rows,
        }
    }

    /// Output elements the sample compares (O only).
    pub fn elements(&self, shape: &AttentionShape) -> usize {
        self.batches.len() * self.heads.len() * self.rows.len() * shape.head_dim_v
    }
}

/// Reads one row of values from a kernel's output: `(sequence, row)` of O or `(sequence,
/// head)` of the LSE.
pub type RowReader<'a> = &'a mut dyn FnMut(usize, usize) -> Result<Vec<f32>, String>;

/// One sampled (sequence, head) pair and its inputs, each `[len][d]` contiguous.
struct Pair {
    b: usize,
    h: usize,
    /// `[q_len][d_qk]`
    q: Vec<f32>,
    /// K and V of the pair's KV head: `[kv_len][d_qk]`, `[kv_len][d_v]`.
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The inputs a check needs, gathered once from the full tensors: per sampled (sequence,
/// head) pair its Q rows and the K and V of its KV head. The full tensors can then be
/// dropped (a long prompt's Q is gigabytes in f32).
pub struct SampledInputs {
    shape: AttentionShape,
    dtype: Dtype,
    sample: Sample,
    /// In sample order: sequences outer, heads inner.
    pairs: Vec<Pair>,
}

/// Rows `len` of one head of a `[batch][len][heads][d]` tensor, as `[len][d]`.
fn head_rows(t: &[f32], b: usize, head: usize, len: usize, heads: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(len * d);
    for i in 0..len {
        out.extend_from_slice(&t[((b * len + i) * heads + head) * d..][..d]);
    }
    out
}

impl SampledInputs {
    pub fn gather(
        shape: &AttentionShape,
        dtype: Dtype,
        sample: Sample,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> SampledInputs {
        let s = shape;
        let group = s.group_size();
        let mut pairs = Vec::new();
        for &b in &sample.batches {
            for &h in &sample.heads {
                let hk = h / group;
                pairs.push(Pair {
                    b,
                    h,
                    q: head_rows(q, b, h, s.q_len, s.q_heads, s.head_dim_qk),
                    k: head_rows(k, b, hk, s.kv_len, s.kv_heads, s.head_dim_qk),
                    v: head_rows(v, b, hk, s.kv_len, s.kv_heads, s.head_dim_v),
                });
            }
        }
        SampledInputs {
            shape: *shape,
            dtype,
            sample,
            pairs,
        }
    }

    pub fn sample(&self) -> &Sample {
        &self.sample
    }

    /// The naive f64 output row and LSE of row `i` of a pair. A row sees the keys
    /// `0..visible_keys(i)`, so it is the non-causal attention of that one query row over
    /// that prefix: the oracle's own masking is not needed, and one row costs O(keys · d).
    fn reference_row(&self, pair: usize, i: usize) -> (Vec<f64>, f64) {
        let s = &self.shape;
        let Pair { q, k, v, .. } = &self.pairs[pair];
        let keys = s.visible_keys(i);
        if keys == 0 {
            return (vec![0.0; s.head_dim_v], f64::NEG_INFINITY);
        }
        let one = AttentionShape {
            batch: 1,
            q_len: 1,
            kv_len: keys,
            q_heads: 1,
            kv_heads: 1,
            causal: false,
            ..*s
        };
        let kv = KvSource::Contiguous {
            k: &k[..keys * s.head_dim_qk],
            v: &v[..keys * s.head_dim_v],
        };
        let (o, lse) =
            reference::attention_naive_f64(&one, &q[i * s.head_dim_qk..][..s.head_dim_qk], &kv);
        (o, lse[0])
    }

    /// Compares the kernel's output with the reference on the sample. `o_row(b, i)` returns
    /// output row i of sequence b, all heads (`q_heads · d_v` values); `lse_row(b, h)`, when
    /// given, the `q_len` LSE values of a (sequence, head). Err only when reading fails.
    pub fn check(
        &self,
        mut o_row: impl FnMut(usize, usize) -> Result<Vec<f32>, String>,
        mut lse_row: Option<RowReader<'_>>,
    ) -> Result<Check, String> {
        let s = &self.shape;
        let (dv, rows) = (s.head_dim_v, &self.sample.rows);
        // The reference first, in parallel over every (pair, row).
        let refs: Vec<(Vec<f64>, f64)> = (0..self.pairs.len() * rows.len())
            .into_par_iter()
            .map(|t| self.reference_row(t / rows.len(), rows[t % rows.len()]))
            .collect();
        let rtol = output_rtol(self.dtype);
        let mut c = Check {
            passed: true,
            compared: 0,
            mismatches: 0,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            tolerance: tolerance_text(self.dtype),
            method: String::new(),
            detail: None,
        };
        let note = |c: &mut Check, cmp: reference::Comparison, what: &dyn Fn(usize) -> String| {
            c.compared += cmp.compared as u64;
            c.mismatches += cmp.mismatches as u64;
            c.max_abs_err = c.max_abs_err.max(cmp.max_abs_err);
            c.max_rel_err = c.max_rel_err.max(cmp.max_rel_err);
            if c.detail.is_none() {
                c.detail = cmp.first_mismatch.map(what);
            }
        };
        for &b in &self.sample.batches {
            for (ri, &i) in rows.iter().enumerate() {
                let got_row = o_row(b, i)?;
                if got_row.len() != s.q_heads * dv {
                    return Err(format!(
                        "output row {i} of sequence {b} has {} values, not {}",
                        got_row.len(),
                        s.q_heads * dv
                    ));
                }
                let atol = output_atol(self.dtype, s.visible_keys(i));
                for (p, pair) in self.pairs.iter().enumerate() {
                    if pair.b != b {
                        continue;
                    }
                    let h = pair.h;
                    let got = &got_row[h * dv..][..dv];
                    let want = &refs[p * rows.len() + ri].0;
                    let cmp = reference::compare(got, want, atol, rtol);
                    note(&mut c, cmp, &|d| {
                        format!(
                            "sequence {b}, head {h}, row {i}, output dim {d}: got {}, reference {:.6} (tolerance {:.2e})",
                            got[d],
                            want[d],
                            atol + rtol * want[d].abs()
                        )
                    });
                }
            }
        }
        let lse_checked = lse_row.is_some();
        if let Some(read) = lse_row.as_mut() {
            for (p, &Pair { b, h, .. }) in self.pairs.iter().enumerate() {
                let all = read(b, h)?;
                if all.len() != s.q_len {
                    return Err(format!(
                        "the LSE of sequence {b}, head {h} has {} values, not {}",
                        all.len(),
                        s.q_len
                    ));
                }
                let got: Vec<f32> = rows.iter().map(|&i| all[i]).collect();
                let want: Vec<f64> = (0..rows.len())
                    .map(|ri| refs[p * rows.len() + ri].1)
                    .collect();
                let cmp = reference::compare(&got, &want, LSE_ATOL, LSE_RTOL);
                note(&mut c, cmp, &|ri| {
                    format!(
                        "sequence {b}, head {h}, LSE of row {}: got {}, reference {:.6}",
                        rows[ri], got[ri], want[ri]
                    )
                });
            }
        }
        c.passed = c.mismatches == 0;
        let whole = self.sample == Sample::whole(s);
        c.method = format!(
            "{} vs the naive f64 softmax(QK^T)V of each row over its visible keys, on the same rounded inputs{}",
            if whole {
                "every output element".to_string()
            } else {
                format!(
                    "sequences {:?} x heads {:?} x {} of {} rows",
                    self.sample.batches,
                    self.sample.heads,
                    rows.len(),
                    s.q_len
                )
            },
            if lse_checked { ", and their LSE" } else { "" }
        );
        Ok(c)
    }
}

// ------------------------------------------------------------------------- workload

/// Prepares a prefill case: MHA or GQA, contiguous K/V, bf16 or f16, head dims with a kernel.
pub fn prepare<'a>(
    dev: &'a CudaDevice,
    case: &AttentionCase,
) -> Result<Box<dyn Workload + 'a>, PrepareError> {
    Ok(Box::new(PrefillWorkload::prepare(dev, case)?))
}

struct PrefillWorkload {
    case: AttentionCase,
    shape: AttentionShape,
    launch: PrefillLaunch,
    func: CudaFunction,
    timer: BatchTimer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    o: DeviceBuffer,
    lse: DeviceBuffer,
    reference: SampledInputs,
    blocks_per_sm: u32,
    origin: String,
}

/// Why this backend does not run `case` as prefill, if it does not.
fn unsupported(case: &AttentionCase) -> Option<String> {
    if case.phase != AttentionPhase::Prefill {
        return Some("the prefill kernels run prefill cases only".into());
    }
    if case.variant == AttentionVariant::Mla {
        return Some("MLA prefill is not implemented: DeepSeek-style prefill runs un-absorbed, as MHA with 192-dim Q/K and 128-dim V (the mha variant, as the deepseek-v3 preset's prefill does); absorbed MLA is a decode kernel".into());
    }
    if let KvLayout::Paged { .. } = case.kv_layout {
        return Some(
            "the prefill kernels read contiguous K/V; paged KV is implemented for decode".into(),
        );
    }
    if case.kv_dtype.is_some_and(|k| k != case.dtype) {
        return Some("the prefill kernels keep K/V in the same type as Q".into());
    }
    None
}

impl PrefillWorkload {
    fn prepare(dev: &CudaDevice, case: &AttentionCase) -> Result<Self, PrepareError> {
        case.validate().map_err(PrepareError::Unsupported)?;
        if let Some(why) = unsupported(case) {
            return Err(PrepareError::Unsupported(why));
        }
        let shape = shape_of(case);
        let device = PrefillDevice {
            sms: dev.sm_count(),
            max_shared_per_block: dev
                .info
                .properties
                .get("shared_memory_per_block_optin_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(48 << 10),
        };
        let launch = plan::plan(&shape, case.dtype, device).map_err(PrepareError::Unsupported)?;
        let elems = shape.q_elems() + shape.k_elems() + shape.v_elems();
        // Host: the f32 inputs and their 16-bit copies at once, before the f32 are dropped.
        if let Some(avail) = solbench_core::env::available_memory_bytes() {
            let host = 6 * elems as u64;
            if host > avail / 2 {
                return Err(PrepareError::Unsupported(format!(
                    "generating {} of inputs on the host needs more than half its {} of free memory",
                    format_size(host),
                    format_size(avail)
                )));
            }
        }
        dev.ctx
            .bind_to_thread()
            .map_err(|e| failed(format!("binding the CUDA context failed: {e}")))?;
        let device_bytes = 2 * (elems + shape.o_elems()) as u64 + 4 * shape.lse_elems() as u64;
        let (free, _) = dev
            .ctx
            .mem_get_info()
            .map_err(|e| failed(format!("reading free GPU memory failed: {e}")))?;
        if device_bytes > (free as u64) / 100 * 95 {
            return Err(PrepareError::Unsupported(format!(
                "{} of attention tensors does not fit in the {} of GPU memory free",
                format_size(device_bytes),
                format_size(free as u64)
            )));
        }

        let util = dev.kernels("util.cu").map_err(failed)?;
        let kernels = dev.kernels("attention_prefill.cu").map_err(failed)?;
        let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
        let func = kernels.function(launch.kernel).map_err(failed)?;
        allow_shared_memory(&func, launch.shared_bytes as u32).map_err(failed)?;
        let blocks_per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(
                launch.block,
                launch.shared_bytes as usize,
                None,
            )
            .map_err(|e| failed(format!("occupancy query failed: {e}")))?;
        if blocks_per_sm == 0 {
            return Err(PrepareError::Unsupported(format!(
                "{} with {} threads and {} of shared memory does not fit on one SM",
                launch.kernel,
                launch.block,
                format_size(launch.shared_bytes as u64)
            )));
        }

        let (q, k, v) = inputs(case);
        let upload = |values: &[f32], what: &str| -> Result<DeviceBuffer, PrepareError> {
            let bytes = encode_bytes(values, case.dtype);
            let buf = DeviceBuffer::new(&dev.ctx, bytes.len()).map_err(failed)?;
            buf.write(0, &bytes)
                .map_err(|e| failed(format!("uploading {what}: {e}")))?;
            Ok(buf)
        };
        let q_dev = upload(&q, "Q")?;
        let k_dev = upload(&k, "K")?;
        let v_dev = upload(&v, "V")?;
        let reference =
            SampledInputs::gather(&shape, case.dtype, Sample::for_gpu(&shape), &q, &k, &v);
        drop((q, k, v));
        let o = DeviceBuffer::new(&dev.ctx, 2 * shape.o_elems()).map_err(failed)?;
        let lse = DeviceBuffer::new(&dev.ctx, 4 * shape.lse_elems()).map_err(failed)?;
        o.poison().map_err(failed)?;
        lse.poison().map_err(failed)?;
        Ok(PrefillWorkload {
            case: case.clone(),
            shape,
            launch,
            func,
            timer,
            q: q_dev,
            k: k_dev,
            v: v_dev,
            o,
            lse,
            reference,
            blocks_per_sm,
            origin: kernels.origin.clone(),
        })
    }

    fn enqueue(&self, stream: &cudarc::driver::CudaStream) -> Result<(), String> {
        let l = &self.launch;
        let cfg = LaunchConfig {
            grid_dim: l.grid,
            block_dim: (l.block, 1, 1),
            shared_mem_bytes: l.shared_bytes,
        };
        let s = &self.shape;
        let (q, k, v, o, lse) = (
            self.q.ptr(),
            self.k.ptr(),
            self.v.ptr(),
            self.o.ptr(),
            self.lse.ptr(),
        );
        // plan() checked that every count fits in 32 bits.
        let (q_len, kv_len) = (s.q_len as u32, s.kv_len as u32);
        let (q_heads, kv_heads) = (s.q_heads as u32, s.kv_heads as u32);
        let causal = u32::from(s.causal);
        let stages = l.stages;
        let scale = s.softmax_scale;
        // SAFETY: the arguments match the kernel's signature in kernels/attention_prefill.cu's
        // launch contract; every buffer holds its tensor for this shape and lives as long as
        // self; grid, block and shared memory come from plan(), the function's shared-memory
        // limit was raised to shared_bytes in prepare.
        unsafe {
            stream
                .launch_builder(&self.func)
                .arg(&q)
                .arg(&k)
                .arg(&v)
                .arg(&o)
                .arg(&lse)
                .arg(&q_len)
                .arg(&kv_len)
                .arg(&q_heads)
                .arg(&kv_heads)
                .arg(&causal)
                .arg(&stages)
                .arg(&scale)
                .launch(cfg)
        }
        .map_err(cuda_err("launching the prefill attention kernel"))?;
        Ok(())
    }

    fn check_output(&self) -> Result<Check, String> {
        let s = &self.shape;
        let dtype = self.case.dtype;
        let row_values = s.q_heads * s.head_dim_v;
        let o_row = |b: usize, i: usize| -> Result<Vec<f32>, String> {
            let mut bytes = vec![0u8; 2 * row_values];
            self.o
                .read(2 * (b * s.q_len + i) * row_values, &mut bytes)?;
            let bits: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Ok(decode(&bits, dtype))
        };
        let mut lse_row = |b: usize, h: usize| -> Result<Vec<f32>, String> {
            let mut bytes = vec![0u8; 4 * s.q_len];
            self.lse
                .read(4 * (b * s.q_heads + h) * s.q_len, &mut bytes)?;
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        self.reference.check(o_row, Some(&mut lse_row))
    }
}

impl Workload for PrefillWorkload {
    fn work(&self) -> Work {
        attention_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        self.timer
            .time(iters, |s| self.enqueue(s))
            .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let check = self.check_output().map_err(RunError)?;
        if check.passed {
            // Every run writes the same O and LSE: poison them again so the next check
            // proves the runs since this one really wrote them.
            self.o.poison().map_err(RunError)?;
            self.lse.poison().map_err(RunError)?;
        }
        Ok(check)
    }

    fn notes(&self) -> Notes {
        let l = &self.launch;
        let s = &self.shape;
        let executed = plan::executed_flops(s, l);
        let mut n = Notes::new();
        n.insert("kernel".into(), json!(l.kernel));
        n.insert("module".into(), json!(self.origin));
        n.insert(
            "algorithm".into(),
            json!(format!(
                "FlashAttention-2-style forward: {}-row query tiles (one m16 slab per warp), {}-key K/V tiles through shared memory ({} stage{} of cp.async), online softmax in f32 registers{}",
                l.block_m,
                l.block_n,
                l.stages,
                if l.stages == 1 { "" } else { "s" },
                if s.causal { ", tiles past the causal diagonal skipped" } else { "" }
            )),
        );
        n.insert(
            "compute_path".into(),
            json!(format!(
                "mma.sync m16n8k16 {} -> f32 with ldmatrix (x4, x4.trans for V); P rounded to {} in registers",
                self.case.dtype, self.case.dtype
            )),
        );
        n.insert("grid".into(), json!([l.grid.0, l.grid.1, l.grid.2]));
        n.insert("block".into(), json!(l.block));
        n.insert("block_m".into(), json!(l.block_m));
        n.insert("block_n".into(), json!(l.block_n));
        n.insert("stages".into(), json!(l.stages));
        n.insert("shared_bytes".into(), json!(l.shared_bytes));
        n.insert("blocks_per_sm".into(), json!(self.blocks_per_sm));
        n.insert("tile_pairs".into(), json!(plan::tile_pairs(s, l)));
        n.insert("executed_flops".into(), json!(executed));
        n.insert(
            "useful_flop_share".into(),
            json!(attention_work(&self.case).flops / executed),
        );
        n.insert("softmax_scale".into(), json!(s.softmax_scale as f64));
        n.insert(
            "inputs".into(),
            json!("the host backend's random Q, K, V in [-1, 1) rounded to the type, uploaded once; O and LSE poisoned with NaN before each check"),
        );
        n.insert(
            "lse".into(),
            json!("written every run (f32 per row), as FlashAttention's forward does; not counted in the bytes"),
        );
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn gqa(q_len: usize, kv_len: usize, causal: bool) -> AttentionShape {
        AttentionShape {
            batch: 2,
            q_len,
            kv_len,
            q_heads: 4,
            kv_heads: 2,
            head_dim_qk: 64,
            head_dim_v: 64,
            causal,
            softmax_scale: 0.125,
        }
    }

    #[test]
    fn inputs_are_the_host_backends() {
        let case = AttentionCase {
            variant: AttentionVariant::Gqa,
            phase: AttentionPhase::Prefill,
            causal: true,
            batch: 2,
            q_len: 5,
            kv_len: 7,
            q_heads: 4,
            kv_heads: 2,
            head_dim_qk: 64,
            head_dim_v: 64,
            dtype: Dtype::Bf16,
            kv_dtype: None,
            kv_layout: KvLayout::Contiguous,
            model: None,
        };
        let (q, k, v) = inputs(&case);
        let s = shape_of(&case);
        assert_eq!(
            (q.len(), k.len(), v.len()),
            (s.q_elems(), s.k_elems(), s.v_elems())
        );
        // The host workload's stream: seed 0xA77E ^ kv_len << 8 ^ batch, then Q, K, V.
        let mut rng = SplitMix64::new(0xA77E ^ (7 << 8) ^ 2);
        let all = random_rounded(&mut rng, q.len() + k.len() + v.len(), Dtype::Bf16);
        assert_eq!(&all[..q.len()], &q[..]);
        assert_eq!(&all[q.len() + k.len()..], &v[..]);
        // Representable: the 16-bit round trip is exact.
        assert_eq!(decode(&encode(&q, Dtype::Bf16), Dtype::Bf16), q);
        assert_eq!(decode(&encode(&v, Dtype::F16), Dtype::F16), v);
        let bytes = encode_bytes(&q[..2], Dtype::Bf16);
        let bits = encode(&q[..2], Dtype::Bf16);
        assert_eq!(
            bytes,
            [bits[0].to_le_bytes(), bits[1].to_le_bytes()].concat()
        );
    }

    #[test]
    fn samples_cover_edges_and_spread() {
        let s = gqa(100, 100, true);
        assert_eq!(Sample::for_gpu(&s).rows.len(), 100);
        assert_eq!(Sample::for_gpu(&s).heads, [0, 2, 3]);
        assert_eq!(Sample::for_gpu(&s).batches, [0, 1]);
        let long = AttentionShape {
            q_len: 5000,
            batch: 1,
            q_heads: 1,
            kv_heads: 1,
            ..s
        };
        let sample = Sample::for_gpu(&long);
        assert_eq!((sample.batches.len(), sample.heads.len()), (1, 1));
        let r = &sample.rows;
        assert_eq!(r.len(), 2 * EDGE_ROWS + MIDDLE_ROWS);
        assert!(r.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert_eq!((r[0], r[EDGE_ROWS - 1], *r.last().unwrap()), (0, 128, 4999));
        assert_eq!(r[r.len() - EDGE_ROWS], 5000 - 129);
        assert_eq!(Sample::whole(&s).elements(&s), 2 * 4 * 100 * 64);
    }

    #[test]
    fn tolerances_fit_the_types() {
        // One key: p = 1 is exact, and the bound is the worst case u anyway.
        assert!((output_atol(Dtype::Bf16, 1) - (1.0 + 1.0 / 256.0) / 256.0 - 2e-6).abs() < 1e-15);
        // 4096 keys: 4u/64.
        let a = output_atol(Dtype::Bf16, 4096);
        assert!(
            (a - (1.0 + 1.0 / 256.0) / 256.0 / 16.0 - 2e-6).abs() < 1e-15,
            "{a}"
        );
        assert!(output_atol(Dtype::F16, 100) < output_atol(Dtype::Bf16, 100) / 7.0);
        assert_eq!(output_rtol(Dtype::F16), 1.0 / 2048.0);
        assert!(tolerance_text(Dtype::Bf16).contains("2^-8"));
    }

    /// The check itself, on host-made "kernel outputs": the reference rounded to bf16 passes,
    /// and a dropped key, a perturbed element and NaN are caught, with their position.
    #[test]
    fn the_check_passes_rounded_reference_and_catches_mistakes() {
        for causal in [false, true] {
            let s = gqa(70, 90, causal);
            let case_inputs = {
                let mut rng = SplitMix64::new(5);
                let q = random_rounded(&mut rng, s.q_elems(), Dtype::Bf16);
                let k = random_rounded(&mut rng, s.k_elems(), Dtype::Bf16);
                let v = random_rounded(&mut rng, s.v_elems(), Dtype::Bf16);
                (q, k, v)
            };
            let (q, k, v) = &case_inputs;
            let kv = KvSource::Contiguous { k, v };
            let (o, lse) = reference::attention_naive_f64(&s, q, &kv);
            let rounded: Vec<f32> = o.iter().map(|&x| bf16::from_f64(x).to_f32()).collect();
            let lse32: Vec<f32> = lse.iter().map(|&x| x as f32).collect();
            let refs = SampledInputs::gather(&s, Dtype::Bf16, Sample::whole(&s), q, k, v);
            let row_len = s.q_heads * s.head_dim_v;
            let run = |out: &[f32]| {
                let mut lse_row = |b: usize, h: usize| -> Result<Vec<f32>, String> {
                    Ok(lse32[(b * s.q_heads + h) * s.q_len..][..s.q_len].to_vec())
                };
                refs.check(
                    |b, i| Ok(out[(b * s.q_len + i) * row_len..][..row_len].to_vec()),
                    Some(&mut lse_row),
                )
                .unwrap()
            };
            let c = run(&rounded);
            assert!(c.passed, "{c:?}");
            assert_eq!(c.compared as usize, o.len() + lse.len());
            assert!(c.method.starts_with("every output element"));

            // One element off by a few tolerances.
            let mut bad = rounded.clone();
            let at = (s.q_len + 69) * row_len + 3 * 64 + 5; // sequence 1, row 69, head 3, dim 5
            bad[at] += 0.01;
            let c = run(&bad);
            assert_eq!(c.mismatches, 1);
            let detail = c.detail.unwrap();
            assert!(
                detail.starts_with("sequence 1, head 3, row 69, output dim 5"),
                "{detail}"
            );
            bad[at] = f32::NAN;
            assert!(!run(&bad).passed);

            // The last visible key of every row left out: caught on every row with >1 key.
            let short = AttentionShape {
                kv_len: s.kv_len - 1,
                ..s
            };
            let k_short: Vec<f32> = (0..s.batch)
                .flat_map(|b| k[b * s.kv_len * 128..][..(s.kv_len - 1) * 128].to_vec())
                .collect();
            let v_short: Vec<f32> = (0..s.batch)
                .flat_map(|b| v[b * s.kv_len * 128..][..(s.kv_len - 1) * 128].to_vec())
                .collect();
            let shifted = AttentionShape {
                q_len: s.q_len,
                ..short
            };
            let (o_short, _) = reference::attention_naive_f64(
                &shifted,
                q,
                &KvSource::Contiguous {
                    k: &k_short,
                    v: &v_short,
                },
            );
            let dropped: Vec<f32> = o_short
                .iter()
                .map(|&x| bf16::from_f64(x).to_f32())
                .collect();
            let c = run(&dropped);
            assert!(!c.passed && c.mismatches > 100, "{c:?}");
        }
    }
}
