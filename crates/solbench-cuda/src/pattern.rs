//! Reproducible random data, generated on the GPU by `sb_fill_*` (kernels/util.cu) and
//! regenerated here bit for bit, so multi-GiB inputs never cross PCIe to be created and
//! every output element can be checked against the value it must hold.
//!
//! The values are SplitMix64's finaliser of `seed + (i + 1) * golden ratio`, with the top
//! bits placed in the mantissa of 1.0: uniform in [1, 2), never zero or denormal.
//! kernels/common.cuh (`sb::random_value`) is the device half of this contract.

use rayon::prelude::*;
use solbench_core::backend::Check;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn random_bits(seed: u64, i: u64) -> u64 {
    mix64(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Element `i` of `sb_fill_f64(seed)`.
pub fn random_f64(seed: u64, i: u64) -> f64 {
    f64::from_bits(0x3FF0_0000_0000_0000 | (random_bits(seed, i) >> 12))
}

/// Element `i` of `sb_fill_f32(seed)`.
pub fn random_f32(seed: u64, i: u64) -> f32 {
    f32::from_bits(0x3F80_0000 | (random_bits(seed, i) >> 41) as u32)
}

/// An element type the memory kernels run on.
pub trait Element: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const NAME: &'static str;
    const EPSILON: f64;
    fn random(seed: u64, i: u64) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
    fn from_le(bytes: &[u8]) -> Self;
    fn to_le(self, out: &mut [u8]);
    /// `b + s * c` with one rounding (what the device computes once it contracts to FMA).
    fn fma(s: Self, c: Self, b: Self) -> Self;
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    const EPSILON: f64 = f64::EPSILON;
    fn random(seed: u64, i: u64) -> f64 {
        random_f64(seed, i)
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> f64 {
        x
    }
    fn from_le(b: &[u8]) -> f64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        f64::from_le_bytes(a)
    }
    fn to_le(self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.to_le_bytes())
    }
    fn fma(s: f64, c: f64, b: f64) -> f64 {
        s.mul_add(c, b)
    }
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const EPSILON: f64 = f32::EPSILON as f64;
    fn random(seed: u64, i: u64) -> f32 {
        random_f32(seed, i)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    fn from_le(b: &[u8]) -> f32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        f32::from_le_bytes(a)
    }
    fn to_le(self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.to_le_bytes())
    }
    fn fma(s: f32, c: f32, b: f32) -> f32 {
        s.mul_add(c, b)
    }
}

/// Fills host memory (little-endian bytes of `T`) with `sb_fill_T(seed)`'s values, element
/// `first` onward, in parallel.
pub fn fill_host<T: Element>(bytes: &mut [u8], seed: u64, first: u64) {
    let w = std::mem::size_of::<T>();
    bytes
        .par_chunks_mut(w * 65536)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = first + (c * 65536) as u64;
            for (j, e) in chunk.chunks_exact_mut(w).enumerate() {
                T::random(seed, base + j as u64).to_le(e);
            }
        });
}

/// Running comparison of a device array, read back chunk by chunk, against what every
/// element must hold. Keeps the first mismatch for the report.
#[derive(Debug, Default)]
pub struct Comparison {
    pub compared: u64,
    pub mismatches: u64,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub first_mismatch: Option<String>,
}

impl Comparison {
    /// Compares the chunk `bytes` (elements `first..`) with `want(i)`; an element passes
    /// when `|got - want| <= rel_tol * |want|` (0 means exact, bit for bit).
    pub fn chunk<T: Element>(
        &mut self,
        bytes: &[u8],
        first: u64,
        rel_tol: f64,
        want: impl Fn(u64) -> T + Sync,
    ) {
        let w = std::mem::size_of::<T>();
        let per = 65536;
        // Per part: mismatches, max abs error, max rel error, first mismatch.
        type Part<T> = (u64, f64, f64, Option<(u64, T, T)>);
        let parts: Vec<Part<T>> = bytes
            .par_chunks(w * per)
            .enumerate()
            .map(|(c, chunk)| {
                let mut bad = 0u64;
                let (mut abs, mut rel) = (0.0f64, 0.0f64);
                let mut first_bad = None;
                for (j, e) in chunk.chunks_exact(w).enumerate() {
                    let i = first + (c * per + j) as u64;
                    let got = T::from_le(e);
                    let exp = want(i);
                    if got == exp {
                        continue;
                    }
                    let (g, x) = (got.to_f64(), exp.to_f64());
                    let err = (g - x).abs();
                    let r = if x != 0.0 { err / x.abs() } else { err };
                    // NaN never passes (poisoned or unwritten elements are NaN-free random
                    // values here, but a kernel could still produce one).
                    let within = err <= rel_tol * x.abs(); // false for NaN
                    if !within {
                        bad += 1;
                        if first_bad.is_none() {
                            first_bad = Some((i, got, exp));
                        }
                    }
                    abs = abs.max(if err.is_nan() { f64::INFINITY } else { err });
                    rel = rel.max(if r.is_nan() { f64::INFINITY } else { r });
                }
                (bad, abs, rel, first_bad)
            })
            .collect();
        for (bad, abs, rel, first_bad) in parts {
            self.mismatches += bad;
            self.max_abs_err = self.max_abs_err.max(abs);
            self.max_rel_err = self.max_rel_err.max(rel);
            if self.first_mismatch.is_none() {
                if let Some((i, got, exp)) = first_bad {
                    self.first_mismatch =
                        Some(format!("element {i}: got {got:?}, expected {exp:?}"));
                }
            }
        }
        self.compared += (bytes.len() / w) as u64;
    }

