//! Host GEMM through the `gemm` crate (runtime-dispatched AVX-512/AVX2/FMA kernels,
//! multithreaded with rayon), verified against an f64 reference on sampled entries.
//!
//! * f64, f32: native;
//! * f16: the `gemm` crate's f16 path (f16 storage; x86 CPUs without native f16 FMA
//!   multiply in f32) — recorded as such;
//! * bf16: no CPU path here, so every iteration widens A and B to f32, runs the f32
//!   GEMM and rounds D to bf16; the conversions are inside the timed work and the
//!   result is labelled "computed through f32".
//!
//! Row-major `D[M×N] = A[M×K] · B[K×N]`.

use crate::pool::PinnedPool;
use half::{bf16, f16};
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{Dtype, GemmCase};
use solbench_core::random::SplitMix64;
use solbench_core::work::{gemm_work, Work};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries compared against the f64 reference when the matrix is too large to check
/// whole: rows and columns spread over the matrix, corners included.
const SAMPLE_ENTRIES: usize = 256;
/// Check every entry when D has at most this many.
const FULL_CHECK_ENTRIES: u64 = 1 << 16;

enum Buffers {
    F64 {
        a: Vec<f64>,
        b: Vec<f64>,
        d: Vec<f64>,
    },
    F32 {
        a: Vec<f32>,
        b: Vec<f32>,
        d: Vec<f32>,
    },
    F16 {
        a: Vec<f16>,
        b: Vec<f16>,
        d: Vec<f16>,
    },
    Bf16 {
        a: Vec<bf16>,
        b: Vec<bf16>,
        d: Vec<bf16>,
        a32: Vec<f32>,
        b32: Vec<f32>,
        d32: Vec<f32>,
    },
}

pub struct GemmWorkload {
    case: GemmCase,
    pool: Arc<PinnedPool>,
    buffers: Buffers,
    /// Inputs as the kernel sees them (after rounding to the storage type), in f64.
    a_ref: Vec<f64>,
    b_ref: Vec<f64>,
}

