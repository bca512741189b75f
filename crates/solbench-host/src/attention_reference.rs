//! Host reference implementation of scaled-dot-product attention.
//!
//! This module has two jobs:
//!
//! 1. It is a **timed CPU workload**. [`attention_forward`] is a FlashAttention-2 style
//!    tiled forward pass with an online softmax, parallelised with rayon. Its inner loops run
//!    over contiguous `f32` slices, so LLVM vectorises them.
//! 2. It is the **oracle** that GPU kernels are checked against. There are three ways to
//!    compute the same thing:
//!    - [`attention_forward`]: tiled, online softmax.
//!    - [`attention_split_kv`]: flash-decoding, i.e. partials per KV chunk, then
//!      [`combine_splits`].
//!    - [`attention_naive_f64`]: materialised scores in `f64`, obviously correct, slow.
//!
//!    The tests at the bottom check these against each other. [`compare`] turns a
//!    GPU-vs-oracle check into numbers.
//!
//! # Layouts (row-major, "BSHD")
//!
//! | tensor | layout |
//! |---|---|
//! | Q   | `[batch][q_len][q_heads][head_dim_qk]` |
//! | K   | `[batch][kv_len][kv_heads][head_dim_qk]` |
//! | V   | `[batch][kv_len][kv_heads][head_dim_v]` |
//! | O   | `[batch][q_len][q_heads][head_dim_v]` |
//! | LSE | `[batch][q_heads][q_len]` (natural log of the sum of `exp(scaled score)`) |
//!
//! Split-KV partials use the layout the GPU combine kernel also uses. It is head-major so that
//! one (split, batch, head) is contiguous:
//! - `o_partial`: `[num_splits][batch][q_heads][q_len][head_dim_v]`
//! - `lse_partial`: `[num_splits][batch][q_heads][q_len]`
//!
//! # Semantics
//!
//! - **GQA / MQA / MHA.** Query head `h` reads KV head `h / (q_heads / kv_heads)`.
//! - **MLA, absorbed decode.** This is MQA with `kv_heads = 1`, `head_dim_qk = 576` and
//!   `head_dim_v = 512`, where V is the first 512 dims of each K row. Use
//!   [`mla_values_from_latent`] to build that V view.
//! - **Causal masking** is bottom-right aligned, as in FlashAttention: query row `i` may attend
//!   key `j` iff `j <= i + (kv_len - q_len)`. So the last query row always sees every key,
//!   which is what decode with a KV cache needs.
//!   - When `q_len > kv_len`, the first `q_len - kv_len` rows see no key at all. Their output
//!     is defined as zeros and their LSE as `-inf`. This is FlashAttention's convention, and it
//!     is also what the split-KV combine needs: an empty chunk has weight `exp(-inf) = 0`.
//!
//! # Numerics
//!
//! - All fast paths compute in `f32`. Callers that model BF16/FP16 inputs round them to
//!   representable values first.
//! - In the tests (`kv_len` ≤ 50, inputs uniform in [-1, 1)), the `f32` paths match
//!   [`attention_naive_f64`] to within about 5e-7 absolute, for O and LSE alike. The tests
//!   assert `2e-6 + 2e-5·|x|`. The error grows slowly with `kv_len` and the head dimension,
//!   because it comes from `f32` summation.
//! - Inputs are expected to be finite. The softmax scale is applied to the `f32` dot product,
//!   as FlashAttention applies it to the fp32 accumulator.
//!
//! # Errors and panics
//!
//! - [`AttentionShape::validate`] and [`AttentionShape::validate_inputs`] return `Err` with a
//!   sentence naming the offending field or tensor and both lengths.
//! - The compute functions call them up front and **panic with that sentence** on invalid
//!   input. Callers that take shapes from users should call `validate_inputs` first.

use rayon::prelude::*;
use std::fmt;
use std::ops::Range;

/// KV tile length used by [`attention_split_kv`] and [`attention_partials`]. It is also a sensible
/// default for [`attention_forward`]: 64 keys × 128 dims × 4 B = 32 KiB of K per tile, which
/// stays in L1/L2 while a block of query rows is scored against it.
pub const DEFAULT_KV_TILE: usize = 64;

/// Problem size of one attention call. See the module docs for the layouts and the masking rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Number of independent sequences.
    pub batch: usize,
    /// Query rows per sequence: 1 for decode, the prompt length for prefill.
    pub q_len: usize,
    /// Keys (and values) per sequence, i.e. the KV-cache length.
    pub kv_len: usize,
    /// Query (and output) heads.
    pub q_heads: usize,
    /// K/V heads: `q_heads` for MHA, fewer for GQA, 1 for MQA and MLA.
    pub kv_heads: usize,
    /// Length of the Q·K dot product (576 for absorbed MLA).
    pub head_dim_qk: usize,
    /// Value and output head dimension (512 for absorbed MLA).
    pub head_dim_v: usize,
    /// Bottom-right aligned causal mask (see [`visible_keys`](Self::visible_keys)).
    pub causal: bool,
    /// Multiplies `q·k` before the softmax. This is usually `1/sqrt(head_dim_qk)`, but for MLA it
    /// is `1/sqrt(192)` (times YaRN mscale²) even though the dot product has 576 dims.
    pub softmax_scale: f32,
}

impl AttentionShape {
    /// Checks that every size is at least 1, that `q_heads` is a multiple of `kv_heads`, that the
    /// scale is finite, and that no tensor's element count overflows `usize`.
    ///
    /// # Errors
    /// Returns a sentence naming the first offending field.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("batch", self.batch),
            ("q_len", self.q_len),
            ("kv_len", self.kv_len),
            ("q_heads", self.q_heads),
            ("kv_heads", self.kv_heads),
            ("head_dim_qk", self.head_dim_qk),
            ("head_dim_v", self.head_dim_v),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(format!("attention shape: {name} must be at least 1, got 0"));
            }
        }
        if !self.q_heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "attention shape: q_heads ({}) must be a multiple of kv_heads ({})",
                self.q_heads, self.kv_heads
            ));
        }
        if !self.softmax_scale.is_finite() {
            return Err(format!(
                "attention shape: softmax_scale must be finite, got {}",
                self.softmax_scale
            ));
        }
        let tensors = [
            (
                "Q",
                [self.batch, self.q_len, self.q_heads, self.head_dim_qk],
            ),
            (
                "K",
                [self.batch, self.kv_len, self.kv_heads, self.head_dim_qk],
            ),
            (
                "V",
                [self.batch, self.kv_len, self.kv_heads, self.head_dim_v],
            ),
            ("O", [self.batch, self.q_len, self.q_heads, self.head_dim_v]),
        ];
        for (name, dims) in tensors {
            if dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_none()
            {
                return Err(format!(
                    "attention shape: the element count of {name} {dims:?} overflows usize"
                ));
            }
        }
        Ok(())
    }

    /// Validates the shape (see [`validate`](Self::validate)) and the lengths of Q, K and V
    /// (or of the paged cache) against it.
    ///
    /// # Errors
    /// Returns a sentence naming the offending field or tensor, with the actual and the required
    /// lengths.
    pub fn validate_inputs(&self, q: &[f32], kv: &KvSource<'_>) -> Result<(), String> {
        self.validate()?;
        check_len("Q", q.len(), self.q_elems(), self.q_dims_text())?;
        match kv {
            KvSource::Contiguous { k, v } => {
                check_len("K", k.len(), self.k_elems(), self.k_dims_text())?;
                check_len("V", v.len(), self.v_elems(), self.v_dims_text())
            }
            KvSource::Paged(paged) => paged.validate(self),
        }
    }

    /// Number of elements of Q: `batch · q_len · q_heads · head_dim_qk`.
    pub fn q_elems(&self) -> usize {
        self.batch * self.q_len * self.q_heads * self.head_dim_qk
    }

    /// Same as [`q_elems`](Self::q_elems). The name comes from the integration brief.
    pub fn q_len_elems(&self) -> usize {
        self.q_elems()
    }

    /// Number of elements of contiguous K: `batch · kv_len · kv_heads · head_dim_qk`.
    pub fn k_elems(&self) -> usize {
        self.batch * self.kv_len * self.kv_heads * self.head_dim_qk
    }

    /// Number of elements of contiguous V: `batch · kv_len · kv_heads · head_dim_v`.
    pub fn v_elems(&self) -> usize {
        self.batch * self.kv_len * self.kv_heads * self.head_dim_v
    }

    /// Number of elements of O: `batch · q_len · q_heads · head_dim_v`.
    pub fn o_elems(&self) -> usize {
        self.batch * self.q_len * self.q_heads * self.head_dim_v
    }

    /// Number of elements of LSE: `batch · q_heads · q_len`.
    pub fn lse_elems(&self) -> usize {
        self.batch * self.q_heads * self.q_len
    }

    /// Query heads per KV head (`g`). It is 1 for MHA and `q_heads` for MQA/MLA.
    pub fn group_size(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// How many keys query row `i` may attend. Those keys are always `0..visible_keys(i)`.
    ///
    /// With bottom-right causal alignment, row `i` sees keys `j <= i + kv_len - q_len`. The
    /// count is therefore `i + 1 + kv_len - q_len`, clamped to `0..=kv_len`. It is
    /// `kv_len` when not causal. Because the visible set is always a prefix, masking reduces
    /// to a length, and a KV tile that starts at or after it can be skipped whole.
    pub fn visible_keys(&self, i: usize) -> usize {
        if self.causal {
            (i + 1 + self.kv_len)
                .saturating_sub(self.q_len)
                .min(self.kv_len)
        } else {
            self.kv_len
        }
    }

    fn q_dims_text(&self) -> String {
        format!(
            "batch {} × q_len {} × q_heads {} × head_dim_qk {}",
            self.batch, self.q_len, self.q_heads, self.head_dim_qk
        )
    }

    fn k_dims_text(&self) -> String {
        format!(
            "batch {} × kv_len {} × kv_heads {} × head_dim_qk {}",
            self.batch, self.kv_len, self.kv_heads, self.head_dim_qk
        )
    }

    fn v_dims_text(&self) -> String {
        format!(
            "batch {} × kv_len {} × kv_heads {} × head_dim_v {}",
            self.batch, self.kv_len, self.kv_heads, self.head_dim_v
        )
    }
}

