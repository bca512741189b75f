//! Attention decode on NVIDIA GPUs: the split-KV (flash-decoding) tensor-core kernels of
//! `kernels/attention_decode.cu` for MHA, GQA and absorbed MLA, BF16/FP16, contiguous or
//! paged K/V, timed with the batch timer (split kernel + combine per iteration) and verified
//! against the host's naive f64 attention on the same rounded inputs.
//!
//! Inputs come from the host backend's own generator (`solbench_host::attention`: the same
//! seed, the same order Q, K, V, then the page shuffle, the same rounding), so a GPU case and
//! a host case of the same shape see the same numbers. The stream is entered at any position
//! (SplitMix64 is a counter), so K/V of any size are generated in parallel, in bounded
//! chunks, and written straight into their pages: host memory stays at one chunk plus the
//! sequences the check needs.
//!
//! The pure parts (inputs, storage layouts, tolerance, the check) are public: the SIMT
//! harness tests run the same kernels through the same functions.

use crate::attention_launch::{self as plan, DecodeLaunch, DecodeProblem};
use crate::device::CudaDevice;
use crate::gpu::{allow_shared_memory, cuda_err, failed, BatchTimer, DeviceBuffer};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::json;
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{AttentionCase, AttentionPhase, AttentionVariant, Dtype, KvLayout};
use solbench_core::random::SplitMix64;
use solbench_core::size::format_size;
use solbench_core::work::{attention_work, Work};
use solbench_host::attention::{random_rounded, shape_of};
use solbench_host::attention_reference::{self as reference, AttentionShape, KvSource};
use std::ops::Range;
use std::time::Duration;

/// SplitMix64's increment: `solbench_core::random::SplitMix64` adds it to its state before
/// every output, so the generator seeded with `seed + i·GOLDEN` continues the stream of
/// `seed` from its `i`-th value. `stream_positions_match_the_host_generator` holds this to
/// the real generator, so a change there fails a test instead of silently changing data.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Values generated per parallel task.
const GEN_CHUNK: usize = 1 << 16;
/// Bytes of K or V staged on the host per upload.
const UPLOAD_CHUNK: usize = 64 << 20;
/// The 16-bit pattern stored in page slots past a sequence's last token: NaN in bf16 and
/// f16, so a kernel that reads a slot it must not see produces NaN and fails the check.
pub const PAD_BITS: u16 = 0xFFFF;

fn unsupported(e: String) -> PrepareError {
    PrepareError::Unsupported(e)
}

// ------------------------------------------------------------------------- pure parts

/// The host backend's seed for `case` (`solbench_host::attention::AttentionWorkload`).
pub fn host_seed(case: &AttentionCase) -> u64 {
    0xA77E ^ case.kv_len << 8 ^ case.batch
}

/// The unit roundoff of the 16-bit type (relative error of one round to nearest even):
/// 2^-8 for bf16, 2^-11 for f16.
pub fn unit_roundoff(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    }
}

/// `(atol, rtol)` of one output element of a `kv_len`-key decode row against the f64 oracle.
///
/// - `rtol = 2u`: the final rounding of O to the 16-bit type (`u`), with room for f32
///   arithmetic and the device's approximate `exp2`.
/// - `atol = 8u/√kv_len`: the kernel rounds P to the 16-bit type before P·V and sums the
///   rounded values into l, so O is an exact average of V rows whose weights carry relative
///   errors δ_i ≤ u. The error Σp_i·δ_i·(v_i − O)/Σp_i is at most 2u (|v| ≤ 1); with random
///   δ it is about 0.4u/√kv_len for these inputs (near-uniform attention, |v − O| ~ 0.6),
///   so 8u/√n is safe by a factor of ~4 over the largest of thousands of elements, and still
///   catches a lost or doubled tile (a shift of ~tile/n · 0.07).
pub fn output_tolerance(dtype: Dtype, kv_len: usize) -> (f64, f64) {
    let u = unit_roundoff(dtype);
    (8.0 * u / (kv_len.max(1) as f64).sqrt() + 1e-6, 2.0 * u)
}

/// `(atol, rtol)` of one LSE (natural log) against the oracle: l sums rounded p (relative
/// error ~u/√n, which is also the LSE's absolute error) in f32.
pub fn lse_tolerance(dtype: Dtype, kv_len: usize) -> (f64, f64) {
    let u = unit_roundoff(dtype);
    (4.0 * u / (kv_len.max(1) as f64).sqrt() + 1e-5, 1e-5)
}

/// The 16-bit patterns of `values` (already representable: rounding is exact).
pub fn encode(values: &[f32], dtype: Dtype) -> Vec<u16> {
    match dtype {
        Dtype::F16 => values.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
        _ => values
            .iter()
            .map(|&x| bf16::from_f32(x).to_bits())
            .collect(),
    }
}

/// The values of 16-bit patterns.
pub fn decode(bits: &[u16], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F16 => bits.iter().map(|&b| f16::from_bits(b).to_f32()).collect(),
        _ => bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect(),
    }
}

pub(crate) fn to_le_bytes(bits: &[u16]) -> Vec<u8> {
    bits.iter().flat_map(|b| b.to_le_bytes()).collect()
}

/// Which K/V tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvTensor {
    K,
    V,
}