/// Unit roundoff of the accumulation and of the output for each dtype.
fn roundoffs(dtype: Dtype) -> (f64, f64) {
    match dtype {
        Dtype::F64 => (f64::EPSILON / 2.0, f64::EPSILON / 2.0),
        Dtype::F32 => (f32::EPSILON as f64 / 2.0, f32::EPSILON as f64 / 2.0),
        // f16 products accumulate in f32 (or f16 on CPUs with native f16 FMA).
        Dtype::F16 => (f16::EPSILON.to_f64() / 2.0, f16::EPSILON.to_f64() / 2.0),
        Dtype::Bf16 => (f32::EPSILON as f64 / 2.0, bf16::EPSILON.to_f64() / 2.0),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Largest allowed |computed − reference| for one entry: the deterministic bound
/// k·u_acc·Σ|a·b| for the accumulation plus u_out·|ref| for the final rounding
/// (Higham, "Accuracy and Stability of Numerical Algorithms", §3.5), with a 2x margin.
pub fn gemm_tolerance(dtype: Dtype, k: u64, abs_dot: f64, reference: f64) -> f64 {
    let (u_acc, u_out) = roundoffs(dtype);
    2.0 * (k as f64 * u_acc * abs_dot + u_out * reference.abs()) + f64::MIN_POSITIVE
}

impl GemmWorkload {
    pub fn prepare(case: &GemmCase, pool: Arc<PinnedPool>) -> Result<Self, PrepareError> {
        if case.batch != 1 {
            return Err(PrepareError::Unsupported(
                "batched GEMM is not implemented on the host".into(),
            ));
        }
        if case.b_dtype.is_some_and(|b| b != case.dtype)
            || case.out_dtype.is_some_and(|o| o != case.dtype)
        {
            return Err(PrepareError::Unsupported(
                "the host GEMM uses one type for A, B and D".into(),
            ));
        }
        let (m, n, k) = (case.m as usize, case.n as usize, case.k as usize);
        let bytes = (m * k + k * n + m * n) as u64 * case.dtype.size_bytes().max(4) * 2;
        if let Some(avail) = solbench_core::env::available_memory_bytes() {
            if bytes > avail / 2 {
                return Err(PrepareError::Unsupported(format!(
                    "a {m}x{n}x{k} GEMM needs more memory than this host can spare"
                )));
            }
        }
        let mut rng = SplitMix64::new(0x6E33 ^ (m as u64) << 40 ^ (n as u64) << 20 ^ k as u64);
        let raw_a = rng.fill_f32(m * k);
        let raw_b = rng.fill_f32(k * n);
        let (buffers, a_ref, b_ref): (Buffers, Vec<f64>, Vec<f64>) = match case.dtype {
            Dtype::F64 => {
                let a: Vec<f64> = raw_a.iter().map(|&x| x as f64).collect();
                let b: Vec<f64> = raw_b.iter().map(|&x| x as f64).collect();
                (
                    Buffers::F64 {
                        a: a.clone(),
                        b: b.clone(),
                        d: vec![f64::NAN; m * n],
                    },
                    a,
                    b,
                )
            }
            Dtype::F32 => {
                let (ar, br) = (
                    raw_a.iter().map(|&x| x as f64).collect(),
                    raw_b.iter().map(|&x| x as f64).collect(),
                );
                (
                    Buffers::F32 {
                        a: raw_a,
                        b: raw_b,
                        d: vec![f32::NAN; m * n],
                    },
                    ar,
                    br,
                )
            }
            Dtype::F16 => {
                let a: Vec<f16> = raw_a.iter().map(|&x| f16::from_f32(x)).collect();
                let b: Vec<f16> = raw_b.iter().map(|&x| f16::from_f32(x)).collect();
                let (ar, br) = (
                    a.iter().map(|x| x.to_f64()).collect(),
                    b.iter().map(|x| x.to_f64()).collect(),
                );
                (
                    Buffers::F16 {
                        a,
                        b,
                        d: vec![f16::NAN; m * n],
                    },
                    ar,
                    br,
                )
            }
            Dtype::Bf16 => {
                let a: Vec<bf16> = raw_a.iter().map(|&x| bf16::from_f32(x)).collect();
                let b: Vec<bf16> = raw_b.iter().map(|&x| bf16::from_f32(x)).collect();
                let (ar, br) = (
                    a.iter().map(|x| x.to_f64()).collect(),
                    b.iter().map(|x| x.to_f64()).collect(),
                );
                (
                    Buffers::Bf16 {
                        a,
                        b,
                        d: vec![bf16::NAN; m * n],
                        a32: vec![0.0; m * k],
                        b32: vec![0.0; k * n],
                        d32: vec![0.0; m * n],
                    },
                    ar,
                    br,
                )
            }
            other => {
                return Err(PrepareError::Unsupported(format!(
                    "the host has no {other} GEMM (f64, f32, f16 and bf16 run here)"
                )))
            }
        };
        Ok(GemmWorkload {
            case: case.clone(),
            pool,
            buffers,
            a_ref,
            b_ref,
        })
    }

    fn output(&self) -> Vec<f64> {
        match &self.buffers {
            Buffers::F64 { d, .. } => d.clone(),
            Buffers::F32 { d, .. } => d.iter().map(|&x| x as f64).collect(),
            Buffers::F16 { d, .. } => d.iter().map(|x| x.to_f64()).collect(),
            Buffers::Bf16 { d, .. } => d.iter().map(|x| x.to_f64()).collect(),
        }
    }
}

/// `D = A·B` row-major through the gemm crate.
///
/// # Safety
/// Slices must hold m*k, k*n and m*n elements.
unsafe fn gemm_rowmajor<T: 'static>(
    (m, n, k): (usize, usize, usize),
    a: &[T],
    b: &[T],
    d: &mut [T],
    one: T,
    zero: T,
    threads: usize,
) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && d.len() >= m * n);
    // gemm computes dst = alpha*dst + beta*(lhs·rhs); with read_dst = false alpha is unused.
    gemm::gemm(
        m,
        n,
        k,
        d.as_mut_ptr(),
        1,
        n as isize,
        false,
        a.as_ptr(),
        1,
        k as isize,
        b.as_ptr(),
        1,
        n as isize,
        zero,
        one,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(threads),
    );
}

