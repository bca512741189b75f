//! Our checked layer over cuBLASLt, where cudarc's safe API stops (it has no FP8, scale
//! pointers, choice of compute type, several heuristic results or workspace size).
//!
//! Layering as cudarc's: `cudarc::cublaslt::sys` (raw FFI, loaded at run time) → [`probe`]
//! proves the library and **every symbol we call** resolve before the first call (cudarc
//! panics on a missing symbol) → RAII types here whose errors name the call that failed.

use crate::gemm_rules::{Compute, GemmPlan};
use cudarc::cublaslt::sys as lt;
use solbench_core::case::Dtype;
use std::ffi::c_void;

/// Every cuBLASLt function the backend calls. `probe` resolves each one by name, so a
/// library too old for one of them is a sentence, not a panic inside cudarc.
pub const SYMBOLS: &[&str] = &[
    "cublasLtGetVersion",
    "cublasLtGetCudartVersion",
    "cublasLtCreate",
    "cublasLtDestroy",
    "cublasLtMatmulDescCreate",
    "cublasLtMatmulDescDestroy",
    "cublasLtMatmulDescSetAttribute",
    "cublasLtMatrixLayoutCreate",
    "cublasLtMatrixLayoutDestroy",
    "cublasLtMatrixLayoutSetAttribute",
    "cublasLtMatmulPreferenceCreate",
    "cublasLtMatmulPreferenceDestroy",
    "cublasLtMatmulPreferenceSetAttribute",
    "cublasLtMatmulAlgoGetHeuristic",
    "cublasLtMatmulAlgoConfigGetAttribute",
    "cublasLtMatmul",
];

/// What the loaded library reported.
#[derive(Clone, Debug, PartialEq)]
pub struct CublasLtInfo {
    /// `cublasLtGetVersion`: 131000 for 13.1.0.
    pub version: usize,
    pub cudart_version: usize,
    /// The file that satisfied the lookup.
    pub library: String,
}

impl CublasLtInfo {
    pub fn version_text(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
    }
}

/// Finds libcublasLt by cudarc's own candidate names, resolves every symbol in [`SYMBOLS`],
/// then reads the version. One sentence on any failure.
pub fn probe() -> Result<CublasLtInfo, String> {
    let fix = "install the CUDA 13 toolkit's cuBLAS or `pip install nvidia-cublas` and put its lib directory on LD_LIBRARY_PATH";
    // SAFETY: only tries to dlopen candidate names.
    if !unsafe { lt::is_culib_present() } {
        return Err(format!(
            "cuBLASLt (libcublasLt.so.13) was not found, so GEMMs cannot run on the GPU: {fix}"
        ));
    }
    let mut opened = None;
    for name in cudarc::get_lib_name_candidates("cublasLt") {
        // SAFETY: loading cuBLASLt runs its initialisers, which are safe to run.
        if let Ok(lib) = unsafe { libloading::Library::new(&name) } {
            opened = Some((name, lib));
            break;
        }
    }
    let (name, lib) = opened.ok_or_else(|| format!("cuBLASLt could not be opened: {fix}"))?;
    let missing = missing_symbols(&lib, SYMBOLS);
    if !missing.is_empty() {
        return Err(format!(
            "{name} lacks {} that solbench calls; it is older than CUDA 13's cuBLASLt: {fix}",
            missing.join(", ")
        ));
    }
    // SAFETY: the symbols exist (checked above); these take no arguments.
    let (version, cudart_version) =
        unsafe { (lt::cublasLtGetVersion(), lt::cublasLtGetCudartVersion()) };
    Ok(CublasLtInfo {
        version,
        cudart_version,
        library: name,
    })
}

/// The names in `symbols` that `lib` does not export.
pub fn missing_symbols(lib: &libloading::Library, symbols: &[&str]) -> Vec<String> {
    symbols
        .iter()
        .filter(|s| {
            // SAFETY: looking a symbol up does not call it.
            unsafe { lib.get::<*const c_void>(s.as_bytes()) }.is_err()
        })
        .map(|s| s.to_string())
        .collect()
}

fn status(what: &str, s: lt::cublasStatus_t) -> Result<(), String> {
    if s == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} failed: {s:?}"))
    }
}

/// cuBLASLt's data-type code of a storage type.
pub fn data_type(d: Dtype) -> Result<lt::cudaDataType_t, String> {
    use lt::cudaDataType_t as T;
    Ok(match d {
        Dtype::F64 => T::CUDA_R_64F,
        Dtype::F32 | Dtype::Tf32 => T::CUDA_R_32F,
        Dtype::F16 => T::CUDA_R_16F,
        Dtype::Bf16 => T::CUDA_R_16BF,
        Dtype::Fp8E4m3 => T::CUDA_R_8F_E4M3,
        Dtype::Fp8E5m2 => T::CUDA_R_8F_E5M2,
        other => return Err(format!("{other} is not a cuBLASLt matrix type")),
    })
}

