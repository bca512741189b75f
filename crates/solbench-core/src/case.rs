//! `Case`: one measurement to make, as pure data.
//!
//! A case says *what* to measure (family, operation, sizes, data type) and nothing
//! about *how*: backends turn it into a [`crate::Workload`]. Cases serialise into the
//! result file unchanged, so a result line always carries the exact question it answers.

use crate::size::format_size;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The four families solbench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Memory,
    Gemm,
    Attention,
    Collective,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Memory,
        Family::Gemm,
        Family::Attention,
        Family::Collective,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Memory => "memory",
            Family::Gemm => "gemm",
            Family::Attention => "attention",
            Family::Collective => "collective",
        }
    }

    pub fn parse(text: &str) -> Result<Family, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "memory" | "mem" | "bandwidth" => Ok(Family::Memory),
            "gemm" | "matmul" => Ok(Family::Gemm),
            "attention" | "attn" => Ok(Family::Attention),
            "collective" | "collectives" | "nccl" | "rccl" => Ok(Family::Collective),
            other => Err(format!(
                "'{other}' is not a family: choose from memory, gemm, attention, collective"
            )),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element types. Names follow the field (`bf16`, `fp8_e4m3`), parsing accepts common aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    F64,
    F32,
    /// FP32 storage, tensor-core TF32 math. Kept apart from true FP32.
    Tf32,
    F16,
    Bf16,
    Fp8E4m3,
    Fp8E5m2,
    I8,
    U8,
    I32,
    U32,
    I64,
    U64,
}

impl Dtype {
    pub const ALL: [Dtype; 13] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::Tf32,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::Fp8E4m3,
        Dtype::Fp8E5m2,
        Dtype::I8,
        Dtype::U8,
        Dtype::I32,
        Dtype::U32,
        Dtype::I64,
        Dtype::U64,
    ];

    /// Bytes per element in memory.
    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::Tf32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::Fp8E4m3 | Dtype::Fp8E5m2 | Dtype::I8 | Dtype::U8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "f64",
            Dtype::F32 => "f32",
            Dtype::Tf32 => "tf32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Fp8E4m3 => "fp8_e4m3",
            Dtype::Fp8E5m2 => "fp8_e5m2",
            Dtype::I8 => "i8",
            Dtype::U8 => "u8",
            Dtype::I32 => "i32",
            Dtype::U32 => "u32",
            Dtype::I64 => "i64",
            Dtype::U64 => "u64",
        }
    }

    /// The key a spec sheet files this type's peak under (`fp8` covers both FP8 formats).
    pub fn peak_key(self) -> &'static str {
        match self {
            Dtype::Fp8E4m3 | Dtype::Fp8E5m2 => "fp8",
            Dtype::F64 => "fp64",
            Dtype::F32 => "fp32",
            Dtype::Tf32 => "tf32",
            Dtype::F16 => "fp16",
            Dtype::Bf16 => "bf16",
            other => other.name(),
        }
    }

    pub fn parse(text: &str) -> Result<Dtype, String> {
        let t = text.trim().to_ascii_lowercase().replace('-', "_");
        Ok(match t.as_str() {
            "f64" | "fp64" | "double" => Dtype::F64,
            "f32" | "fp32" | "float" => Dtype::F32,
            "tf32" => Dtype::Tf32,
            "f16" | "fp16" | "half" => Dtype::F16,
            "bf16" | "bfloat16" => Dtype::Bf16,
            "fp8" | "fp8_e4m3" | "e4m3" | "f8e4m3" => Dtype::Fp8E4m3,
            "fp8_e5m2" | "e5m2" | "f8e5m2" => Dtype::Fp8E5m2,
            "i8" | "int8" => Dtype::I8,
            "u8" | "uint8" => Dtype::U8,
            "i32" | "int32" => Dtype::I32,
            "u32" | "uint32" => Dtype::U32,
            "i64" | "int64" => Dtype::I64,
            "u64" | "uint64" => Dtype::U64,
            _ => {
                return Err(format!(
                    "'{}' is not a data type: choose from f64, f32, tf32, f16, bf16, fp8 (= fp8_e4m3), fp8_e5m2, i8, u8, i32, u32, i64, u64",
                    text.trim()
                ))
            }
        })
    }

    pub fn is_float(self) -> bool {
        !matches!(
            self,
            Dtype::I8 | Dtype::U8 | Dtype::I32 | Dtype::U32 | Dtype::I64 | Dtype::U64
        )
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Memory operations: BabelStream's kernels plus pure read and write (every backend), and
/// the GPU-only shared-memory and copy-engine transfers nvbandwidth measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryOp {
    /// `sum += a[i]`: one array read.
    Read,
    /// `a[i] = x`: one array written.
    Write,
    /// `c[i] = a[i]`: one read, one write.
    Copy,
    /// `a[i] = b[i] + s * c[i]`: two reads, one write.
    Triad,
    /// Shared memory (SRAM) bandwidth of the whole GPU: every SM full of blocks.
    Smem,
    /// Shared memory bandwidth of one SM (one block), the per-SM figure.
    SmemSm,
    /// Device-local copy by a copy engine (`cuMemcpyDtoDAsync`).
    CeCopy,
    /// Host to device by a copy engine, from pinned (not write-combined) host memory.
    H2d,
    /// Device to host by a copy engine, into pinned host memory.
    D2h,
    /// Host to device and device to host at the same time, on two streams.
    Bidir,
    /// This GPU to the GPU `peer`, by a copy engine with peer access enabled.
    Peer,
}

