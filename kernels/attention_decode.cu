// kernels/attention_decode.cu: split-KV ("flash-decoding") attention for the decode phase,
// BF16 and FP16 inputs, f32 arithmetic, on the tensor cores (mma.sync m16n8k16 through the
// wrappers of common.cuh). Two kernels per call: the split kernel writes one partial output
// and log-sum-exp (LSE) per KV split; the combine kernel merges the splits with the
// log-sum-exp rule (the math of solbench_host::attention_reference::combine_splits). With a
// single split the split kernel writes the final output itself and no combine runs.
//
// Why this shape (see docs/attention.md, "Decode"):
//  * Decode reads the whole KV cache once per token and does ~1-2 FLOP per byte per query
//    head sharing it, so it is memory-bound: the only thing that matters is streaming K and
//    V at HBM speed, once. So one block serves ALL query heads that share a KV head (GQA's
//    group, MLA's 128 heads in tiles of 64): their rows are packed into the M dimension of
//    the MMA ("PackGQA"), and every K/V row is loaded once into shared memory for them.
//  * (batch x KV head) alone gives far fewer blocks than SMs at small batch, hence the
//    split of the KV sequence into chunks, one block each, merged by the combine kernel.
//  * MLA (absorbed, DeepSeek-V3): d_qk = 576 (512 latent + 64 rope), d_v = 512, one
//    latent head; V is the first 512 columns of the K row already in shared memory, so
//    the latent cache is read once (not twice).
//
// Inside a block (4 warps per 16-row tile of query rows):
//  * K/V tiles of BN keys are double-buffered with cp.async (zero-filled past kv_len, so
//    padding never holds NaN/Inf that 0 * x would propagate);
//  * S = Q.K^T: warp w of a row tile scores keys [w*BN/4, (w+1)*BN/4) of the tile for its
//    16 rows over the whole d_qk (Q A-fragments by ldmatrix from shared memory, K
//    B-fragments by ldmatrix: K stored [key][d] is already the "col" B layout);
//  * row maxima meet in shared memory; P = exp2(S*scale*log2e - m) is rounded to the input
//    type and written to shared memory; the running sum l accumulates the ROUNDED p, so
//    the output is an exact weighted average of V rows with (slightly) perturbed weights;
//  * O += P.V: warp w owns output columns [w*d_v/4, (w+1)*d_v/4) of its 16 rows (V
//    B-fragments by ldmatrix.trans), so a 16 x 512 MLA accumulator is 64 registers per
//    thread, not 256. The online-softmax rescale exp2(m_old - m_new) is applied per tile.
//
// No inline PTX here (see common.cuh). <cuda_bf16.h>/<cuda_fp16.h> are used only for the
// float <-> 16-bit conversions (round to nearest even); tensors are passed as raw 16-bit
// patterns (u16) so the same code serves both types.
//
// ===================================== LAUNCH CONTRACT =====================================
// Layouts (row-major, as solbench_host::attention_reference; elements, not bytes):
//   Q            [batch][q_len][q_heads][d_qk]                       (T = bf16 or f16 bits)
//   K contiguous [batch][kv_len][kv_heads][d_qk]
//   V contiguous [batch][kv_len][kv_heads][d_v]
//   K paged      [num_pages][page_size][kv_heads][d_qk], V paged likewise with d_v;
//                token t of sequence b is in page block_table[b * max_pages + t / page_size]
//                at slot t % page_size. Only the entries of pages holding one of the kv_len
//                tokens are read. MLA: V is NOT a separate tensor: pass v == k; the kernel
//                reads V as the first 512 columns of each K (latent) row.
//   O            [batch][q_len][q_heads][d_v]                        (T)
//   o_partial    [num_splits][batch][q_heads][q_len][d_v]            (f32)
//   lse          [num_splits][batch][q_heads][q_len]                 (f32, natural log)
// Rows: query head h uses KV head h / (q_heads / kv_heads); its q_len query positions and
// the group's heads are packed head-major into rows r = (h % group) * q_len + i.
// Masking: none for q_len == 1 (decode sees every key). With causal != 0 and q_len > 1,
// query position i sees keys t <= i + kv_len - q_len (bottom-right aligned, as the host
// reference); a row that sees no key gets O = 0 and LSE = -inf.
//
// Split kernels  sb_attn_decode_{bf16,f16}_d{64,128,256}   (MHA/GQA, d_qk == d_v == D)
//                sb_attn_decode_mla_{bf16,f16}_h{16,64}    (d_qk 576, d_v 512, kv_heads 1,
//                                                           v == k)
//   (q, k, v, block_table, o_partial, lse, o, batch, q_len, q_heads, kv_heads, kv_len,
//    page_size, max_pages, num_splits, causal, softmax_scale)
//   block_table == nullptr selects contiguous K/V (page_size, max_pages ignored).
//   Block: 128 threads (d*, mla_h16: 16 query rows) or 512 threads (mla_h64: 64 rows).
//   Grid (1-D): batch * kv_heads * num_splits * head_tiles blocks, head_tiles =
//     ceil(q_heads / kv_heads * q_len / rows_per_block); block index =
//     ht + head_tiles * (split + num_splits * (kv_head + kv_heads * b)).
//   Split s covers KV tiles [s * tiles / num_splits, (s + 1) * tiles / num_splits) with
//     tiles = ceil(kv_len / BN), BN = 64 keys (d64, d128) or 32 keys (d256, mla). A split
//     with no tile (num_splits > tiles) writes O = 0 and LSE = -inf.
//   num_splits == 1: writes O (T) and lse (split 0) directly; o_partial is not touched.
//   num_splits  > 1: writes o_partial and lse (every valid row of every split); o is not
//     touched; run sb_attn_combine_T afterwards.
//   Dynamic shared memory: exactly (bytes, no static shared memory):
//     rows*(d_qk+8)*2 + 2*BN*(d_qk+8)*2 + [not mla] 2*BN*(d_v+8)*2 + rows*(BN+8)*2
//       + 2*4*rows*4 + 2*BN*4
//     = d64: 42,496; d128: 77,312; d256: 78,080; mla_h16: 95,488; mla_h64: 156,928.
//     Above 48 KiB set CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first.
//     (solbench_cuda::attention_launch::decode_shared_bytes computes the same.)
//   Requirements: every pointer 16-byte aligned; q_heads % kv_heads == 0; every
//     block_table entry that is read < num_pages; 1 <= num_splits <= tiles is best (more
//     is allowed: the extra splits are empty); num_splits * tiles < 2^32; all counts and
//     batch * q_heads * q_len < 2^31.
// Combine kernels sb_attn_combine_{bf16,f16}
//   (o_partial, lse_partial, o, lse, batch, q_heads, q_len, d_v, num_splits)
//   Per row (b, h, i): LSE = m + ln(sum_s exp(lse_s - m)), m = max_s lse_s;
//   O = sum_s exp(lse_s - LSE) * O_s, skipping splits with lse_s = -inf (their O_s is never
//   read, so it may hold anything); every split -inf gives O = 0, LSE = -inf; a NaN lse_s
//   propagates. Writes O (T, BSHD) and lse [batch][q_heads][q_len] (f32).
//   Block: any multiple of 32 threads (128 intended), one warp per row; grid:
//   ceil(batch * q_heads * q_len / (block / 32)). d_v % 4 == 0 (float4 loads). No shared
//   memory.
// Bytes counted (solbench_core::work::attention_work): Q + K + V + O once (K/V per KV head,
// MLA's latent once); the partial round trip and the page table are overhead, not work.
// ==========================================================================================
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

