//! Attention shapes of today's models, from their config files
//! (../shared/reference/attention.md §6, model_shapes.md).

use crate::case::AttentionVariant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionPreset {
    pub name: &'static str,
    pub variant: AttentionVariant,
    pub q_heads: u64,
    pub kv_heads: u64,
    pub head_dim_qk: u64,
    pub head_dim_v: u64,
    /// Prefill shape when it differs (DeepSeek MLA prefill runs un-absorbed, MHA-style).
    pub prefill: Option<(u64, u64, u64, u64)>,
}

pub const ATTENTION_PRESETS: [AttentionPreset; 7] = [
    AttentionPreset {
        name: "llama-3-8b",
        variant: AttentionVariant::Gqa,
        q_heads: 32,
        kv_heads: 8,
        head_dim_qk: 128,
        head_dim_v: 128,
        prefill: None,
    },
    AttentionPreset {
        name: "llama-3-70b",
        variant: AttentionVariant::Gqa,
        q_heads: 64,
        kv_heads: 8,
        head_dim_qk: 128,
        head_dim_v: 128,
        prefill: None,
    },
    AttentionPreset {
        name: "llama-3.1-405b",
        variant: AttentionVariant::Gqa,
        q_heads: 128,
        kv_heads: 8,
        head_dim_qk: 128,
        head_dim_v: 128,
        prefill: None,
    },
    AttentionPreset {
        name: "qwen3-235b",
        variant: AttentionVariant::Gqa,
        q_heads: 64,
        kv_heads: 4,
        head_dim_qk: 128,
        head_dim_v: 128,
        prefill: None,
    },
    AttentionPreset {
        name: "mistral-7b",
        variant: AttentionVariant::Gqa,
        q_heads: 32,
        kv_heads: 8,
        head_dim_qk: 128,
        head_dim_v: 128,
        prefill: None,
    },
    AttentionPreset {
        name: "gpt-oss-120b",
        variant: AttentionVariant::Gqa,
        q_heads: 64,
        kv_heads: 8,
        head_dim_qk: 64,
        head_dim_v: 64,
        prefill: None,
    },
    // Absorbed decode: one 576-dim latent head (512 c_KV + 64 rope) shared by 128 heads, V = first 512.
    // Prefill: MHA mode, q/k head dim 128 + 64 = 192, v 128, 128 heads.
    AttentionPreset {
        name: "deepseek-v3",
        variant: AttentionVariant::Mla,
        q_heads: 128,
        kv_heads: 1,
        head_dim_qk: 576,
        head_dim_v: 512,
        prefill: Some((128, 128, 192, 128)),
    },
];

pub fn attention_preset(name: &str) -> Result<&'static AttentionPreset, String> {
    let n = name.trim().to_ascii_lowercase();
    ATTENTION_PRESETS
        .iter()
        .find(|p| p.name == n)
        .ok_or_else(|| {
            format!(
                "'{}' is not a model preset: choose from {}",
                name.trim(),
                ATTENTION_PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
