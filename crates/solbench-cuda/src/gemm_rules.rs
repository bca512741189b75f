//! Which GEMMs cuBLASLt can run on which GPU, and how: data types, compute type, layout
//! and alignment, per architecture. Pure, so the rules are unit-tested without a GPU; a
//! case that breaks a rule is skipped with the rule as the reason (FP8 on an A100).

use solbench_core::case::{Dtype, GemmCase};

/// cuBLASLt's compute types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// `CUBLAS_COMPUTE_64F`.
    F64,
    /// `CUBLAS_COMPUTE_32F`: true FP32 (no TF32), and FP32 accumulation for 16/8-bit inputs.
    F32,
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`: FP32 storage, inputs rounded to TF32 on the tensor cores.
    F32FastTf32,
}

/// How one GEMM case runs.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmPlan {
    pub a: Dtype,
    pub b: Dtype,
    pub out: Dtype,
    pub compute: Compute,
    /// alpha/beta are f64 for FP64 GEMMs, f32 otherwise.
    pub scale_f64: bool,
    /// FP8: per-tensor scale pointers for A and B are set (to 1.0).
    pub fp8: bool,
    pub fast_accum: bool,
    /// In words, for the record.
    pub describe: String,
}

/// The layout every GEMM uses: cuBLASLt's "TN" (A transposed, B not), i.e. in row-major
/// terms A is `M×K` and B is `N×K` (an nn.Linear weight), both contiguous along K, and D is
/// `M×N` column-major (`Dᵀ` row-major). Ada and Hopper require TN for FP8; using it for
/// every type keeps one layout for the whole sweep, and it is how LLM layers store weights.
pub const LAYOUT: &str = "TN: A M×K row-major (lda = K), B N×K row-major (ldb = K, nn.Linear weight), D column-major M×N (ldd = M)";

fn is_fp8(d: Dtype) -> bool {
    matches!(d, Dtype::Fp8E4m3 | Dtype::Fp8E5m2)
}

/// Checks a case against cuBLASLt's rules on a GPU of compute capability `cc`.
pub fn plan(cc: (i32, i32), case: &GemmCase) -> Result<GemmPlan, String> {
    let a = case.dtype;
    let b = case.b_dtype.unwrap_or(a);
    let sm = cc.0 * 10 + cc.1;
    let arch = format!("compute capability {}.{}", cc.0, cc.1);
    if case.m == 0 || case.n == 0 || case.k == 0 || case.batch == 0 {
        return Err("a GEMM needs M, N, K and batch of at least 1".into());
    }
    if case.fast_accum && !is_fp8(a) {
        return Err("fast accumulation applies to FP8 GEMMs only".into());
    }
    if a != b && !(is_fp8(a) && is_fp8(b)) {
        return Err(format!(
            "mixed inputs {a} x {b} are not a cuBLASLt GEMM; only FP8 E4M3/E5M2 mixes are"
        ));
    }
    let (compute, scale_f64, default_out, min_sm, what) = match a {
        Dtype::F64 => (Compute::F64, true, Dtype::F64, 60, "FP64"),
        Dtype::F32 => (Compute::F32, false, Dtype::F32, 60, "FP32 (no TF32)"),
        Dtype::Tf32 => (
            Compute::F32FastTf32,
            false,
            Dtype::F32,
            80,
            "TF32 tensor cores",
        ),
        Dtype::F16 => (
            Compute::F32,
            false,
            Dtype::F16,
            70,
            "FP16 with FP32 accumulation",
        ),
        Dtype::Bf16 => (
            Compute::F32,
            false,
            Dtype::Bf16,
            80,
            "BF16 with FP32 accumulation",
        ),
        Dtype::Fp8E4m3 | Dtype::Fp8E5m2 => (
            Compute::F32,
            false,
            Dtype::Bf16,
            89,
            "FP8 with FP32 accumulation",
        ),
        other => return Err(format!("{other} is not a GEMM input type")),
    };
    if sm < min_sm {
        return Err(format!(
            "{what} GEMMs need compute capability {}.{} or newer; this GPU has {arch}",
            min_sm / 10,
            min_sm % 10
        ));
    }
    if is_fp8(a) {
        if a == Dtype::Fp8E5m2 && b == Dtype::Fp8E5m2 {
            return Err(
                "cuBLASLt has no E5M2 x E5M2 FP8 GEMM (E5M2 is for gradients; pair it with E4M3)"
                    .into(),
            );
        }
        for (dim, v) in [("M", case.m), ("N", case.n), ("K", case.k)] {
            if v % 16 != 0 {
                return Err(format!(
                    "FP8 GEMMs need every dimension to be a multiple of 16; {dim} = {v}"
                ));
            }
        }
    }
    let out = case.out_dtype.unwrap_or(default_out);
    let out_ok = match a {
        Dtype::F64 => out == Dtype::F64,
        Dtype::F32 | Dtype::Tf32 => out == Dtype::F32,
        Dtype::F16 => matches!(out, Dtype::F16 | Dtype::F32),
        Dtype::Bf16 => matches!(out, Dtype::Bf16 | Dtype::F32),
        _ => matches!(out, Dtype::Bf16 | Dtype::F16 | Dtype::F32),
    };
    if !out_ok {
        return Err(format!("a {a} GEMM cannot write {out} output"));
    }
    let inputs = if a == b {
        a.to_string()
    } else {
        format!("{a} x {b}")
    };
    Ok(GemmPlan {
        a,
        b,
        out,
        compute,
        scale_f64,
        fp8: is_fp8(a),
        fast_accum: case.fast_accum,
        describe: format!(
            "{what}: {inputs} inputs, {out} output{}",
            if case.fast_accum {
                ", fast accumulation on"
            } else {
                ""
            }
        ),
    })
}

/// Bytes of one operand set (A and B) and of the output, per batch item included.
pub fn operand_bytes(case: &GemmCase, p: &GemmPlan) -> (u64, u64, u64) {
    use crate::numeric::storage_bytes as sz;
    let (m, n, k, b) = (case.m, case.n, case.k, case.batch);
    (
        b * m * k * sz(p.a) as u64,
        b * n * k * sz(p.b) as u64,
        b * m * n * sz(p.out) as u64,
    )
}

/// How many copies of the inputs to rotate through so that consecutive iterations never
/// find their operands in L2: enough sets to span twice the L2 size, at most 16, and no
/// more than `budget` bytes of copies.
pub fn rotation_sets(input_bytes: u64, l2_bytes: u64, budget: u64) -> u32 {
    if input_bytes == 0 {
        return 1;
    }
    let want = (2 * l2_bytes).div_ceil(input_bytes).clamp(1, 16);
    let fit = (budget / input_bytes).max(1);
    want.min(fit) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(m: u64, n: u64, k: u64, a: Dtype, b: Option<Dtype>) -> GemmCase {
        let mut c = GemmCase::new(m, n, k, a);
        c.b_dtype = b;
        c
    }

    const A100: (i32, i32) = (8, 0);
    const L40S: (i32, i32) = (8, 9);
    const H100: (i32, i32) = (9, 0);
    const V100: (i32, i32) = (7, 0);

    #[test]
    fn fp8_needs_ada_or_newer_and_multiples_of_16() {
        let e4 = case(4096, 4096, 4096, Dtype::Fp8E4m3, None);
        let err = plan(A100, &e4).unwrap_err();
        assert!(err.contains("8.9 or newer") && err.contains("8.0"), "{err}");
        assert!(plan(L40S, &e4).is_ok());
        let p = plan(H100, &e4).unwrap();
        assert!(p.fp8 && p.out == Dtype::Bf16 && p.compute == Compute::F32);
        let odd = case(4096, 4096, 4100, Dtype::Fp8E4m3, None);
        assert!(plan(H100, &odd).unwrap_err().contains("K = 4100"));
        // The three legal mixes; E5M2 x E5M2 is not one.
        for (a, b) in [
            (Dtype::Fp8E4m3, Dtype::Fp8E4m3),
            (Dtype::Fp8E4m3, Dtype::Fp8E5m2),
            (Dtype::Fp8E5m2, Dtype::Fp8E4m3),
        ] {
            assert!(
                plan(H100, &case(64, 64, 64, a, Some(b))).is_ok(),
                "{a} x {b}"
            );
        }
        let e5 = case(64, 64, 64, Dtype::Fp8E5m2, Some(Dtype::Fp8E5m2));
        assert!(plan(H100, &e5).unwrap_err().contains("E5M2 x E5M2"));
    }

    #[test]
    fn tf32_and_fp32_are_different_gemms() {
        let tf = plan(H100, &case(100, 100, 100, Dtype::Tf32, None)).unwrap();
        let fp = plan(H100, &case(100, 100, 100, Dtype::F32, None)).unwrap();
        assert_eq!(tf.compute, Compute::F32FastTf32);
        assert_eq!(fp.compute, Compute::F32);
        assert!(fp.describe.contains("no TF32"));
        assert!(plan(V100, &case(8, 8, 8, Dtype::Tf32, None)).is_err());
        assert!(plan(V100, &case(8, 8, 8, Dtype::Bf16, None)).is_err());
        assert!(plan(V100, &case(8, 8, 8, Dtype::F16, None)).is_ok());
        // Odd sizes are legal outside FP8.
        assert!(plan(H100, &case(1, 6144, 4095, Dtype::Bf16, None)).is_ok());
    }

    #[test]
    fn outputs_mixes_and_flags_are_checked() {
        let mut c = case(64, 64, 64, Dtype::Bf16, None);
        c.out_dtype = Some(Dtype::F16);
        assert!(plan(H100, &c).unwrap_err().contains("cannot write f16"));
        c.out_dtype = Some(Dtype::F32);
        assert_eq!(plan(H100, &c).unwrap().out, Dtype::F32);
        c.fast_accum = true;
        assert!(plan(H100, &c).unwrap_err().contains("FP8 GEMMs only"));
        let mix = case(64, 64, 64, Dtype::Bf16, Some(Dtype::F16));
        assert!(plan(H100, &mix).unwrap_err().contains("mixed inputs"));
        let mut f8 = case(64, 64, 64, Dtype::Fp8E4m3, None);
        f8.fast_accum = true;
        assert!(plan(H100, &f8)
            .unwrap()
            .describe
            .contains("fast accumulation on"));
        assert!(plan(H100, &case(0, 1, 1, Dtype::F32, None)).is_err());
    }

    #[test]
    fn rotation_spans_twice_l2_within_budget() {
        // 4096^3 bf16: A + B = 64 MiB > 2 x 50 MiB L2? 2 x 50 = 100 MiB -> 2 sets.
        assert_eq!(rotation_sets(64 << 20, 50 << 20, 8 << 30), 2);
        // Tiny inputs: capped at 16 sets.
        assert_eq!(rotation_sets(1 << 10, 50 << 20, 8 << 30), 16);
        // Huge inputs: one set.
        assert_eq!(rotation_sets(4 << 30, 50 << 20, 8 << 30), 1);
        // Budget-limited.
        assert_eq!(rotation_sets(1 << 20, 50 << 20, 3 << 20), 3);
        let c = case(2, 3, 4, Dtype::Fp8E4m3, None);
        let p = GemmPlan {
            a: Dtype::Fp8E4m3,
            b: Dtype::Fp8E4m3,
            out: Dtype::Bf16,
            compute: Compute::F32,
            scale_f64: false,
            fp8: true,
            fast_accum: false,
            describe: String::new(),
        };
        assert_eq!(operand_bytes(&c, &p), (8, 12, 12));
    }
}