fn check_len(tensor: &str, actual: usize, expected: usize, dims: String) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{tensor} has {actual} elements but the attention shape needs {expected} ({dims})"
        ))
    }
}

/// K/V stored in fixed-size pages addressed through a per-sequence block table (the vLLM and
/// FlashAttention "page table" scheme).
///
/// Token `t` of sequence `b` lives in page `block_table[b * max_pages_per_seq + t / page_size]`
/// at slot `t % page_size`. Within a page the layout is `[page_size][kv_heads][head_dim]`, so
/// one token's row is still contiguous.
///
/// Only the block-table entries for pages that hold one of the `kv_len` tokens are read. Entries
/// past that point may hold anything, such as `u32::MAX` padding.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    /// Tokens per page.
    pub page_size: usize,
    /// `[batch][max_pages_per_seq]` physical page indices.
    pub block_table: &'a [u32],
    /// Row length of `block_table`, i.e. the most pages one sequence may own.
    pub max_pages_per_seq: usize,
    /// `[num_pages][page_size][kv_heads][head_dim_qk]`
    pub k_pages: &'a [f32],
    /// `[num_pages][page_size][kv_heads][head_dim_v]`
    pub v_pages: &'a [f32],
}

impl PagedKv<'_> {
    /// Number of physical pages in the cache, derived from the length of `k_pages`.
    pub fn num_pages(&self, shape: &AttentionShape) -> usize {
        let page_elems = self.page_size * shape.kv_heads * shape.head_dim_qk;
        self.k_pages.len().checked_div(page_elems).unwrap_or(0)
    }

    /// Checks the following against `shape`:
    /// - the page size is non-zero;
    /// - the block table holds exactly `batch · max_pages_per_seq` entries, which cover
    ///   `kv_len` tokens;
    /// - K and V hold the same whole number of pages;
    /// - every page index that will be read is in range.
    ///
    /// # Errors
    /// Returns a sentence naming the offending field or tensor and the lengths involved.
    pub fn validate(&self, shape: &AttentionShape) -> Result<(), String> {
        if self.page_size == 0 {
            return Err("paged KV: page_size must be at least 1, got 0".to_string());
        }
        let pages_needed = shape.kv_len.div_ceil(self.page_size);
        if self.max_pages_per_seq < pages_needed {
            return Err(format!(
                "paged KV: max_pages_per_seq is {} but kv_len {} with page_size {} needs {}",
                self.max_pages_per_seq, shape.kv_len, self.page_size, pages_needed
            ));
        }
        let table_len = shape.batch * self.max_pages_per_seq;
        if self.block_table.len() != table_len {
            return Err(format!(
                "block_table has {} entries but the attention shape needs {} (batch {} × max_pages_per_seq {})",
                self.block_table.len(),
                table_len,
                shape.batch,
                self.max_pages_per_seq
            ));
        }
        let k_page = self.page_size * shape.kv_heads * shape.head_dim_qk;
        let v_page = self.page_size * shape.kv_heads * shape.head_dim_v;
        if !self.k_pages.len().is_multiple_of(k_page) {
            return Err(format!(
                "k_pages has {} elements, which is not a whole number of pages of {} (page_size {} × kv_heads {} × head_dim_qk {})",
                self.k_pages.len(),
                k_page,
                self.page_size,
                shape.kv_heads,
                shape.head_dim_qk
            ));
        }
        let num_pages = self.k_pages.len() / k_page;
        if self.v_pages.len() != num_pages * v_page {
            return Err(format!(
                "v_pages has {} elements but k_pages holds {} pages, which need {} (pages {} × page_size {} × kv_heads {} × head_dim_v {})",
                self.v_pages.len(),
                num_pages,
                num_pages * v_page,
                num_pages,
                self.page_size,
                shape.kv_heads,
                shape.head_dim_v
            ));
        }
        for b in 0..shape.batch {
            let row = &self.block_table[b * self.max_pages_per_seq..][..pages_needed];
            if let Some((p, &page)) = row
                .iter()
                .enumerate()
                .find(|(_, &page)| page as usize >= num_pages)
            {
                return Err(format!(
                    "block_table[{b}][{p}] = {page} is out of range: the cache holds {num_pages} pages"
                ));
            }
        }
        Ok(())
    }
}

/// Where K and V come from: dense BSHD tensors or a paged cache.
#[derive(Clone, Copy, Debug)]
pub enum KvSource<'a> {
    /// Dense BSHD tensors: K `[batch][kv_len][kv_heads][head_dim_qk]`, V
    /// `[batch][kv_len][kv_heads][head_dim_v]`.
    #[allow(missing_docs)]
    Contiguous { k: &'a [f32], v: &'a [f32] },
    /// A paged cache addressed through a block table.
    Paged(PagedKv<'a>),
}

impl<'a> KvSource<'a> {
    /// Storage row ("slot") that holds token `t` of sequence `b`. The K row of KV head `hk` then
    /// starts at `(slot · kv_heads + hk) · head_dim_qk`, and likewise for V. Both layouts share
    /// this form, so the paged case differs only in how the slot is found. That is the one
    /// extra indirection per page that a paged GPU kernel also pays.
    #[inline]
    fn slot(&self, shape: &AttentionShape, b: usize, t: usize) -> usize {
        match self {
            KvSource::Contiguous { .. } => b * shape.kv_len + t,
            KvSource::Paged(p) => {
                let page = p.block_table[b * p.max_pages_per_seq + t / p.page_size] as usize;
                page * p.page_size + t % p.page_size
            }
        }
    }

    #[inline]
    fn k_row(&self, shape: &AttentionShape, slot: usize, kv_head: usize) -> &'a [f32] {
        let k = match self {
            KvSource::Contiguous { k, .. } => k,
            KvSource::Paged(p) => p.k_pages,
        };
        let d = shape.head_dim_qk;
        &k[(slot * shape.kv_heads + kv_head) * d..][..d]
    }

    #[inline]
    fn v_row(&self, shape: &AttentionShape, slot: usize, kv_head: usize) -> &'a [f32] {
        let v = match self {
            KvSource::Contiguous { v, .. } => v,
            KvSource::Paged(p) => p.v_pages,
        };
        let d = shape.head_dim_v;
        &v[(slot * shape.kv_heads + kv_head) * d..][..d]
    }
}

/// Key range of split `split` when `kv_len` keys are cut into `num_splits` nearly equal
/// contiguous chunks: `[split·kv_len/num_splits, (split+1)·kv_len/num_splits)`.
///
/// Chunk lengths differ by at most one. When `num_splits > kv_len`, some chunks are empty. Those
/// chunks yield LSE = `-inf` and drop out of the combine. A GPU split kernel whose partials are
/// compared one by one against [`attention_partials`] must use the same partition. Checking only
/// the combined output does not need it.
pub fn split_range(kv_len: usize, num_splits: usize, split: usize) -> Range<usize> {
    assert!(num_splits > 0, "num_splits must be at least 1, got 0");
    assert!(
        split < num_splits,
        "split index {split} is out of range for {num_splits} splits"
    );
    // u128 so that kv_len · num_splits cannot overflow for any usize inputs.
    let bound = |s: usize| (s as u128 * kv_len as u128 / num_splits as u128) as usize;
    bound(split)..bound(split + 1)
}