fn compute_type(c: Compute) -> lt::cublasComputeType_t {
    match c {
        Compute::F64 => lt::cublasComputeType_t::CUBLAS_COMPUTE_64F,
        Compute::F32 => lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        Compute::F32FastTf32 => lt::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
    }
}

/// A cuBLASLt handle (bound to the context current when created).
pub struct Handle(lt::cublasLtHandle_t);

impl Handle {
    pub fn new() -> Result<Handle, String> {
        let mut h = std::ptr::null_mut();
        // SAFETY: valid out-pointer; symbols checked by probe.
        status("cublasLtCreate", unsafe { lt::cublasLtCreate(&mut h) })?;
        Ok(Handle(h))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate, destroyed once.
        let _ = unsafe { lt::cublasLtDestroy(self.0) };
    }
}

struct Desc(lt::cublasLtMatmulDesc_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulDescCreate.
        let _ = unsafe { lt::cublasLtMatmulDescDestroy(self.0) };
    }
}

struct Layout(lt::cublasLtMatrixLayout_t);
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatrixLayoutCreate.
        let _ = unsafe { lt::cublasLtMatrixLayoutDestroy(self.0) };
    }
}

struct Preference(lt::cublasLtMatmulPreference_t);
impl Drop for Preference {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate.
        let _ = unsafe { lt::cublasLtMatmulPreferenceDestroy(self.0) };
    }
}

fn set_desc<T>(d: &Desc, attr: lt::cublasLtMatmulDescAttributes_t, v: &T) -> Result<(), String> {
    // SAFETY: v is a live value of the size passed.
    status(&format!("setting {attr:?}"), unsafe {
        lt::cublasLtMatmulDescSetAttribute(
            d.0,
            attr,
            v as *const T as *const c_void,
            std::mem::size_of::<T>(),
        )
    })
}

fn layout(d: Dtype, rows: u64, cols: u64, ld: i64, batch: u64) -> Result<Layout, String> {
    let mut l = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    status("cublasLtMatrixLayoutCreate", unsafe {
        lt::cublasLtMatrixLayoutCreate(&mut l, data_type(d)?, rows, cols, ld)
    })?;
    let l = Layout(l);
    if batch > 1 {
        let count = batch as i32;
        let stride = (rows as i64) * (cols as i64);
        // SAFETY: live values of the sizes passed.
        unsafe {
            status(
                "setting the batch count",
                lt::cublasLtMatrixLayoutSetAttribute(
                    l.0,
                    lt::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                    &count as *const i32 as *const c_void,
                    4,
                ),
            )?;
            status("setting the batch stride", lt::cublasLtMatrixLayoutSetAttribute(
                l.0,
                lt::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                &stride as *const i64 as *const c_void,
                8,
            ))?;
        }
    }
    Ok(l)
}

/// One algorithm cuBLASLt's heuristic offered, with what identifies it.
#[derive(Clone)]
pub struct Algorithm {
    pub raw: lt::cublasLtMatmulHeuristicResult_t,
    pub index: usize,
    /// `id 21 tile 17 stages 9 splitk 1`, for the record.
    pub describe: String,
    pub workspace_bytes: usize,
}

/// A prepared matmul `D = op(A)·op(B)` for one shape and type plan, in the TN layout
/// (see gemm_rules::LAYOUT), with device pointers to per-tensor FP8 scales.
pub struct Matmul {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    scale_f64: bool,
}

