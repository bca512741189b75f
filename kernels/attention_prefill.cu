// kernels/attention_prefill.cu: attention prefill (the forward pass over a whole prompt) on
// tensor cores, FlashAttention-2 style: one block per (query tile, head, sequence), each warp
// owns 16 query rows and all the keys of the current K/V tile, so the online softmax (row max
// and row sum, f32) never leaves the warp. Q·Kᵀ and P·V run on mma.sync m16n8k16 (BF16 or
// FP16 inputs, f32 accumulation) with operands from ldmatrix (x4 for Q and K, x4.trans for V);
// K/V tiles stream through shared memory with cp.async, double-buffered when the launch gives
// two stages. P goes from the score accumulators straight into the A operand of P·V in
// registers: the m16n8 f32 accumulator layout of two adjacent key tiles is the m16k16 A
// fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16").
// No inline PTX here: every tensor-core, ldmatrix and cp.async instruction goes through the
// wrappers of common.cuh, so the SIMT harness runs this file unchanged.
//
// ===================================== LAUNCH CONTRACT =====================================
// Kernels (T = bf16 or f16; DQK x DV = head dims of Q/K and of V/O):
//   sb_attn_prefill_bf16_64x64    sb_attn_prefill_f16_64x64
//   sb_attn_prefill_bf16_128x128  sb_attn_prefill_f16_128x128
//   sb_attn_prefill_bf16_192x128  sb_attn_prefill_f16_192x128   (DeepSeek-V3 un-absorbed MLA
//                                                                 prefill: MHA with d_qk 192)
// Signature (all of them):
//   (const T* q, const T* k, const T* v, T* o, f32* lse,
//    u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal, u32 stages,
//    f32 softmax_scale)
// Layouts, row-major ("BSHD"), as in solbench_host::attention_reference:
//   q [batch][q_len][q_heads][DQK]     k [batch][kv_len][kv_heads][DQK]
//   v [batch][kv_len][kv_heads][DV]    o [batch][q_len][q_heads][DV]
//   lse [batch][q_heads][q_len]: natural log of the row's sum of exp(scaled score), f32.
//   lse may be null (not written). Query head h reads KV head h / (q_heads / kv_heads).
// Semantics: o = softmax(softmax_scale · q·kᵀ, masked) · v per (sequence, head). causal != 0:
//   bottom-right aligned, row i sees keys j <= i + kv_len - q_len; a row that sees no key
//   (q_len > kv_len) gets o = 0 and lse = -inf (FlashAttention's convention).
// Requirements: q_len >= 1, kv_len >= 1, q_heads a multiple of kv_heads, softmax_scale > 0
//   and finite; every pointer 16-byte aligned (cuMemAlloc gives 256 B); o and lse do not
//   overlap the inputs. Lengths need NOT be multiples of any tile: tails are zero-filled on
//   load, masked in the scores and guarded on store.
// Block: blockDim.x = 32 · W threads, W in 1..8 warps (the backend uses 4 or 8); the block
//   covers BM = 16 · W query rows. 1-D block.
// Grid: (q_heads, batch, ceil(q_len / BM)). blockIdx.z counts query tiles from the LAST one,
//   so the causal blocks with the most work are dispatched first (longest-first balancing),
//   and the q_heads blocks of one tile position (for GQA, the heads sharing a KV head) are
//   adjacent and read the same K/V from L2.
// stages: 1 or 2 K/V buffers. Dynamic shared memory: exactly
//     2 · (BM · DQK + stages · 64 · (DQK + DV)) bytes
//   (64 = keys per K/V tile), e.g. BM 128, 128x128, 2 stages: 96 KiB; above 48 KiB set
//   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first. No static shared memory.
//   solbench_cuda::attention_prefill_launch computes all of the above from the device.
// FLOPs counted (solbench_core::work::attention_work): 2 · q_heads · q_len · mean visible
//   keys · (DQK + DV) per sequence (causal halves it). The kernel executes whole 64-key
//   tiles up to the diagonal, so it does somewhat more (attention_prefill_launch's
//   executed-FLOP estimate).
// Check on the host: against solbench_host's naive f64 attention on the same rounded inputs,
//   with a tolerance for 16-bit P and 16-bit output (solbench_cuda::attention_prefill).
// ==========================================================================================
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "common.cuh"

