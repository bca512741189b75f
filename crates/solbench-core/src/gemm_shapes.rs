//! GEMM shapes users care about: the projection and MLP GEMMs of today's LLMs at a given
//! token count (from each model's config.json, ../shared/reference/model_shapes.md), and
//! the Cartesian ranges of a maximum-achievable search (mamf-finder's `--m_range`).
//!
//! Convention: `M` = tokens (rows of the activations X), `N` = output features, `K` =
//! input features, so one layer GEMM is `X[M×K] · Wᵀ` with W stored `N×K` (nn.Linear).

/// The dimensions of a model that set its GEMM shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelGemms {
    pub name: &'static str,
    pub hidden: u64,
    /// Dense MLP width (0 when every MLP layer is a mixture of experts).
    pub intermediate: u64,
    pub q_heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
    /// Mixture of experts: (experts, experts per token, per-expert intermediate).
    pub moe: Option<(u64, u64, u64)>,
    /// Multi-head latent attention (DeepSeek-V3): (q_lora_rank, kv_lora_rank, qk_nope,
    /// qk_rope, v_head_dim); replaces the QKV/output projections.
    pub mla: Option<(u64, u64, u64, u64, u64)>,
}

/// Values from each model's config.json (model_shapes.md).
pub const MODELS: &[ModelGemms] = &[
    ModelGemms {
        name: "llama-3-8b",
        hidden: 4096,
        intermediate: 14336,
        q_heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 128_256,
        moe: None,
        mla: None,
    },
    ModelGemms {
        name: "llama-3-70b",
        hidden: 8192,
        intermediate: 28672,
        q_heads: 64,
        kv_heads: 8,
        head_dim: 128,
        vocab: 128_256,
        moe: None,
        mla: None,
    },
    ModelGemms {
        name: "llama-3.1-405b",
        hidden: 16384,
        intermediate: 53248,
        q_heads: 128,
        kv_heads: 8,
        head_dim: 128,
        vocab: 128_256,
        moe: None,
        mla: None,
    },
    ModelGemms {
        name: "mistral-7b",
        hidden: 4096,
        intermediate: 14336,
        q_heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 32_000,
        moe: None,
        mla: None,
    },
    ModelGemms {
        name: "qwen3-235b",
        hidden: 4096,
        intermediate: 0,
        q_heads: 64,
        kv_heads: 4,
        head_dim: 128,
        vocab: 151_936,
        moe: Some((128, 8, 1536)),
        mla: None,
    },
    ModelGemms {
        name: "deepseek-v3",
        hidden: 7168,
        intermediate: 18432,
        q_heads: 128,
        kv_heads: 128,
        head_dim: 128,
        vocab: 129_280,
        moe: Some((256, 8, 2048)),
        mla: Some((1536, 512, 128, 64, 128)),
    },
    ModelGemms {
        name: "gpt-oss-120b",
        hidden: 2880,
        intermediate: 0,
        q_heads: 64,
        kv_heads: 8,
        head_dim: 64,
        vocab: 201_088,
        moe: Some((128, 4, 2880)),
        mla: None,
    },
];

/// Token counts of the default preset sweep: decode batches (1..256) and prefill chunks
/// (512..16384), as model_shapes.md suggests.
pub const DEFAULT_TOKENS: &[u64] = &[1, 16, 64, 256, 1024, 4096, 16384];