/// A shuffled block table: sequence `b`'s page `pg` is physical page
/// `table[b * pages_per_seq + pg]`, a permutation of `0..batch·pages_per_seq`, so pages of one
/// sequence are not contiguous and the kernel really gathers. The shuffle is the host
/// backend's (Fisher–Yates from the same stream position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTable {
    pub page_size: usize,
    pub pages_per_seq: usize,
    pub table: Vec<u32>,
}

impl PageTable {
    pub fn num_pages(&self) -> usize {
        self.table.len()
    }

    /// For every physical page, the logical page (`b * pages_per_seq + pg`) it holds.
    pub fn owners(&self) -> Vec<usize> {
        let mut owner = vec![0; self.table.len()];
        for (logical, &physical) in self.table.iter().enumerate() {
            owner[physical as usize] = logical;
        }
        owner
    }
}

/// The decode inputs of one case: where Q, K, V and the page shuffle sit in the host
/// backend's random stream, and how to regenerate any part of them.
#[derive(Clone, Copy, Debug)]
pub struct DecodeInputs {
    seed: u64,
    pub dtype: Dtype,
    pub shape: AttentionShape,
    /// Absorbed MLA: V is the first `head_dim_v` columns of each K (latent) row.
    pub mla: bool,
}

impl DecodeInputs {
    pub fn new(case: &AttentionCase) -> DecodeInputs {
        DecodeInputs {
            seed: host_seed(case),
            dtype: case.dtype,
            shape: shape_of(case),
            mla: case.variant == AttentionVariant::Mla,
        }
    }

    /// `n` values from position `at` of the stream, generated in parallel chunks.
    fn values(&self, at: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n];
        out.par_chunks_mut(GEN_CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let pos = (at + c * GEN_CHUNK) as u64;
                let mut rng = SplitMix64::new(self.seed.wrapping_add(pos.wrapping_mul(GOLDEN)));
                chunk.copy_from_slice(&random_rounded(&mut rng, chunk.len(), self.dtype));
            });
        out
    }

    /// Q, `[batch][q_len][q_heads][d_qk]`.
    pub fn q(&self) -> Vec<f32> {
        self.values(0, self.shape.q_elems())
    }

    /// Elements per token (all KV heads) of `tensor`.
    pub fn row_elems(&self, tensor: KvTensor) -> usize {
        let s = &self.shape;
        s.kv_heads
            * match tensor {
                KvTensor::K => s.head_dim_qk,
                KvTensor::V => s.head_dim_v,
            }
    }

    /// Elements `[start, start + n)` of logical (contiguous BSHD) K or V. Both are whole
    /// tokens for MLA's V, which is cut from the latent K rows.
    pub fn kv(&self, tensor: KvTensor, start: usize, n: usize) -> Vec<f32> {
        let s = &self.shape;
        match (tensor, self.mla) {
            (KvTensor::K, _) => self.values(s.q_elems() + start, n),
            (KvTensor::V, false) => self.values(s.q_elems() + s.k_elems() + start, n),
            (KvTensor::V, true) => {
                let (dk, dv) = (s.head_dim_qk, s.head_dim_v);
                let first = start / dv;
                let tokens = (start - first * dv + n).div_ceil(dv);
                let latent = self.values(s.q_elems() + first * dk, tokens * dk);
                let mut v: Vec<f32> = latent
                    .chunks_exact(dk)
                    .flat_map(|row| row[..dv].iter().copied())
                    .collect();
                v.drain(..start - first * dv);
                v.truncate(n);
                v
            }
        }
    }

    /// Logical K and V of sequence `b` (for the oracle).
    pub fn sequence_kv(&self, b: usize) -> (Vec<f32>, Vec<f32>) {
        let tokens = self.shape.kv_len;
        let (rk, rv) = (self.row_elems(KvTensor::K), self.row_elems(KvTensor::V));
        (
            self.kv(KvTensor::K, b * tokens * rk, tokens * rk),
            self.kv(KvTensor::V, b * tokens * rv, tokens * rv),
        )
    }

    /// The host backend's shuffled block table for `page_size`, from the stream position
    /// after Q, K and V.
    pub fn page_table(&self, page_size: usize) -> PageTable {
        let s = &self.shape;
        let pages_per_seq = s.kv_len.div_ceil(page_size.max(1));
        let total = pages_per_seq * s.batch;
        let used = s.q_elems() + s.k_elems() + if self.mla { 0 } else { s.v_elems() };
        let mut rng = SplitMix64::new(self.seed.wrapping_add((used as u64).wrapping_mul(GOLDEN)));
        let mut table: Vec<u32> = (0..total as u32).collect();
        for i in (1..table.len()).rev() {
            table.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        PageTable {
            page_size,
            pages_per_seq,
            table,
        }
    }

    /// Stored bits of contiguous elements `[start, start + n)` of `tensor`.
    pub fn contiguous_storage(&self, tensor: KvTensor, start: usize, n: usize) -> Vec<u16> {
        encode(&self.kv(tensor, start, n), self.dtype)
    }

    /// Stored bits of physical pages `pages` of `tensor` (`[page][page_size][kv_heads][d]`).
    /// Slots past the last token of a sequence hold [`PAD_BITS`].
    pub fn paged_storage(
        &self,
        tensor: KvTensor,
        table: &PageTable,
        pages: Range<usize>,
    ) -> Vec<u16> {
        let row = self.row_elems(tensor);
        let page_elems = table.page_size * row;
        let owners = table.owners();
        let kv_len = self.shape.kv_len;
        let mut out = vec![PAD_BITS; pages.len() * page_elems];
        out.par_chunks_mut(page_elems)
            .zip(pages)
            .for_each(|(dst, physical)| {
                let logical = owners[physical];
                let (b, pg) = (logical / table.pages_per_seq, logical % table.pages_per_seq);
                let first = pg * table.page_size;
                let tokens = table.page_size.min(kv_len - first);
                let bits =
                    self.contiguous_storage(tensor, (b * kv_len + first) * row, tokens * row);
                dst[..bits.len()].copy_from_slice(&bits);
            });
        out
    }
}