/// Dot product with 16 independent accumulators.
///
/// A single serial `f32` accumulator would be a loop-carried dependency that LLVM may not
/// reorder, because float addition is not associative. Sixteen lane-wise accumulators let it
/// emit packed multiplies and adds (four SSE registers, or two AVX ones).
///
/// The lanes are folded with a plain sequential sum. A hand-written pairwise tree looked more
/// accurate, but it made LLVM's SLP vectoriser narrow the main loop to 2-wide loads and cost
/// about 1.6× at d = 128 and 576.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let mut tail = 0.0f32;
    for (x, y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        tail += x * y;
    }
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((s, &xi), &yi) in acc.iter_mut().zip(x).zip(y) {
            *s += xi * yi;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc += alpha · x`. There is no reduction here, so this loop vectorises as written.
#[inline]
fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, &xi) in acc.iter_mut().zip(x) {
        *a += alpha * xi;
    }
}

/// `acc += p[0]·x₀ + p[1]·x₁ + p[2]·x₂ + p[3]·x₃`, where `x` holds the four rows
/// back to back. Four keys per pass quarter the loads and stores of `acc`, which otherwise
/// bound the P·V loop.
#[inline]
fn axpy4(acc: &mut [f32], p: &[f32], x: &[f32]) {
    let d = acc.len();
    debug_assert_eq!((p.len(), x.len()), (4, 4 * d));
    let (x0, rest) = x.split_at(d);
    let (x1, rest) = rest.split_at(d);
    let (x2, x3) = rest.split_at(d);
    for ((((a, &v0), &v1), &v2), &v3) in acc.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3) {
        *a += p[0] * v0 + p[1] * v1 + p[2] * v2 + p[3] * v3;
    }
}

/// Query rows per work item, for a KV-head group of `group_rows` packed rows.
///
/// A block of rows is scored against each KV tile, so every K/V row brought into cache is used
/// by the whole block. This is FA2's Q tile. The cap keeps the block's Q rows and accumulator
/// (up to about 32 KiB each) cache resident. The group is then split into equal blocks, not
/// into full blocks plus a remainder: MLA's 16 heads become 8 + 8, not 14 + 2. A 2-row block
/// would stream the whole KV sequence again for little work.
fn rows_per_block(shape: &AttentionShape, group_rows: usize) -> usize {
    let cap = (8192 / shape.head_dim_qk.max(shape.head_dim_v)).clamp(1, 32);
    let blocks = group_rows.div_ceil(cap);
    group_rows.div_ceil(blocks)
}

/// Everything a work item reads. It is borrowed by all rayon tasks.
struct Problem<'a> {
    shape: &'a AttentionShape,
    q: &'a [f32],
    kv: &'a KvSource<'a>,
    kv_tile: usize,
}

/// Core of every fast path: one block of query rows against keys `kv_range` of one
/// (batch, KV head), with FlashAttention-2's online softmax.
///
/// **Rows are packed GQA style.** The `g` query heads that share `kv_head` are folded into the
/// row dimension, as in FA3's PackGQA. Packed row `p` (counted within the KV head's group) is
/// query head `kv_head·g + p / q_len` and query position `p % q_len`. This is the head-major
/// order of the partial layout `[b][h][q][dv]`. In decode (`q_len == 1`), one block holds all
/// `g` heads, so each K/V row is loaded once for the whole group instead of `g` times.
///
/// On return:
/// - `o` (`rows × head_dim_v`) holds the output, normalised over the keys in `kv_range`;
/// - `lse` (`rows`) holds `m + ln(l)`;
/// - a row with no visible key in `kv_range` gets zeros and `-inf`.
fn attend_block(
    p: &Problem<'_>,
    b: usize,
    kv_head: usize,
    first_row: usize,
    kv_range: Range<usize>,
    o: &mut [f32],
    lse: &mut [f32],
) {
    let shape = p.shape;
    let (d_qk, d_v) = (shape.head_dim_qk, shape.head_dim_v);
    let g = shape.group_size();
    let nrows = lse.len();
    debug_assert_eq!(o.len(), nrows * d_v);

    // Per row: its Q slice, and where its visible keys end inside this chunk.
    let mut q_rows: Vec<&[f32]> = Vec::with_capacity(nrows);
    let mut vis_end: Vec<usize> = Vec::with_capacity(nrows);
    for r in 0..nrows {
        let packed = first_row + r;
        let h = kv_head * g + packed / shape.q_len;
        let i = packed % shape.q_len;
        q_rows.push(&p.q[((b * shape.q_len + i) * shape.q_heads + h) * d_qk..][..d_qk]);
        vis_end.push(shape.visible_keys(i).min(kv_range.end));
    }
    // No row sees a key at or past this point, so later tiles are fully masked and skipped.
    let block_end = vis_end.iter().copied().max().unwrap_or(0);

    // Online-softmax state: running max m and running sum l (of exp(s - m)) per row. The
    // unnormalised output accumulates in `o` itself, which is why it is zeroed first.
    o.fill(0.0);
    let mut m = vec![f32::NEG_INFINITY; nrows];
    let mut l = vec![0.0f32; nrows];

    let tile = p.kv_tile.min(kv_range.len()).max(1);
    // S, then P, for one tile: [row][key].
    let mut scores = vec![0.0f32; nrows * tile];
    // Visible keys of this tile per row. They are always a prefix of the tile.
    let mut n_vis = vec![0usize; nrows];
    // The tile's K and V rows, copied into contiguous buffers (the CPU analogue of staging a
    // tile in GPU shared memory). In BSHD, consecutive keys of one KV head are
    // `kv_heads·head_dim` floats apart, often a 4 KiB page each, and a paged cache scatters
    // them further. The hardware prefetcher does not follow that, so a compute loop reading the
    // rows in place stalls on every key. A dependency-free copy loop keeps many misses in
    // flight. The compute loops then run over dense rows.
    let mut k_tile = vec![0.0f32; tile * d_qk];
    let mut v_tile = vec![0.0f32; tile * d_v];

    let mut t0 = kv_range.start;
    while t0 < block_end {
        let t1 = (t0 + tile).min(kv_range.end);
        for (n, &end) in n_vis.iter_mut().zip(&vis_end) {
            *n = end.clamp(t0, t1) - t0;
        }
        // Keys of this tile that at least one row sees; the rest are never loaded.
        let tile_vis = n_vis.iter().copied().max().unwrap_or(0);
        for (c, t) in (t0..t0 + tile_vis).enumerate() {
            let slot = p.kv.slot(shape, b, t);
            k_tile[c * d_qk..][..d_qk].copy_from_slice(p.kv.k_row(shape, slot, kv_head));
            v_tile[c * d_v..][..d_v].copy_from_slice(p.kv.v_row(shape, slot, kv_head));
        }

        // S = scale · Q Kᵀ. The loop is key-outer, so each K row is read once per tile and
        // dotted with every (cache-resident) Q row of the block.
        for (c, k) in k_tile.chunks_exact(d_qk).take(tile_vis).enumerate() {
            for r in 0..nrows {
                if c < n_vis[r] {
                    scores[r * tile + c] = dot(q_rows[r], k) * shape.softmax_scale;
                }
            }
        }

        // The online softmax update:
        //   m_new = max(m, rowmax(S))
        //   P     = exp(S - m_new)
        //   l     = exp(m - m_new)·l + rowsum(P)
        //   O     = exp(m - m_new)·O
        // On a row's first visible tile m = -inf, so the rescale factor is exactly 0 and O and
        // l (both still 0) are unaffected.
        for r in 0..nrows {
            let nv = n_vis[r];
            if nv == 0 {
                continue;
            }
            let s_row = &mut scores[r * tile..][..nv];
            let tile_max = s_row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m[r].max(tile_max);
            let alpha = (m[r] - m_new).exp();
            let mut sum = 0.0f32;
            for s in s_row.iter_mut() {
                *s = (*s - m_new).exp();
                sum += *s;
            }
            l[r] = alpha * l[r] + sum;
            if alpha != 1.0 {
                for x in &mut o[r * d_v..][..d_v] {
                    *x *= alpha;
                }
            }
            m[r] = m_new;
        }

        // O += P V, four keys at a time. For each group of four V rows (cache resident), every
        // Q row's accumulator is loaded and stored once instead of four times. Rows whose
        // visible prefix ends inside the group take the keys they see one at a time.
        let full_quads = tile_vis / 4;
        for (quad, v4) in v_tile.chunks_exact(4 * d_v).take(full_quads).enumerate() {
            let c0 = 4 * quad;
            for r in 0..nrows {
                let seen = n_vis[r].saturating_sub(c0).min(4);
                let p = &scores[r * tile + c0..][..seen];
                let o_row = &mut o[r * d_v..][..d_v];
                if seen == 4 {
                    axpy4(o_row, p, v4);
                } else {
                    for (&pc, v) in p.iter().zip(v4.chunks_exact(d_v)) {
                        axpy(o_row, pc, v);
                    }
                }
            }
        }
        for c in 4 * full_quads..tile_vis {
            let v = &v_tile[c * d_v..][..d_v];
            for r in 0..nrows {
                if c < n_vis[r] {
                    axpy(&mut o[r * d_v..][..d_v], scores[r * tile + c], v);
                }
            }
        }
        t0 = t1;
    }

    // Deferred normalisation (an FA2 change over FA1): divide by l once at the end, not per tile.
    for r in 0..nrows {
        let o_row = &mut o[r * d_v..][..d_v];
        if l[r] > 0.0 {
            let inv = 1.0 / l[r];
            for x in o_row.iter_mut() {
                *x *= inv;
            }
            lse[r] = m[r] + l[r].ln();
        } else {
            // No visible key. l is at least 1 whenever a row saw a key, because its max score
            // contributes exp(0).
            o_row.fill(0.0);
            lse[r] = f32::NEG_INFINITY;
        }
    }
}

/// Runs [`attend_block`] over every (split, batch, KV head, row block). The results are in the
/// partial layout `[num_splits][batch][q_heads][q_len][head_dim_v]` and
/// `[num_splits][batch][q_heads][q_len]`.
///
/// Each (split, batch, KV head) owns one contiguous chunk of both outputs, because its `g`
/// query heads are adjacent in the head-major layout. Rayon parallelises over those chunks and,
/// nested, over the row blocks inside them. In decode, one block usually covers a whole head
/// group. In prefill, a group splits into many blocks.
fn compute_partials(
    shape: &AttentionShape,
    q: &[f32],
    kv: &KvSource<'_>,
    num_splits: usize,
    kv_tile: usize,
) -> (Vec<f32>, Vec<f32>) {
    if let Err(e) = shape.validate_inputs(q, kv) {
        panic!("{e}");
    }
    assert!(num_splits > 0, "num_splits must be at least 1, got 0");
    assert!(kv_tile > 0, "kv_tile must be at least 1, got 0");

    let group_rows = shape.group_size() * shape.q_len;
    let d_v = shape.head_dim_v;
    let Some(o_len) = num_splits.checked_mul(shape.o_elems()) else {
        panic!(
            "num_splits {num_splits} × the {} elements of O overflows usize",
            shape.o_elems()
        );
    };
    let mut o = vec![0.0f32; o_len];
    let mut lse = vec![f32::NEG_INFINITY; num_splits * shape.lse_elems()];
    let block = rows_per_block(shape, group_rows);
    let problem = Problem {
        shape,
        q,
        kv,
        kv_tile,
    };

    o.par_chunks_mut(group_rows * d_v)
        .zip(lse.par_chunks_mut(group_rows))
        .enumerate()
        .for_each(|(item, (o_group, lse_group))| {
            let kv_head = item % shape.kv_heads;
            let b = (item / shape.kv_heads) % shape.batch;
            let split = item / (shape.kv_heads * shape.batch);
            let range = split_range(shape.kv_len, num_splits, split);
            o_group
                .par_chunks_mut(block * d_v)
                .zip(lse_group.par_chunks_mut(block))
                .enumerate()
                .for_each(|(blk, (o_blk, lse_blk))| {
                    attend_block(
                        &problem,
                        b,
                        kv_head,
                        blk * block,
                        range.clone(),
                        o_blk,
                        lse_blk,
                    );
                });
        });
    (o, lse)
}

/// Reorders `[batch][q_heads][q_len][d]` (head-major, the partial layout) into the BSHD output
/// layout `[batch][q_len][q_heads][d]`.
fn bhsd_to_bshd<T: Copy + Default + Send + Sync>(
    shape: &AttentionShape,
    src: &[T],
    d: usize,
) -> Vec<T> {
    let (q_len, heads) = (shape.q_len, shape.q_heads);
    debug_assert_eq!(src.len(), shape.batch * q_len * heads * d);
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(heads * d)
        .enumerate()
        .for_each(|(bi, row)| {
            let (b, i) = (bi / q_len, bi % q_len);
            for (h, dst) in row.chunks_exact_mut(d).enumerate() {
                dst.copy_from_slice(&src[((b * heads + h) * q_len + i) * d..][..d]);
            }
        });
    out
}

/// FlashAttention-2 style forward pass.
///
/// For each (batch, KV head, block of query rows), the pass loops over tiles of `kv_tile` keys
/// and keeps an online softmax (running max `m` and running sum `l`; old state is rescaled by
/// `exp(m_old - m_new)`). It normalises once at the end. Causal tiles past the last key any row
/// of the block can see are skipped. Query heads that share a KV head are processed together,
/// so each K/V tile is read once per group. Work is spread over rayon's pool.
///
/// Returns `(O, LSE)`: O is BSHD `[batch][q_len][q_heads][head_dim_v]`, LSE is
/// `[batch][q_heads][q_len]`.
///
/// # Panics
/// Panics with the message of [`AttentionShape::validate_inputs`] when the shape or slice
/// lengths are invalid, or when `kv_tile == 0`.
pub fn attention_forward(
    shape: &AttentionShape,
    q: &[f32],
    kv: &KvSource<'_>,
    kv_tile: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (o_bhsd, lse) = compute_partials(shape, q, kv, 1, kv_tile);
    (bhsd_to_bshd(shape, &o_bhsd, shape.head_dim_v), lse)
}

/// Split-KV attention (flash-decoding).
///
/// The KV sequence is cut into `num_splits` nearly equal contiguous chunks (see
/// [`split_range`]). Each chunk yields a partial output, normalised over its own keys, and that
/// chunk's LSE. [`combine_splits`] then merges them. Works for any `q_len` (decode is
/// `q_len == 1`), causal or not. A chunk that a row cannot see contributes LSE = `-inf` and has
/// zero weight.
///
/// The result equals [`attention_forward`] up to `f32` rounding. It returns the same layouts.
///
/// # Panics
/// Panics with the message of [`AttentionShape::validate_inputs`] on invalid input, or when
/// `num_splits == 0`.
pub fn attention_split_kv(
    shape: &AttentionShape,
    q: &[f32],
    kv: &KvSource<'_>,
    num_splits: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (o_partial, lse_partial) = attention_partials(shape, q, kv, num_splits);
    combine_splits(shape, num_splits, &o_partial, &lse_partial)
}

/// The per-chunk partial results of [`attention_split_kv`], in the layout the GPU combine kernel
/// also consumes:
/// - `o_partial`: `[num_splits][batch][q_heads][q_len][head_dim_v]`, each normalised over its
///   chunk (zeros where the chunk has no visible key);
/// - `lse_partial`: `[num_splits][batch][q_heads][q_len]` (`-inf` where the chunk has no visible
///   key).
///
/// KV tiles inside a chunk are [`DEFAULT_KV_TILE`] keys long.
///
/// # Panics
/// Same conditions as [`attention_split_kv`].
pub fn attention_partials(
    shape: &AttentionShape,
    q: &[f32],
    kv: &KvSource<'_>,
    num_splits: usize,
) -> (Vec<f32>, Vec<f32>) {
    compute_partials(shape, q, kv, num_splits, DEFAULT_KV_TILE)
}

/// Merges split-KV partials. This is FlashInfer's attention-state merge, which is commutative
/// and associative. For each row:
///
/// ```text
/// m   = max_s lse_s
/// LSE = m + ln Σ_s exp(lse_s − m)
/// O   = Σ_s exp(lse_s − LSE) · O_s
/// ```
///
/// - A split with `lse_s = -inf` (no visible key) is skipped outright, not just multiplied by
///   a zero weight. Its `O_s` therefore cannot poison the result, even if a GPU kernel left
///   uninitialised memory or NaN there.
/// - If every split is `-inf`, the row gets O = 0 and LSE = `-inf`.
/// - A NaN LSE is not hidden: it propagates to that row's O and LSE.
/// - With one split, O and LSE are returned bit for bit, only reordered into BSHD.
///
/// Inputs use the layouts of [`attention_partials`]. Outputs use those of
/// [`attention_forward`].
///
/// # Panics
/// Panics if the shape is invalid, `num_splits == 0`, or a slice length does not match.
pub fn combine_splits(
    shape: &AttentionShape,
    num_splits: usize,
    o_partial: &[f32],
    lse_partial: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    if let Err(e) = shape.validate() {
        panic!("{e}");
    }
    assert!(num_splits > 0, "num_splits must be at least 1, got 0");
    let rows = shape.lse_elems();
    let d_v = shape.head_dim_v;
    let Some(o_len) = num_splits.checked_mul(shape.o_elems()) else {
        panic!(
            "num_splits {num_splits} × the {} elements of O overflows usize",
            shape.o_elems()
        );
    };
    if let Err(e) = check_len(
        "o_partial",
        o_partial.len(),
        o_len,
        format!(
            "num_splits {num_splits} × batch {} × q_heads {} × q_len {} × head_dim_v {}",
            shape.batch, shape.q_heads, shape.q_len, d_v
        ),
    ) {
        panic!("{e}");
    }
    if let Err(e) = check_len(
        "lse_partial",
        lse_partial.len(),
        num_splits * rows,
        format!(
            "num_splits {num_splits} × batch {} × q_heads {} × q_len {}",
            shape.batch, shape.q_heads, shape.q_len
        ),
    ) {
        panic!("{e}");
    }

    // Pass 1: combined LSE per row, in [b][h][q] order, which matches a partial's row order.
    let mut lse = vec![0.0f32; rows];
    lse.par_iter_mut().enumerate().for_each(|(row, out)| {
        let split_lse = (0..num_splits).map(|s| lse_partial[s * rows + row]);
        // A max that propagates NaN: f32::max would silently drop it.
        let m = split_lse.clone().fold(
            f32::NEG_INFINITY,
            |a, x| if x > a || x.is_nan() { x } else { a },
        );
        *out = if m == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            let sum: f32 = split_lse
                .filter(|&x| x != f32::NEG_INFINITY)
                .map(|x| (x - m).exp())
                .sum();
            m + sum.ln()
        };
    });

    // Pass 2: weighted sum of the partial outputs, written straight into BSHD rows.
    let mut o = vec![0.0f32; shape.o_elems()];
    let (q_len, heads) = (shape.q_len, shape.q_heads);
    o.par_chunks_mut(heads * d_v)
        .enumerate()
        .for_each(|(bi, o_row)| {
            let (b, i) = (bi / q_len, bi % q_len);
            for (h, dst) in o_row.chunks_exact_mut(d_v).enumerate() {
                let row = (b * heads + h) * q_len + i;
                let total = lse[row];
                for s in 0..num_splits {
                    let ls = lse_partial[s * rows + row];
                    if ls == f32::NEG_INFINITY {
                        continue;
                    }
                    let weight = (ls - total).exp();
                    axpy(dst, weight, &o_partial[(s * rows + row) * d_v..][..d_v]);
                }
            }
        });
    (o, lse)
}