impl MemoryOp {
    /// The streaming kernels every backend runs (the default when a suite lists no ops).
    pub const ALL: [MemoryOp; 4] = [
        MemoryOp::Read,
        MemoryOp::Write,
        MemoryOp::Copy,
        MemoryOp::Triad,
    ];

    /// Every operation, in the order `parse` lists them.
    pub const EVERY: [MemoryOp; 11] = [
        MemoryOp::Read,
        MemoryOp::Write,
        MemoryOp::Copy,
        MemoryOp::Triad,
        MemoryOp::Smem,
        MemoryOp::SmemSm,
        MemoryOp::CeCopy,
        MemoryOp::H2d,
        MemoryOp::D2h,
        MemoryOp::Bidir,
        MemoryOp::Peer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MemoryOp::Read => "read",
            MemoryOp::Write => "write",
            MemoryOp::Copy => "copy",
            MemoryOp::Triad => "triad",
            MemoryOp::Smem => "smem",
            MemoryOp::SmemSm => "smem_sm",
            MemoryOp::CeCopy => "ce_copy",
            MemoryOp::H2d => "h2d",
            MemoryOp::D2h => "d2h",
            MemoryOp::Bidir => "bidir",
            MemoryOp::Peer => "peer",
        }
    }

    pub fn parse(text: &str) -> Result<MemoryOp, String> {
        let t = text.trim().to_ascii_lowercase();
        MemoryOp::EVERY
            .into_iter()
            .find(|op| op.name() == t)
            .ok_or_else(|| {
                format!(
                    "'{t}' is not a memory operation: choose from {}",
                    MemoryOp::EVERY.map(|o| o.name()).join(", ")
                )
            })
    }

    /// How many arrays the operation touches (the working set is split evenly among them).
    /// Copy-engine transfers take their size as the copy size (nvbandwidth's `-b`), and the
    /// shared-memory kernels size themselves from the device.
    pub fn arrays(self) -> u64 {
        match self {
            MemoryOp::Copy => 2,
            MemoryOp::Triad => 3,
            _ => 1,
        }
    }

    /// Shared-memory and copy-engine operations exist only on GPUs.
    pub fn gpu_only(self) -> bool {
        !MemoryOp::ALL.contains(&self)
    }

    /// Copy-engine transfers: bytes counted once, sized by the copy (not by a cache level).
    pub fn is_copy_engine(self) -> bool {
        matches!(
            self,
            MemoryOp::CeCopy | MemoryOp::H2d | MemoryOp::D2h | MemoryOp::Bidir | MemoryOp::Peer
        )
    }

    /// Shared-memory bandwidth kernels (their size comes from the device, not the suite).
    pub fn is_shared_memory(self) -> bool {
        matches!(self, MemoryOp::Smem | MemoryOp::SmemSm)
    }
}