/// Output and LSE of one sequence as the GPU left them: O `[q_len][q_heads][d_v]` (BSHD,
/// decoded), LSE `[q_heads][q_len]`.
pub struct SequenceOutput {
    pub b: usize,
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
}

/// Compares each sequence's output and LSE with the naive f64 softmax(QKᵀ)V of the same
/// rounded inputs (the tolerances of [`output_tolerance`] and [`lse_tolerance`]).
pub fn check_sequences(inputs: &DecodeInputs, q: &[f32], outputs: &[SequenceOutput]) -> Check {
    let s = inputs.shape;
    let one = AttentionShape { batch: 1, ..s };
    let (atol, rtol) = output_tolerance(inputs.dtype, s.kv_len);
    let (lse_atol, lse_rtol) = lse_tolerance(inputs.dtype, s.kv_len);
    let (mut compared, mut mismatches, mut max_abs, mut max_rel) = (0u64, 0u64, 0.0f64, 0.0f64);
    let mut detail = None;
    for out in outputs {
        let (k, v) = inputs.sequence_kv(out.b);
        let q_b = &q[out.b * one.q_elems()..][..one.q_elems()];
        let (want_o, want_lse) =
            reference::attention_naive_f64(&one, q_b, &KvSource::Contiguous { k: &k, v: &v });
        for (what, got, want, a, r) in [
            ("output", &out.o, &want_o, atol, rtol),
            ("LSE", &out.lse, &want_lse, lse_atol, lse_rtol),
        ] {
            let c = if got.len() == want.len() {
                reference::compare(got, want, a, r)
            } else {
                reference::Comparison {
                    max_abs_err: f64::INFINITY,
                    max_rel_err: f64::INFINITY,
                    mismatches: want.len().max(1),
                    first_mismatch: Some(0),
                    compared: want.len(),
                }
            };
            compared += c.compared as u64;
            mismatches += c.mismatches as u64;
            max_abs = max_abs.max(c.max_abs_err);
            max_rel = max_rel.max(c.max_rel_err);
            if detail.is_none() {
                detail = c.first_mismatch.map(|i| {
                    format!(
                        "sequence {}, {what} element {i}: got {}, reference {}",
                        out.b,
                        got.get(i).copied().unwrap_or(f32::NAN),
                        want[i]
                    )
                });
            }
        }
    }
    let seqs: Vec<usize> = outputs.iter().map(|o| o.b).collect();
    Check {
        passed: mismatches == 0 && !outputs.is_empty(),
        compared,
        mismatches,
        max_abs_err: max_abs,
        max_rel_err: max_rel,
        tolerance: format!(
            "O: |err| <= {atol:.2e} + {rtol:.2e}*|ref| (8u/sqrt(kv_len) for P rounded to {}, 2u for the output rounding); LSE: {lse_atol:.2e} + {lse_rtol:.0e}*|ref|",
            inputs.dtype
        ),
        method: format!(
            "every output element and LSE of sequence(s) {seqs:?} (all heads) vs the naive f64 softmax(QK^T)V on the same rounded inputs"
        ),
        detail,
    }
}

/// The kernels' view of a case.
pub fn problem_of(case: &AttentionCase) -> Result<DecodeProblem, String> {
    let u = |name: &str, v: u64| {
        u32::try_from(v).map_err(|_| {
            format!("attention {name} {v} does not fit the decode kernel's 32-bit sizes")
        })
    };
    Ok(DecodeProblem {
        batch: u("batch", case.batch)?,
        q_len: u("q_len", case.q_len)?,
        q_heads: u("q_heads", case.q_heads)?,
        kv_heads: u("kv_heads", case.kv_heads)?,
        kv_len: u("kv_len", case.kv_len)?,
        head_dim_qk: u("head_dim_qk", case.head_dim_qk)?,
        head_dim_v: u("head_dim_v", case.head_dim_v)?,
        mla: case.variant == AttentionVariant::Mla,
        kv_bytes: case.kv_dtype().size_bytes() as u32,
    })
}

// ---------------------------------------------------------------------------- workload

/// Prepares a decode case (phase = decode) on `dev`.
pub fn prepare<'a>(
    dev: &'a CudaDevice,
    case: &AttentionCase,
) -> Result<Box<dyn Workload + 'a>, PrepareError> {
    Ok(Box::new(DecodeWorkload::prepare(dev, case)?))
}