    pub fn into_check(self, tolerance: String, method: String) -> Check {
        Check {
            passed: self.mismatches == 0 && self.compared > 0,
            compared: self.compared,
            mismatches: self.mismatches,
            max_abs_err: self.max_abs_err,
            max_rel_err: self.max_rel_err,
            tolerance,
            method,
            detail: self
                .first_mismatch
                .or_else(|| (self.compared == 0).then(|| "nothing was compared".to_string())),
        }
    }
}

/// A bound on the relative error of summing `n` values in [1, 2) the way `sb_read_T` does:
/// each thread adds `per_thread` values serially, then a block tree and the host's f64 sum
/// follow. Higham's bound for recursive summation of positive terms is (k - 1)·u per level;
/// the tree adds log2 terms. Always holds, so a miss is a real error, not noise.
pub fn read_sum_tolerance(per_thread: u64, block: u32, epsilon: f64) -> f64 {
    let levels = per_thread as f64 + (block.max(2) as f64).log2().ceil() + 8.0;
    levels * epsilon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_in_one_to_two_and_differ_by_seed_and_index() {
        for i in 0..10_000u64 {
            let a = random_f64(7, i);
            let b = random_f32(7, i);
            assert!((1.0..2.0).contains(&a), "{a}");
            assert!((1.0..2.0).contains(&b), "{b}");
        }
        assert_ne!(random_f64(7, 0), random_f64(8, 0));
        assert_ne!(random_f64(7, 0), random_f64(7, 1));
    }

    #[test]
    fn matches_hand_computed_splitmix() {
        // SplitMix64 seeded with 0: its first output is mix64(golden) = 0xE220A8397B1DCDAF,
        // a published test value; element 0 of seed 0 is exactly that draw.
        assert_eq!(random_bits(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(
            random_f64(0, 0).to_bits(),
            0x3FF0_0000_0000_0000 | (0xE220_A839_7B1D_CDAFu64 >> 12)
        );
        assert_eq!(
            random_f32(0, 0).to_bits(),
            0x3F80_0000 | (0xE220_A839_7B1D_CDAFu64 >> 41) as u32
        );
    }

    #[test]
    fn comparison_finds_every_wrong_element() {
        let n = 200_003usize;
        let mut bytes = vec![0u8; n * 8];
        fill_host::<f64>(&mut bytes, 3, 0);
        let mut ok = Comparison::default();
        ok.chunk::<f64>(&bytes, 0, 0.0, |i| random_f64(3, i));
        assert_eq!((ok.compared, ok.mismatches), (n as u64, 0));
        // Flip one low mantissa bit of element 123_457 and the last element.
        for i in [123_457usize, n - 1] {
            bytes[i * 8] ^= 1;
        }
        let mut bad = Comparison::default();
        bad.chunk::<f64>(&bytes, 0, 0.0, |i| random_f64(3, i));
        assert_eq!(bad.mismatches, 2);
        assert!(bad.first_mismatch.unwrap().starts_with("element 123457"));
        // A one-ulp error passes a one-epsilon relative tolerance.
        let mut tol = Comparison::default();
        tol.chunk::<f64>(&bytes, 0, f64::EPSILON, |i| random_f64(3, i));
        assert_eq!(tol.mismatches, 0);
        // Chunks continue the index where the previous one ended.
        let mut two = Comparison::default();
        let half = (n / 2) * 8;
        fill_host::<f64>(&mut bytes, 3, 0);
        two.chunk::<f64>(&bytes[..half], 0, 0.0, |i| random_f64(3, i));
        two.chunk::<f64>(&bytes[half..], (n / 2) as u64, 0.0, |i| random_f64(3, i));
        assert_eq!((two.compared, two.mismatches), (n as u64, 0));
        assert!(two.into_check(String::new(), String::new()).passed);
    }

    #[test]
    fn nothing_compared_never_passes() {
        let c = Comparison::default().into_check("exact".into(), "m".into());
        assert!(!c.passed);
    }

    #[test]
    fn read_tolerance_covers_the_worst_case_of_serial_f32_sums() {
        // Sum 4096 values in [1, 2) in f32 serially: the error stays under the bound.
        let per = 4096u64;
        let vals: Vec<f32> = (0..per).map(|i| random_f32(9, i)).collect();
        let mut s = 0f32;
        for v in &vals {
            s += v;
        }
        let exact: f64 = vals.iter().map(|v| *v as f64).sum();
        let rel = ((s as f64) - exact).abs() / exact;
        assert!(rel <= read_sum_tolerance(per, 256, f32::EPSILON as f64));
    }
}