namespace {

using sb::f32;
using sb::u16;
using sb::u32;
using sb::u64;

// Warps that share one 16-row tile of query rows: they split the keys of a KV tile for
// S = Q.K^T and the output columns for O += P.V.
constexpr u32 SLICES = 4;
// K/V tiles in flight: the tile being computed and the one being loaded.
constexpr u32 STAGES = 2;
// Elements of padding after every shared-memory row: with d a multiple of 16, a row stride
// of (d + 8) * 2 bytes is an odd multiple of 16 bytes, so the 8 row addresses of an
// ldmatrix land in the 8 different 16-byte bank groups of a 128-byte line (conflict-free)
// and cp.async stays 16-byte aligned.
constexpr u32 PAD = 8;
constexpr f32 LOG2E = 1.4426950408889634f;
constexpr f32 LN2 = 0.6931471805599453f;

SB_DEVICE f32 neg_inf() { return __uint_as_float(0xff800000u); }

// The two input types: conversions of the 16-bit patterns and the matching MMA.
struct Bf16 {
  static SB_DEVICE f32 to_f32(u16 b) { return __uint_as_float((u32)b << 16); }
  static SB_DEVICE u16 from_f32(f32 x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
  static SB_DEVICE void mma(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2]) {
    sb::mma_m16n8k16_bf16(d, a, b, d);
  }
};
struct F16 {
  static SB_DEVICE f32 to_f32(u16 b) { return __half2float(__ushort_as_half(b)); }
  static SB_DEVICE u16 from_f32(f32 x) { return __half_as_ushort(__float2half_rn(x)); }
  static SB_DEVICE void mma(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2]) {
    sb::mma_m16n8k16_f16(d, a, b, d);
  }
};