impl Workload for GemmWorkload {
    fn work(&self) -> Work {
        gemm_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        let (m, n, k) = (
            self.case.m as usize,
            self.case.n as usize,
            self.case.k as usize,
        );
        let threads = self.pool.threads();
        let buffers = &mut self.buffers;
        let start = Instant::now();
        self.pool.install(|| {
            for _ in 0..iters {
                // SAFETY: buffers were allocated with exactly these dimensions.
                unsafe {
                    match buffers {
                        Buffers::F64 { a, b, d } => {
                            gemm_rowmajor((m, n, k), a, b, d, 1.0, 0.0, threads)
                        }
                        Buffers::F32 { a, b, d } => {
                            gemm_rowmajor((m, n, k), a, b, d, 1.0f32, 0.0f32, threads)
                        }
                        Buffers::F16 { a, b, d } => {
                            gemm_rowmajor((m, n, k), a, b, d, f16::ONE, f16::ZERO, threads)
                        }
                        Buffers::Bf16 {
                            a,
                            b,
                            d,
                            a32,
                            b32,
                            d32,
                        } => {
                            use rayon::prelude::*;
                            a32.par_iter_mut()
                                .zip(a.par_iter())
                                .for_each(|(w, x)| *w = x.to_f32());
                            b32.par_iter_mut()
                                .zip(b.par_iter())
                                .for_each(|(w, x)| *w = x.to_f32());
                            gemm_rowmajor((m, n, k), a32, b32, d32, 1.0f32, 0.0f32, threads);
                            d.par_iter_mut()
                                .zip(d32.par_iter())
                                .for_each(|(w, x)| *w = bf16::from_f32(*x));
                        }
                    }
                }
            }
        });
        Ok(start.elapsed())
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let (m, n, k) = (
            self.case.m as usize,
            self.case.n as usize,
            self.case.k as usize,
        );
        let d = self.output();
        let entries: Vec<(usize, usize)> = if (m * n) as u64 <= FULL_CHECK_ENTRIES {
            (0..m).flat_map(|i| (0..n).map(move |j| (i, j))).collect()
        } else {
            let mut rng = SplitMix64::new(0xC0FFEE);
            let mut e = vec![(0, 0), (0, n - 1), (m - 1, 0), (m - 1, n - 1)];
            while e.len() < SAMPLE_ENTRIES {
                e.push((
                    (rng.next_u64() % m as u64) as usize,
                    (rng.next_u64() % n as u64) as usize,
                ));
            }
            e
        };
        let (mut mismatches, mut max_abs, mut max_rel, mut first) = (0u64, 0.0f64, 0.0f64, None);
        for &(i, j) in &entries {
            let (mut dot, mut abs_dot) = (0.0f64, 0.0f64);
            for p in 0..k {
                let prod = self.a_ref[i * k + p] * self.b_ref[p * n + j];
                dot += prod;
                abs_dot += prod.abs();
            }
            let got = d[i * n + j];
            let err = (got - dot).abs();
            if err.is_finite() {
                max_abs = max_abs.max(err);
                max_rel = max_rel.max(err / dot.abs().max(1e-30));
            }
            // NaN (a poisoned entry never written) fails too.
            if err.is_nan() || err > gemm_tolerance(self.case.dtype, k as u64, abs_dot, dot) {
                mismatches += 1;
                first.get_or_insert_with(|| format!("D[{i}][{j}] = {got}, reference {dot}"));
            }
        }
        let whole = entries.len() == m * n;
        Ok(Check {
            passed: mismatches == 0,
            compared: entries.len() as u64,
            mismatches,
            max_abs_err: max_abs,
            max_rel_err: max_rel,
            tolerance: "|err| <= 2(k*u_acc*sum|a*b| + u_out*|ref|)".into(),
            method: if whole {
                "every entry vs an f64 reference on the same rounded inputs".into()
            } else {
                format!("{} sampled entries (corners included) vs an f64 reference on the same rounded inputs", entries.len())
            },
            detail: first,
        })
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::new();
        n.insert(
            "library".into(),
            "gemm crate (runtime-dispatched SIMD kernels)".into(),
        );
        n.insert("threads".into(), self.pool.threads().into());
        n.insert("layout".into(), "row-major A[MxK] B[KxN] D[MxN]".into());
        let path = match self.case.dtype {
            Dtype::F16 => "f16 storage through the gemm crate's f16 kernels (f32 arithmetic where the CPU has no native f16 FMA)",
            Dtype::Bf16 => "bf16 computed through f32: A and B widened, f32 GEMM, D rounded to bf16, every iteration (conversions timed)",
            _ => "native",
        };
        n.insert("compute_path".into(), path.into());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_verifies_on_odd_shapes() {
        let pool = Arc::new(PinnedPool::new().unwrap());
        for dtype in [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::Bf16] {
            for (m, n, k) in [(1, 1, 1), (17, 33, 65), (300, 257, 129)] {
                let mut w =
                    GemmWorkload::prepare(&GemmCase::new(m, n, k, dtype), pool.clone()).unwrap();
                assert!(
                    !w.verify().unwrap().passed,
                    "NaN-poisoned output must not pass"
                );
                w.run(2).unwrap();
                let c = w.verify().unwrap();
                assert!(c.passed, "{dtype} {m}x{n}x{k}: {c:?}");
            }
        }
    }

    #[test]
    fn a_single_wrong_entry_is_caught() {
        let pool = Arc::new(PinnedPool::new().unwrap());
        let mut w = GemmWorkload::prepare(&GemmCase::new(64, 64, 256, Dtype::Bf16), pool).unwrap();
        w.run(1).unwrap();
        if let Buffers::Bf16 { d, .. } = &mut w.buffers {
            // One step of bf16 rounding on one entry is within tolerance; a wrong sum is not.
            d[5 * 64 + 7] = bf16::from_f32(d[5 * 64 + 7].to_f32() + 0.5);
        }
        let c = w.verify().unwrap();
        assert!(!c.passed);
        assert_eq!(c.mismatches, 1);
        assert!(c.detail.unwrap().starts_with("D[5][7]"));
    }

    #[test]
    fn unsupported_types_are_skipped() {
        let pool = Arc::new(PinnedPool::new().unwrap());
        assert!(matches!(
            GemmWorkload::prepare(&GemmCase::new(8, 8, 8, Dtype::Fp8E4m3), pool),
            Err(PrepareError::Unsupported(_))
        ));
    }
}
