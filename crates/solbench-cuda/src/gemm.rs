//! GEMM through cuBLASLt: FP8, BF16, FP16, TF32, FP32 and FP64, the best of several
//! heuristic algorithms, inputs rotated so no iteration finds its operands in L2, and the
//! output checked against an f64 host reference on sampled columns (all of them for
//! small shapes) with a bound that fits the types and K.

use crate::cublaslt::{Algorithm, Handle, Matmul};
use crate::device::CudaDevice;
use crate::gemm_rules::{self, Compute, GemmPlan};
use crate::gpu::{check, cuda_err, failed, BatchTimer, DeviceBuffer};
use crate::numeric;
use crate::pattern::random_bits;
use rayon::prelude::*;
use serde_json::json;
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{Dtype, GemmCase};
use solbench_core::size::format_size;
use solbench_core::work::{gemm_work, Work};
use std::time::Duration;

/// Default cuBLASLt workspace: 64 MiB, above the 32 MiB NVIDIA recommends for Hopper, so
/// no algorithm is refused for want of workspace.
pub const DEFAULT_WORKSPACE: u64 = 64 << 20;
/// Heuristic algorithms timed per shape by default.
pub const DEFAULT_ALGORITHMS: u32 = 8;
/// Host reference work allowed per check (multiply-adds), which bounds how many output
/// columns are compared for large shapes.
const REFERENCE_BUDGET: u64 = 2_000_000_000;
/// Below this many outputs every entry is checked.
const CHECK_ALL_BELOW: u64 = 1 << 16;
const SEED_A: u64 = 0xA11CE;
const SEED_B: u64 = 0xB0B;

/// Host copies of the inputs (exactly the stored bytes) for the reference.
struct Inputs {
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Random values of type `d`, `count` of them, as stored bytes (parallel, reproducible).
fn random_bytes(d: Dtype, count: u64, seed: u64) -> Vec<u8> {
    let w = numeric::storage_bytes(d);
    let mut out = vec![0u8; count as usize * w];
    out.par_chunks_mut(w * 4096)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, e) in chunk.chunks_exact_mut(w).enumerate() {
                let i = (c * 4096 + j) as u64;
                let u = (random_bits(seed, i) >> 11) as f64 / (1u64 << 53) as f64;
                numeric::random_value(d, u, e);
            }
        });
    out
}

pub struct GemmWorkload {
    case: GemmCase,
    plan: GemmPlan,
    timer: BatchTimer,
    handle: Handle,
    matmul: Matmul,
    algo: Algorithm,
    /// (A, B) device buffers, one pair per rotation set.
    sets: Vec<(DeviceBuffer, DeviceBuffer)>,
    d: DeviceBuffer,
    workspace: DeviceBuffer,
    _scales: Option<DeviceBuffer>,
    inputs: Inputs,
    /// The input set the next iteration reads (a Cell: enqueue runs inside the timer's
    /// shared borrow of the workload).
    next_set: std::cell::Cell<usize>,
    notes: Notes,
}