struct DecodeWorkload {
    case: AttentionCase,
    inputs: DecodeInputs,
    q_host: Vec<f32>,
    launch: DecodeLaunch,
    timer: BatchTimer,
    split_fn: CudaFunction,
    combine_fn: Option<CudaFunction>,
    q: DeviceBuffer,
    k: DeviceBuffer,
    /// None for MLA: the kernel reads V from the latent K rows.
    v: Option<DeviceBuffer>,
    table: Option<DeviceBuffer>,
    page_size: u32,
    max_pages: u32,
    o: DeviceBuffer,
    /// The final LSE `[batch][q_heads][q_len]`.
    lse: DeviceBuffer,
    /// With more than one split: partial O and LSE.
    partials: Option<(DeviceBuffer, DeviceBuffer)>,
    notes: Notes,
}

impl DecodeWorkload {
    fn prepare(dev: &CudaDevice, case: &AttentionCase) -> Result<DecodeWorkload, PrepareError> {
        if case.phase != AttentionPhase::Decode {
            return Err(unsupported(
                "attention::prepare runs decode cases; prefill has its own kernels (attention_prefill)".into(),
            ));
        }
        case.validate().map_err(unsupported)?;
        if !matches!(case.dtype, Dtype::Bf16 | Dtype::F16) {
            return Err(unsupported(format!(
                "the CUDA decode attention kernels take bf16 or f16, not {}",
                case.dtype
            )));
        }
        if case.kv_dtype() != case.dtype {
            return Err(unsupported(format!(
                "{} K/V with {} queries is not implemented by the CUDA decode kernels (they read K/V in the query type; FP8 E4M3 KV with f32 dequantisation is future work)",
                case.kv_dtype(),
                case.dtype
            )));
        }
        let problem = problem_of(case).map_err(unsupported)?;
        let inputs = DecodeInputs::new(case);
        inputs.shape.validate().map_err(unsupported)?;
        let smem_optin = dev
            .info
            .properties
            .get("shared_memory_per_block_optin_bytes")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(48 << 10);
        let kernel = plan::select_kernel(&problem, smem_optin).map_err(unsupported)?;
        let split_name = kernel.name(case.dtype).map_err(unsupported)?;

        dev.ctx
            .bind_to_thread()
            .map_err(|e| failed(format!("binding the CUDA context failed: {e}")))?;
        let util = dev.kernels("util.cu").map_err(failed)?;
        let module = dev.kernels("attention_decode.cu").map_err(failed)?;
        let split_fn = module.function(&split_name).map_err(failed)?;
        let smem = kernel.shared_bytes();
        allow_shared_memory(&split_fn, smem).map_err(failed)?;
        let blocks_per_sm = split_fn
            .occupancy_max_active_blocks_per_multiprocessor(kernel.threads, smem as usize, None)
            .map_err(|e| failed(format!("occupancy query failed: {e}")))?;
        if blocks_per_sm == 0 {
            return Err(unsupported(format!(
                "{split_name} ({} threads, {} of shared memory) does not fit on one SM",
                kernel.threads,
                format_size(smem as u64)
            )));
        }
        let launch = plan::decode_launch(&problem, &kernel, dev.sm_count(), blocks_per_sm)
            .map_err(unsupported)?;

        // Device memory: Q, K/V storage, table, O, LSE, partials.
        let s = inputs.shape;
        let paged = match case.kv_layout {
            KvLayout::Contiguous => None,
            KvLayout::Paged { page_size } => Some(inputs.page_table(page_size as usize)),
        };
        let tokens_stored = match &paged {
            None => s.batch * s.kv_len,
            Some(t) => t.num_pages() * t.page_size,
        };
        let k_bytes = tokens_stored * inputs.row_elems(KvTensor::K) * 2;
        let v_bytes = if inputs.mla {
            0
        } else {
            tokens_stored * inputs.row_elems(KvTensor::V) * 2
        };
        let rows = s.lse_elems();
        let partial_bytes = if launch.splits > 1 {
            (launch.partial_o_elems + launch.lse_elems) as usize * 4
        } else {
            0
        };
        let table_bytes = paged.as_ref().map_or(0, |t| t.num_pages() * 4);
        let total = s.q_elems() * 2
            + k_bytes
            + v_bytes
            + table_bytes
            + s.o_elems() * 2
            + rows * 4
            + partial_bytes;
        let (free, _) = dev
            .ctx
            .mem_get_info()
            .map_err(|e| failed(format!("reading free GPU memory failed: {e}")))?;
        if total as u64 > free as u64 / 100 * 90 {
            return Err(unsupported(format!(
                "Q, K/V, O and the split partials need {}, more than 90% of the {} of GPU memory free",
                format_size(total as u64),
                format_size(free as u64)
            )));
        }

        let alloc = |bytes: usize| DeviceBuffer::new(&dev.ctx, bytes).map_err(failed);
        let q_host = inputs.q();
        let q = alloc(s.q_elems() * 2)?;
        q.write(0, &to_le_bytes(&encode(&q_host, case.dtype)))
            .map_err(failed)?;
        let k = alloc(k_bytes)?;
        upload(&inputs, KvTensor::K, paged.as_ref(), &k).map_err(failed)?;
        let v = if inputs.mla {
            None
        } else {
            let v = alloc(v_bytes)?;
            upload(&inputs, KvTensor::V, paged.as_ref(), &v).map_err(failed)?;
            Some(v)
        };
        let table = match &paged {
            None => None,
            Some(t) => {
                let buf = alloc(table_bytes)?;
                let bytes: Vec<u8> = t.table.iter().flat_map(|p| p.to_le_bytes()).collect();
                buf.write(0, &bytes).map_err(failed)?;
                Some(buf)
            }
        };
        let o = alloc(s.o_elems() * 2)?;
        let lse = alloc(rows * 4)?;
        let partials = if launch.splits > 1 {
            Some((
                alloc(launch.partial_o_elems as usize * 4)?,
                alloc(launch.lse_elems as usize * 4)?,
            ))
        } else {
            None
        };
        let combine_fn = match launch.combine {
            Some(_) => Some(
                module
                    .function(&plan::combine_name(case.dtype).map_err(failed)?)
                    .map_err(failed)?,
            ),
            None => None,
        };
        let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
        let (page_size, max_pages) = match &paged {
            None => (0, 0),
            Some(t) => (t.page_size as u32, t.pages_per_seq as u32),
        };

        let mut notes = Notes::new();
        let tiles_per_split = launch.tiles.div_ceil(launch.splits);
        notes.insert("kernel".into(), json!(split_name));
        notes.insert(
            "combine_kernel".into(),
            json!(match launch.combine {
                Some(_) => plan::combine_name(case.dtype).map_err(failed)?,
                None => "none (one split: the split kernel writes O itself)".into(),
            }),
        );
        notes.insert("module".into(), json!(module.origin));
        notes.insert("algorithm".into(), json!(format!(
            "split-KV flash-decoding: {} splits of ≤{tiles_per_split} tiles of {} keys, online softmax in f32, P rounded to {} for P·V, log-sum-exp combine; mma.sync m16n8k16 ({} in, f32 accumulate) with ldmatrix, K/V double-buffered by cp.async",
            launch.splits, kernel.kv_tile, case.dtype, case.dtype
        )));
        notes.insert("splits".into(), json!(launch.splits));
        notes.insert("kv_tile".into(), json!(kernel.kv_tile));
        notes.insert("tiles_per_sequence".into(), json!(launch.tiles));
        notes.insert("rows_per_block".into(), json!(kernel.rows));
        notes.insert("head_tiles".into(), json!(launch.head_tiles));
        notes.insert("grid".into(), json!(launch.grid));
        notes.insert("block".into(), json!(launch.block));
        notes.insert("shared_bytes".into(), json!(launch.shared_bytes));
        notes.insert("blocks_per_sm".into(), json!(blocks_per_sm));
        notes.insert("sms".into(), json!(dev.sm_count()));
        notes.insert(
            "kv_reads".into(),
            json!(if inputs.mla {
                format!("each 576-dim latent row once per (sequence, split) for {} query heads (V = its first 512 columns)", kernel.rows.min(problem.group_rows()))
            } else {
                format!("each K/V row once per (sequence, KV head, split) for its {} query heads, packed into the MMA's rows", problem.group_rows())
            }),
        );
        notes.insert(
            "kv_layout".into(),
            json!(match &paged {
                None => "contiguous [batch][kv_len][kv_heads][d]".to_string(),
                Some(t) => format!(
                    "paged: {} pages of {} tokens through a shuffled block table ({} per sequence)",
                    t.num_pages(),
                    t.page_size,
                    t.pages_per_seq
                ),
            }),
        );
        notes.insert("partial_bytes".into(), json!(partial_bytes));
        notes.insert("softmax_scale".into(), json!(s.softmax_scale as f64));
        notes.insert("inputs".into(), json!("the host backend's generator (same seed and order as solbench_host::attention), uniform in [-1, 1) rounded to the input type; O, LSE and partials poisoned with NaN before each check"));

        let w = DecodeWorkload {
            case: case.clone(),
            inputs,
            q_host,
            launch,
            timer,
            split_fn,
            combine_fn,
            q,
            k,
            v,
            table,
            page_size,
            max_pages,
            o,
            lse,
            partials,
            notes,
        };
        w.poison_outputs().map_err(failed)?;
        Ok(w)
    }