/// Naive, obviously correct attention, used only to check the fast paths.
///
/// For every (batch, head, query row), it materialises all visible scores in `f64`, applies a
/// max-shifted softmax, and multiplies by V. Nothing is tiled and nothing is rescaled online,
/// so it shares no algorithmic structure with the code it checks. Inputs are widened to
/// `f64` exactly, and the scale is widened from its `f32` value.
///
/// Returns `(O, LSE)` in the same layouts as [`attention_forward`]. Rows with no visible key
/// get zeros and `-inf`. The cost is `O(batch · q_heads · q_len · kv_len · d)` with
/// `O(kv_len)` scratch per row; it is parallel over (batch, head).
///
/// # Panics
/// Panics with the message of [`AttentionShape::validate_inputs`] on invalid input.
pub fn attention_naive_f64(
    shape: &AttentionShape,
    q: &[f32],
    kv: &KvSource<'_>,
) -> (Vec<f64>, Vec<f64>) {
    if let Err(e) = shape.validate_inputs(q, kv) {
        panic!("{e}");
    }
    let (q_len, d_qk, d_v) = (shape.q_len, shape.head_dim_qk, shape.head_dim_v);
    let scale = f64::from(shape.softmax_scale);
    let group = shape.group_size();
    let mut o_bhsd = vec![0.0f64; shape.o_elems()];
    let mut lse = vec![f64::NEG_INFINITY; shape.lse_elems()];

    o_bhsd
        .par_chunks_mut(q_len * d_v)
        .zip(lse.par_chunks_mut(q_len))
        .enumerate()
        .for_each(|(bh, (o_head, lse_head))| {
            let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
            let kv_head = h / group;
            let mut scores = Vec::with_capacity(shape.kv_len);
            for i in 0..q_len {
                // The masking rule is spelled out literally, in signed arithmetic, rather than
                // taken from `visible_keys`, so a mistake there cannot hide in both paths.
                let visible = |j: usize| {
                    !shape.causal || j as i128 <= i as i128 + shape.kv_len as i128 - q_len as i128
                };
                let keys: Vec<usize> = (0..shape.kv_len).filter(|&j| visible(j)).collect();
                if keys.is_empty() {
                    continue; // already zeros / -inf
                }
                let q_row = &q[((b * q_len + i) * shape.q_heads + h) * d_qk..][..d_qk];
                scores.clear();
                for &j in &keys {
                    let k_row = kv.k_row(shape, kv.slot(shape, b, j), kv_head);
                    let s: f64 = q_row
                        .iter()
                        .zip(k_row)
                        .map(|(&x, &y)| f64::from(x) * f64::from(y))
                        .sum();
                    scores.push(s * scale);
                }
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut l = 0.0f64;
                for s in scores.iter_mut() {
                    *s = (*s - m).exp();
                    l += *s;
                }
                let out = &mut o_head[i * d_v..][..d_v];
                for (&j, &p) in keys.iter().zip(&scores) {
                    let v_row = kv.v_row(shape, kv.slot(shape, b, j), kv_head);
                    for (o, &v) in out.iter_mut().zip(v_row) {
                        *o += p * f64::from(v);
                    }
                }
                for o in out.iter_mut() {
                    *o /= l;
                }
                lse_head[i] = m + l.ln();
            }
        });
    (bhsd_to_bshd(shape, &o_bhsd, d_v), lse)
}

