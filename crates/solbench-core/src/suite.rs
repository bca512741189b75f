//! Suites: what to run. Built-in profiles (`quick`, `standard`, `full`) and user suite
//! files share one TOML format and one validator, so `solbench run --suite my.toml`
//! accepts exactly what the profiles are written in (see profiles/*.toml).

use crate::backend::DeviceInfo;
use crate::case::*;
use crate::presets::attention_preset;
use crate::runner::RunSettings;
use crate::size::{format_size, geometric_sweep, parse_size};
use serde::Deserialize;

pub const PROFILES: [(&str, &str); 3] = [
    ("quick", include_str!("../profiles/quick.toml")),
    ("standard", include_str!("../profiles/standard.toml")),
    ("full", include_str!("../profiles/full.toml")),
];

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsOverride {
    pub warmup_ms: Option<u64>,
    pub min_time_ms: Option<u64>,
    pub min_samples: Option<u32>,
    pub max_samples: Option<u32>,
    pub target_sample_ms: Option<f64>,
    pub max_case_ms: Option<u64>,
}

impl SettingsOverride {
    pub fn apply(&self, s: &mut RunSettings) {
        if let Some(v) = self.warmup_ms {
            s.warmup_ms = v;
        }
        if let Some(v) = self.min_time_ms {
            s.min_time_ms = v;
        }
        if let Some(v) = self.min_samples {
            s.min_samples = v;
        }
        if let Some(v) = self.max_samples {
            s.max_samples = v;
        }
        if let Some(v) = self.target_sample_ms {
            s.target_sample_ms = v;
        }
        if let Some(v) = self.max_case_ms {
            s.max_case_ms = v;
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSweep {
    pub from: String,
    pub to: String,
    #[serde(default = "two")]
    pub factor: f64,
}

fn two() -> f64 {
    2.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySweep {
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    #[serde(default)]
    pub dtype: Option<String>,
    /// Explicit working-set sizes.
    #[serde(default)]
    pub sizes: Option<Vec<String>>,
    /// A geometric sweep of working-set sizes; `to = "auto"` means well past the last cache,
    /// `to = "max"` the largest size the device can spare.
    #[serde(default)]
    pub sweep: Option<SizeSweep>,
    /// One size inside each cache level and one in main memory.
    #[serde(default)]
    pub levels: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SquareSweep {
    pub from: u64,
    pub to: u64,
    #[serde(default = "two")]
    pub factor: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmSweep {
    /// `bf16`, `fp8`, or `AxB` for mixed FP8 inputs (`fp8_e4m3xfp8_e5m2`).
    pub dtypes: Vec<String>,
    #[serde(default)]
    pub shapes: Option<Vec<String>>,
    #[serde(default)]
    pub square: Option<SquareSweep>,
    /// Model presets: every projection and MLP GEMM of a layer, at each of `tokens`.
    #[serde(default)]
    pub presets: Option<Vec<String>>,
    /// Token counts (M) for presets; default 1, 16, 64, 256, 1024, 4096, 16384.
    #[serde(default)]
    pub tokens: Option<Vec<u64>>,
    /// A maximum-achievable search over M x N x K ranges (`START:STOP:STEP` or lists).
    #[serde(default)]
    pub search: Option<GemmSearch>,
    /// Output type (default: the input type; bf16 for FP8 inputs).
    #[serde(default)]
    pub out_dtype: Option<String>,
    /// FP8 fast accumulation (default off).
    #[serde(default)]
    pub fast_accum: Option<bool>,
    /// GPU library workspace (`64M`; default: the backend's).
    #[serde(default)]
    pub workspace: Option<String>,
    /// Heuristic algorithms to time per shape (default: the backend's, 8 on cuBLASLt).
    #[serde(default)]
    pub algorithms: Option<u32>,
}

/// mamf-finder's `--m_range/--n_range/--k_range`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmSearch {
    pub m: String,
    pub n: String,
    pub k: String,
    /// Refuse searches larger than this many shapes (default 4096).
    #[serde(default)]
    pub max_shapes: Option<usize>,
}

/// M, N, K and the preset label (if any) of one planned GEMM shape.
type LabelledShape = (u64, u64, u64, Option<String>);

/// Every shape a `[[gemm]]` entry names, with the preset label where there is one.
fn gemm_shapes(g: &GemmSweep) -> Result<Vec<LabelledShape>, String> {
    let mut shapes = Vec::new();
    for (j, s) in g.shapes.iter().flatten().enumerate() {
        let (m, n, k) = GemmCase::parse_shape(s).map_err(|e| format!(".shapes[{j}]: {e}"))?;
        shapes.push((m, n, k, None));
    }
    if let Some(sq) = &g.square {
        if sq.from == 0 || sq.to < sq.from || sq.factor.is_nan() || sq.factor <= 1.0 {
            return Err(".square: needs 1 <= from <= to and factor > 1".into());
        }
        for d in geometric_sweep(sq.from, sq.to, sq.factor) {
            shapes.push((d, d, d, None));
        }
    }
    let tokens = g
        .tokens
        .clone()
        .unwrap_or_else(|| crate::gemm_shapes::DEFAULT_TOKENS.to_vec());
    if tokens.contains(&0) {
        return Err(".tokens: token counts start at 1".into());
    }
    for (j, p) in g.presets.iter().flatten().enumerate() {
        let model = crate::gemm_shapes::model(p).map_err(|e| format!(".presets[{j}]: {e}"))?;
        for &t in &tokens {
            for s in crate::gemm_shapes::layer_gemms(model, t) {
                shapes.push((s.m, s.n, s.k, Some(format!("{} M={t}", s.label))));
            }
        }
    }
    if let Some(sr) = &g.search {
        let dim = |what: &str, v: &str| {
            crate::gemm_shapes::parse_dim_range(v).map_err(|e| format!(".search.{what}: {e}"))
        };
        let grid = crate::gemm_shapes::search_grid(
            &dim("m", &sr.m)?,
            &dim("n", &sr.n)?,
            &dim("k", &sr.k)?,
            sr.max_shapes.unwrap_or(4096),
        )
        .map_err(|e| format!(".search: {e}"))?;
        shapes.extend(
            grid.into_iter()
                .map(|(m, n, k)| (m, n, k, Some("search".to_string()))),
        );
    }
    if shapes.is_empty() {
        return Err(": give shapes = [\"MxNxK\", ...], square = { from, to }, presets = [\"llama-3-8b\", ...] or search = { m, n, k }".into());
    }
    Ok(shapes)
}

/// The GEMM cases of one `[[gemm]]` entry.
fn gemm_cases(g: &GemmSweep) -> Result<Vec<Case>, String> {
    if g.dtypes.is_empty() {
        return Err(".dtypes: list at least one data type".into());
    }
    let shapes = gemm_shapes(g)?;
    let out_dtype = g
        .out_dtype
        .as_deref()
        .map(Dtype::parse)
        .transpose()
        .map_err(|e| format!(".out_dtype: {e}"))?;
    let workspace = g
        .workspace
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|e| format!(".workspace: {e}"))?;
    if g.algorithms == Some(0) {
        return Err(".algorithms: time at least 1 algorithm".into());
    }
    let mut cases = Vec::new();
    for (j, d) in g.dtypes.iter().enumerate() {
        let (a, b) = GemmCase::parse_types(d).map_err(|e| format!(".dtypes[{j}]: {e}"))?;
        for (m, n, k, label) in &shapes {
            let mut c = GemmCase::new(*m, *n, *k, a);
            c.b_dtype = b;
            c.out_dtype = out_dtype;
            c.label = label.clone();
            c.fast_accum = g.fast_accum.unwrap_or(false);
            c.workspace = workspace;
            c.algorithms = g.algorithms;
            cases.push(Case::Gemm(c));
        }
    }
    Ok(cases)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(u64),
    Many(Vec<u64>),
}

impl OneOrMany {
    fn values(&self) -> Vec<u64> {
        match self {
            OneOrMany::One(v) => vec![*v],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionSweep {
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    pub phase: String,
    #[serde(default)]
    pub causal: Option<bool>,
    #[serde(default)]
    pub batch: Option<OneOrMany>,
    #[serde(default)]
    pub q_len: Option<OneOrMany>,
    #[serde(default)]
    pub kv_len: Option<OneOrMany>,
    #[serde(default)]
    pub q_heads: Option<u64>,
    #[serde(default)]
    pub kv_heads: Option<u64>,
    #[serde(default)]
    pub head_dim: Option<u64>,
    #[serde(default)]
    pub head_dim_qk: Option<u64>,
    #[serde(default)]
    pub head_dim_v: Option<u64>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub kv_dtype: Option<String>,
    /// Paged KV cache with this page size; contiguous when absent.
    #[serde(default)]
    pub page_size: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveSweep {
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    #[serde(default)]
    pub min_bytes: Option<String>,
    #[serde(default)]
    pub max_bytes: Option<String>,
    #[serde(default)]
    pub step_factor: Option<f64>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub reduce: Option<String>,
    #[serde(default)]
    pub in_place: Option<bool>,
    /// Ranks in the communicator; defaults to every device of the backend.
    #[serde(default)]
    pub ranks: Option<u32>,
}

/// A suite as written in TOML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub settings: SettingsOverride,
    #[serde(default)]
    pub memory: Vec<MemorySweep>,
    #[serde(default)]
    pub gemm: Vec<GemmSweep>,
    #[serde(default)]
    pub attention: Vec<AttentionSweep>,
    #[serde(default)]
    pub collective: Vec<CollectiveSweep>,
}

/// Cases planned for one device, with notes about adjustments made (sizes capped).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub cases: Vec<Case>,
    pub notes: Vec<String>,
}

/// What the planner needs to know about where the cases will run.
#[derive(Clone, Debug)]
pub struct PlanTarget<'a> {
    pub device: &'a DeviceInfo,
    /// Bytes the largest memory case may use (a fraction of free memory).
    pub memory_budget: u64,
    /// Devices available for collectives.
    pub device_count: u32,
}

impl Suite {
    /// Parses and fully validates a suite file; the error names the file and field.
    pub fn parse(file: &str, text: &str) -> Result<Suite, String> {
        let suite: Suite = toml::from_str(text)
            .map_err(|e| format!("suite file {file}: {}", one_line(&e.to_string())))?;
        suite
            .validate()
            .map_err(|e| format!("suite file {file}: {e}"))?;
        Ok(suite)
    }

    pub fn profile(name: &str) -> Result<Suite, String> {
        let (_, text) = PROFILES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            format!("'{name}' is not a profile: choose from quick, standard, full")
        })?;
        Suite::parse(&format!("profile {name}"), text)
    }

    /// Checks every field can be turned into cases, independent of the device.
    pub fn validate(&self) -> Result<(), String> {
        let mut s = RunSettings::default();
        self.settings.apply(&mut s);
        s.validate().map_err(|e| format!("settings: {e}"))?;
        if self.memory.is_empty()
            && self.gemm.is_empty()
            && self.attention.is_empty()
            && self.collective.is_empty()
        {
            return Err("the suite has no [[memory]], [[gemm]], [[attention]] or [[collective]] entries, so there is nothing to run".into());
        }
        for (i, m) in self.memory.iter().enumerate() {
            let at = format!("memory[{i}]");
            let ops = memory_ops(m).map_err(|e| format!("{at}.ops: {e}"))?;
            memory_dtype(m).map_err(|e| format!("{at}.dtype: {e}"))?;
            let ways =
                m.sizes.is_some() as u8 + m.sweep.is_some() as u8 + (m.levels == Some(true)) as u8;
            // Shared-memory kernels size themselves from the device: no sizes needed.
            let sizeless = ops.iter().all(|op| op.is_shared_memory());
            if ways != 1 && !(sizeless && ways == 0) {
                return Err(format!(
                    "{at}: give exactly one of sizes, sweep or levels = true"
                ));
            }
            if let Some(sizes) = &m.sizes {
                for (j, s) in sizes.iter().enumerate() {
                    parse_size(s).map_err(|e| format!("{at}.sizes[{j}]: {e}"))?;
                }
            }
            if let Some(sw) = &m.sweep {
                let from = parse_size(&sw.from).map_err(|e| format!("{at}.sweep.from: {e}"))?;
                if sw.to != "auto" && sw.to != "max" {
                    let to = parse_size(&sw.to).map_err(|e| {
                        format!("{at}.sweep.to: give \"auto\" (past the last cache), \"max\" (as large as memory allows) or a size; {e}")
                    })?;
                    if to < from {
                        return Err(format!(
                            "{at}.sweep: to ({}) is smaller than from ({})",
                            sw.to, sw.from
                        ));
                    }
                }
                if !(sw.factor > 1.0 && sw.factor <= 16.0) {
                    return Err(format!(
                        "{at}.sweep.factor: must be greater than 1 and at most 16, got {}",
                        sw.factor
                    ));
                }
            }
        }
        for (i, g) in self.gemm.iter().enumerate() {
            gemm_cases(g).map_err(|e| format!("gemm[{i}]{e}"))?;
        }
        for (i, a) in self.attention.iter().enumerate() {
            attention_cases(a).map_err(|e| format!("attention[{i}]{e}"))?;
        }
        for (i, c) in self.collective.iter().enumerate() {
            collective_cases(c, 8).map_err(|e| format!("collective[{i}]{e}"))?;
        }
        Ok(())
    }

    pub fn settings(&self) -> RunSettings {
        let mut s = RunSettings::default();
        self.settings.apply(&mut s);
        s
    }

    /// Turns the suite into cases for one device.
    pub fn plan(&self, target: &PlanTarget) -> Result<Plan, String> {
        let mut plan = Plan::default();
        let on_host = target.device.backend == "host";
        let mut gpu_only_dropped = Vec::new();
        for m in &self.memory {
            let ops = memory_ops(m)?;
            let dtype = memory_dtype(m)?;
            let sizes = memory_sizes(m, target.device, target.memory_budget)?;
            let (mut dropped, mut considered) = (0usize, 0usize);
            for &op in &ops {
                if op.gpu_only() && on_host {
                    gpu_only_dropped.push(op.name());
                    continue;
                }
                if op.is_shared_memory() {
                    // Sized from the device (blocks x shared memory per block), not the suite.
                    plan.cases.push(Case::Memory(MemoryCase {
                        op,
                        working_set: 0,
                        dtype,
                        peer: None,
                    }));
                    continue;
                }
                let peers: Vec<Option<u32>> = if op == MemoryOp::Peer {
                    (0..target.device_count)
                        .filter(|&p| p as usize != target.device.index)
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                if peers.is_empty() {
                    plan.notes.push(format!(
                        "peer copies need a second GPU; device {} has no peer, so they were not planned",
                        target.device.index
                    ));
                    continue;
                }
                for &ws in &sizes {
                    considered += 1;
                    if memory_footprint(op, ws) > target.memory_budget {
                        dropped += 1;
                        continue;
                    }
                    for &peer in &peers {
                        plan.cases.push(Case::Memory(MemoryCase {
                            op,
                            working_set: ws,
                            dtype,
                            peer,
                        }));
                    }
                }
            }
            if dropped > 0 {
                plan.notes.push(format!(
                    "memory sizes whose buffers exceed {} were dropped ({dropped} of {considered}): they exceed the memory this device can spare",
                    format_size(target.memory_budget),
                ));
            }
        }
        if !gpu_only_dropped.is_empty() {
            gpu_only_dropped.sort_unstable();
            gpu_only_dropped.dedup();
            plan.notes.push(format!(
                "the memory operations {} need a GPU backend and were not planned on the host",
                gpu_only_dropped.join(", ")
            ));
        }
        for (i, g) in self.gemm.iter().enumerate() {
            plan.cases
                .extend(gemm_cases(g).map_err(|e| format!("gemm[{i}]{e}"))?);
        }
        for a in &self.attention {
            plan.cases
                .extend(attention_cases(a).map_err(|e| format!("attention{e}"))?);
        }
        for c in &self.collective {
            plan.cases.extend(
                collective_cases(c, target.device_count.max(1))
                    .map_err(|e| format!("collective{e}"))?,
            );
        }
        Ok(plan)
    }
}

fn one_line(s: &str) -> String {
    // toml's errors span several lines (a snippet with a caret); keep them readable on one.
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

fn memory_ops(m: &MemorySweep) -> Result<Vec<MemoryOp>, String> {
    match &m.ops {
        None => Ok(MemoryOp::ALL.to_vec()),
        Some(ops) if ops.is_empty() => Err("list at least one memory operation (read, write, copy, triad, smem, ce_copy, h2d, ...)".into()),
        Some(ops) => ops.iter().map(|o| MemoryOp::parse(o)).collect(),
    }
}

fn memory_dtype(m: &MemorySweep) -> Result<Dtype, String> {
    let d = Dtype::parse(m.dtype.as_deref().unwrap_or("f64"))?;
    if !matches!(d, Dtype::F64 | Dtype::F32) {
        return Err(format!(
            "memory kernels run on f64 or f32 elements, not {d}"
        ));
    }
    Ok(d)
}

/// Device memory a memory case allocates: the streaming arrays (the working set), or the
/// copy buffers (a device-local copy and a bidirectional transfer hold two of them).
fn memory_footprint(op: MemoryOp, working_set: u64) -> u64 {
    match op {
        MemoryOp::CeCopy | MemoryOp::Bidir => working_set.saturating_mul(2),
        _ => working_set,
    }
}

/// `to = "auto"` ends well past the last cache; `to = "max"` at the memory budget (most of
/// free device memory on a GPU), so the sweep shows the HBM plateau out to the end.
fn memory_sizes(m: &MemorySweep, device: &DeviceInfo, budget: u64) -> Result<Vec<u64>, String> {
    let levels = &device.memory_levels;
    let last_cache = levels
        .iter()
        .rev()
        .nth(1)
        .map(|l| l.bytes)
        .unwrap_or(32 << 20);
    // Main memory measured well past the last cache (8x), and never below 256 MiB.
    let main = (last_cache * 8).max(256 << 20);
    if let Some(sizes) = &m.sizes {
        return sizes.iter().map(|s| parse_size(s)).collect();
    }
    if let Some(sw) = &m.sweep {
        let from = parse_size(&sw.from)?;
        let to = match sw.to.as_str() {
            "auto" => main,
            "max" => budget,
            other => parse_size(other)?,
        };
        let mut sizes = geometric_sweep(from, to, sw.factor);
        // "max" always ends at the budget itself, so the plateau is measured out to the end.
        if sw.to == "max" && sizes.last().is_some_and(|&l| l < to) {
            sizes.push(to);
        }
        return Ok(sizes);
    }
    if m.levels != Some(true) {
        return Ok(Vec::new()); // a shared-memory-only entry: sized by the device
    }
    // levels = true: half of each cache level's capacity, then main memory.
    let mut out: Vec<u64> = levels
        .iter()
        .take(levels.len().saturating_sub(1))
        .map(|l| (l.bytes / 2).max(4096))
        .collect();
    out.push(main);
    out.dedup();
    Ok(out)
}

fn attention_cases(a: &AttentionSweep) -> Result<Vec<Case>, String> {
    let phase = AttentionPhase::parse(&a.phase).map_err(|e| format!(".phase: {e}"))?;
    let preset = a
        .preset
        .as_deref()
        .map(attention_preset)
        .transpose()
        .map_err(|e| format!(".preset: {e}"))?;
    let variant = match (&a.variant, preset) {
        (Some(v), _) => AttentionVariant::parse(v).map_err(|e| format!(".variant: {e}"))?,
        (None, Some(p)) if phase == AttentionPhase::Prefill && p.prefill.is_some() => {
            AttentionVariant::Mha
        }
        (None, Some(p)) => p.variant,
        (None, None) => return Err(": give variant (mha, gqa, mla) or a model preset".into()),
    };
    let (mut q_heads, mut kv_heads, mut dqk, mut dv) = match preset {
        Some(p) => match (phase, p.prefill) {
            (AttentionPhase::Prefill, Some(pre)) => {
                (Some(pre.0), Some(pre.1), Some(pre.2), Some(pre.3))
            }
            _ => (
                Some(p.q_heads),
                Some(p.kv_heads),
                Some(p.head_dim_qk),
                Some(p.head_dim_v),
            ),
        },
        None => (None, None, None, None),
    };
    q_heads = a.q_heads.or(q_heads);
    kv_heads = a.kv_heads.or(kv_heads).or(match variant {
        AttentionVariant::Mha => q_heads,
        AttentionVariant::Mla => Some(1),
        AttentionVariant::Gqa => None,
    });
    dqk = a
        .head_dim_qk
        .or(a.head_dim)
        .or(dqk)
        .or((variant == AttentionVariant::Mla).then_some(576));
    dv = a.head_dim_v.or(a.head_dim).or(dv).or(match variant {
        AttentionVariant::Mla => Some(512),
        _ => dqk,
    });
    let need = |v: Option<u64>, name: &str| {
        v.ok_or_else(|| format!(".{name}: missing (give it, or a preset)"))
    };
    let (q_heads, kv_heads, dqk, dv) = (
        need(q_heads, "q_heads")?,
        need(kv_heads, "kv_heads")?,
        need(dqk, "head_dim")?,
        need(dv, "head_dim_v")?,
    );
    let dtype =
        Dtype::parse(a.dtype.as_deref().unwrap_or("bf16")).map_err(|e| format!(".dtype: {e}"))?;
    if !matches!(dtype, Dtype::Bf16 | Dtype::F16 | Dtype::F32) {
        return Err(format!(
            ".dtype: attention runs in bf16, f16 or f32, not {dtype}"
        ));
    }
    let kv_dtype = a
        .kv_dtype
        .as_deref()
        .map(Dtype::parse)
        .transpose()
        .map_err(|e| format!(".kv_dtype: {e}"))?;
    let kv_layout = match a.page_size {
        Some(p) => KvLayout::Paged { page_size: p },
        None => KvLayout::Contiguous,
    };
    let batches = a.batch.as_ref().map(|b| b.values()).unwrap_or(vec![1]);
    let kv_lens = a
        .kv_len
        .as_ref()
        .map(|b| b.values())
        .ok_or(".kv_len: missing")?;
    let q_lens = match phase {
        AttentionPhase::Decode => {
            if a.q_len.as_ref().is_some_and(|q| q.values() != vec![1]) {
                return Err(".q_len: decode has q_len 1; leave it out".into());
            }
            vec![1]
        }
        AttentionPhase::Prefill => a.q_len.as_ref().map(|q| q.values()).unwrap_or_default(),
    };
    let causal = a.causal.unwrap_or(phase == AttentionPhase::Prefill);
    let mut out = Vec::new();
    for &batch in &batches {
        for &kv_len in &kv_lens {
            // Prefill without q_len: self-attention over the whole prompt (q_len = kv_len).
            let qs = if q_lens.is_empty() {
                vec![kv_len]
            } else {
                q_lens.clone()
            };
            for &q_len in &qs {
                let case = AttentionCase {
                    variant,
                    phase,
                    causal: causal && phase == AttentionPhase::Prefill,
                    batch,
                    q_len,
                    kv_len,
                    q_heads,
                    kv_heads,
                    head_dim_qk: dqk,
                    head_dim_v: dv,
                    dtype,
                    kv_dtype,
                    kv_layout,
                    model: preset.map(|p| p.name.to_string()),
                };
                case.validate().map_err(|e| format!(": {e}"))?;
                out.push(Case::Attention(case));
            }
        }
    }
    Ok(out)
}

pub fn collective_cases(c: &CollectiveSweep, ranks_default: u32) -> Result<Vec<Case>, String> {
    let ops: Vec<CollectiveOp> = match &c.ops {
        None => vec![CollectiveOp::AllReduce],
        Some(ops) => ops
            .iter()
            .map(|o| CollectiveOp::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| format!(".ops: {e}"))?,
    };
    let min = parse_size(c.min_bytes.as_deref().unwrap_or("32K"))
        .map_err(|e| format!(".min_bytes: {e}"))?;
    let max = parse_size(c.max_bytes.as_deref().unwrap_or("16G"))
        .map_err(|e| format!(".max_bytes: {e}"))?;
    if max < min {
        return Err(format!(
            ".max_bytes: {} is smaller than min_bytes {}",
            format_size(max),
            format_size(min)
        ));
    }
    let factor = c.step_factor.unwrap_or(2.0);
    if factor.is_nan() || factor <= 1.0 {
        return Err(format!(
            ".step_factor: must be greater than 1, got {factor}"
        ));
    }
    let dtype =
        Dtype::parse(c.dtype.as_deref().unwrap_or("f32")).map_err(|e| format!(".dtype: {e}"))?;
    let reduce = match c.reduce.as_deref().unwrap_or("sum") {
        "sum" => ReduceOp::Sum,
        "prod" => ReduceOp::Prod,
        "max" => ReduceOp::Max,
        "min" => ReduceOp::Min,
        "avg" => ReduceOp::Avg,
        other => {
            return Err(format!(
                ".reduce: '{other}' is not a reduction: choose from sum, prod, max, min, avg"
            ))
        }
    };
    let ranks = c.ranks.unwrap_or(ranks_default);
    if ranks == 0 {
        return Err(".ranks: must be at least 1".into());
    }
    let mut out = Vec::new();
    for op in ops {
        for bytes in geometric_sweep(min, max, factor) {
            out.push(Case::Collective(CollectiveCase {
                op,
                bytes,
                dtype,
                reduce: op.reduces().then_some(reduce),
                ranks,
                in_place: c.in_place.unwrap_or(false),
                root: 0,
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryLevel;

    fn cpu() -> DeviceInfo {
        DeviceInfo {
            backend: "host".into(),
            name: "test cpu".into(),
            memory_levels: vec![
                MemoryLevel {
                    name: "L1d".into(),
                    bytes: 96 << 10,
                    detail: String::new(),
                },
                MemoryLevel {
                    name: "L2".into(),
                    bytes: 4 << 20,
                    detail: String::new(),
                },
                MemoryLevel {
                    name: "L3".into(),
                    bytes: 32 << 20,
                    detail: String::new(),
                },
                MemoryLevel {
                    name: "DRAM".into(),
                    bytes: 64 << 30,
                    detail: String::new(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn every_profile_parses_and_plans() {
        let dev = cpu();
        for (name, _) in PROFILES {
            let suite = Suite::profile(name).unwrap();
            let plan = suite
                .plan(&PlanTarget {
                    device: &dev,
                    memory_budget: 8 << 30,
                    device_count: 1,
                })
                .unwrap();
            assert!(!plan.cases.is_empty(), "{name}");
            for f in [Family::Memory, Family::Gemm, Family::Attention] {
                assert!(
                    plan.cases.iter().any(|c| c.family() == f),
                    "{name} has no {f} case"
                );
            }
        }
    }

    #[test]
    fn levels_put_one_size_in_each_cache_and_one_past_them() {
        let m = MemorySweep {
            ops: None,
            dtype: None,
            sizes: None,
            sweep: None,
            levels: Some(true),
        };
        let sizes = memory_sizes(&m, &cpu(), 1 << 40).unwrap();
        assert_eq!(sizes, vec![48 << 10, 2 << 20, 16 << 20, 256 << 20]);
        let dev = cpu();
        for (s, want) in sizes.iter().zip(["L1d", "L2", "L3", "DRAM"]) {
            assert_eq!(dev.level_for(*s).unwrap().name, want);
        }
    }

    #[test]
    fn oversized_memory_cases_are_dropped_with_a_note() {
        let suite = Suite::parse(
            "t.toml",
            "[[memory]]\nops = [\"copy\"]\nsizes = [\"1M\", \"64G\"]\n",
        )
        .unwrap();
        let dev = cpu();
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 1 << 30,
                device_count: 1,
            })
            .unwrap();
        assert_eq!(plan.cases.len(), 1);
        assert!(plan.notes[0].contains("dropped"), "{:?}", plan.notes);
    }

    fn gpu(index: usize) -> DeviceInfo {
        DeviceInfo {
            backend: "cuda".into(),
            index,
            name: "GPU".into(),
            memory_levels: vec![
                MemoryLevel {
                    name: "L2".into(),
                    bytes: 50 << 20,
                    detail: String::new(),
                },
                MemoryLevel {
                    name: "HBM".into(),
                    bytes: 80 << 30,
                    detail: String::new(),
                },
            ],
            ..DeviceInfo::default()
        }
    }

    const TRANSFERS: &str = "[[memory]]\nops = [\"smem\", \"smem_sm\"]\n[[memory]]\nops = [\"ce_copy\", \"h2d\", \"peer\"]\nsizes = [\"512M\", \"40G\"]\n";

    #[test]
    fn transfers_expand_to_every_peer_and_respect_each_footprint() {
        let suite = Suite::parse("t.toml", TRANSFERS).unwrap();
        let dev = gpu(1);
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 64 << 30,
                device_count: 4,
            })
            .unwrap();
        let labels: Vec<String> = plan
            .cases
            .iter()
            .map(|c| format!("{} {}", c.op_name(), c.shape_label()))
            .collect();
        assert_eq!(
            labels,
            [
                "smem shared memory",
                "smem_sm shared memory",
                "ce_copy 512 MiB copy",
                "h2d 512 MiB copy",
                "h2d 40 GiB copy",
                "peer ->0 512 MiB copy",
                "peer ->2 512 MiB copy",
                "peer ->3 512 MiB copy",
                "peer ->0 40 GiB copy",
                "peer ->2 40 GiB copy",
                "peer ->3 40 GiB copy",
            ]
        );
        // ce_copy at 40 GiB needs two 40 GiB buffers: more than the 64 GiB budget.
        assert!(
            plan.notes.iter().any(|n| n.contains("dropped (1 of 6)")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn gpu_only_operations_are_not_planned_on_the_host_and_a_lone_gpu_has_no_peers() {
        let suite = Suite::parse("t.toml", TRANSFERS).unwrap();
        let dev = cpu();
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 64 << 30,
                device_count: 1,
            })
            .unwrap();
        assert!(plan.cases.is_empty());
        assert!(
            plan.notes[0].contains("ce_copy, h2d, peer, smem, smem_sm need a GPU backend"),
            "{:?}",
            plan.notes
        );
        let dev = gpu(0);
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 64 << 30,
                device_count: 1,
            })
            .unwrap();
        assert!(plan.notes.iter().any(|n| n.contains("need a second GPU")));
        assert!(!plan.cases.iter().any(|c| c.op_name().starts_with("peer")));
    }

    #[test]
    fn a_sweep_to_max_ends_at_the_budget() {
        let suite = Suite::parse(
            "t.toml",
            "[[memory]]\nops = [\"triad\"]\nsweep = { from = \"1G\", to = \"max\", factor = 2.0 }\n",
        )
        .unwrap();
        let dev = gpu(0);
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 8 << 30,
                device_count: 1,
            })
            .unwrap();
        let sizes: Vec<String> = plan.cases.iter().map(|c| c.shape_label()).collect();
        assert_eq!(sizes, ["1 GiB f64", "2 GiB f64", "4 GiB f64", "8 GiB f64"]);
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 6 << 30,
                device_count: 1,
            })
            .unwrap();
        let sizes: Vec<String> = plan.cases.iter().map(|c| c.shape_label()).collect();
        assert_eq!(sizes, ["1 GiB f64", "2 GiB f64", "4 GiB f64", "6 GiB f64"]);
    }

    #[test]
    fn gemm_presets_searches_and_mixed_fp8_types_plan() {
        let suite = Suite::parse(
            "t.toml",
            "[[gemm]]\ndtypes = [\"fp8_e4m3xfp8_e5m2\", \"bf16\"]\npresets = [\"llama-3-8b\"]\ntokens = [1, 4096]\nout_dtype = \"bf16\"\nfast_accum = true\n\
             [[gemm]]\ndtypes = [\"bf16\"]\nsearch = { m = \"0:2048:1024\", n = \"4096\", k = \"1024,2048\" }\n",
        )
        .unwrap();
        let dev = gpu(0);
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 64 << 30,
                device_count: 1,
            })
            .unwrap();
        // 2 dtypes x 2 token counts x 5 GEMMs, then 2 x 1 x 2 search shapes.
        assert_eq!(plan.cases.len(), 20 + 4);
        let Case::Gemm(first) = &plan.cases[0] else {
            panic!()
        };
        assert_eq!(
            (first.dtype, first.b_dtype),
            (Dtype::Fp8E4m3, Some(Dtype::Fp8E5m2))
        );
        assert_eq!(first.out_dtype, Some(Dtype::Bf16));
        assert!(first.fast_accum);
        assert_eq!(plan.cases[0].op_name(), "fp8_e4m3xfp8_e5m2 fast-accum");
        assert_eq!(
            plan.cases[0].shape_label(),
            "1x6144x4096 (llama-3-8b qkv_proj M=1)"
        );
        let labels: Vec<String> = plan.cases[20..].iter().map(|c| c.shape_label()).collect();
        assert_eq!(
            labels,
            [
                "1024x4096x1024 (search)",
                "1024x4096x2048 (search)",
                "2048x4096x1024 (search)",
                "2048x4096x2048 (search)"
            ]
        );
        let err = Suite::parse(
            "t.toml",
            "[[gemm]]\ndtypes = [\"bf16\"]\nsearch = { m = \"1:20480:1\", n = \"1:20480:1\", k = \"4096\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("gemm[0].search: the search covers"), "{err}");
        let err = Suite::parse(
            "t.toml",
            "[[gemm]]\ndtypes = [\"bf16\"]\npresets = [\"gpt-5\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("gemm[0].presets[0]: 'gpt-5' is not a GEMM model preset"),
            "{err}"
        );
    }

    #[test]
    fn suite_errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("[[memory]]\nsizes = [\"1M\", \"4Q\"]\n", "memory[0].sizes[1]: '4Q' is not a size"),
            ("[[memory]]\nops = [\"triadd\"]\nlevels = true\n", "memory[0].ops: 'triadd' is not a memory operation"),
            ("[[memory]]\nlevels = true\nsizes = [\"1M\"]\n", "memory[0]: give exactly one of"),
            ("[[memory]]\nsizs = [\"1M\"]\n", "unknown field `sizs`"),
            ("[[memory]]\nops = [\"h2d\"]\n", "memory[0]: give exactly one of"),
            ("[[memory]]\nsweep = { from = \"1M\", to = \"most\" }\n", "memory[0].sweep.to: give \"auto\" (past the last cache), \"max\" (as large as memory allows) or a size; 'most' is not a size"),
            ("[[gemm]]\ndtypes = [\"bf17\"]\nshapes = [\"64x64x64\"]\n", "gemm[0].dtypes[0]: 'bf17' is not a data type"),
            ("[[gemm]]\ndtypes = [\"bf16\"]\nshapes = [\"64x64\"]\n", "gemm[0].shapes[0]"),
            ("[[attention]]\nvariant = \"gqa\"\nphase = \"prefill\"\nq_heads = 32\nkv_heads = 5\nhead_dim = 128\nkv_len = 512\n", "attention[0]: attention q_heads (32) must be a multiple of kv_heads (5)"),
            ("[[attention]]\npreset = \"llama-9\"\nphase = \"decode\"\nkv_len = 512\n", "attention[0].preset: 'llama-9' is not a model preset"),
            ("[[collective]]\nops = [\"allgatherv\"]\n", "collective[0].ops"),
            ("[settings]\nmin_samples = 1\n[[memory]]\nlevels = true\n", "settings: min_samples must be at least 3"),
            ("name = \"empty\"\n", "nothing to run"),
            ("[[memory]\n", "suite file t.toml"),
        ];
        for (text, want) in cases {
            let err = Suite::parse("t.toml", text).unwrap_err();
            assert!(
                err.contains(want),
                "for {text:?}\n got: {err}\nwant: {want}"
            );
            assert!(err.starts_with("suite file t.toml"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn presets_fill_attention_shapes() {
        let suite = Suite::parse(
            "t.toml",
            "[[attention]]\npreset = \"deepseek-v3\"\nphase = \"decode\"\nbatch = [1, 4]\nkv_len = [1024]\npage_size = 64\n\n[[attention]]\npreset = \"deepseek-v3\"\nphase = \"prefill\"\nkv_len = 512\n",
        )
        .unwrap();
        let dev = cpu();
        let plan = suite
            .plan(&PlanTarget {
                device: &dev,
                memory_budget: 1 << 30,
                device_count: 1,
            })
            .unwrap();
        assert_eq!(plan.cases.len(), 3);
        let Case::Attention(a) = &plan.cases[0] else {
            panic!()
        };
        assert_eq!(
            (
                a.variant,
                a.q_heads,
                a.kv_heads,
                a.head_dim_qk,
                a.head_dim_v
            ),
            (AttentionVariant::Mla, 128, 1, 576, 512)
        );
        assert_eq!(a.kv_layout, KvLayout::Paged { page_size: 64 });
        let Case::Attention(p) = &plan.cases[2] else {
            panic!()
        };
        assert_eq!(
            (
                p.variant,
                p.q_heads,
                p.kv_heads,
                p.head_dim_qk,
                p.head_dim_v,
                p.q_len,
                p.causal
            ),
            (AttentionVariant::Mha, 128, 128, 192, 128, 512, true)
        );
    }

    #[test]
    fn collective_sweeps_follow_nccl_tests_defaults() {
        let c = CollectiveSweep {
            ops: None,
            min_bytes: None,
            max_bytes: None,
            step_factor: None,
            dtype: None,
            reduce: None,
            in_place: None,
            ranks: None,
        };
        let cases = collective_cases(&c, 8).unwrap();
        assert_eq!(cases.len(), 20); // 32K .. 16G by 2
        let Case::Collective(first) = &cases[0] else {
            panic!()
        };
        assert_eq!(
            (first.bytes, first.ranks, first.reduce),
            (32 << 10, 8, Some(ReduceOp::Sum))
        );
    }
}
