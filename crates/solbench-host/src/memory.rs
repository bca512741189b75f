//! Host memory bandwidth: read, write, copy and triad over every allowed core.
//!
//! Each pinned worker owns one contiguous chunk of every array (a whole number of cache
//! lines long, so neighbouring workers rarely share a line); it
//! first-touches that chunk at preparation and runs `iters` passes over it per call,
//! so one call is one parallel dispatch whatever the iteration count (launch overhead
//! stays out of cache-sized measurements). Kernels are plain loops compiled three
//! times (AVX-512, AVX2, baseline) and picked at run time, so the installed binary
//! uses the widest vectors the CPU has without being built for one machine.
//!
//! Bytes are counted as read + written (STREAM/BabelStream); write-allocate traffic is
//! not counted.

use crate::pool::{split_aligned, PinnedPool};
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{Dtype, MemoryCase, MemoryOp};
use solbench_core::random::SplitMix64;
use solbench_core::work::{memory_work, Work};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Element types the memory kernels run on.
pub trait Element: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const NAN: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn mul_add_plain(b: Self, s: Self, c: Self) -> Self;
    fn add(a: Self, b: Self) -> Self;
    fn zero() -> Self;
    const EPSILON: f64;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            const NAN: Self = <$t>::NAN;
            const EPSILON: f64 = <$t>::EPSILON as f64;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            /// `b + s * c` with two roundings (no fused multiply-add), like STREAM in C.
            #[inline(always)]
            fn mul_add_plain(b: Self, s: Self, c: Self) -> Self {
                b + s * c
            }
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn zero() -> Self {
                0.0
            }
        }
    };
}
element!(f64);
element!(f32);

/// Lanes of independent partial sums in `read`: enough for two AVX-512 registers of
/// f64 so the additions pipeline instead of waiting on one another.
const READ_LANES: usize = 16;

#[inline(always)]
fn read_body<T: Element>(a: &[T]) -> T {
    let mut acc = [T::zero(); READ_LANES];
    let chunks = a.chunks_exact(READ_LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..READ_LANES {
            acc[j] = T::add(acc[j], c[j]);
        }
    }
    let mut total = T::zero();
    for x in acc {
        total = T::add(total, x);
    }
    for &x in tail {
        total = T::add(total, x);
    }
    total
}

#[inline(always)]
fn write_body<T: Element>(a: &mut [T], v: T) {
    for x in a.iter_mut() {
        *x = v;
    }
}

#[inline(always)]
fn copy_body<T: Element>(c: &mut [T], a: &[T]) {
    for (d, s) in c.iter_mut().zip(a) {
        *d = *s;
    }
}

#[inline(always)]
fn triad_body<T: Element>(a: &mut [T], b: &[T], c: &[T], s: T) {
    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
        *x = T::mul_add_plain(*y, s, *z);
    }
}