/// A memory-bandwidth case. `working_set` is the total footprint of all arrays the
/// operation touches, so the cache knee sits at the same size for every operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryCase {
    pub op: MemoryOp,
    pub working_set: u64,
    pub dtype: Dtype,
    /// `peer` only: the index of the destination GPU (the source is the device running it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u32>,
}

impl MemoryCase {
    /// Elements per array (the working set split over the arrays, rounded down).
    pub fn elements_per_array(&self) -> u64 {
        self.working_set / (self.op.arrays() * self.dtype.size_bytes())
    }
}

/// A GEMM `D[M×N] = A[M×K] · B[K×N]` (row-major view), `batch` times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmCase {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    /// Type of A (and of B unless `b_dtype` says otherwise).
    pub dtype: Dtype,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_dtype: Option<Dtype>,
    /// Output type; `None` means the backend's natural choice, recorded in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dtype: Option<Dtype>,
    #[serde(default = "one")]
    pub batch: u64,
    /// Where the shape comes from (`llama-3-8b qkv_proj`), for presets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// FP8 only: let the tensor cores accumulate in reduced precision (cuBLASLt's
    /// FAST_ACCUM; faster, less accurate). Off unless asked for, and always recorded.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fast_accum: bool,
    /// GPU library workspace in bytes (default: the backend's, large enough for Hopper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<u64>,
    /// How many of the library's heuristic algorithms to time (the best is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u64 {
    1
}

impl GemmCase {
    pub fn new(m: u64, n: u64, k: u64, dtype: Dtype) -> GemmCase {
        GemmCase {
            m,
            n,
            k,
            dtype,
            b_dtype: None,
            out_dtype: None,
            batch: 1,
            label: None,
            fast_accum: false,
            workspace: None,
            algorithms: None,
        }
    }

    /// Parses a GEMM type: `bf16`, or `AxB` for mixed FP8 inputs (`fp8_e4m3xfp8_e5m2`).
    pub fn parse_types(text: &str) -> Result<(Dtype, Option<Dtype>), String> {
        let t = text.trim();
        if let Some((a, b)) = t.split_once(['x', '*']) {
            if let (Ok(a), Ok(b)) = (Dtype::parse(a), Dtype::parse(b)) {
                return Ok((a, (a != b).then_some(b)));
            }
        }
        Ok((Dtype::parse(t)?, None))
    }

    /// Parses `MxNxK` (for example `8192x8192x8192`).
    pub fn parse_shape(text: &str) -> Result<(u64, u64, u64), String> {
        let parts: Vec<&str> = text.trim().split(['x', 'X']).collect();
        let bad = || {
            format!(
                "'{}' is not a GEMM shape: write MxNxK, for example 4096x14336x4096",
                text.trim()
            )
        };
        if parts.len() != 3 {
            return Err(bad());
        }
        let mut dims = [0u64; 3];
        for (d, p) in dims.iter_mut().zip(parts) {
            *d = p.trim().parse().map_err(|_| bad())?;
            if *d == 0 {
                return Err(format!(
                    "'{}' has a zero dimension; every GEMM dimension must be at least 1",
                    text.trim()
                ));
            }
        }
        Ok((dims[0], dims[1], dims[2]))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionVariant {
    /// Every query head has its own K/V head.
    Mha,
    /// Grouped-query attention: `q_heads / kv_heads` query heads share one K/V head.
    Gqa,
    /// Multi-head latent attention (DeepSeek), absorbed form: one latent K/V head of
    /// 576 dims shared by all query heads; V is the first 512 dims of K.
    Mla,
}

impl AttentionVariant {
    pub fn name(self) -> &'static str {
        match self {
            AttentionVariant::Mha => "mha",
            AttentionVariant::Gqa => "gqa",
            AttentionVariant::Mla => "mla",
        }
    }
    pub fn parse(text: &str) -> Result<AttentionVariant, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mha" => Ok(AttentionVariant::Mha),
            "gqa" | "mqa" => Ok(AttentionVariant::Gqa),
            "mla" => Ok(AttentionVariant::Mla),
            other => Err(format!(
                "'{other}' is not an attention variant: choose from mha, gqa, mla"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionPhase {
    /// Whole prompts at once: compute-bound.
    Prefill,
    /// One new token per sequence against its KV cache: memory-bound (MLA: near the ridge).
    Decode,
}

impl AttentionPhase {
    pub fn name(self) -> &'static str {
        match self {
            AttentionPhase::Prefill => "prefill",
            AttentionPhase::Decode => "decode",
        }
    }
    pub fn parse(text: &str) -> Result<AttentionPhase, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "prefill" => Ok(AttentionPhase::Prefill),
            "decode" => Ok(AttentionPhase::Decode),
            other => Err(format!(
                "'{other}' is not an attention phase: choose from prefill, decode"
            )),
        }
    }
}

/// Where the K/V cache lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum KvLayout {
    Contiguous,
    /// Fixed-size pages addressed through a per-sequence block table.
    Paged {
        page_size: u32,
    },
}