impl Matmul {
    /// `m, n, k` in cuBLASLt's column-major terms: D is m×n.
    pub fn new(
        p: &GemmPlan,
        m: u64,
        n: u64,
        k: u64,
        batch: u64,
        scales: Option<(u64, u64)>,
    ) -> Result<Matmul, String> {
        let scale_type = if p.scale_f64 {
            lt::cudaDataType_t::CUDA_R_64F
        } else {
            lt::cudaDataType_t::CUDA_R_32F
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        status("cublasLtMatmulDescCreate", unsafe {
            lt::cublasLtMatmulDescCreate(&mut raw, compute_type(p.compute), scale_type)
        })?;
        let desc = Desc(raw);
        // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
        set_desc(
            &desc,
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &1i32,
        )?;
        set_desc(
            &desc,
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            &0i32,
        )?;
        if p.fp8 {
            let (sa, sb) = scales.ok_or("FP8 GEMMs need scale pointers (a bug)")?;
            set_desc(
                &desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                &sa,
            )?;
            set_desc(
                &desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                &sb,
            )?;
            let fast: i8 = p.fast_accum as i8;
            set_desc(
                &desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                &fast,
            )?;
        }
        // TN: A is stored k×m (lda = k), B k×n (ldb = k), D m×n (ldd = m).
        Ok(Matmul {
            a: layout(p.a, k, m, k as i64, batch)?,
            b: layout(p.b, k, n, k as i64, batch)?,
            d: layout(p.out, m, n, m as i64, batch)?,
            desc,
            scale_f64: p.scale_f64,
        })
    }

    /// Up to `count` algorithms, best first by cuBLASLt's estimate, that fit `workspace`.
    pub fn algorithms(
        &self,
        h: &Handle,
        count: usize,
        workspace: usize,
    ) -> Result<Vec<Algorithm>, String> {
        let mut pref = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        status("cublasLtMatmulPreferenceCreate", unsafe {
            lt::cublasLtMatmulPreferenceCreate(&mut pref)
        })?;
        let pref = Preference(pref);
        let ws = workspace as u64;
        // SAFETY: a live u64.
        status("setting the workspace limit", unsafe {
            lt::cublasLtMatmulPreferenceSetAttribute(
                pref.0,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
        })?;
        // SAFETY: an all-zero heuristic result is a valid placeholder for the out-array.
        let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> =
            vec![unsafe { std::mem::zeroed() }; count.max(1)];
        let mut returned = 0;
        // SAFETY: results holds count entries; all descriptors are live.
        status("cublasLtMatmulAlgoGetHeuristic", unsafe {
            lt::cublasLtMatmulAlgoGetHeuristic(
                h.0,
                self.desc.0,
                self.a.0,
                self.b.0,
                self.d.0,
                self.d.0,
                pref.0,
                results.len() as i32,
                results.as_mut_ptr(),
                &mut returned,
            )
        })?;
        results.truncate(returned.max(0) as usize);
        Ok(results
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|(index, raw)| Algorithm {
                describe: describe_algo(&raw.algo),
                workspace_bytes: raw.workspaceSize,
                raw,
                index,
            })
            .collect())
    }

    /// Enqueues `D = A·B` (alpha 1, beta 0) on `stream`.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &self,
        h: &Handle,
        algo: &Algorithm,
        a: u64,
        b: u64,
        d: u64,
        workspace: (u64, usize),
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<(), String> {
        let (one64, zero64) = (1.0f64, 0.0f64);
        let (one32, zero32) = (1.0f32, 0.0f32);
        let (alpha, beta): (*const c_void, *const c_void) = if self.scale_f64 {
            (&one64 as *const f64 as _, &zero64 as *const f64 as _)
        } else {
            (&one32 as *const f32 as _, &zero32 as *const f32 as _)
        };
        // SAFETY: the pointers are live device buffers sized for the layouts; C = D with
        // beta = 0 (C is not read); the workspace is at least what the algorithm asked.
        status("cublasLtMatmul", unsafe {
            lt::cublasLtMatmul(
                h.0,
                self.desc.0,
                alpha,
                a as *const c_void,
                self.a.0,
                b as *const c_void,
                self.b.0,
                beta,
                d as *const c_void,
                self.d.0,
                d as *mut c_void,
                self.d.0,
                &algo.raw.algo,
                workspace.0 as *mut c_void,
                workspace.1,
                stream as lt::cudaStream_t,
            )
        })
    }
}

fn describe_algo(algo: &lt::cublasLtMatmulAlgo_t) -> String {
    use lt::cublasLtMatmulAlgoConfigAttributes_t as C;
    let get = |attr: C| -> Option<u32> {
        let mut v: u32 = 0;
        let mut written = 0usize;
        // SAFETY: reads at most 4 bytes into v.
        let s = unsafe {
            lt::cublasLtMatmulAlgoConfigGetAttribute(
                algo,
                attr,
                &mut v as *mut u32 as *mut c_void,
                4,
                &mut written,
            )
        };
        (s == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS).then_some(v)
    };
    let f = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    format!(
        "id {} tile {} stages {} splitk {}",
        f(get(C::CUBLASLT_ALGO_CONFIG_ID)),
        f(get(C::CUBLASLT_ALGO_CONFIG_TILE_ID)),
        f(get(C::CUBLASLT_ALGO_CONFIG_STAGES_ID)),
        f(get(C::CUBLASLT_ALGO_CONFIG_SPLITK_NUM))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_a_plan_can_name_has_a_cublaslt_code() {
        for d in [
            Dtype::F64,
            Dtype::F32,
            Dtype::Tf32,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Fp8E4m3,
            Dtype::Fp8E5m2,
        ] {
            assert!(data_type(d).is_ok(), "{d}");
        }
        assert!(data_type(Dtype::I8).is_err());
        // The codes cuBLASLt documents (library_types.h).
        assert_eq!(data_type(Dtype::Bf16).unwrap() as i32, 14);
        assert_eq!(data_type(Dtype::Fp8E4m3).unwrap() as i32, 28);
        assert_eq!(data_type(Dtype::Fp8E5m2).unwrap() as i32, 29);
        assert_eq!(compute_type(Compute::F32FastTf32) as i32, 77);
    }
}