/// Copies the first `d_v` values of each `d_qk`-long row. This builds the MLA value view,
/// shared by the contiguous and paged helpers below.
fn latent_rows_to_values(latent: &[f32], d_qk: usize, d_v: usize) -> Vec<f32> {
    let rows = latent.len() / d_qk;
    let mut v = vec![0.0f32; rows * d_v];
    v.par_chunks_mut(d_v)
        .zip(latent.par_chunks_exact(d_qk))
        .for_each(|(dst, src)| dst.copy_from_slice(&src[..d_v]));
    v
}

fn check_mla_dims(shape: &AttentionShape) {
    if let Err(e) = shape.validate() {
        panic!("{e}");
    }
    assert!(
        shape.head_dim_v <= shape.head_dim_qk,
        "MLA value view: head_dim_v ({}) must not exceed head_dim_qk ({}), because V is a prefix of each K row",
        shape.head_dim_v,
        shape.head_dim_qk
    );
}

/// MLA absorbed decode: builds V from the latent cache.
///
/// In absorbed MLA, each token caches one 576-dim row, `[c_KV (512) ‖ k_pe (64)]`, shared by all
/// heads. The kernel uses the full row as K and the first 512 dims (`c_KV`) as V. This helper
/// returns those first `head_dim_v` dims of every K row as a tensor in V layout. MLA then runs
/// through the same functions as MQA, with `kv_heads = 1`, `head_dim_qk = 576` and
/// `head_dim_v = 512`. A GPU kernel reads V straight out of the K rows, but the oracle does
/// not need that aliasing.
///
/// # Panics
/// Panics if the shape is invalid, `head_dim_v > head_dim_qk`, or `k_latent.len() !=
/// shape.k_elems()`.
pub fn mla_values_from_latent(shape: &AttentionShape, k_latent: &[f32]) -> Vec<f32> {
    check_mla_dims(shape);
    if let Err(e) = check_len("K", k_latent.len(), shape.k_elems(), shape.k_dims_text()) {
        panic!("{e}");
    }
    latent_rows_to_values(k_latent, shape.head_dim_qk, shape.head_dim_v)
}

/// The paged counterpart of [`mla_values_from_latent`]. It turns latent K pages
/// `[num_pages][page_size][kv_heads][head_dim_qk]` into V pages
/// `[num_pages][page_size][kv_heads][head_dim_v]` with the same page numbering, so the same
/// block table addresses both.
///
/// # Panics
/// Panics if the shape is invalid, `head_dim_v > head_dim_qk`, or `k_pages` is not a whole
/// number of `page_size`-token pages.
pub fn mla_value_pages_from_latent(
    shape: &AttentionShape,
    page_size: usize,
    k_pages: &[f32],
) -> Vec<f32> {
    check_mla_dims(shape);
    let page = page_size * shape.kv_heads * shape.head_dim_qk;
    assert!(
        page > 0 && k_pages.len().is_multiple_of(page),
        "k_pages has {} elements, which is not a whole number of pages of {} (page_size {} × kv_heads {} × head_dim_qk {})",
        k_pages.len(),
        page,
        page_size,
        shape.kv_heads,
        shape.head_dim_qk
    );
    latent_rows_to_values(k_pages, shape.head_dim_qk, shape.head_dim_v)
}

/// Gathers a paged cache into contiguous BSHD K and V. Tests use it, and so do GPU-result checks
/// that want a dense copy of what a paged kernel read.
///
/// # Panics
/// Panics with the message of [`PagedKv::validate`] (or [`AttentionShape::validate`]) on
/// invalid input.
pub fn gather_paged(shape: &AttentionShape, paged: &PagedKv<'_>) -> (Vec<f32>, Vec<f32>) {
    if let Err(e) = shape.validate().and_then(|()| paged.validate(shape)) {
        panic!("{e}");
    }
    let src = KvSource::Paged(*paged);
    (
        gather_rows(shape, &src, false),
        gather_rows(shape, &src, true),
    )
}

/// Copies every K row (or every V row, if `values`) of `src` into a dense BSHD tensor.
fn gather_rows(shape: &AttentionShape, src: &KvSource<'_>, values: bool) -> Vec<f32> {
    let d = if values {
        shape.head_dim_v
    } else {
        shape.head_dim_qk
    };
    let mut out = vec![0.0f32; shape.batch * shape.kv_len * shape.kv_heads * d];
    out.par_chunks_mut(shape.kv_heads * d)
        .enumerate()
        .for_each(|(bt, dst)| {
            let (b, t) = (bt / shape.kv_len, bt % shape.kv_len);
            let slot = src.slot(shape, b, t);
            for (hk, d_row) in dst.chunks_exact_mut(d).enumerate() {
                d_row.copy_from_slice(if values {
                    src.v_row(shape, slot, hk)
                } else {
                    src.k_row(shape, slot, hk)
                });
            }
        });
    out
}

/// The result of [`compare`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// Largest `|actual − expected|`. It is `+inf` if any pair disagrees in finiteness
    /// (NaN, or an infinity on one side only).
    pub max_abs_err: f64,
    /// Largest `|actual − expected| / |expected|`. It is `+inf` when expected is 0 and actual
    /// is not. It is for reporting only; the pass criterion is the `atol + rtol·|expected|`
    /// test.
    pub max_rel_err: f64,
    /// Count of elements failing `|actual − expected| <= atol + rtol·|expected|`.
    pub mismatches: usize,
    /// Index of the first failing element.
    pub first_mismatch: Option<usize>,
    /// Number of elements compared.
    pub compared: usize,
}

impl Comparison {
    /// True when no element failed the tolerance.
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements outside tolerance (max abs err {:.3e}, max rel err {:.3e}",
            self.mismatches, self.compared, self.max_abs_err, self.max_rel_err
        )?;
        if let Some(i) = self.first_mismatch {
            write!(f, ", first at index {i}")?;
        }
        write!(f, ")")
    }
}