/// Generates `name(args)` that dispatches to an AVX-512, AVX2 or baseline build of `body`.
macro_rules! multiversion {
    ($name:ident <$t:ident> ($($arg:ident : $ty:ty),*) -> $ret:ty = $body:ident) => {
        pub fn $name<$t: Element>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v512<$t: Element>($($arg: $ty),*) -> $ret { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v256<$t: Element>($($arg: $ty),*) -> $ret { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { v512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { v256($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion!(read_kernel<T>(a: &[T]) -> T = read_body);
multiversion!(write_kernel<T>(a: &mut [T], v: T) -> () = write_body);
multiversion!(copy_kernel<T>(c: &mut [T], a: &[T]) -> () = copy_body);
multiversion!(triad_kernel<T>(a: &mut [T], b: &[T], c: &[T], s: T) -> () = triad_body);

/// A raw view of an array that workers slice disjointly.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: every worker only touches its own disjoint range (see `split_aligned`), and the
// owning Vec outlives every broadcast (they borrow `self`).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// # Safety
    /// `range` must be in bounds and not accessed mutably by another worker meanwhile.
    unsafe fn slice<'a>(self, range: &std::ops::Range<usize>) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(range.start), range.len())
    }
}

pub struct MemoryWorkload<T: Element> {
    case: MemoryCase,
    pool: Arc<PinnedPool>,
    ranges: Vec<std::ops::Range<usize>>,
    a: Vec<T>,
    b: Vec<T>,
    c: Vec<T>,
    scalar: T,
    fill: T,
    /// Per-worker partial sums of the last `read` pass.
    partial_sums: Vec<f64>,
    n: usize,
}

/// Value of element `i` of input array `which`, reproducible from the index alone so the
/// check can recompute it without keeping a copy (a different stream per array).
fn input_value(seed: u64, which: u64, i: usize) -> f64 {
    let mut r = SplitMix64::new(seed ^ (which << 56) ^ (i as u64).wrapping_mul(0x9E37_79B9));
    r.uniform(1.0, 2.0)
}

const SEED: u64 = 0x5EED_0F50_1B00;

impl<T: Element> MemoryWorkload<T> {
    pub fn prepare(case: &MemoryCase, pool: Arc<PinnedPool>) -> Result<Self, PrepareError> {
        if case.op.gpu_only() {
            return Err(PrepareError::Unsupported(format!(
                "{} is a GPU operation (shared memory or copy engines); the host has none",
                case.op.name()
            )));
        }
        let n = case.elements_per_array() as usize;
        if n < pool.threads() * 64 {
            return Err(PrepareError::Unsupported(format!(
                "a {} working set is too small to split over {} cores ({} elements per array)",
                solbench_core::size::format_size(case.working_set),
                pool.threads(),
                n
            )));
        }
        if let Some(avail) = solbench_core::env::available_memory_bytes() {
            if case.working_set > avail / 10 * 9 {
                return Err(PrepareError::Unsupported(format!(
                    "a {} working set does not fit in the {} of memory available",
                    solbench_core::size::format_size(case.working_set),
                    solbench_core::size::format_size(avail)
                )));
            }
        }
        let arrays = case.op.arrays() as usize;
        // Zeroed allocations come straight from fresh pages: nothing is touched until the
        // owning worker initialises its chunk below (first touch puts pages on its node).
        let alloc = |used: bool| if used { vec![T::zero(); n] } else { Vec::new() };
        let mut w = MemoryWorkload {
            case: case.clone(),
            ranges: split_aligned(n, pool.threads(), 64 / std::mem::size_of::<T>()),
            pool,
            a: alloc(true),
            b: alloc(arrays >= 2),
            c: alloc(arrays >= 3),
            scalar: T::from_f64(0.4),
            fill: T::from_f64(1.375),
            partial_sums: Vec::new(),
            n,
        };
        w.initialise();
        Ok(w)
    }

    /// Fills inputs with random values and poisons outputs with NaN, each worker its chunk.
    fn initialise(&mut self) {
        let (a, b, c) = (
            Shared(self.a.as_mut_ptr()),
            Shared(self.b.as_mut_ptr()),
            Shared(self.c.as_mut_ptr()),
        );
        let ranges = &self.ranges;
        let op = self.case.op;
        self.pool.broadcast(|w| {
            let r = &ranges[w];
            // SAFETY: each worker writes only its own range of arrays of length n.
            unsafe {
                match op {
                    MemoryOp::Read => fill_inputs(a.slice(r), r.start, 0),
                    MemoryOp::Write => a.slice(r).fill(T::NAN),
                    MemoryOp::Copy => {
                        fill_inputs(a.slice(r), r.start, 0);
                        b.slice(r).fill(T::NAN);
                    }
                    MemoryOp::Triad => {
                        a.slice(r).fill(T::NAN);
                        fill_inputs(b.slice(r), r.start, 1);
                        fill_inputs(c.slice(r), r.start, 2);
                    }
                    _ => unreachable!("prepare refuses GPU-only operations"),
                }
            }
        });
    }

    /// The value an input element must hold.
    fn input(which: u64, i: usize) -> T {
        T::from_f64(input_value(SEED, which, i))
    }
}

fn fill_inputs<T: Element>(x: &mut [T], offset: usize, which: u64) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = T::from_f64(input_value(SEED, which, offset + i));
    }
}

impl<T: Element> Workload for MemoryWorkload<T> {
    fn work(&self) -> Work {
        memory_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        let (a, b, c) = (
            Shared(self.a.as_mut_ptr()),
            Shared(self.b.as_mut_ptr()),
            Shared(self.c.as_mut_ptr()),
        );
        let ranges = &self.ranges;
        let (op, s, fill) = (self.case.op, self.scalar, self.fill);
        let start = Instant::now();
        let sums = self.pool.broadcast(|w| {
            let r = &ranges[w];
            let mut sum = 0.0;
            // SAFETY: disjoint per-worker ranges of live arrays (see `Shared`).
            unsafe {
                for _ in 0..iters {
                    match op {
                        MemoryOp::Read => {
                            sum = black_box(read_kernel(black_box(&*a.slice(r)))).to_f64()
                        }
                        MemoryOp::Write => write_kernel(black_box(a.slice(r)), fill),
                        MemoryOp::Copy => copy_kernel(black_box(b.slice(r)), &*a.slice(r)),
                        MemoryOp::Triad => {
                            triad_kernel(black_box(a.slice(r)), &*b.slice(r), &*c.slice(r), s)
                        }
                        _ => unreachable!("prepare refuses GPU-only operations"),
                    }
                }
            }
            sum
        });
        let elapsed = start.elapsed();
        self.partial_sums = sums;
        Ok(elapsed)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let n = self.n;
        let mut mismatches = 0u64;
        let mut first: Option<String> = None;
        let mut max_abs = 0.0f64;
        let mut max_rel = 0.0f64;
        let mut note = |i: usize, got: f64, want: f64, tol: f64| {
            let err = (got - want).abs();
            if err.is_finite() {
                max_abs = max_abs.max(err);
                max_rel = max_rel.max(err / want.abs().max(f64::MIN_POSITIVE));
            }
            // NaN (a poisoned element never written) fails too.
            if err.is_nan() || err > tol {
                mismatches += 1;
                if first.is_none() {
                    first = Some(format!("element {i}: got {got}, expected {want}"));
                }
            }
        };
        let (tolerance, method, compared) = match self.case.op {
            MemoryOp::Read => {
                // Reference: the same values summed in f64, sequentially.
                let want: f64 = (0..n).map(|i| Self::input(0, i).to_f64()).sum();
                let got: f64 = self.partial_sums.iter().sum();
                // Summation-order error bound: n * eps(T) * sum|a|.
                let tol = n as f64 * T::EPSILON * want.abs();
                note(0, got, want, tol);
                (
                    "|sum - ref| <= n*eps*sum|a|".to_string(),
                    "sum of every element vs a sequential f64 sum of the regenerated inputs",
                    1,
                )
            }
            MemoryOp::Write => {
                let want = self.fill.to_f64();
                for (i, x) in self.a.iter().enumerate() {
                    note(i, x.to_f64(), want, 0.0);
                }
                (
                    "exact".to_string(),
                    "every element vs the written value",
                    n as u64,
                )
            }
            MemoryOp::Copy => {
                for (i, x) in self.b.iter().enumerate() {
                    note(i, x.to_f64(), Self::input(0, i).to_f64(), 0.0);
                }
                (
                    "exact".to_string(),
                    "every element vs the regenerated source",
                    n as u64,
                )
            }
            MemoryOp::Triad => {
                let s = self.scalar;
                for (i, x) in self.a.iter().enumerate() {
                    let want = T::mul_add_plain(Self::input(1, i), s, Self::input(2, i)).to_f64();
                    // One rounding of difference allowed, in case a kernel fuses the multiply-add.
                    note(i, x.to_f64(), want, want.abs() * T::EPSILON);
                }
                (
                    "|err| <= eps*|ref|".to_string(),
                    "every element vs b + s*c recomputed from the regenerated inputs",
                    n as u64,
                )
            }
            _ => unreachable!("prepare refuses GPU-only operations"),
        };
        Ok(Check {
            passed: mismatches == 0,
            compared,
            mismatches,
            max_abs_err: max_abs,
            max_rel_err: max_rel,
            tolerance,
            method: method.to_string(),
            detail: first,
        })
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::new();
        n.insert("threads".into(), self.pool.threads().into());
        n.insert("simd".into(), crate::cpu::simd_label().into());
        n.insert("elements_per_array".into(), (self.n as u64).into());
        n.insert(
            "byte_counting".into(),
            "read + written (no write-allocate traffic)".into(),
        );
        n
    }
}

/// Prepares a memory case with the element type it names.
pub fn prepare(
    case: &MemoryCase,
    pool: Arc<PinnedPool>,
) -> Result<Box<dyn Workload>, PrepareError> {
    match case.dtype {
        Dtype::F64 => Ok(Box::new(MemoryWorkload::<f64>::prepare(case, pool)?)),
        Dtype::F32 => Ok(Box::new(MemoryWorkload::<f32>::prepare(case, pool)?)),
        other => Err(PrepareError::Unsupported(format!(
            "host memory kernels run on f64 or f32, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<PinnedPool> {
        Arc::new(PinnedPool::new().unwrap())
    }

    #[test]
    fn every_op_runs_and_verifies_for_both_types() {
        let pool = pool();
        for op in MemoryOp::ALL {
            for dtype in [Dtype::F64, Dtype::F32] {
                let case = MemoryCase {
                    op,
                    working_set: 3 * 8 * 10_007,
                    dtype,
                    peer: None,
                };
                let mut w = prepare(&case, pool.clone()).unwrap();
                if op != MemoryOp::Read {
                    assert!(
                        !w.verify().unwrap().passed,
                        "{op:?}: poisoned output must fail before the run"
                    );
                }
                w.run(3).unwrap();
                let check = w.verify().unwrap();
                assert!(check.passed, "{op:?} {dtype:?}: {check:?}");
                assert!(w.work().bytes > 0.0);
            }
        }
    }

    #[test]
    fn a_wrong_triad_is_caught() {
        let pool = pool();
        let case = MemoryCase {
            op: MemoryOp::Triad,
            working_set: 3 * 8 * 4096,
            dtype: Dtype::F64,
            peer: None,
        };
        let mut w = MemoryWorkload::<f64>::prepare(&case, pool).unwrap();
        w.run(1).unwrap();
        assert!(w.verify().unwrap().passed);
        w.a[4000] += 1e-9;
        let check = w.verify().unwrap();
        assert!(!check.passed);
        assert_eq!(check.mismatches, 1);
        assert!(check.detail.unwrap().contains("element 4000"));
    }

    #[test]
    fn tiny_sizes_are_unsupported_not_failed() {
        let case = MemoryCase {
            op: MemoryOp::Copy,
            working_set: 256,
            dtype: Dtype::F64,
            peer: None,
        };
        assert!(matches!(
            prepare(&case, pool()),
            Err(PrepareError::Unsupported(_))
        ));
    }

    #[test]
    fn kernels_match_scalar_code_on_odd_lengths() {
        let a: Vec<f64> = (0..1003).map(|i| i as f64 * 0.5).collect();
        assert_eq!(read_kernel(&a), a.iter().sum::<f64>());
        let mut c = vec![0.0; 1003];
        copy_kernel(&mut c, &a);
        assert_eq!(c, a);
        let mut t = vec![0.0; 1003];
        triad_kernel(&mut t, &a, &a, 2.0);
        assert!(t.iter().zip(&a).all(|(x, y)| *x == y + 2.0 * y));
    }
}