namespace {

using sb::i64;
using sb::u16;
using sb::u32;
using sb::u64;

// Keys per K/V tile. 64 keeps the score accumulators at 32 registers per thread and a K or V
// tile of 128 dims at 16 KiB.
constexpr u32 kBlockN = 64;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

SB_DEVICE float neg_inf() { return __int_as_float((int)0xff800000u); }

// The 16-bit input type: how two f32 become one packed register, and which mma to use.
struct Bf16 {
  SB_DEVICE static u32 pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return (u32)__bfloat16_as_ushort(h.x) | ((u32)__bfloat16_as_ushort(h.y) << 16);
  }
  SB_DEVICE static void mma(float (&acc)[4], const u32 (&a)[4], const u32 (&b)[2]) {
    sb::mma_m16n8k16_bf16(acc, a, b, acc);
  }
};
struct F16 {
  SB_DEVICE static u32 pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return (u32)__half_as_ushort(h.x) | ((u32)__half_as_ushort(h.y) << 16);
  }
  SB_DEVICE static void mma(float (&acc)[4], const u32 (&a)[4], const u32 (&b)[2]) {
    sb::mma_m16n8k16_f16(acc, a, b, acc);
  }
};

// Offset, in elements, of (row, col) in a shared-memory tile of D columns. Each row is D / 8
// chunks of 16 bytes and chunk c of row r is stored at c ^ (r % 8): the 8 row addresses of
// one ldmatrix matrix (8 consecutive rows, same logical chunk) then fall in 8 different
// 16-byte bank groups, where an unswizzled pitch of 128 or 256 bytes would put them all in
// the same one (an 8-way conflict). D / 8 is a multiple of 8, so the XOR stays in the row.
template <u32 D> SB_DEVICE u32 swz(u32 row, u32 col) {
  static_assert(D % 64 == 0, "the swizzle needs a multiple of 8 chunks per row");
  return row * D + ((((col >> 3) ^ (row & 7u))) << 3) + (col & 7u);
}

// Copies rows [row0, row0 + rows) of one head of a [len][heads][D] tensor (head0 = its row 0,
// row_stride = heads · D elements) into a swizzled tile, 16 bytes per cp.async, spread over
// the whole block. Rows at or past `len` are zero-filled (src-size 0): zero K rows give finite
// scores that the mask removes, and zero V rows keep 0 · garbage from becoming NaN. Their
// source address is clamped to row 0, which exists (len >= 1).
template <u32 D>
SB_DEVICE void load_tile(u16* tile, const u16* head0, u64 row_stride, u32 row0, u32 rows,
                         u32 len) {
  constexpr u32 kChunks = D / 8;
  for (u32 i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
    const u32 r = i / kChunks, c = i % kChunks;
    const u32 g = row0 + r;
    const bool in = g < len;
    const u16* src = head0 + (in ? (u64)g * row_stride : 0ull) + c * 8;
    sb::cp_async_16_zfill(tile + r * D + ((c ^ (r & 7u)) << 3), src, in ? 16u : 0u);
  }
}

// S (16 rows x 64 keys, f32) = this warp's Q rows · K tileᵀ. K is stored [key][dim], which
// is already the "col" B operand of Q·Kᵀ (k = dim, n = key), so plain ldmatrix gives it:
// one x4 loads keys np·16 .. +15 x dims kk·16 .. +15 as four 8x8 matrices, lanes 8j..8j+7
// addressing matrix j = (keys +0 / +8) x (dims +0 / +8) in the order b0, b1 of the first
// 8 keys, then b0, b1 of the next 8.
//
// The Q operand comes from registers (qf) when the head is at most 128 wide; a 192-wide head
// would need 48 more registers per thread than sm_100a's allocator leaves spill-free, so its
// Q fragments are read again from the Q tile (qs; this lane addresses row q_row at dims
// q_dim + 16·kk, as for qf) for every tile, as FlashAttention-2 does.
template <u32 DQK> struct QFrags {
  static constexpr bool kInRegisters = DQK <= 128;
  static constexpr u32 kCount = kInRegisters ? DQK / 16 : 1;
};