/// Compares a result (GPU or fast path, `f32`) with an oracle (`f64`) element by element.
///
/// - An element passes when `|a − e| <= atol + rtol·|e|`.
/// - Exactly equal values pass, including equal infinities. Without that, the `-inf` LSE of a
///   row with no visible key would count as a failure.
/// - NaN on either side always fails, as does an infinity matched against a different value.
///   A broken kernel therefore cannot pass by producing non-finite output.
///
/// # Panics
/// Panics if the two slices differ in length. That is a harness bug, not a numerical mismatch.
pub fn compare(actual: &[f32], expected: &[f64], atol: f64, rtol: f64) -> Comparison {
    assert_eq!(
        actual.len(),
        expected.len(),
        "compare: actual has {} elements but expected has {}",
        actual.len(),
        expected.len()
    );
    let mut result = Comparison {
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        mismatches: 0,
        first_mismatch: None,
        compared: actual.len(),
    };
    for (idx, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a = f64::from(a);
        let (abs_err, rel_err, ok) = if a == e {
            (0.0, 0.0, true)
        } else if a.is_finite() && e.is_finite() {
            let abs_err = (a - e).abs();
            let rel_err = if e != 0.0 {
                abs_err / e.abs()
            } else {
                f64::INFINITY
            };
            (abs_err, rel_err, abs_err <= atol + rtol * e.abs())
        } else {
            (f64::INFINITY, f64::INFINITY, false)
        };
        result.max_abs_err = result.max_abs_err.max(abs_err);
        result.max_rel_err = result.max_rel_err.max(rel_err);
        if !ok {
            result.mismatches += 1;
            result.first_mismatch.get_or_insert(idx);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: tiny, deterministic, and good enough to make every element distinct.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [-1, 1) on a 2^-23 grid; exact zero is re-drawn so that no input is 0.
        fn uniform(&mut self) -> f32 {
            loop {
                let x = (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 23) as f32) - 1.0;
                if x != 0.0 {
                    return x;
                }
            }
        }

        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.uniform()).collect()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn shape(
        batch: usize,
        q_len: usize,
        kv_len: usize,
        q_heads: usize,
        kv_heads: usize,
        head_dim_qk: usize,
        head_dim_v: usize,
        causal: bool,
    ) -> AttentionShape {
        AttentionShape {
            batch,
            q_len,
            kv_len,
            q_heads,
            kv_heads,
            head_dim_qk,
            head_dim_v,
            causal,
            softmax_scale: 1.0 / (head_dim_qk as f32).sqrt(),
        }
    }

    struct Inputs {
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
    }

    impl Inputs {
        fn new(s: &AttentionShape, seed: u64) -> Self {
            let mut rng = Rng(seed);
            Inputs {
                q: rng.vec(s.q_elems()),
                k: rng.vec(s.k_elems()),
                v: rng.vec(s.v_elems()),
            }
        }

        fn kv(&self) -> KvSource<'_> {
            KvSource::Contiguous {
                k: &self.k,
                v: &self.v,
            }
        }
    }

    fn widen(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| f64::from(v)).collect()
    }

    #[track_caller]
    fn assert_close(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
        let c = compare(actual, expected, atol, rtol);
        assert!(c.passed(), "{what}: {c}");
    }

    /// Rows with no visible key must be exactly zero with LSE -inf, in any implementation.
    #[track_caller]
    fn assert_empty_rows(s: &AttentionShape, o: &[f32], lse: &[f32]) {
        for b in 0..s.batch {
            for i in 0..s.q_len {
                if s.visible_keys(i) > 0 {
                    continue;
                }
                for h in 0..s.q_heads {
                    assert_eq!(lse[(b * s.q_heads + h) * s.q_len + i], f32::NEG_INFINITY);
                    let row =
                        &o[((b * s.q_len + i) * s.q_heads + h) * s.head_dim_v..][..s.head_dim_v];
                    assert!(row.iter().all(|&x| x == 0.0), "row {i} should be zero");
                }
            }
        }
    }

    const ATOL: f64 = 2e-6;
    const RTOL: f64 = 2e-5;

    /// (name, shape) for MHA, GQA (g = 4, 8), MQA, MLA and odd dims, each causal and not,
    /// with q_len == kv_len, q_len < kv_len and q_len > kv_len.
    fn head_layout_cases() -> Vec<(&'static str, AttentionShape)> {
        let mut cases = Vec::new();
        for causal in [false, true] {
            cases.push(("MHA square", shape(2, 13, 13, 8, 8, 64, 64, causal)));
            cases.push(("MHA q<kv", shape(1, 5, 37, 8, 8, 64, 64, causal)));
            cases.push(("MHA q>kv", shape(2, 9, 4, 4, 4, 64, 64, causal)));
            cases.push(("GQA g4", shape(2, 6, 29, 8, 2, 64, 64, causal)));
            cases.push(("GQA g8 decode", shape(3, 1, 50, 16, 2, 64, 64, causal)));
            cases.push(("MQA", shape(1, 7, 23, 8, 1, 64, 64, causal)));
            cases.push(("odd dims", shape(1, 4, 19, 6, 3, 40, 24, causal)));
            cases.push((
                "DSV3 MHA prefill dims",
                shape(1, 5, 11, 2, 2, 192, 128, causal),
            ));
            let mut mla = shape(2, 2, 37, 4, 1, 576, 512, causal);
            mla.softmax_scale = 1.0 / 192f32.sqrt();
            cases.push(("MLA", mla));
        }
        cases
    }

    #[test]
    fn forward_matches_naive_across_head_layouts_and_tiles() {
        for (seed, (name, s)) in head_layout_cases().into_iter().enumerate() {
            let inp = Inputs::new(&s, 100 + seed as u64);
            let (o_ref, lse_ref) = attention_naive_f64(&s, &inp.q, &inp.kv());
            for tile in [1, 3, 16, DEFAULT_KV_TILE, 1000] {
                let (o, lse) = attention_forward(&s, &inp.q, &inp.kv(), tile);
                let what = format!("{name} causal={} tile={tile}", s.causal);
                assert_close(&format!("{what} O"), &o, &o_ref, ATOL, RTOL);
                assert_close(&format!("{what} LSE"), &lse, &lse_ref, ATOL, RTOL);
                assert_empty_rows(&s, &o, &lse);
            }
        }
    }

    #[test]
    fn naive_marks_rows_without_keys() {
        let s = shape(1, 6, 2, 2, 1, 8, 8, true); // rows 0..4 see nothing
        let inp = Inputs::new(&s, 7);
        let (o, lse) = attention_naive_f64(&s, &inp.q, &inp.kv());
        for h in 0..2 {
            for i in 0..6 {
                let l = lse[h * 6 + i];
                assert_eq!(l == f64::NEG_INFINITY, i < 4, "head {h} row {i} lse {l}");
            }
        }
        assert!(o[..4 * 2 * 8].iter().all(|&x| x == 0.0));
        assert!(o[4 * 2 * 8..].iter().all(|&x| x != 0.0));
    }

    /// Closed forms that do not depend on any implementation here. With a single key, O = v
    /// and LSE = scale·q·k. With n identical keys, the weights are uniform: O = mean(V) and
    /// LSE = s + ln n.
    #[test]
    fn closed_form_single_and_identical_keys() {
        let mut s = shape(1, 1, 1, 2, 1, 32, 16, false);
        s.softmax_scale = 0.37;
        let inp = Inputs::new(&s, 11);
        let (o, lse) = attention_forward(&s, &inp.q, &inp.kv(), 4);
        for h in 0..2 {
            let q = &inp.q[h * 32..][..32];
            let expect: f64 = q
                .iter()
                .zip(&inp.k)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
                * f64::from(s.softmax_scale);
            assert_close("single-key LSE", &lse[h..h + 1], &[expect], 1e-6, 1e-5);
            assert_eq!(
                &o[h * 16..][..16],
                &inp.v[..],
                "single key: O must be v exactly"
            );
        }

        let n = 10;
        let s = shape(1, 1, n, 1, 1, 16, 8, false);
        let mut rng = Rng(12);
        let q = rng.vec(16);
        let k_row = rng.vec(16);
        let k: Vec<f32> = (0..n).flat_map(|_| k_row.iter().copied()).collect();
        let v = rng.vec(n * 8);
        let kv = KvSource::Contiguous { k: &k, v: &v };
        let score: f64 = q
            .iter()
            .zip(&k_row)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>()
            * f64::from(s.softmax_scale);
        let mean: Vec<f64> = (0..8)
            .map(|d| (0..n).map(|j| f64::from(v[j * 8 + d])).sum::<f64>() / n as f64)
            .collect();
        for tile in [1, 3, 64] {
            let (o, lse) = attention_forward(&s, &q, &kv, tile);
            assert_close("uniform O", &o, &mean, 1e-6, 1e-5);
            assert_close("uniform LSE", &lse, &[score + (n as f64).ln()], 1e-6, 1e-5);
        }
    }

    /// GQA head mapping, checked independently: repeating each KV head g times turns GQA into
    /// MHA, and the two must agree exactly (same per-row arithmetic).
    #[test]
    fn gqa_equals_mha_with_repeated_kv_heads() {
        for (q_heads, kv_heads) in [(8, 2), (8, 1), (16, 2)] {
            let s = shape(2, 3, 21, q_heads, kv_heads, 32, 16, true);
            let g = s.group_size();
            let inp = Inputs::new(&s, 21 + q_heads as u64);
            let repeat = |x: &[f32], d: usize| -> Vec<f32> {
                x.chunks_exact(kv_heads * d)
                    .flat_map(|tok| {
                        (0..q_heads).flat_map(move |h| tok[(h / g) * d..][..d].iter().copied())
                    })
                    .collect()
            };
            let (k_mha, v_mha) = (repeat(&inp.k, 32), repeat(&inp.v, 16));
            let s_mha = AttentionShape {
                kv_heads: q_heads,
                ..s
            };
            let mha = KvSource::Contiguous {
                k: &k_mha,
                v: &v_mha,
            };
            let (o_g, lse_g) = attention_forward(&s, &inp.q, &inp.kv(), 8);
            let (o_m, lse_m) = attention_forward(&s_mha, &inp.q, &mha, 8);
            assert_eq!(o_g, o_m, "GQA {q_heads}/{kv_heads} O");
            assert_eq!(lse_g, lse_m, "GQA {q_heads}/{kv_heads} LSE");
        }
    }

    #[test]
    fn split_kv_matches_forward() {
        for (seed, (name, s)) in head_layout_cases().into_iter().enumerate() {
            let inp = Inputs::new(&s, 200 + seed as u64);
            let (o_fwd, lse_fwd) = attention_forward(&s, &inp.q, &inp.kv(), DEFAULT_KV_TILE);
            let (o_fwd, lse_fwd) = (widen(&o_fwd), widen(&lse_fwd));
            for splits in [1, 2, 3, 7, s.kv_len + 5] {
                let (o, lse) = attention_split_kv(&s, &inp.q, &inp.kv(), splits);
                let what = format!("{name} causal={} splits={splits}", s.causal);
                assert_close(&format!("{what} O"), &o, &o_fwd, 1e-6, 1e-5);
                assert_close(&format!("{what} LSE"), &lse, &lse_fwd, 1e-6, 1e-5);
                assert_empty_rows(&s, &o, &lse);
            }
        }
    }

    #[test]
    fn split_ranges_partition_the_sequence() {
        for kv_len in [1, 5, 37, 64] {
            for splits in [1, 2, 3, 7, 100] {
                let ranges: Vec<_> = (0..splits)
                    .map(|i| split_range(kv_len, splits, i))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[splits - 1].end, kv_len);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "kv_len {kv_len} splits {splits}: {lens:?}");
            }
        }
    }

    #[test]
    fn combine_single_split_returns_partial_unchanged() {
        let s = shape(2, 3, 17, 4, 2, 32, 24, true);
        let inp = Inputs::new(&s, 31);
        let (o_p, lse_p) = attention_partials(&s, &inp.q, &inp.kv(), 1);
        let (o, lse) = combine_splits(&s, 1, &o_p, &lse_p);
        assert_eq!(lse, lse_p, "one split: LSE must be returned bit for bit");
        assert_eq!(o, bhsd_to_bshd(&s, &o_p, s.head_dim_v));
        // ...and the single partial is the forward pass itself.
        let (o_fwd, lse_fwd) = attention_forward(&s, &inp.q, &inp.kv(), DEFAULT_KV_TILE);
        assert_eq!(o, o_fwd);
        assert_eq!(lse, lse_fwd);
    }

    /// Chunks with no visible key get LSE -inf and zero output. Even if their partial output
    /// is garbage (NaN, as an uninitialised GPU buffer might hold), the combine is unaffected.
    #[test]
    fn empty_chunks_are_neg_inf_and_do_not_poison_the_combine() {
        // More splits than keys (empty chunks) and causal rows that cannot see later chunks.
        let s = shape(1, 6, 6, 2, 1, 16, 8, true);
        let splits = 9;
        let inp = Inputs::new(&s, 41);
        let (mut o_p, lse_p) = attention_partials(&s, &inp.q, &inp.kv(), splits);
        let rows = s.lse_elems();
        let mut empty = 0;
        for sp in 0..splits {
            let range = split_range(s.kv_len, splits, sp);
            for row in 0..rows {
                let i = row % s.q_len;
                let sees_chunk = !range.is_empty() && s.visible_keys(i) > range.start;
                let l = lse_p[sp * rows + row];
                assert_eq!(l.is_finite(), sees_chunk, "split {sp} row {row} lse {l}");
                if !sees_chunk {
                    empty += 1;
                    let part = &mut o_p[(sp * rows + row) * 8..][..8];
                    assert!(part.iter().all(|&x| x == 0.0));
                    part.fill(f32::NAN);
                }
            }
        }
        assert!(
            empty > rows,
            "the case must contain empty and fully masked chunks"
        );
        let (o, lse) = combine_splits(&s, splits, &o_p, &lse_p);
        assert!(o.iter().chain(&lse).all(|x| x.is_finite()), "NaN leaked");
        let (o_ref, lse_ref) = attention_naive_f64(&s, &inp.q, &inp.kv());
        assert_close("combined O", &o, &o_ref, ATOL, RTOL);
        assert_close("combined LSE", &lse, &lse_ref, ATOL, RTOL);

        // All splits empty for a row (q_len > kv_len): zeros and -inf.
        let s = shape(1, 5, 2, 2, 2, 8, 8, true);
        let inp = Inputs::new(&s, 42);
        let (o, lse) = attention_split_kv(&s, &inp.q, &inp.kv(), 4);
        assert_empty_rows(&s, &o, &lse);
    }

    /// The merge is commutative: permuting the split order changes only rounding.
    #[test]
    fn combine_is_order_independent() {
        let s = shape(1, 2, 40, 4, 4, 16, 16, false);
        let splits = 5;
        let inp = Inputs::new(&s, 51);
        let (o_p, lse_p) = attention_partials(&s, &inp.q, &inp.kv(), splits);
        let (rows, d) = (s.lse_elems(), s.head_dim_v);
        let order = [3, 0, 4, 2, 1];
        let o_perm: Vec<f32> = order
            .iter()
            .flat_map(|&sp| o_p[sp * rows * d..][..rows * d].iter().copied())
            .collect();
        let lse_perm: Vec<f32> = order
            .iter()
            .flat_map(|&sp| lse_p[sp * rows..][..rows].iter().copied())
            .collect();
        let (o_a, lse_a) = combine_splits(&s, splits, &o_p, &lse_p);
        let (o_b, lse_b) = combine_splits(&s, splits, &o_perm, &lse_perm);
        assert_close("permuted O", &o_b, &widen(&o_a), 1e-6, 1e-5);
        assert_close("permuted LSE", &lse_b, &widen(&lse_a), 1e-6, 1e-5);
    }

    #[test]
    fn combine_propagates_nan_lse() {
        let s = shape(1, 1, 4, 1, 1, 4, 4, false);
        let o_p = vec![0.5f32; 2 * 4];
        let (o, lse) = combine_splits(&s, 2, &o_p, &[0.0, f32::NAN]);
        assert!(lse[0].is_nan());
        assert!(o.iter().all(|x| x.is_nan()));
    }

    /// Builds a paged cache from contiguous K/V with the test's own copy of the addressing rule,
    /// using a shuffled block table, spare pages and u32::MAX padding in unused entries.
    struct Paged {
        page_size: usize,
        table: Vec<u32>,
        max_pages: usize,
        k_pages: Vec<f32>,
        v_pages: Vec<f32>,
    }

    impl Paged {
        fn build(s: &AttentionShape, k: &[f32], v: &[f32], page_size: usize, seed: u64) -> Self {
            let used = s.kv_len.div_ceil(page_size);
            let max_pages = used + 2; // two unused entries per sequence
            let num_pages = s.batch * used + 3; // three spare physical pages
                                                // Fisher-Yates shuffle of the physical page ids.
            let mut ids: Vec<u32> = (0..num_pages as u32).collect();
            let mut rng = Rng(seed);
            for i in (1..ids.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                ids.swap(i, j);
            }
            let mut table = vec![u32::MAX; s.batch * max_pages];
            for b in 0..s.batch {
                for p in 0..used {
                    table[b * max_pages + p] = ids[b * used + p];
                }
            }
            let (dk, dv, hk) = (s.head_dim_qk, s.head_dim_v, s.kv_heads);
            // Spare pages hold garbage so that reading a wrong page shows up.
            let mut k_pages = vec![1e3f32; num_pages * page_size * hk * dk];
            let mut v_pages = vec![-1e3f32; num_pages * page_size * hk * dv];
            for b in 0..s.batch {
                for t in 0..s.kv_len {
                    let page = table[b * max_pages + t / page_size] as usize;
                    let slot = page * page_size + t % page_size;
                    let src = b * s.kv_len + t;
                    k_pages[slot * hk * dk..][..hk * dk]
                        .copy_from_slice(&k[src * hk * dk..][..hk * dk]);
                    v_pages[slot * hk * dv..][..hk * dv]
                        .copy_from_slice(&v[src * hk * dv..][..hk * dv]);
                }
            }
            assert!(
                table.windows(2).any(|w| w[0] > w[1]),
                "table should not be the identity"
            );
            Paged {
                page_size,
                table,
                max_pages,
                k_pages,
                v_pages,
            }
        }

        fn view(&self) -> PagedKv<'_> {
            PagedKv {
                page_size: self.page_size,
                block_table: &self.table,
                max_pages_per_seq: self.max_pages,
                k_pages: &self.k_pages,
                v_pages: &self.v_pages,
            }
        }
    }

    #[test]
    fn paged_matches_contiguous() {
        let cases = [
            shape(3, 4, 37, 8, 2, 32, 32, true),
            shape(2, 1, 37, 8, 1, 64, 48, false),
            shape(2, 40, 37, 4, 4, 16, 16, true),
        ];
        for (ci, s) in cases.iter().enumerate() {
            let inp = Inputs::new(s, 300 + ci as u64);
            let (o_c, lse_c) = attention_forward(s, &inp.q, &inp.kv(), 8);
            let (o_cs, lse_cs) = attention_split_kv(s, &inp.q, &inp.kv(), 3);
            let (o_cn, lse_cn) = attention_naive_f64(s, &inp.q, &inp.kv());
            for page_size in [1, 3, 16] {
                let paged = Paged::build(s, &inp.k, &inp.v, page_size, 7 + page_size as u64);
                let view = paged.view();
                view.validate(s).unwrap();
                let (k, v) = gather_paged(s, &view);
                assert!(k == inp.k && v == inp.v, "gather_paged page {page_size}");
                let kv = KvSource::Paged(view);
                // Same arithmetic in the same order: paged must be bit-identical.
                let (o, lse) = attention_forward(s, &inp.q, &kv, 8);
                assert!(o == o_c && lse == lse_c, "forward, page {page_size}");
                let (o, lse) = attention_split_kv(s, &inp.q, &kv, 3);
                assert!(o == o_cs && lse == lse_cs, "split, page {page_size}");
                let (o, lse) = attention_naive_f64(s, &inp.q, &kv);
                assert!(o == o_cn && lse == lse_cn, "naive, page {page_size}");
            }
        }
    }

    #[test]
    fn mla_paged_decode_matches_naive() {
        let mut s = shape(2, 1, 45, 16, 1, 576, 512, true);
        s.softmax_scale = 1.0 / 192f32.sqrt();
        let mut rng = Rng(61);
        let q = rng.vec(s.q_elems());
        let latent = rng.vec(s.k_elems());
        let v = mla_values_from_latent(&s, &latent);
        assert_eq!(v.len(), s.v_elems());
        for (v_row, k_row) in v.chunks_exact(512).zip(latent.chunks_exact(576)) {
            assert_eq!(v_row, &k_row[..512]);
        }
        let contiguous = KvSource::Contiguous { k: &latent, v: &v };
        let (o_ref, lse_ref) = attention_naive_f64(&s, &q, &contiguous);

        // A paged latent cache with page size 16. The V pages are derived from the K pages.
        let mut paged = Paged::build(&s, &latent, &v, 16, 62);
        paged.v_pages = mla_value_pages_from_latent(&s, 16, &paged.k_pages);
        let kv = KvSource::Paged(paged.view());
        for splits in [1, 4] {
            let (o, lse) = attention_split_kv(&s, &q, &kv, splits);
            assert_close("MLA paged O", &o, &o_ref, ATOL, RTOL);
            assert_close("MLA paged LSE", &lse, &lse_ref, ATOL, RTOL);
        }
    }

    /// The scale must multiply the scores: scale c on Q·Kᵀ equals scale 1 on (c·Q)·Kᵀ, and a
    /// different scale must give a visibly different answer.
    #[test]
    fn softmax_scale_is_honoured() {
        let mut s = shape(1, 2, 30, 4, 1, 576, 512, true);
        s.softmax_scale = 1.0 / 192f32.sqrt(); // the real DeepSeek-V3 value, not 1/sqrt(576)
        let inp = Inputs::new(&s, 71);
        let (o, lse) = attention_forward(&s, &inp.q, &inp.kv(), 16);

        let unscaled = AttentionShape {
            softmax_scale: 1.0,
            ..s
        };
        let q_scaled: Vec<f32> = inp.q.iter().map(|&x| x * s.softmax_scale).collect();
        let (o_ref, lse_ref) = attention_naive_f64(&unscaled, &q_scaled, &inp.kv());
        assert_close("scaled O", &o, &o_ref, 1e-5, 1e-4);
        assert_close("scaled LSE", &lse, &lse_ref, 1e-5, 1e-4);

        let wrong = AttentionShape {
            softmax_scale: 1.0 / 576f32.sqrt(),
            ..s
        };
        let (o_wrong, lse_wrong) = attention_naive_f64(&wrong, &inp.q, &inp.kv());
        assert!(!compare(&o, &o_wrong, ATOL, RTOL).passed());
        assert!(!compare(&lse, &lse_wrong, ATOL, RTOL).passed());
    }

    /// The comparison cannot silently pass. It catches a single perturbed element, NaN, a lost
    /// -inf, a wrong causal setting and a wrong scale, and it accepts matching -inf.
    #[test]
    fn compare_catches_wrong_results() {
        let s = shape(1, 4, 20, 4, 2, 32, 32, true);
        let inp = Inputs::new(&s, 81);
        let (o, lse) = attention_forward(&s, &inp.q, &inp.kv(), 8);
        let (o_ref, lse_ref) = attention_naive_f64(&s, &inp.q, &inp.kv());
        let ok = compare(&o, &o_ref, ATOL, RTOL);
        assert!(ok.passed() && ok.compared == o.len() && ok.first_mismatch.is_none());

        let mut bad = o.clone();
        bad[77] += 1e-3;
        let c = compare(&bad, &o_ref, ATOL, RTOL);
        assert_eq!((c.mismatches, c.first_mismatch), (1, Some(77)));
        assert!(c.max_abs_err > 9e-4 && c.max_rel_err > 0.0);

        bad[77] = f32::NAN;
        let c = compare(&bad, &o_ref, ATOL, RTOL);
        assert_eq!(c.mismatches, 1);
        assert!(c.max_abs_err.is_infinite());
        let c = compare(&[f32::NAN], &[f64::NAN], 1.0, 1.0);
        assert_eq!(c.mismatches, 1, "NaN never matches, not even NaN");

        let neg_inf = compare(
            &[f32::NEG_INFINITY, 1.0],
            &[f64::NEG_INFINITY, 1.0],
            0.0,
            0.0,
        );
        assert!(neg_inf.passed(), "equal -inf (empty rows) must match");
        assert!(!compare(&[0.0], &[f64::NEG_INFINITY], 1e9, 1e9).passed());

        // Forgetting the causal mask, or using the wrong scale, is caught.
        let non_causal = AttentionShape { causal: false, ..s };
        let (o_nc, lse_nc) = attention_forward(&non_causal, &inp.q, &inp.kv(), 8);
        assert!(!compare(&o_nc, &o_ref, ATOL, RTOL).passed());
        assert!(!compare(&lse_nc, &lse_ref, ATOL, RTOL).passed());
        let rescaled = AttentionShape {
            softmax_scale: s.softmax_scale * 1.01,
            ..s
        };
        let (o_sc, _) = attention_forward(&rescaled, &inp.q, &inp.kv(), 8);
        assert!(!compare(&o_sc, &o_ref, ATOL, RTOL).passed());
        assert!(compare(&lse, &lse_ref, ATOL, RTOL).passed());
    }

    #[test]
    fn validation_rejects_bad_shapes_and_lengths() {
        let good = shape(1, 2, 3, 4, 2, 8, 8, false);
        assert!(good.validate().is_ok());
        assert_eq!(good.group_size(), 2);
        assert_eq!(good.q_len_elems(), good.q_elems());
        let zero = AttentionShape { kv_len: 0, ..good };
        assert!(zero.validate().unwrap_err().contains("kv_len"));
        let ratio = AttentionShape {
            kv_heads: 3,
            ..good
        };
        assert!(ratio
            .validate()
            .unwrap_err()
            .contains("multiple of kv_heads"));
        let scale = AttentionShape {
            softmax_scale: f32::NAN,
            ..good
        };
        assert!(scale.validate().is_err());
        let huge = AttentionShape {
            batch: usize::MAX / 2,
            ..good
        };
        assert!(huge.validate().unwrap_err().contains("overflows"));

        let inp = Inputs::new(&good, 91);
        let err = good.validate_inputs(&inp.q[1..], &inp.kv()).unwrap_err();
        assert!(
            err.contains("Q has 63 elements") && err.contains("needs 64"),
            "{err}"
        );
        let short_v = KvSource::Contiguous {
            k: &inp.k,
            v: &inp.v[..5],
        };
        let err = good.validate_inputs(&inp.q, &short_v).unwrap_err();
        assert!(
            err.starts_with("V has 5 elements") && err.contains("needs 48"),
            "{err}"
        );

        let paged = Paged::build(&good, &inp.k, &inp.v, 2, 92);
        let mut table = paged.table.clone();
        table[0] = 1000;
        let bad_page = PagedKv {
            block_table: &table,
            ..paged.view()
        };
        assert!(bad_page
            .validate(&good)
            .unwrap_err()
            .contains("out of range"));
        let short_table = PagedKv {
            max_pages_per_seq: 1,
            block_table: &table[..1],
            ..paged.view()
        };
        assert!(short_table.validate(&good).unwrap_err().contains("needs 2"));
        let ragged = PagedKv {
            v_pages: &paged.v_pages[1..],
            ..paged.view()
        };
        assert!(ragged
            .validate(&good)
            .unwrap_err()
            .starts_with("v_pages has"));
    }

    #[test]
    #[should_panic(expected = "K has 10 elements but the attention shape needs 48")]
    fn forward_panics_with_the_validation_message() {
        let s = shape(1, 2, 3, 4, 2, 8, 8, false);
        let inp = Inputs::new(&s, 93);
        let kv = KvSource::Contiguous {
            k: &inp.k[..10],
            v: &inp.v,
        };
        let _ = attention_forward(&s, &inp.q, &kv, 4);
    }

    #[test]
    #[should_panic(expected = "kv_tile must be at least 1")]
    fn forward_rejects_zero_tile() {
        let s = shape(1, 1, 1, 1, 1, 4, 4, false);
        let inp = Inputs::new(&s, 94);
        let _ = attention_forward(&s, &inp.q, &inp.kv(), 0);
    }
}