/// One attention problem. Lengths are per sequence; every sequence in the batch has the
/// same lengths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionCase {
    pub variant: AttentionVariant,
    pub phase: AttentionPhase,
    pub causal: bool,
    pub batch: u64,
    pub q_len: u64,
    pub kv_len: u64,
    pub q_heads: u64,
    pub kv_heads: u64,
    pub head_dim_qk: u64,
    pub head_dim_v: u64,
    pub dtype: Dtype,
    /// K/V cache type when it differs from `dtype` (FP8 KV for decode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_dtype: Option<Dtype>,
    pub kv_layout: KvLayout,
    /// Preset the case came from, for reports (`llama-3-70b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl AttentionCase {
    pub fn kv_dtype(&self) -> Dtype {
        self.kv_dtype.unwrap_or(self.dtype)
    }

    /// Checks the shape is one a kernel can run; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("batch", self.batch),
            ("q_len", self.q_len),
            ("kv_len", self.kv_len),
            ("q_heads", self.q_heads),
            ("kv_heads", self.kv_heads),
            ("head_dim_qk", self.head_dim_qk),
            ("head_dim_v", self.head_dim_v),
        ] {
            if v == 0 {
                return Err(format!("attention {name} must be at least 1"));
            }
        }
        if !self.q_heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "attention q_heads ({}) must be a multiple of kv_heads ({})",
                self.q_heads, self.kv_heads
            ));
        }
        if self.phase == AttentionPhase::Decode && self.q_len != 1 {
            return Err(format!(
                "attention decode has q_len 1 (one new token), not {}",
                self.q_len
            ));
        }
        match self.variant {
            AttentionVariant::Mha if self.kv_heads != self.q_heads => {
                return Err("attention variant mha needs kv_heads equal to q_heads (use gqa otherwise)".into())
            }
            AttentionVariant::Mla if self.kv_heads != 1 || self.head_dim_v > self.head_dim_qk => {
                return Err("attention variant mla has one latent KV head (kv_heads 1) and head_dim_v <= head_dim_qk".into())
            }
            _ => {}
        }
        if let KvLayout::Paged { page_size } = self.kv_layout {
            if page_size == 0 {
                return Err("attention kv_layout page_size must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Collective operations, named as nccl-tests names its binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveOp {
    AllReduce,
    AllGather,
    ReduceScatter,
    Broadcast,
    Reduce,
    Alltoall,
    Sendrecv,
}

impl CollectiveOp {
    pub const ALL: [CollectiveOp; 7] = [
        CollectiveOp::AllReduce,
        CollectiveOp::AllGather,
        CollectiveOp::ReduceScatter,
        CollectiveOp::Broadcast,
        CollectiveOp::Reduce,
        CollectiveOp::Alltoall,
        CollectiveOp::Sendrecv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CollectiveOp::AllReduce => "all_reduce",
            CollectiveOp::AllGather => "all_gather",
            CollectiveOp::ReduceScatter => "reduce_scatter",
            CollectiveOp::Broadcast => "broadcast",
            CollectiveOp::Reduce => "reduce",
            CollectiveOp::Alltoall => "alltoall",
            CollectiveOp::Sendrecv => "sendrecv",
        }
    }

    pub fn parse(text: &str) -> Result<CollectiveOp, String> {
        let t = text.trim().to_ascii_lowercase().replace('-', "_");
        CollectiveOp::ALL
            .into_iter()
            .find(|op| op.name() == t || op.name().replace('_', "") == t)
            .ok_or_else(|| {
                format!("'{}' is not a collective: choose from all_reduce, all_gather, reduce_scatter, broadcast, reduce, alltoall, sendrecv", text.trim())
            })
    }

    /// Whether the operation combines values (and so takes a reduction operator).
    pub fn reduces(self) -> bool {
        matches!(
            self,
            CollectiveOp::AllReduce | CollectiveOp::ReduceScatter | CollectiveOp::Reduce
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    Avg,
}

/// A collective at one size. `bytes` is the size nccl-tests prints in its `size` column
/// for this operation (see [`crate::work`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveCase {
    pub op: CollectiveOp,
    pub bytes: u64,
    pub dtype: Dtype,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<ReduceOp>,
    pub ranks: u32,
    pub in_place: bool,
    #[serde(default)]
    pub root: u32,
}

/// One measurement to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Case {
    Memory(MemoryCase),
    Gemm(GemmCase),
    Attention(AttentionCase),
    Collective(CollectiveCase),
}

impl Case {
    pub fn family(&self) -> Family {
        match self {
            Case::Memory(_) => Family::Memory,
            Case::Gemm(_) => Family::Gemm,
            Case::Attention(_) => Family::Attention,
            Case::Collective(_) => Family::Collective,
        }
    }

    /// Short operation name used in tables and metric keys.
    pub fn op_name(&self) -> String {
        match self {
            Case::Memory(m) => match m.peer {
                Some(p) if m.op == MemoryOp::Peer => format!("peer ->{p}"),
                _ => m.op.name().to_string(),
            },
            Case::Gemm(g) => {
                let types = match g.b_dtype {
                    Some(b) if b != g.dtype => format!("{}x{}", g.dtype, b),
                    _ => g.dtype.name().to_string(),
                };
                if g.fast_accum {
                    format!("{types} fast-accum")
                } else {
                    types
                }
            }
            Case::Attention(a) => format!(
                "{} {}{}",
                a.variant.name(),
                a.phase.name(),
                if a.causal && a.phase == AttentionPhase::Prefill {
                    " causal"
                } else {
                    ""
                }
            ),
            Case::Collective(c) => c.op.name().to_string(),
        }
    }

    /// Human description of the size/shape of the case.
    pub fn shape_label(&self) -> String {
        match self {
            Case::Memory(m) if m.op.is_shared_memory() => "shared memory".into(),
            Case::Memory(m) if m.op.is_copy_engine() => {
                format!("{} copy", format_size(m.working_set))
            }
            Case::Memory(m) => format!("{} {}", format_size(m.working_set), m.dtype),
            Case::Gemm(g) => {
                let b = if g.batch > 1 {
                    format!(" x{}", g.batch)
                } else {
                    String::new()
                };
                let from = g
                    .label
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                format!("{}x{}x{}{b}{from}", g.m, g.n, g.k)
            }
            Case::Attention(a) => {
                let paged = match a.kv_layout {
                    KvLayout::Contiguous => String::new(),
                    KvLayout::Paged { page_size } => format!(" paged{page_size}"),
                };
                let model = a
                    .model
                    .as_deref()
                    .map(|m| format!("{m} "))
                    .unwrap_or_default();
                format!(
                    "{model}b{} q{} kv{} h{}/{} d{}/{} {}{paged}",
                    a.batch,
                    a.q_len,
                    a.kv_len,
                    a.q_heads,
                    a.kv_heads,
                    a.head_dim_qk,
                    a.head_dim_v,
                    a.dtype
                )
            }
            Case::Collective(c) => format!(
                "{} {} {} rank{}{}",
                format_size(c.bytes),
                c.dtype,
                c.ranks,
                if c.ranks == 1 { "" } else { "s" },
                if c.in_place { " in-place" } else { "" }
            ),
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.family(),
            self.op_name(),
            self.shape_label()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_round_trip_through_json() {
        let cases = vec![
            Case::Memory(MemoryCase {
                op: MemoryOp::Triad,
                working_set: 3 << 20,
                dtype: Dtype::F64,
                peer: None,
            }),
            Case::Gemm(GemmCase::new(4096, 14336, 4096, Dtype::Bf16)),
            Case::Attention(AttentionCase {
                variant: AttentionVariant::Mla,
                phase: AttentionPhase::Decode,
                causal: false,
                batch: 64,
                q_len: 1,
                kv_len: 4096,
                q_heads: 128,
                kv_heads: 1,
                head_dim_qk: 576,
                head_dim_v: 512,
                dtype: Dtype::Bf16,
                kv_dtype: None,
                kv_layout: KvLayout::Paged { page_size: 64 },
                model: Some("deepseek-v3".into()),
            }),
            Case::Collective(CollectiveCase {
                op: CollectiveOp::AllReduce,
                bytes: 1 << 30,
                dtype: Dtype::Bf16,
                reduce: Some(ReduceOp::Sum),
                ranks: 8,
                in_place: false,
                root: 0,
            }),
        ];
        for case in cases {
            let json = serde_json::to_string(&case).unwrap();
            let back: Case = serde_json::from_str(&json).unwrap();
            assert_eq!(back, case, "{json}");
        }
    }

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!(Dtype::parse("FP8").unwrap(), Dtype::Fp8E4m3);
        assert_eq!(Dtype::parse("bfloat16").unwrap(), Dtype::Bf16);
        assert!(Dtype::parse("fp7")
            .unwrap_err()
            .contains("'fp7' is not a data type"));
        assert_eq!(
            CollectiveOp::parse("allreduce").unwrap(),
            CollectiveOp::AllReduce
        );
        assert_eq!(
            CollectiveOp::parse("all-gather").unwrap(),
            CollectiveOp::AllGather
        );
        assert!(CollectiveOp::parse("gather").is_err());
        assert_eq!(Family::parse("gemm").unwrap(), Family::Gemm);
        assert!(Family::parse("gemmm").unwrap_err().contains("not a family"));
        assert_eq!(
            GemmCase::parse_shape("8192x8192x8192").unwrap(),
            (8192, 8192, 8192)
        );
        assert!(GemmCase::parse_shape("8192x8192").is_err());
        assert!(GemmCase::parse_shape("0x1x1").unwrap_err().contains("zero"));
    }

    #[test]
    fn elements_split_the_working_set_over_arrays() {
        let triad = MemoryCase {
            op: MemoryOp::Triad,
            working_set: 3 * 8 * 1000,
            dtype: Dtype::F64,
            peer: None,
        };
        assert_eq!(triad.elements_per_array(), 1000);
        let read = MemoryCase {
            op: MemoryOp::Read,
            working_set: 8000,
            dtype: Dtype::F32,
            peer: None,
        };
        assert_eq!(read.elements_per_array(), 2000);
    }

    #[test]
    fn attention_validation_names_the_field() {
        let mut a = AttentionCase {
            variant: AttentionVariant::Gqa,
            phase: AttentionPhase::Prefill,
            causal: true,
            batch: 1,
            q_len: 128,
            kv_len: 128,
            q_heads: 32,
            kv_heads: 8,
            head_dim_qk: 128,
            head_dim_v: 128,
            dtype: Dtype::Bf16,
            kv_dtype: None,
            kv_layout: KvLayout::Contiguous,
            model: None,
        };
        assert!(a.validate().is_ok());
        a.kv_heads = 5;
        assert!(a.validate().unwrap_err().contains("multiple of kv_heads"));
        a.kv_heads = 8;
        a.phase = AttentionPhase::Decode;
        assert!(a.validate().unwrap_err().contains("q_len 1"));
    }
}