template <class E, u32 DQK>
SB_DEVICE void scores(float (&s)[kBlockN / 8][4], const u32 (&qf)[QFrags<DQK>::kCount][4],
                      const u16* qs, u32 q_row, u32 q_dim, const u16* ks, u32 lane) {
#pragma unroll
  for (u32 n = 0; n < kBlockN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  const u32 key_off = (lane & 7u) + ((lane >> 4) << 3);
  const u32 dim_off = ((lane >> 3) & 1u) << 3;
#pragma unroll
  for (u32 kk = 0; kk < DQK / 16; ++kk) {
    u32 a[4];
    if constexpr (QFrags<DQK>::kInRegisters) {
      a[0] = qf[kk][0];
      a[1] = qf[kk][1];
      a[2] = qf[kk][2];
      a[3] = qf[kk][3];
    } else {
      sb::ldmatrix_x4(a, qs + swz<DQK>(q_row, kk * 16 + q_dim));
    }
#pragma unroll
    for (u32 np = 0; np < kBlockN / 16; ++np) {
      u32 kb[4];
      sb::ldmatrix_x4(kb, ks + swz<DQK>(np * 16 + key_off, kk * 16 + dim_off));
      const u32 b0[2] = {kb[0], kb[1]};
      const u32 b1[2] = {kb[2], kb[3]};
      E::mma(s[2 * np], a, b0);
      E::mma(s[2 * np + 1], a, b1);
    }
  }
}

// O (16 rows x DV, f32) += P (16 x 64 keys, 16-bit A fragments) · V tile. V is stored
// [key][dim] but the B operand wants k = key along each register pair, so ldmatrix.trans:
// one x4 loads keys kk·16 .. +15 x dims dp·16 .. +15, matrix j = (keys +0 / +8) x
// (dims +0 / +8) giving b0, b1 of the first 8 dims, then b0, b1 of the next 8.
template <class E, u32 DV>
SB_DEVICE void accumulate_pv(float (&acc)[DV / 8][4], const u32 (&pf)[kBlockN / 16][4],
                             const u16* vs, u32 lane) {
  const u32 key_off = (lane & 7u) + (((lane >> 3) & 1u) << 3);
  const u32 dim_off = (lane >> 4) << 3;
#pragma unroll
  for (u32 kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
    for (u32 dp = 0; dp < DV / 16; ++dp) {
      u32 vb[4];
      sb::ldmatrix_x4_trans(vb, vs + swz<DV>(kk * 16 + key_off, dp * 16 + dim_off));
      const u32 b0[2] = {vb[0], vb[1]};
      const u32 b1[2] = {vb[2], vb[3]};
      E::mma(acc[2 * dp], pf[kk], b0);
      E::mma(acc[2 * dp + 1], pf[kk], b1);
    }
  }
}

// Waits until the copy group the current phase needs has landed: with two stages the newest
// group (the next tile's prefetch) may stay in flight, with one stage nothing may.
SB_DEVICE void wait_current(bool two) {
  if (two) sb::cp_async_wait<1>();
  else sb::cp_async_wait<0>();
}

template <class E, u32 DQK, u32 DV>
SB_DEVICE void attention_prefill(u16* smem, const u16* SB_RESTRICT q, const u16* SB_RESTRICT k,
                                 const u16* SB_RESTRICT v, u16* SB_RESTRICT o,
                                 float* SB_RESTRICT lse, u32 q_len, u32 kv_len, u32 q_heads,
                                 u32 kv_heads, u32 causal, u32 stages, float softmax_scale) {
  static_assert(DQK % 64 == 0 && DV % 64 == 0 && DV <= DQK,
                "head dims: multiples of 64, DV <= DQK (O is staged in the Q tile)");
  const u32 lane = sb::lane_id(), warp = sb::warp_id();
  const u32 block_m = blockDim.x / 2;  // 16 rows per warp of 32 threads
  const u32 h = blockIdx.x, b = blockIdx.y;
  const u32 q0 = (gridDim.z - 1u - blockIdx.z) * block_m;
  const u32 hk = h / (q_heads / kv_heads);
  const bool two = stages >= 2;

  const u64 q_stride = (u64)q_heads * DQK, k_stride = (u64)kv_heads * DQK;
  const u64 v_stride = (u64)kv_heads * DV, o_stride = (u64)q_heads * DV;
  const u16* q_head = q + (u64)b * q_len * q_stride + (u64)h * DQK;
  const u16* k_head = k + (u64)b * kv_len * k_stride + (u64)hk * DQK;
  const u16* v_head = v + (u64)b * kv_len * v_stride + (u64)hk * DV;
  u16* o_head = o + (u64)b * q_len * o_stride + (u64)h * DV;
  float* lse_head = lse != nullptr ? lse + ((u64)b * q_heads + h) * q_len : nullptr;

  // Keys visible to row r are [0, visible(r)): a prefix, so masking is a length per row and a
  // tile starting at or past the last row's length is skipped whole.
  const i64 shift = (i64)kv_len - (i64)q_len;
  auto visible = [&](u32 r) -> u32 {
    if (!causal) return kv_len;
    const i64 n = (i64)r + 1 + shift;
    return n <= 0 ? 0u : (n >= (i64)kv_len ? kv_len : (u32)n);
  };
  const u32 last_row = min(q0 + block_m, q_len) - 1u;
  const u32 kv_tiles = (visible(last_row) + kBlockN - 1) / kBlockN;
  // Tiles every row of this block sees whole: no mask needed. From here on a tile crosses
  // the diagonal (causal) or the end of the keys.
  const u32 full_tiles = visible(q0) / kBlockN;

  if (kv_tiles == 0) {
    // No row of this tile sees any key (causal with q_len > kv_len): o = 0, lse = -inf.
    for (u32 i = threadIdx.x; i < block_m * (DV / 8); i += blockDim.x) {
      const u32 r = q0 + i / (DV / 8);
      if (r < q_len)
        sb::stcg(reinterpret_cast<uint4*>(o_head + r * o_stride + (i % (DV / 8)) * 8),
                 make_uint4(0u, 0u, 0u, 0u));
    }
    if (lse_head != nullptr)
      for (u32 r = threadIdx.x; r < block_m; r += blockDim.x)
        if (q0 + r < q_len) lse_head[q0 + r] = neg_inf();
    return;
  }

  constexpr u32 kTileK = kBlockN * DQK, kTileV = kBlockN * DV;
  u16* qs = smem;                    // block_m x DQK; later each warp's output staging
  u16* ks = qs + block_m * DQK;      // stages x kTileK
  u16* vs = ks + stages * kTileK;    // stages x kTileV

  // Prologue: Q and K_0 in one group; V_0 in the next when double-buffered (with one stage V_0
  // is loaded behind the first scores, and the group is empty).
  load_tile<DQK>(qs, q_head, q_stride, q0, block_m, q_len);
  load_tile<DQK>(ks, k_head, k_stride, 0, kBlockN, kv_len);
  sb::cp_async_commit();
  if (two) load_tile<DV>(vs, v_head, v_stride, 0, kBlockN, kv_len);
  sb::cp_async_commit();
  wait_current(two);
  __syncthreads();

  // This warp's 16 query rows as A fragments, kept in registers for the whole loop (up to
  // 128 dims, see QFrags). Lanes 0-15 address rows 0-15 at dims +0, lanes 16-31 the same rows
  // at dims +8: matrices (rows 0-7, +0), (rows 8-15, +0), (rows 0-7, +8), (rows 8-15, +8)
  // are a0a1, a2a3, a4a5, a6a7.
  const u32 q_row = warp * 16 + (lane & 15u), q_dim = (lane >> 4) << 3;
  u32 qf[QFrags<DQK>::kCount][4];
#pragma unroll
  for (u32 kk = 0; kk < QFrags<DQK>::kCount; ++kk) {
    if constexpr (QFrags<DQK>::kInRegisters) {
      sb::ldmatrix_x4(qf[kk], qs + swz<DQK>(q_row, kk * 16 + q_dim));
    } else {
      qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;  // unused: Q is read from qs
    }
  }

  // This thread's two rows (accumulator rows g and g + 8 of the warp's 16) and their lengths.
  const u32 row_a = q0 + warp * 16 + (lane >> 2), row_b = row_a + 8;
  const u32 lim_a = visible(row_a), lim_b = visible(row_b);
  // Scores are scaled into log2 units inside the exponent: p = 2^(s·c - m·c), c = scale·log2(e).
  const float c = softmax_scale * kLog2e;
  float m_a = neg_inf(), m_b = neg_inf();  // running row maxima of the raw scores
  float l_a = 0.f, l_b = 0.f;              // this thread's part of the row sums
  float acc[DV / 8][4];
#pragma unroll
  for (u32 d = 0; d < DV / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

  for (u32 j = 0; j < kv_tiles; ++j) {
    const u32 buf = two ? (j & 1u) : 0u;
    if (j > 0) {
      wait_current(two);  // K_j has landed (and V_j with one stage is not yet issued)
      __syncthreads();    // ... for every thread; and every warp is done with tile j - 1
    }
    // Two stages: prefetch K_{j+1} into the buffer tile j - 1 used. One stage: load V_j into
    // the only V buffer (free: the barrier above follows every warp's P·V of tile j - 1).
    if (two) {
      if (j + 1 < kv_tiles)
        load_tile<DQK>(ks + ((j + 1) & 1u) * kTileK, k_head, k_stride, (j + 1) * kBlockN,
                       kBlockN, kv_len);
    } else {
      load_tile<DV>(vs, v_head, v_stride, j * kBlockN, kBlockN, kv_len);
    }
    sb::cp_async_commit();

    float s[kBlockN / 8][4];
    scores<E, DQK>(s, qf, qs, q_row, q_dim, ks + buf * kTileK, lane);

    if (j >= full_tiles) {
      // Accumulator column of s[n][e] (and s[n][e + 2], row b): key j·64 + 8n + 2·tig + e.
      const u32 col0 = j * kBlockN + 2 * (lane & 3u);
#pragma unroll
      for (u32 n = 0; n < kBlockN / 8; ++n) {
#pragma unroll
        for (u32 e = 0; e < 2; ++e) {
          const u32 col = col0 + n * 8 + e;
          if (col >= lim_a) s[n][e] = neg_inf();
          if (col >= lim_b) s[n][e + 2] = neg_inf();
        }
      }
    }

    // Online softmax. A row's 64 scores live in the 4 lanes of one quad (16 each), so two
    // xor-shuffles give the tile's row maximum.
    float mx_a = neg_inf(), mx_b = neg_inf();
#pragma unroll
    for (u32 n = 0; n < kBlockN / 8; ++n) {
      mx_a = fmaxf(mx_a, fmaxf(s[n][0], s[n][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, x));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, x));
    }
    const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
    // A row that has seen no key yet keeps max -inf; subtract 0 then, so exp2 gives 0, not NaN.
    const float base_a = new_a == neg_inf() ? 0.f : new_a * c;
    const float base_b = new_b == neg_inf() ? 0.f : new_b * c;
    const float alpha_a = exp2f(m_a * c - base_a), alpha_b = exp2f(m_b * c - base_b);
    m_a = new_a;
    m_b = new_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (u32 n = 0; n < kBlockN / 8; ++n) {
      s[n][0] = exp2f(fmaf(s[n][0], c, -base_a));
      s[n][1] = exp2f(fmaf(s[n][1], c, -base_a));
      s[n][2] = exp2f(fmaf(s[n][2], c, -base_b));
      s[n][3] = exp2f(fmaf(s[n][3], c, -base_b));
      sum_a += s[n][0] + s[n][1];
      sum_b += s[n][2] + s[n][3];
    }
    // Every lane of a quad scales by the same alpha, so the quad's partial sums stay
    // consistent and are added up once, after the loop.
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (u32 d = 0; d < DV / 8; ++d) {
      acc[d][0] *= alpha_a;
      acc[d][1] *= alpha_a;
      acc[d][2] *= alpha_b;
      acc[d][3] *= alpha_b;
    }
    // P as A fragments of P·V: keys kk·16 .. +7 are accumulator tile 2kk, +8 .. +15 tile 2kk+1.
    u32 pf[kBlockN / 16][4];
#pragma unroll
    for (u32 kk = 0; kk < kBlockN / 16; ++kk) {
      pf[kk][0] = E::pack(s[2 * kk][0], s[2 * kk][1]);
      pf[kk][1] = E::pack(s[2 * kk][2], s[2 * kk][3]);
      pf[kk][2] = E::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pf[kk][3] = E::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }

    wait_current(two);  // V_j has landed
    __syncthreads();    // ... for every thread; and every warp is done reading K of tile j
    // Two stages: prefetch V_{j+1} into the buffer tile j - 1 used. One stage: K_{j+1} into
    // the only K buffer (free: the barrier above follows every warp's scores of tile j).
    if (j + 1 < kv_tiles) {
      if (two)
        load_tile<DV>(vs + ((j + 1) & 1u) * kTileV, v_head, v_stride, (j + 1) * kBlockN,
                      kBlockN, kv_len);
      else
        load_tile<DQK>(ks, k_head, k_stride, (j + 1) * kBlockN, kBlockN, kv_len);
    }
    sb::cp_async_commit();
    accumulate_pv<E, DV>(acc, pf, vs + buf * kTileV, lane);
  }

  // Epilogue: finish the row sums across the quad, normalise, and write 16-byte chunks.
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, x);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, x);
  }
  const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f;  // 0 for a row that saw no key: o = 0
  const float inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
  // The output goes through this warp's own 16 rows of the Q tile (read only by this warp,
  // into qf or by scores, all before the loop's last barrier), so the global stores are
  // whole 16-byte chunks of contiguous rows rather than 4-byte fragments. Only this warp
  // touches these rows: __syncwarp suffices.
  u16* stage = qs + warp * 16 * DQK;
  const u32 g = lane >> 2;