pub fn prepare(dev: &CudaDevice, case: &GemmCase) -> Result<GemmWorkload, PrepareError> {
    dev.cublaslt().map_err(PrepareError::Unsupported)?;
    let cc = dev.compute_capability();
    let plan = gemm_rules::plan(cc, case).map_err(PrepareError::Unsupported)?;
    dev.ctx
        .bind_to_thread()
        .map_err(|e| failed(format!("binding the CUDA context failed: {e}")))?;
    let (a_bytes, b_bytes, d_bytes) = gemm_rules::operand_bytes(case, &plan);
    let ws_bytes = case.workspace.unwrap_or(DEFAULT_WORKSPACE);
    let (free, _) = dev
        .ctx
        .mem_get_info()
        .map_err(|e| failed(format!("reading free GPU memory failed: {e}")))?;
    let usable = (free as u64) / 100 * 90;
    let one_set = a_bytes + b_bytes;
    if one_set + d_bytes + ws_bytes > usable {
        return Err(PrepareError::Unsupported(format!(
            "A, B and D of {}x{}x{} {} need {}, more than the {} of GPU memory free",
            case.m,
            case.n,
            case.k,
            plan.a,
            format_size(one_set + d_bytes + ws_bytes),
            format_size(free as u64)
        )));
    }
    let l2 = dev
        .info
        .properties
        .get("l2_cache_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64 << 20);
    let sets_n = gemm_rules::rotation_sets(one_set, l2, (usable - d_bytes - ws_bytes) / 2);

    // Inputs: random, generated on the host (so the reference has the exact bytes).
    let inputs = Inputs {
        a: random_bytes(
            plan.a,
            a_bytes / numeric::storage_bytes(plan.a) as u64,
            SEED_A,
        ),
        b: random_bytes(
            plan.b,
            b_bytes / numeric::storage_bytes(plan.b) as u64,
            SEED_B,
        ),
    };
    let mut sets = Vec::with_capacity(sets_n as usize);
    for s in 0..sets_n {
        let a = DeviceBuffer::new(&dev.ctx, a_bytes as usize).map_err(failed)?;
        let b = DeviceBuffer::new(&dev.ctx, b_bytes as usize).map_err(failed)?;
        if s == 0 {
            a.write(0, &inputs.a).map_err(failed)?;
            b.write(0, &inputs.b).map_err(failed)?;
        } else {
            let (a0, b0) = &sets[0];
            copy_device(&a, a0).map_err(failed)?;
            copy_device(&b, b0).map_err(failed)?;
        }
        sets.push((a, b));
    }
    let d = DeviceBuffer::new(&dev.ctx, d_bytes as usize).map_err(failed)?;
    d.poison().map_err(failed)?;
    let workspace = DeviceBuffer::new(&dev.ctx, ws_bytes as usize).map_err(failed)?;
    let scales = if plan.fp8 {
        let s = DeviceBuffer::new(&dev.ctx, 8).map_err(failed)?;
        let mut one = [0u8; 8];
        one[..4].copy_from_slice(&1.0f32.to_le_bytes());
        one[4..].copy_from_slice(&1.0f32.to_le_bytes());
        s.write(0, &one).map_err(failed)?;
        Some(s)
    } else {
        None
    };
    let util = dev.kernels("util.cu").map_err(failed)?;
    let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
    let handle = Handle::new().map_err(failed)?;
    let matmul = Matmul::new(
        &plan,
        case.m,
        case.n,
        case.k,
        case.batch,
        scales.as_ref().map(|s| (s.ptr(), s.ptr() + 4)),
    )
    .map_err(failed)?;
    let wanted = case.algorithms.unwrap_or(DEFAULT_ALGORITHMS).max(1) as usize;
    let algos = matmul
        .algorithms(&handle, wanted, ws_bytes as usize)
        .map_err(failed)?;
    if algos.is_empty() {
        return Err(PrepareError::Unsupported(format!(
            "cuBLASLt offers no algorithm for {} {}x{}x{} on this GPU",
            plan.describe, case.m, case.n, case.k
        )));
    }

    // Time every offered algorithm briefly (one warm-up, three timed), keep the fastest.
    let mut w = GemmWorkload {
        case: case.clone(),
        plan,
        timer,
        handle,
        matmul,
        algo: algos[0].clone(),
        sets,
        d,
        workspace,
        _scales: scales,
        inputs,
        next_set: std::cell::Cell::new(0),
        notes: Notes::new(),
    };
    let mut tried = Vec::new();
    let mut best: Option<(f64, Algorithm)> = None;
    for algo in &algos {
        w.algo = algo.clone();
        let timed = w.run(1).and_then(|_| w.run(3));
        match timed {
            Ok(t) => {
                let ms = t.as_secs_f64() * 1e3 / 3.0;
                tried.push(json!({"index": algo.index, "algo": algo.describe, "workspace": algo.workspace_bytes, "ms": (ms * 1e4).round() / 1e4}));
                if best.as_ref().is_none_or(|(b, _)| ms < *b) {
                    best = Some((ms, algo.clone()));
                }
            }
            Err(e) => tried.push(json!({"index": algo.index, "algo": algo.describe, "error": e.0})),
        }
    }
    let Some((_, chosen)) = best else {
        return Err(failed(format!(
            "every algorithm cuBLASLt offered failed to run: {}",
            serde_json::to_string(&tried).unwrap_or_default()
        )));
    };
    w.algo = chosen;
    let n = &mut w.notes;
    n.insert(
        "library".into(),
        json!(format!(
            "cuBLASLt {}",
            dev.cublaslt().map(|i| i.version_text()).unwrap_or_default()
        )),
    );
    n.insert("math".into(), json!(w.plan.describe));
    n.insert("layout".into(), json!(gemm_rules::LAYOUT));
    n.insert("algorithm".into(), json!({"index": w.algo.index, "config": w.algo.describe, "workspace": w.algo.workspace_bytes}));
    n.insert("algorithms_tried".into(), json!(tried));
    n.insert("workspace_bytes".into(), json!(ws_bytes));
    n.insert("cache".into(), json!(format!(
        "{} input set(s) rotated ({} each, spanning {} against a {} L2), so no iteration finds A or B in L2; D is overwritten each time",
        sets_n,
        format_size(one_set),
        format_size(one_set * sets_n as u64),
        format_size(l2)
    )));
    n.insert("inputs".into(), json!("random in [-1, 1) rounded to the storage type (FP8: random codes with |x| <= 1), generated on the host; D poisoned with NaN before each check"));
    if w.plan.fp8 {
        n.insert(
            "fp8_scales".into(),
            json!("per-tensor A and B scales of 1.0 (device pointers)"),
        );
        n.insert("fast_accum".into(), json!(w.plan.fast_accum));
    }
    w.d.poison().map_err(failed)?;
    Ok(w)
}

fn copy_device(dst: &DeviceBuffer, src: &DeviceBuffer) -> Result<(), String> {
    // SAFETY: both live, same size, same context.
    check("copying inputs on the device", unsafe {
        cudarc::driver::sys::cuMemcpyDtoD_v2(dst.ptr(), src.ptr(), src.bytes())
    })?;
    dst.context()
        .synchronize()
        .map_err(cuda_err("waiting for a device copy"))
}

/// Unit roundoffs (accumulation, per-product input rounding, output) of a plan: the
/// ingredients of the error bound.
pub fn roundoffs(p: &GemmPlan) -> (f64, f64, f64) {
    let acc = match (p.compute, p.fast_accum) {
        (Compute::F64, _) => f64::EPSILON / 2.0,
        // Hopper's FP8 "fast accumulation" keeps fewer accumulator bits (about 14 by
        // public measurements); bound it generously.
        (_, true) => 2f64.powi(-13),
        _ => f32::EPSILON as f64 / 2.0,
    };
    // TF32 rounds each FP32 input to 10 mantissa bits inside the tensor core, so each
    // product carries up to 2 units of that rounding; other types are exact in the reference.
    let input = if p.compute == Compute::F32FastTf32 {
        2.0 * numeric::unit_roundoff(Dtype::Tf32)
    } else {
        0.0
    };
    (acc, input, numeric::unit_roundoff(p.out))
}

/// Largest allowed |D − reference| for one entry: Higham's bound for a K-term dot product,
/// `k·u_acc·Σ|a·b|`, plus per-product input rounding and the final rounding to the
/// output type, with a 2x margin.
pub fn tolerance(p: &GemmPlan, k: u64, abs_dot: f64, reference: f64) -> f64 {
    let (acc, input, out) = roundoffs(p);
    2.0 * ((k as f64 * acc + input) * abs_dot + out * reference.abs()) + f64::MIN_POSITIVE
}

/// The output columns checked: all for small outputs, else first, last and evenly spread
/// ones, as many as the host reference budget allows (at least 2).
pub fn sampled_columns(m: u64, n: u64, k: u64) -> Vec<u64> {
    if m * n <= CHECK_ALL_BELOW {
        return (0..n).collect();
    }
    let per_column = (m * k).max(1);
    let count = (REFERENCE_BUDGET / per_column).clamp(2, 16).min(n);
    let mut cols: Vec<u64> = (0..count)
        .map(|i| {
            if count == 1 {
                0
            } else {
                i * (n - 1) / (count - 1)
            }
        })
        .collect();
    cols.dedup();
    cols
}

impl GemmWorkload {
    fn enqueue(&self, stream: &cudarc::driver::CudaStream) -> Result<(), String> {
        let set = self.next_set.get();
        self.next_set.set((set + 1) % self.sets.len());
        let (a, b) = &self.sets[set];
        self.matmul.enqueue(
            &self.handle,
            &self.algo,
            a.ptr(),
            b.ptr(),
            self.d.ptr(),
            (self.workspace.ptr(), self.workspace.bytes()),
            stream.cu_stream(),
        )
    }
}

impl Workload for GemmWorkload {
    fn work(&self) -> Work {
        let mut c = self.case.clone();
        c.out_dtype = Some(self.plan.out);
        c.b_dtype = Some(self.plan.b);
        gemm_work(&c)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        self.timer
            .time(iters, |s| self.enqueue(s))
            .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let (m, n, k) = (self.case.m, self.case.n, self.case.k);
        let p = &self.plan;
        let (sa, sb, so) = (
            numeric::storage_bytes(p.a),
            numeric::storage_bytes(p.b),
            numeric::storage_bytes(p.out),
        );
        let cols = sampled_columns(m, n, k);
        let batches: Vec<u64> = if self.case.batch > 1 {
            vec![0, self.case.batch - 1]
        } else {
            vec![0]
        };
        let mut compared = 0u64;
        let mut bad = 0u64;
        let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
        let mut first: Option<String> = None;
        let mut column = vec![0u8; m as usize * so];
        for &bi in &batches {
            for &j in &cols {
                let off = ((bi * m * n + j * m) as usize) * so;
                self.d.read(off, &mut column).map_err(RunError)?;
                let b_row = ((bi * n + j) * k) as usize * sb;
                let b_row = &self.inputs.b[b_row..b_row + k as usize * sb];
                let a_all = &self.inputs.a;
                let results: Vec<(u64, f64, f64, f64)> = (0..m)
                    .into_par_iter()
                    .map(|i| {
                        let a_row = ((bi * m + i) * k) as usize * sa;
                        let (mut dot, mut abs) = (0.0f64, 0.0f64);
                        for t in 0..k as usize {
                            let x = numeric::decode(p.a, &a_all[a_row + t * sa..]);
                            let y = numeric::decode(p.b, &b_row[t * sb..]);
                            dot += x * y;
                            abs += (x * y).abs();
                        }
                        let got = numeric::decode(p.out, &column[i as usize * so..]);
                        (i, got, dot, abs)
                    })
                    .collect();
                for (i, got, dot, abs) in results {
                    compared += 1;
                    let err = (got - dot).abs();
                    let tol = tolerance(p, k, abs, dot);
                    max_abs = max_abs.max(if err.is_nan() { f64::INFINITY } else { err });
                    if dot != 0.0 {
                        max_rel = max_rel.max(err / dot.abs());
                    }
                    if err.is_nan() || err > tol {
                        bad += 1;
                        first.get_or_insert(format!(
                            "D[{i}][{j}] (batch {bi}) = {got}, reference {dot}, allowed error {tol:.3e}"
                        ));
                    }
                }
            }
        }
        if bad == 0 {
            self.d.poison().map_err(RunError)?; // the next check must see the timed runs' D
        }
        let all = cols.len() as u64 == n;
        Ok(Check {
            passed: bad == 0 && compared > 0,
            compared,
            mismatches: bad,
            max_abs_err: max_abs,
            max_rel_err: max_rel,
            tolerance: "|err| <= 2((k*u_acc + u_in)*sum|a*b| + u_out*|ref|)".into(),
            method: if all {
                "every entry of D vs an f64 host GEMM of the exact stored inputs".into()
            } else {
                format!(
                    "{} sampled columns of D (every row) vs an f64 host GEMM of the exact stored inputs",
                    cols.len()
                )
            },
            detail: first,
        })
    }

    fn notes(&self) -> Notes {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for(d: Dtype, fast: bool) -> GemmPlan {
        let mut c = GemmCase::new(64, 64, 64, d);
        c.fast_accum = fast;
        gemm_rules::plan((9, 0), &c).unwrap()
    }

    #[test]
    fn small_outputs_are_checked_whole_and_large_ones_by_spread_columns() {
        assert_eq!(
            sampled_columns(100, 200, 4096),
            (0..200).collect::<Vec<_>>()
        );
        let c = sampled_columns(8192, 8192, 8192);
        // 2e9 / (8192 * 8192) = 29 -> capped at 16, spread from 0 to 8191.
        assert_eq!(c.len(), 16);
        assert_eq!((c[0], *c.last().unwrap()), (0, 8191));
        // Huge M*K: the budget allows only the minimum of two columns.
        assert_eq!(sampled_columns(65536, 65536, 65536), vec![0, 65535]);
    }

    #[test]
    fn tolerances_fit_the_types_and_catch_one_wrong_rounding_step_of_bf16_output() {
        let k = 4096;
        // A dot product of K values with sum |a*b| = K/4 and a reference of 10.
        let abs = k as f64 / 4.0;
        let bf16 = tolerance(&plan_for(Dtype::Bf16, false), k, abs, 10.0);
        let f64t = tolerance(&plan_for(Dtype::F64, false), k, abs, 10.0);
        let tf32 = tolerance(&plan_for(Dtype::Tf32, false), k, abs, 10.0);
        let fp32 = tolerance(&plan_for(Dtype::F32, false), k, abs, 10.0);
        let fp8 = tolerance(&plan_for(Dtype::Fp8E4m3, false), k, abs, 10.0);
        let fast = tolerance(&plan_for(Dtype::Fp8E4m3, true), k, abs, 10.0);
        assert!(f64t < 1e-9, "{f64t}");
        assert!(fp32 < tf32, "TF32 rounds its inputs: {fp32} vs {tf32}");
        assert!(fp8 < fast, "fast accumulation is looser");
        // BF16 output rounding of a value near 10 is up to 10 * 2^-8 = 0.039; the bound
        // allows that, but not an error of 1 (a wrong product or a missed K tile).
        assert!(bf16 > 0.039 && bf16 < 1.0, "{bf16}");
    }
}