SB_DEVICE u32 pack(u16 lo, u16 hi) { return (u32)lo | ((u32)hi << 16); }

// Compile-time shape of one split kernel: head dims, 16-row tiles per block, keys per KV
// tile, and whether V is a prefix of the K row (MLA). Shared-memory layout in bytes.
template <u32 DQK_, u32 DV_, u32 ROW_TILES_, u32 BN_, bool V_IN_K_>
struct Cfg {
  static constexpr u32 DQK = DQK_, DV = DV_, ROW_TILES = ROW_TILES_, BN = BN_;
  static constexpr bool V_IN_K = V_IN_K_;
  static constexpr u32 ROWS = 16 * ROW_TILES;
  static constexpr u32 THREADS = 32 * SLICES * ROW_TILES;
  static constexpr u32 KW = BN / SLICES;      // keys per warp in S
  static constexpr u32 NT_S = KW / 8;         // n8 tiles of S per warp
  static constexpr u32 DSLICE = DV / SLICES;  // output columns per warp
  static constexpr u32 NT_O = DSLICE / 8;     // n8 tiles of O per warp
  static constexpr u32 QS = DQK + PAD;        // row strides in elements
  static constexpr u32 VS = V_IN_K ? QS : DV + PAD;
  static constexpr u32 PS = BN + PAD;
  static constexpr u32 CPR = DQK / 8;  // 16-byte chunks per K row (== per V row unless MLA)
  // Unrolling of the k-loops of S and P.V: more steps overlap more shared-memory loads,
  // except in the 512-thread block, whose 128-register budget they would overrun (ptxas
  // hoists every ldmatrix of an unrolled step, 4 registers each).
  static constexpr u32 S_UNROLL = ROW_TILES == 1 ? 2 : 1;
  static constexpr u32 PV_UNROLL = ROW_TILES == 1 ? BN / 16 : 1;
  static constexpr u32 Q_OFF = 0;
  static constexpr u32 K_OFF = Q_OFF + ROWS * QS * 2;
  static constexpr u32 V_OFF = K_OFF + STAGES * BN * QS * 2;
  static constexpr u32 P_OFF = V_OFF + (V_IN_K ? 0u : STAGES * BN * VS * 2);
  static constexpr u32 MAX_OFF = P_OFF + ROWS * PS * 2;
  static constexpr u32 SUM_OFF = MAX_OFF + SLICES * ROWS * 4;
  static constexpr u32 SLOT_OFF = SUM_OFF + SLICES * ROWS * 4;
  static constexpr u32 SMEM = SLOT_OFF + STAGES * BN * 4;

  static_assert(DQK % 32 == 0, "d_qk must be a multiple of 32 (k-steps are loaded in pairs)");
  static_assert(DSLICE % 16 == 0, "each warp's output slice must be whole n8-tile pairs");
  static_assert(BN % 16 == 0 && (KW == 8 || KW % 16 == 0), "keys per warp: 8 or 16k");
  static_assert(V_IN_K ? DV <= DQK : DV == DQK, "GQA kernels have d_v == d_qk; MLA d_v <= d_qk");
  static_assert(BN <= THREADS, "one thread per key looks up a tile's storage slots");
  static_assert(Q_OFF % 16 == 0 && K_OFF % 16 == 0 && V_OFF % 16 == 0 && P_OFF % 16 == 0 &&
                    MAX_OFF % 16 == 0 && SUM_OFF % 16 == 0 && SLOT_OFF % 16 == 0,
                "16-byte aligned shared-memory regions");
};

// The kernel parameters, gathered so the device functions take one argument.
struct Params {
  const u16* q;
  const u16* k;
  const u16* v;
  const u32* block_table;
  f32* o_partial;
  f32* lse;
  u16* o;
  u32 batch, q_len, q_heads, kv_heads, kv_len, page_size, max_pages, num_splits, causal;
  f32 scale;
};