pub fn model(name: &str) -> Result<&'static ModelGemms, String> {
    let want = name.trim().to_ascii_lowercase();
    MODELS.iter().find(|m| m.name == want).ok_or_else(|| {
        format!(
            "'{name}' is not a GEMM model preset: choose from {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// One GEMM of a model layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedGemm {
    /// `llama-3-8b qkv_proj`.
    pub label: String,
    pub m: u64,
    pub n: u64,
    pub k: u64,
}

/// The GEMMs of one decoder layer (plus the LM head) of `model` with `tokens` tokens in the
/// batch. A mixture-of-experts layer contributes one expert's GEMMs at the average tokens
/// per expert, `ceil(tokens · top_k / experts)` (a grouped GEMM runs many of these).
pub fn layer_gemms(model: &ModelGemms, tokens: u64) -> Vec<NamedGemm> {
    let mut out = Vec::new();
    let mut push = |what: &str, m: u64, n: u64, k: u64| {
        out.push(NamedGemm {
            label: format!("{} {what}", model.name),
            m,
            n,
            k,
        })
    };
    let (h, t) = (model.hidden, tokens.max(1));
    match model.mla {
        Some((q_lora, kv_lora, nope, rope, v)) => {
            let heads = model.q_heads;
            push("q_a_proj", t, q_lora, h);
            push("q_b_proj", t, heads * (nope + rope), q_lora);
            push("kv_a_proj", t, kv_lora + rope, h);
            push("kv_b_proj", t, heads * (nope + v), kv_lora);
            push("o_proj", t, h, heads * v);
        }
        None => {
            let d = model.head_dim;
            push("qkv_proj", t, (model.q_heads + 2 * model.kv_heads) * d, h);
            push("o_proj", t, h, model.q_heads * d);
        }
    }
    if model.intermediate > 0 {
        push("gate_up_proj", t, 2 * model.intermediate, h);
        push("down_proj", t, h, model.intermediate);
    }
    if let Some((experts, top_k, inter)) = model.moe {
        let per_expert = (t * top_k).div_ceil(experts).max(1);
        push("expert.gate_up_proj", per_expert, 2 * inter, h);
        push("expert.down_proj", per_expert, h, inter);
    }
    push("lm_head", t, model.vocab, h);
    out
}

/// `start:stop:step` (inclusive of stop when it lands on a step) or a comma list.
pub fn parse_dim_range(text: &str) -> Result<Vec<u64>, String> {
    let t = text.trim();
    let bad = || {
        format!("'{t}' is not a dimension range: write START:STOP:STEP (for example 256:20480:256) or a list like 1024,2048")
    };
    if t.contains(':') {
        let parts: Vec<u64> = t
            .split(':')
            .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [start, stop, step] = parts[..] else {
            return Err(bad());
        };
        if step == 0 || stop < start {
            return Err(format!("'{t}': needs START <= STOP and STEP > 0"));
        }
        // mamf-finder's ranges start at 0, which is no GEMM: begin at the first step.
        let first = if start == 0 { step } else { start };
        let v: Vec<u64> = (first..=stop).step_by(step as usize).collect();
        if v.is_empty() {
            return Err(format!("'{t}' contains no dimension above 0"));
        }
        return Ok(v);
    }
    t.split(',')
        .map(|p| match p.trim().parse::<u64>() {
            Ok(0) | Err(_) => Err(bad()),
            Ok(v) => Ok(v),
        })
        .collect()
}

/// The search grid: every (M, N, K) of the three ranges, capped so a typo cannot plan a
/// week of work.
pub fn search_grid(
    m: &[u64],
    n: &[u64],
    k: &[u64],
    cap: usize,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let total = m.len().saturating_mul(n.len()).saturating_mul(k.len());
    if total > cap {
        return Err(format!(
            "the search covers {total} shapes ({} x {} x {}), more than the {cap} allowed; use larger steps",
            m.len(),
            n.len(),
            k.len()
        ));
    }
    let mut out = Vec::with_capacity(total);
    for &a in m {
        for &b in n {
            for &c in k {
                out.push((a, b, c));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(name: &str, t: u64) -> Vec<(String, u64, u64, u64)> {
        layer_gemms(model(name).unwrap(), t)
            .into_iter()
            .map(|g| (g.label, g.m, g.n, g.k))
            .collect()
    }

    #[test]
    fn llama_3_8b_layer_by_hand() {
        // QKV: (32 + 2*8) * 128 = 6144; MLP 2 * 14336 = 28672.
        assert_eq!(
            shapes("llama-3-8b", 4096),
            [
                ("llama-3-8b qkv_proj".to_string(), 4096, 6144, 4096),
                ("llama-3-8b o_proj".to_string(), 4096, 4096, 4096),
                ("llama-3-8b gate_up_proj".to_string(), 4096, 28672, 4096),
                ("llama-3-8b down_proj".to_string(), 4096, 4096, 14336),
                ("llama-3-8b lm_head".to_string(), 4096, 128_256, 4096),
            ]
        );
    }

    #[test]
    fn moe_and_mla_models_by_hand() {
        // Qwen3-235B: QKV (64 + 8) * 128 = 9216; 4096 tokens x top-8 / 128 experts = 256.
        let q = shapes("qwen3-235b", 4096);
        assert_eq!(q[0], ("qwen3-235b qkv_proj".into(), 4096, 9216, 4096));
        assert_eq!(q[1], ("qwen3-235b o_proj".into(), 4096, 4096, 8192));
        assert_eq!(
            q[2],
            ("qwen3-235b expert.gate_up_proj".into(), 256, 3072, 4096)
        );
        assert_eq!(
            q[3],
            ("qwen3-235b expert.down_proj".into(), 256, 4096, 1536)
        );
        // DeepSeek-V3 MLA: q_b 128 * 192 = 24576 from 1536; kv_a 512 + 64 = 576;
        // kv_b 128 * 256 = 32768 from 512; o 7168 from 128 * 128; 1 token -> 1 per expert.
        let d = shapes("deepseek-v3", 1);
        let by = |what: &str| d.iter().find(|s| s.0.ends_with(what)).unwrap().clone();
        assert_eq!(
            by(" q_a_proj"),
            ("deepseek-v3 q_a_proj".into(), 1, 1536, 7168)
        );
        assert_eq!(
            by("q_b_proj"),
            ("deepseek-v3 q_b_proj".into(), 1, 24576, 1536)
        );
        assert_eq!(
            by("kv_a_proj"),
            ("deepseek-v3 kv_a_proj".into(), 1, 576, 7168)
        );
        assert_eq!(
            by("kv_b_proj"),
            ("deepseek-v3 kv_b_proj".into(), 1, 32768, 512)
        );
        assert_eq!(by(" o_proj"), ("deepseek-v3 o_proj".into(), 1, 7168, 16384));
        assert_eq!(
            by(" gate_up_proj"),
            ("deepseek-v3 gate_up_proj".into(), 1, 36864, 7168)
        );
        assert_eq!(
            by("expert.down_proj"),
            ("deepseek-v3 expert.down_proj".into(), 1, 7168, 2048)
        );
        // gpt-oss-120b: QKV (64 + 16) * 64 = 5120 from 2880; o from 64 * 64 = 4096.
        let g = shapes("gpt-oss-120b", 16);
        assert_eq!(g[0], ("gpt-oss-120b qkv_proj".into(), 16, 5120, 2880));
        assert_eq!(g[1], ("gpt-oss-120b o_proj".into(), 16, 2880, 4096));
        assert_eq!(
            g[2],
            ("gpt-oss-120b expert.gate_up_proj".into(), 1, 5760, 2880)
        );
        assert!(model("llama-9").unwrap_err().contains("llama-3-8b"));
    }

    #[test]
    fn ranges_and_grids() {
        assert_eq!(
            parse_dim_range("0:1024:256").unwrap(),
            [256, 512, 768, 1024]
        );
        assert_eq!(parse_dim_range("256:1000:256").unwrap(), [256, 512, 768]);
        assert_eq!(parse_dim_range("4096").unwrap(), [4096]);
        assert_eq!(parse_dim_range("1024, 2048").unwrap(), [1024, 2048]);
        for bad in ["1:2", "a:b:c", "10:5:1", "0", "1:10:0", "x"] {
            assert!(parse_dim_range(bad).is_err(), "{bad}");
        }
        let g = search_grid(&[1, 2], &[3], &[4, 5], 100).unwrap();
        assert_eq!(g, [(1, 3, 4), (1, 3, 5), (2, 3, 4), (2, 3, 5)]);
        let e = search_grid(&[1; 10], &[1; 10], &[1; 10], 999).unwrap_err();
        assert!(e.contains("1000 shapes"), "{e}");
    }
}