#pragma unroll
  for (u32 d = 0; d < DV / 8; ++d) {
    const u32 col = d * 8 + 2 * (lane & 3u);
    *reinterpret_cast<u32*>(stage + swz<DQK>(g, col)) = E::pack(acc[d][0] * inv_a, acc[d][1] * inv_a);
    *reinterpret_cast<u32*>(stage + swz<DQK>(g + 8, col)) =
        E::pack(acc[d][2] * inv_b, acc[d][3] * inv_b);
  }
  __syncwarp();
  constexpr u32 kOutChunks = DV / 8;
  for (u32 i = lane; i < 16 * kOutChunks; i += 32) {
    const u32 r = i / kOutChunks, ch = i % kOutChunks;
    const u32 row = q0 + warp * 16 + r;
    if (row < q_len)
      sb::stcg(reinterpret_cast<uint4*>(o_head + row * o_stride + ch * 8),
               *reinterpret_cast<const uint4*>(stage + swz<DQK>(r, ch * 8)));
  }
  if (lse_head != nullptr && (lane & 3u) == 0) {
    // lse = ln(sum exp(scale·s)) = ln(2^(m·c) · l) = (m·c + log2 l) · ln 2.
    if (row_a < q_len) lse_head[row_a] = l_a > 0.f ? (m_a * c + log2f(l_a)) * kLn2 : neg_inf();
    if (row_b < q_len) lse_head[row_b] = l_b > 0.f ? (m_b * c + log2f(l_b)) * kLn2 : neg_inf();
  }
}

}  // namespace