// Storage slots (rows of kv_heads * d elements) of the keys of a tile. A sequence is a
// list of pages: paged K/V looks page t / page_size up in the block table; contiguous K/V
// is the same with one page per sequence (page b, kv_len tokens long), so both layouts
// share this code. The lookup is split in two halves so the block-table load can be
// issued a whole tile before its value is needed (see the main loop).
constexpr u32 NO_SLOT = 0xffffffffu;  // a key at or past kv_len: zero-filled, never read
struct PendingSlot {
  u32 t, page;
};
SB_DEVICE PendingSlot slot_issue(const Params& p, u32 b, u32 t) {
  PendingSlot s{t, 0u};
  if (t < p.kv_len)
    s.page = p.block_table ? p.block_table[(u64)b * p.max_pages + t / p.page_size] : b;
  return s;
}
SB_DEVICE u32 slot_finish(const Params& p, PendingSlot s) {
  if (s.t >= p.kv_len) return NO_SLOT;
  const u32 tokens = p.block_table ? p.page_size : p.kv_len;
  return s.page * tokens + s.t % tokens;
}

// Issues the cp.async copies of one K/V tile of KV head hk into one stage, from the slots
// of its keys. Keys without a slot are zero-filled: padding never holds NaN or Inf, which
// 0 * x in P.V would spread.
template <class C>
SB_DEVICE void load_kv_tile(const Params& p, u32 hk, const u32* slots, u16* k_dst, u16* v_dst) {
  for (u32 c = threadIdx.x; c < C::BN * C::CPR; c += C::THREADS) {
    const u32 key = c / C::CPR, part = c % C::CPR;
    const u32 slot = slots[key];
    const bool live = slot != NO_SLOT;
    const u64 row = live ? (u64)slot * p.kv_heads + hk : 0;
    sb::cp_async_16_zfill(k_dst + key * C::QS + part * 8, p.k + row * C::DQK + part * 8,
                          live ? 16u : 0u);
    if constexpr (!C::V_IN_K) {
      sb::cp_async_16_zfill(v_dst + key * C::VS + part * 8, p.v + row * C::DV + part * 8,
                            live ? 16u : 0u);
    }
  }
}