    fn poison_outputs(&self) -> Result<(), String> {
        self.o.poison()?;
        self.lse.poison()?;
        if let Some((po, pl)) = &self.partials {
            po.poison()?;
            pl.poison()?;
        }
        Ok(())
    }

    fn enqueue(&self, stream: &CudaStream) -> Result<(), String> {
        let s = &self.inputs.shape;
        let l = &self.launch;
        let (q, k) = (self.q.ptr(), self.k.ptr());
        let v = self.v.as_ref().map_or(k, |v| v.ptr());
        let table = self.table.as_ref().map_or(0, |t| t.ptr());
        let (o_partial, lse_split) = match &self.partials {
            Some((po, pl)) => (po.ptr(), pl.ptr()),
            None => (0, self.lse.ptr()),
        };
        let o = self.o.ptr();
        let dims = [
            s.batch as u32,
            s.q_len as u32,
            s.q_heads as u32,
            s.kv_heads as u32,
            s.kv_len as u32,
            self.page_size,
            self.max_pages,
            l.splits,
            u32::from(self.case.causal),
        ];
        let scale = s.softmax_scale;
        let cfg = LaunchConfig {
            grid_dim: (l.grid, 1, 1),
            block_dim: (l.block, 1, 1),
            shared_mem_bytes: l.shared_bytes,
        };
        let mut b = stream.launch_builder(&self.split_fn);
        b.arg(&q)
            .arg(&k)
            .arg(&v)
            .arg(&table)
            .arg(&o_partial)
            .arg(&lse_split)
            .arg(&o);
        for d in &dims {
            b.arg(d);
        }
        b.arg(&scale);
        // SAFETY: the arguments match the split kernel's signature in attention_decode.cu's
        // launch contract; every buffer has the contract's size and lives as long as self;
        // the dynamic shared memory is the contract's and the function's limit was raised.
        unsafe { b.launch(cfg) }.map_err(cuda_err("launching the decode split kernel"))?;

        if let (Some(f), Some(c), Some((po, pl))) = (&self.combine_fn, l.combine, &self.partials) {
            let (po, pl, lse) = (po.ptr(), pl.ptr(), self.lse.ptr());
            let cdims = [
                s.batch as u32,
                s.q_heads as u32,
                s.q_len as u32,
                s.head_dim_v as u32,
                l.splits,
            ];
            let cfg = LaunchConfig {
                grid_dim: (c.grid, 1, 1),
                block_dim: (c.block, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(f);
            b.arg(&po).arg(&pl).arg(&o).arg(&lse);
            for d in &cdims {
                b.arg(d);
            }
            // SAFETY: as above, for sb_attn_combine_T's signature.
            unsafe { b.launch(cfg) }.map_err(cuda_err("launching the decode combine kernel"))?;
        }
        Ok(())
    }

    /// O and LSE of sequence `b`, copied back.
    fn read_sequence(&self, b: usize) -> Result<SequenceOutput, String> {
        let s = &self.inputs.shape;
        let o_len = s.q_len * s.q_heads * s.head_dim_v;
        let mut o = vec![0u8; o_len * 2];
        self.o.read(b * o_len * 2, &mut o)?;
        let bits: Vec<u16> = o
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let lse_len = s.q_heads * s.q_len;
        let mut lse = vec![0u8; lse_len * 4];
        self.lse.read(b * lse_len * 4, &mut lse)?;
        Ok(SequenceOutput {
            b,
            o: decode(&bits, self.inputs.dtype),
            lse: lse
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}

/// Generates `tensor` chunk by chunk and writes it into `buf` in its storage layout.
fn upload(
    inputs: &DecodeInputs,
    tensor: KvTensor,
    paged: Option<&PageTable>,
    buf: &DeviceBuffer,
) -> Result<(), String> {
    let row = inputs.row_elems(tensor);
    match paged {
        None => {
            let total = inputs.shape.batch * inputs.shape.kv_len * row;
            let chunk = (UPLOAD_CHUNK / 2).max(1);
            let mut start = 0;
            while start < total {
                let n = chunk.min(total - start);
                buf.write(
                    start * 2,
                    &to_le_bytes(&inputs.contiguous_storage(tensor, start, n)),
                )?;
                start += n;
            }
        }
        Some(t) => {
            let page_elems = t.page_size * row;
            let per_chunk = (UPLOAD_CHUNK / 2 / page_elems.max(1)).max(1);
            let mut first = 0;
            while first < t.num_pages() {
                let last = (first + per_chunk).min(t.num_pages());
                let bits = inputs.paged_storage(tensor, t, first..last);
                buf.write(first * page_elems * 2, &to_le_bytes(&bits))?;
                first = last;
            }
        }
    }
    Ok(())
}

impl Workload for DecodeWorkload {
    fn work(&self) -> Work {
        attention_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        self.timer
            .time(iters, |s| self.enqueue(s))
            .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let batch = self.inputs.shape.batch;
        let seqs: Vec<usize> = if batch == 1 {
            vec![0]
        } else {
            vec![0, batch - 1]
        };
        let outputs = seqs
            .iter()
            .map(|&b| self.read_sequence(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunError)?;
        let check = check_sequences(&self.inputs, &self.q_host, &outputs);
        if check.passed {
            // Every run rewrites the same outputs: poison them again so the next check
            // proves the runs since this one wrote them.
            self.poison_outputs().map_err(RunError)?;
        }
        Ok(check)
    }

    fn notes(&self) -> Notes {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(
        variant: AttentionVariant,
        layout: KvLayout,
        dims: [u64; 6],
        dtype: Dtype,
    ) -> AttentionCase {
        let [batch, kv_len, q_heads, kv_heads, d_qk, d_v] = dims;
        AttentionCase {
            variant,
            phase: AttentionPhase::Decode,
            causal: false,
            batch,
            q_len: 1,
            kv_len,
            q_heads,
            kv_heads,
            head_dim_qk: d_qk,
            head_dim_v: d_v,
            dtype,
            kv_dtype: None,
            kv_layout: layout,
            model: None,
        }
    }

    /// The jumped generator reproduces the host backend's sequential stream: Q, K, V and the
    /// page shuffle, in that order, from one seed.
    #[test]
    fn stream_positions_match_the_host_generator() {
        for (variant, dims) in [
            (AttentionVariant::Gqa, [3u64, 70, 8, 2, 64, 64]),
            (AttentionVariant::Mla, [2, 40, 4, 1, 576, 512]),
        ] {
            let c = case(
                variant,
                KvLayout::Paged { page_size: 16 },
                dims,
                Dtype::Bf16,
            );
            let inputs = DecodeInputs::new(&c);
            let s = inputs.shape;
            let mut rng = SplitMix64::new(host_seed(&c));
            let q = random_rounded(&mut rng, s.q_elems(), c.dtype);
            let k = random_rounded(&mut rng, s.k_elems(), c.dtype);
            let v = if inputs.mla {
                reference::mla_values_from_latent(&s, &k)
            } else {
                random_rounded(&mut rng, s.v_elems(), c.dtype)
            };
            assert_eq!(inputs.q(), q);
            assert_eq!(inputs.kv(KvTensor::K, 0, k.len()), k);
            assert_eq!(inputs.kv(KvTensor::V, 0, v.len()), v);
            // Any window of the stream, including partial rows of MLA's V.
            assert_eq!(inputs.kv(KvTensor::K, 77, 1000), k[77..1077]);
            assert_eq!(inputs.kv(KvTensor::V, 13, 700), v[13..713]);
            let (kb, vb) = inputs.sequence_kv(1);
            let per = s.kv_len * inputs.row_elems(KvTensor::K);
            assert_eq!(kb, k[per..2 * per]);
            let per = s.kv_len * inputs.row_elems(KvTensor::V);
            assert_eq!(vb, v[per..2 * per]);
            // The host's Fisher–Yates over the continued stream.
            let pages = s.kv_len.div_ceil(16) * s.batch;
            let mut order: Vec<u32> = (0..pages as u32).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let t = inputs.page_table(16);
            assert_eq!(t.table, order);
            assert_eq!(t.pages_per_seq, s.kv_len.div_ceil(16));
        }
    }

    /// The GPU's paged storage is the host backend's page layout: the host workload's own
    /// check accepts it, and gathering it through the block table gives the logical K/V.
    #[test]
    fn paged_storage_gathers_back_to_the_logical_tensors() {
        let c = case(
            AttentionVariant::Gqa,
            KvLayout::Paged { page_size: 7 },
            [3, 30, 4, 2, 64, 64],
            Dtype::F16,
        );
        let inputs = DecodeInputs::new(&c);
        let s = inputs.shape;
        let t = inputs.page_table(7);
        let mut sorted = t.table.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..t.num_pages() as u32).collect::<Vec<_>>(),
            "a permutation"
        );
        assert!(t.table.windows(2).any(|w| w[0] > w[1]), "shuffled");
        let k_pages = decode(
            &inputs.paged_storage(KvTensor::K, &t, 0..t.num_pages()),
            c.dtype,
        );
        let v_pages = decode(
            &inputs.paged_storage(KvTensor::V, &t, 0..t.num_pages()),
            c.dtype,
        );
        // 30 tokens in pages of 7: the last page of each sequence has 5 padding slots.
        assert_eq!(
            k_pages.iter().filter(|x| x.is_nan()).count(),
            3 * 5 * 2 * 64
        );
        // Pages in two pieces equal pages in one.
        let split = [
            inputs.paged_storage(KvTensor::K, &t, 0..4),
            inputs.paged_storage(KvTensor::K, &t, 4..t.num_pages()),
        ]
        .concat();
        assert_eq!(
            decode(&split, c.dtype)
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            k_pages.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let view = reference::PagedKv {
            page_size: 7,
            block_table: &t.table,
            max_pages_per_seq: t.pages_per_seq,
            k_pages: &k_pages,
            v_pages: &v_pages,
        };
        let (k, v) = reference::gather_paged(&s, &view);
        assert_eq!(k, inputs.kv(KvTensor::K, 0, s.k_elems()));
        assert_eq!(v, inputs.kv(KvTensor::V, 0, s.v_elems()));
        // Contiguous storage in pieces equals the whole.
        let whole = inputs.contiguous_storage(KvTensor::V, 0, s.v_elems());
        let parts = [
            inputs.contiguous_storage(KvTensor::V, 0, 1000),
            inputs.contiguous_storage(KvTensor::V, 1000, s.v_elems() - 1000),
        ]
        .concat();
        assert_eq!(whole, parts);
    }

    /// What a correct kernel leaves passes the check, and the check catches the usual
    /// mistakes: a perturbed element, NaN, a wrong scale, a lost tile, a wrong sequence.
    #[test]
    fn the_check_passes_a_correct_result_and_catches_wrong_ones() {
        for (dtype, dims) in [
            (Dtype::Bf16, [2u64, 300, 8, 2, 128, 128]),
            (Dtype::F16, [2, 1000, 4, 1, 64, 64]),
        ] {
            let c = case(AttentionVariant::Gqa, KvLayout::Contiguous, dims, dtype);
            let inputs = DecodeInputs::new(&c);
            let s = inputs.shape;
            let q = inputs.q();
            let (k, v) = (
                inputs.kv(KvTensor::K, 0, s.k_elems()),
                inputs.kv(KvTensor::V, 0, s.v_elems()),
            );
            // The host's flash-decoding (f32), rounded to the output type: a stand-in for a
            // correct GPU result.
            let (o, lse) =
                reference::attention_split_kv(&s, &q, &KvSource::Contiguous { k: &k, v: &v }, 3);
            let rounded = decode(&encode_rounding(&o, dtype), dtype);
            let per_o = s.q_heads * s.head_dim_v;
            let per_l = s.q_heads;
            let out = |b: usize, o: &[f32], lse: &[f32]| SequenceOutput {
                b,
                o: o[b * per_o..][..per_o].to_vec(),
                lse: lse[b * per_l..][..per_l].to_vec(),
            };
            let good = [out(0, &rounded, &lse), out(1, &rounded, &lse)];
            let chk = check_sequences(&inputs, &q, &good);
            assert!(chk.passed, "{chk:?}");
            assert_eq!(chk.compared as usize, 2 * (per_o + per_l));

            let mut bad = out(1, &rounded, &lse);
            bad.o[5] += 0.05;
            let chk = check_sequences(&inputs, &q, &[bad]);
            assert!(
                !chk.passed
                    && chk
                        .detail
                        .unwrap()
                        .starts_with("sequence 1, output element 5")
            );
            let mut bad = out(0, &rounded, &lse);
            bad.lse[2] = f32::NAN;
            assert!(!check_sequences(&inputs, &q, &[bad]).passed);
            // Sequence 1's result presented as sequence 0's.
            assert!(
                !check_sequences(
                    &inputs,
                    &q,
                    &[out(1, &rounded, &lse)].map(|mut o| {
                        o.b = 0;
                        o
                    })
                )
                .passed
            );
            // A lost first tile (keys 64..) and a 1% wrong scale.
            for wrong in [
                AttentionShape {
                    kv_len: s.kv_len - 64,
                    ..s
                },
                AttentionShape {
                    softmax_scale: s.softmax_scale * 1.01,
                    ..s
                },
            ] {
                let rows = s.kv_len - wrong.kv_len;
                let kk: Vec<f32> = (0..s.batch)
                    .flat_map(|b| {
                        k[(b * s.kv_len + rows) * s.kv_heads * s.head_dim_qk..]
                            [..wrong.kv_len * s.kv_heads * s.head_dim_qk]
                            .to_vec()
                    })
                    .collect();
                let vv: Vec<f32> = (0..s.batch)
                    .flat_map(|b| {
                        v[(b * s.kv_len + rows) * s.kv_heads * s.head_dim_v..]
                            [..wrong.kv_len * s.kv_heads * s.head_dim_v]
                            .to_vec()
                    })
                    .collect();
                let (o, lse) = reference::attention_split_kv(
                    &wrong,
                    &q,
                    &KvSource::Contiguous { k: &kk, v: &vv },
                    1,
                );
                let rounded = decode(&encode_rounding(&o, dtype), dtype);
                assert!(
                    !check_sequences(&inputs, &q, &[out(0, &rounded, &lse)]).passed,
                    "{wrong:?}"
                );
            }
        }
    }

    /// Rounds arbitrary f32 values to the type (encode expects representable values).
    fn encode_rounding(values: &[f32], dtype: Dtype) -> Vec<u16> {
        encode(
            &values
                .iter()
                .map(|&x| match dtype {
                    Dtype::F16 => f16::from_f32(x).to_f32(),
                    _ => bf16::from_f32(x).to_f32(),
                })
                .collect::<Vec<_>>(),
            dtype,
        )
    }

    #[test]
    fn tolerances_shrink_with_the_context() {
        let (a1, r1) = output_tolerance(Dtype::Bf16, 1);
        assert!((a1 - (8.0 / 256.0 + 1e-6)).abs() < 1e-12 && r1 == 2.0 / 256.0);
        let (a, _) = output_tolerance(Dtype::Bf16, 4096);
        assert!((a - (8.0 / 256.0 / 64.0 + 1e-6)).abs() < 1e-12);
        let (a16, r16) = output_tolerance(Dtype::F16, 4096);
        assert!(a16 < a && r16 == 2.0 / 2048.0);
        assert!(lse_tolerance(Dtype::Bf16, 100).0 > lse_tolerance(Dtype::Bf16, 10_000).0);
    }

    #[test]
    fn problems_and_encodings() {
        let c = case(
            AttentionVariant::Mla,
            KvLayout::Contiguous,
            [4, 2048, 128, 1, 576, 512],
            Dtype::Bf16,
        );
        let p = problem_of(&c).unwrap();
        assert!(p.mla && p.kv_bytes == 2 && p.group_rows() == 128);
        assert_eq!(p.kv_row_bytes(), 1152);
        let huge = AttentionCase {
            kv_len: 1 << 33,
            ..c
        };
        assert!(problem_of(&huge).unwrap_err().contains("kv_len"));
        let x = [1.0f32, -0.5, 0.0078125];
        assert_eq!(decode(&encode(&x, Dtype::Bf16), Dtype::Bf16), x);
        assert_eq!(decode(&encode(&x, Dtype::F16), Dtype::F16), x);
        assert_eq!(encode(&[1.0], Dtype::Bf16), [0x3F80]);
        assert_eq!(encode(&[1.0], Dtype::F16), [0x3C00]);
        assert!(
            decode(&[PAD_BITS], Dtype::Bf16)[0].is_nan()
                && decode(&[PAD_BITS], Dtype::F16)[0].is_nan()
        );
    }
}