// One kernel per (input type, head dims). 256 threads is the largest block the backend
// launches (8 warps). The 128- and 192-wide heads ask for one resident block, so ptxas may use
// up to 255 registers: the O accumulators (DV / 2 per thread), the scores (32) and the Q
// fragments (DQK / 4, up to 128 dims) must all stay in registers, spill-free (~185-250 used,
// the most on sm_100a). The 64-wide head needs about half of that and asks for two blocks
// (<= 128 registers), which it meets without spilling: twice the warps per SM.
SB_KERNEL void __launch_bounds__(256, 2)
    sb_attn_prefill_bf16_64x64(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                               u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                               u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<Bf16, 64, 64>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads, causal,
                                  stages, softmax_scale);
}
SB_KERNEL void __launch_bounds__(256, 2)
    sb_attn_prefill_f16_64x64(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                              u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                              u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<F16, 64, 64>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads, causal,
                                 stages, softmax_scale);
}
SB_KERNEL void __launch_bounds__(256, 1)
    sb_attn_prefill_bf16_128x128(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                                 u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                                 u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<Bf16, 128, 128>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads,
                                    causal, stages, softmax_scale);
}
SB_KERNEL void __launch_bounds__(256, 1)
    sb_attn_prefill_f16_128x128(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                                u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                                u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<F16, 128, 128>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads,
                                   causal, stages, softmax_scale);
}
SB_KERNEL void __launch_bounds__(256, 1)
    sb_attn_prefill_bf16_192x128(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                                 u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                                 u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<Bf16, 192, 128>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads,
                                    causal, stages, softmax_scale);
}
SB_KERNEL void __launch_bounds__(256, 1)
    sb_attn_prefill_f16_192x128(const u16* q, const u16* k, const u16* v, u16* o, float* lse,
                                u32 q_len, u32 kv_len, u32 q_heads, u32 kv_heads, u32 causal,
                                u32 stages, float softmax_scale) {
  SB_DYNAMIC_SHARED(u16, smem);
  attention_prefill<F16, 192, 128>(smem, q, k, v, o, lse, q_len, kv_len, q_heads, kv_heads,
                                   causal, stages, softmax_scale);
}