template <class T, class C>
SB_DEVICE void decode_split(const Params& p) {
  SB_DYNAMIC_SHARED(unsigned char, smem);
  u16* q_s = reinterpret_cast<u16*>(smem + C::Q_OFF);
  u16* k_s = reinterpret_cast<u16*>(smem + C::K_OFF);
  u16* v_s = reinterpret_cast<u16*>(smem + (C::V_IN_K ? C::K_OFF : C::V_OFF));
  u16* p_s = reinterpret_cast<u16*>(smem + C::P_OFF);
  f32* red_max = reinterpret_cast<f32*>(smem + C::MAX_OFF);
  f32* red_sum = reinterpret_cast<f32*>(smem + C::SUM_OFF);
  u32* slot_s = reinterpret_cast<u32*>(smem + C::SLOT_OFF);  // [STAGES][BN]

  const u32 lane = sb::lane_id(), warp = sb::warp_id();
  const u32 rt = warp / SLICES, ds = warp % SLICES;  // row tile, key / column slice
  const u32 g = lane >> 2, tig = lane & 3;           // mma groupID, thread in group

  const u32 group = p.q_heads / p.kv_heads;
  const u32 rows_total = group * p.q_len;
  const u32 head_tiles = (rows_total + C::ROWS - 1) / C::ROWS;
  u32 idx = blockIdx.x;
  const u32 ht = idx % head_tiles;
  idx /= head_tiles;
  const u32 split = idx % p.num_splits;
  idx /= p.num_splits;
  const u32 hk = idx % p.kv_heads;
  const u32 b = idx / p.kv_heads;
  if (b >= p.batch) return;  // whole block: before any barrier

  const u32 row0 = ht * C::ROWS;  // first packed row of this block within the group
  const u32 tiles = (p.kv_len + C::BN - 1) / C::BN;
  // 32-bit on purpose: a 64-bit division is a subroutine call on the GPU, and its
  // register save/restore shows up as spills (contract: num_splits * tiles < 2^32).
  const u32 tile_begin = split * tiles / p.num_splits;
  const u32 tile_end = (split + 1) * tiles / p.num_splits;

  // The two rows this lane holds in the mma C layout (g and g + 8 of its row tile), and
  // how many keys each may see.
  u32 limit[2];
#pragma unroll
  for (u32 h = 0; h < 2; ++h) {
    const u32 r = row0 + rt * 16 + g + 8 * h;
    limit[h] = p.kv_len;
    if (p.causal && r < rows_total) {
      const u32 i = r % p.q_len;
      // Bottom-right aligned: keys t <= i + kv_len - q_len, i.e. i + 1 + kv_len - q_len of them.
      const long long n = (long long)i + 1 + p.kv_len - p.q_len;
      limit[h] = n < 0 ? 0u : (u32)n;
    }
  }

  float o_acc[C::NT_O][4];
#pragma unroll
  for (u32 n = 0; n < C::NT_O; ++n)
#pragma unroll
    for (u32 e = 0; e < 4; ++e) o_acc[n][e] = 0.0f;
  // Running max (log2 domain) and this lane's share of the running sum, per row.
  float m[2] = {neg_inf(), neg_inf()};
  float l[2] = {0.0f, 0.0f};
  const f32 scale_log2 = p.scale * LOG2E;

  if (tile_begin < tile_end) {
    // Slots of the first two tiles (later ones are looked up two tiles ahead, below).
    if (threadIdx.x < C::BN) {
#pragma unroll
      for (u32 j = 0; j < 2; ++j)
        slot_s[j * C::BN + threadIdx.x] =
            slot_finish(p, slot_issue(p, b, (tile_begin + j) * C::BN + threadIdx.x));
    }
    __syncthreads();
    // Q rows of the block (zeros for rows past the group), then the first K/V tile: one
    // commit group, waited for at the top of the first iteration.
    for (u32 c = threadIdx.x; c < C::ROWS * C::CPR; c += C::THREADS) {
      const u32 row = c / C::CPR, part = c % C::CPR;
      const u32 r = row0 + row;
      const bool live = r < rows_total;
      const u32 head = hk * group + (live ? r / p.q_len : 0);
      const u32 i = live ? r % p.q_len : 0;
      const u64 src = (((u64)b * p.q_len + i) * p.q_heads + head) * C::DQK + part * 8;
      sb::cp_async_16_zfill(q_s + row * C::QS + part * 8, p.q + (live ? src : 0),
                            live ? 16u : 0u);
    }
    load_kv_tile<C>(p, hk, slot_s, k_s, v_s);
    sb::cp_async_commit();

    for (u32 it = tile_begin; it < tile_end; ++it) {
      const u32 stage = (it - tile_begin) & 1u;
      const u16* k_t = k_s + stage * C::BN * C::QS;
      const u16* v_t = v_s + stage * C::BN * (C::V_IN_K ? C::QS : C::VS);
      sb::cp_async_wait_all();
      // Tile `it` is visible to every thread, and every warp is done with iteration it - 1
      // (its stage, its slots, P and the row maxima may be overwritten).
      __syncthreads();
      if (it + 1 < tile_end) {
        load_kv_tile<C>(p, hk, slot_s + (stage ^ 1u) * C::BN, k_s + (stage ^ 1u) * C::BN * C::QS,
                        v_s + (stage ^ 1u) * C::BN * (C::V_IN_K ? C::QS : C::VS));
        sb::cp_async_commit();
      }
      // The slots of tile it + 2 go where tile it's were. The block-table load is issued
      // now and its value stored only after this tile's math, so its latency (an L2 miss
      // at worst) hides behind a whole tile instead of stalling the next load's issue.
      // Only the first BN threads look keys up (t = kv_len: no load for the others).
      const PendingSlot next =
          slot_issue(p, b, threadIdx.x < C::BN ? (it + 2) * C::BN + threadIdx.x : p.kv_len);

      // ---- S = Q.K^T for this warp's 16 rows and KW keys.
      float s[C::NT_S][4];
#pragma unroll
      for (u32 n = 0; n < C::NT_S; ++n)
#pragma unroll
        for (u32 e = 0; e < 4; ++e) s[n][e] = 0.0f;
      const u16* q_row = q_s + (rt * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * C::QS;
      const u32 q_col = 8 * (lane >> 4);
      if constexpr (C::KW == 8) {
        // One n8 tile of keys: one ldmatrix.x4 of K covers two k-steps.
        const u16* k_row = k_t + (ds * C::KW + (lane & 7)) * C::QS + 8 * (lane >> 3);
#pragma unroll(C::S_UNROLL)
        for (u32 k0 = 0; k0 < C::DQK; k0 += 32) {
          u32 a0[4], a1[4], kb[4];
          sb::ldmatrix_x4(a0, q_row + k0 + q_col);
          sb::ldmatrix_x4(a1, q_row + k0 + 16 + q_col);
          sb::ldmatrix_x4(kb, k_row + k0);
          const u32 b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
          T::mma(s[0], a0, b0);
          T::mma(s[0], a1, b1);
        }
      } else {
        // Pairs of n8 key tiles: one ldmatrix.x4 of K covers two tiles of one k-step.
        const u16* k_row =
            k_t + (ds * C::KW + (lane & 7) + 8 * (lane >> 4)) * C::QS + 8 * ((lane >> 3) & 1);
#pragma unroll(C::S_UNROLL)
        for (u32 k0 = 0; k0 < C::DQK; k0 += 16) {
          u32 a[4];
          sb::ldmatrix_x4(a, q_row + k0 + q_col);
#pragma unroll
          for (u32 np = 0; np < C::NT_S / 2; ++np) {
            u32 kb[4];
            sb::ldmatrix_x4(kb, k_row + np * 16 * C::QS + k0);
            const u32 b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
            T::mma(s[2 * np], a, b0);
            T::mma(s[2 * np + 1], a, b1);
          }
        }
      }

      // ---- scale (log2 domain), mask, row maxima across the warps of the row tile.
      const u32 key_base = it * C::BN + ds * C::KW + 2 * tig;
      float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
      for (u32 n = 0; n < C::NT_S; ++n)
#pragma unroll
        for (u32 e = 0; e < 4; ++e) {
          const u32 key = key_base + n * 8 + (e & 1);
          const float x = key < limit[e >> 1] ? s[n][e] * scale_log2 : neg_inf();
          s[n][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
#pragma unroll
      for (u32 h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      }
      if (tig == 0) {
        red_max[ds * C::ROWS + rt * 16 + g] = mx[0];
        red_max[ds * C::ROWS + rt * 16 + g + 8] = mx[1];
      }
      __syncthreads();

      // ---- online softmax: new max, P (rounded to T) into shared memory, rescale O.
      float base[2], alpha[2];
#pragma unroll
      for (u32 h = 0; h < 2; ++h) {
        float m_new = m[h];
#pragma unroll
        for (u32 w = 0; w < SLICES; ++w)
          m_new = fmaxf(m_new, red_max[w * C::ROWS + rt * 16 + g + 8 * h]);
        // A row that has seen no key yet keeps m = -inf: subtract 0 instead, so exp2 gives
        // 0 (masked keys, and alpha for the empty history) rather than NaN.
        base[h] = m_new == neg_inf() ? 0.0f : m_new;
        alpha[h] = exp2f(m[h] - base[h]);
        m[h] = m_new;
      }
      float rowsum[2] = {0.0f, 0.0f};
#pragma unroll
      for (u32 n = 0; n < C::NT_S; ++n)
#pragma unroll
        for (u32 h = 0; h < 2; ++h) {
          const u16 p0 = T::from_f32(exp2f(s[n][2 * h] - base[h]));
          const u16 p1 = T::from_f32(exp2f(s[n][2 * h + 1] - base[h]));
          rowsum[h] += T::to_f32(p0) + T::to_f32(p1);
          *reinterpret_cast<u32*>(p_s + (rt * 16 + g + 8 * h) * C::PS + ds * C::KW + n * 8 +
                                  2 * tig) = pack(p0, p1);
        }
#pragma unroll
      for (u32 h = 0; h < 2; ++h) l[h] = alpha[h] * l[h] + rowsum[h];
#pragma unroll
      for (u32 n = 0; n < C::NT_O; ++n) {
        o_acc[n][0] *= alpha[0];
        o_acc[n][1] *= alpha[0];
        o_acc[n][2] *= alpha[1];
        o_acc[n][3] *= alpha[1];
      }
      __syncthreads();  // P of every warp is visible

      // ---- O += P.V for this warp's 16 rows and DSLICE columns.
      const u16* p_row = p_s + (rt * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * C::PS + 8 * (lane >> 4);
      const u16* v_row = v_t + ((lane & 7) + 8 * ((lane >> 3) & 1)) * (C::V_IN_K ? C::QS : C::VS) +
                         ds * C::DSLICE + 8 * (lane >> 4);
#pragma unroll(C::PV_UNROLL)
      for (u32 kk = 0; kk < C::BN; kk += 16) {
        u32 a[4];
        sb::ldmatrix_x4(a, p_row + kk);
#pragma unroll
        for (u32 np = 0; np < C::NT_O / 2; ++np) {
          u32 vb[4];
          sb::ldmatrix_x4_trans(vb, v_row + kk * (C::V_IN_K ? C::QS : C::VS) + np * 16);
          const u32 b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
          T::mma(o_acc[2 * np], a, b0);
          T::mma(o_acc[2 * np + 1], a, b1);
        }
      }
      if (threadIdx.x < C::BN && it + 2 < tile_end)
        slot_s[stage * C::BN + threadIdx.x] = slot_finish(p, next);
    }
  }

  // ---- the row sums: the lanes of a quad, then the warps of the row tile.
#pragma unroll
  for (u32 h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  if (tig == 0) {
    red_sum[ds * C::ROWS + rt * 16 + g] = l[0];
    red_sum[ds * C::ROWS + rt * 16 + g + 8] = l[1];
  }
  __syncthreads();

#pragma unroll
  for (u32 h = 0; h < 2; ++h) {
    const u32 r = row0 + rt * 16 + g + 8 * h;
    if (r >= rows_total) continue;
    float l_tot = 0.0f;
#pragma unroll
    for (u32 w = 0; w < SLICES; ++w) l_tot += red_sum[w * C::ROWS + rt * 16 + g + 8 * h];
    // l_tot >= 1 whenever the row saw a key (its maximum contributes exp2(0) = 1).
    // __fdividef: l_tot is in [1, kv_len], far from its 2^126 limit, and IEEE division
    // would call a slow-path subroutine (spills around the call).
    const float inv = l_tot > 0.0f ? __fdividef(1.0f, l_tot) : 0.0f;
    const float lse = l_tot > 0.0f ? m[h] * LN2 + logf(l_tot) : neg_inf();
    const u32 head = hk * group + r / p.q_len, i = r % p.q_len;
    const u64 prow = (((u64)split * p.batch + b) * p.q_heads + head) * p.q_len + i;
    if (p.num_splits == 1) {
      u16* dst = p.o + (((u64)b * p.q_len + i) * p.q_heads + head) * C::DV + ds * C::DSLICE;
#pragma unroll
      for (u32 n = 0; n < C::NT_O; ++n) {
        const u32 v2 = pack(T::from_f32(o_acc[n][2 * h] * inv), T::from_f32(o_acc[n][2 * h + 1] * inv));
        sb::stcg(reinterpret_cast<u32*>(dst + n * 8 + 2 * tig), v2);
      }
    } else {
      f32* dst = p.o_partial + prow * C::DV + ds * C::DSLICE;
#pragma unroll
      for (u32 n = 0; n < C::NT_O; ++n)
        sb::stcg(reinterpret_cast<float2*>(dst + n * 8 + 2 * tig),
                 make_float2(o_acc[n][2 * h] * inv, o_acc[n][2 * h + 1] * inv));
    }
    if (ds == 0 && tig == 0) sb::stcg(p.lse + prow, lse);
  }
}

// ------------------------------------------------------------------------------ combine
template <class T>
SB_DEVICE void combine(const f32* SB_RESTRICT o_partial, const f32* SB_RESTRICT lse_partial,
                       u16* SB_RESTRICT o, f32* SB_RESTRICT lse, u32 batch, u32 q_heads,
                       u32 q_len, u32 dv, u32 num_splits) {
  const u32 lane = sb::lane_id();
  // 32-bit row arithmetic (contract: batch * q_heads * q_len < 2^31): 64-bit divisions are
  // subroutine calls on the GPU.
  const u32 rows = batch * q_heads * q_len;
  const u32 row = blockIdx.x * (blockDim.x >> 5) + sb::warp_id();
  if (row >= rows) return;  // whole warp: no barrier below, only this warp's shuffles

  // m = max_s lse_s, propagating NaN (fmaxf would drop it and hide a broken split).
  float mx = neg_inf();
  for (u32 s = lane; s < num_splits; s += 32) {
    const float x = sb::ldcg(lse_partial + (u64)s * rows + row);
    mx = (x > mx || x != x) ? x : mx;
  }
#pragma unroll
  for (u32 off = 16; off > 0; off >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, mx, off);
    mx = (y > mx || y != y) ? y : mx;
  }
  float total = neg_inf();
  if (mx != neg_inf()) {
    float sum = 0.0f;
    for (u32 s = lane; s < num_splits; s += 32) {
      const float x = sb::ldcg(lse_partial + (u64)s * rows + row);
      if (x != neg_inf()) sum += expf(x - mx);
    }
    total = mx + logf(sb::warp_sum(sum));
  }

  const u32 per_seq = q_heads * q_len;
  const u32 b = row / per_seq, h = (row % per_seq) / q_len, i = row % q_len;
  u16* dst = o + (((u64)b * q_len + i) * q_heads + h) * dv;
  for (u32 c0 = lane * 4; c0 < dv; c0 += 128) {
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (total != neg_inf()) {
      for (u32 s = 0; s < num_splits; ++s) {
        const u64 srow = (u64)s * rows + row;
        const float x = sb::ldcg(lse_partial + srow);
        if (x == neg_inf()) continue;  // an empty split: its O_s is never read
        const float w = expf(x - total);
        const float4 v = sb::ldcg(reinterpret_cast<const float4*>(o_partial + srow * dv + c0));
        acc = sb::axpy(acc, w, v);
      }
    }
    const uint2 out = make_uint2(pack(T::from_f32(acc.x), T::from_f32(acc.y)),
                                 pack(T::from_f32(acc.z), T::from_f32(acc.w)));
    sb::stcg(reinterpret_cast<uint2*>(dst + c0), out);
  }
  if (lane == 0) sb::stcg(lse + row, total);
}

// The instantiated shapes (see the launch contract).
typedef Cfg<64, 64, 1, 64, false> D64;
typedef Cfg<128, 128, 1, 64, false> D128;
typedef Cfg<256, 256, 1, 32, false> D256;
typedef Cfg<576, 512, 1, 32, true> MlaH16;
typedef Cfg<576, 512, 4, 32, true> MlaH64;
static_assert(D64::SMEM == 42496 && D128::SMEM == 77312 && D256::SMEM == 78080 &&
                  MlaH16::SMEM == 95488 && MlaH64::SMEM == 156928,
              "the launch contract's shared-memory sizes");
static_assert(D64::THREADS == 128 && D128::THREADS == 128 && D256::THREADS == 128 &&
                  MlaH16::THREADS == 128 && MlaH64::THREADS == 512,
              "the launch contract's block sizes");

}  // namespace

// ==================================================================== exported kernels
#define SB_DECODE_PARAMS                                                                    \
  const sb::u16 *SB_RESTRICT q, const sb::u16 *SB_RESTRICT k, const sb::u16 *SB_RESTRICT v, \
      const sb::u32 *SB_RESTRICT block_table, float *SB_RESTRICT o_partial,                 \
      float *SB_RESTRICT lse, sb::u16 *SB_RESTRICT o, sb::u32 batch, sb::u32 q_len,        \
      sb::u32 q_heads, sb::u32 kv_heads, sb::u32 kv_len, sb::u32 page_size,                 \
      sb::u32 max_pages, sb::u32 num_splits, sb::u32 causal, float softmax_scale
#define SB_DECODE_ARGS                                                                        \
  Params {                                                                                    \
    q, k, v, block_table, o_partial, lse, o, batch, q_len, q_heads, kv_heads, kv_len,         \
        page_size, max_pages, num_splits, causal, softmax_scale                               \
  }

SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_bf16_d64(SB_DECODE_PARAMS) {
  decode_split<Bf16, D64>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_bf16_d128(SB_DECODE_PARAMS) {
  decode_split<Bf16, D128>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_bf16_d256(SB_DECODE_PARAMS) {
  decode_split<Bf16, D256>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_f16_d64(SB_DECODE_PARAMS) {
  decode_split<F16, D64>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_f16_d128(SB_DECODE_PARAMS) {
  decode_split<F16, D128>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_f16_d256(SB_DECODE_PARAMS) {
  decode_split<F16, D256>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_mla_bf16_h16(SB_DECODE_PARAMS) {
  decode_split<Bf16, MlaH16>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(128, 2) sb_attn_decode_mla_f16_h16(SB_DECODE_PARAMS) {
  decode_split<F16, MlaH16>(SB_DECODE_ARGS);
}
// 512 threads: at most 128 registers each; one block per SM (its shared memory alone is
// 153 KiB), so __launch_bounds__(512, 1).
SB_KERNEL void __launch_bounds__(512, 1) sb_attn_decode_mla_bf16_h64(SB_DECODE_PARAMS) {
  decode_split<Bf16, MlaH64>(SB_DECODE_ARGS);
}
SB_KERNEL void __launch_bounds__(512, 1) sb_attn_decode_mla_f16_h64(SB_DECODE_PARAMS) {
  decode_split<F16, MlaH64>(SB_DECODE_ARGS);
}

#define SB_COMBINE_PARAMS                                                                   \
  const float *SB_RESTRICT o_partial, const float *SB_RESTRICT lse_partial,                 \
      sb::u16 *SB_RESTRICT o, float *SB_RESTRICT lse, sb::u32 batch, sb::u32 q_heads,       \
      sb::u32 q_len, sb::u32 dv, sb::u32 num_splits

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS) sb_attn_combine_bf16(SB_COMBINE_PARAMS) {
  combine<Bf16>(o_partial, lse_partial, o, lse, batch, q_heads, q_len, dv, num_splits);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS) sb_attn_combine_f16(SB_COMBINE_PARAMS) {
  combine<F16>(o_partial, lse_partial, o, lse, batch, q_heads, q_len, dv, num_splits);
}
