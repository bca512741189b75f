// crates/solbench-simt/tests/kernels/isa.cu: small kernels that exercise the emulated
// intrinsics and inline-PTX wrappers one at a time, so the tests can compare each with the
// PTX ISA's / CUDA's documented behaviour. Test-only: never part of kernels/.
//
// The fragment loads and stores below transcribe the PTX ISA's tables ("Matrix Fragments
// for mma.m16n8k16 with floating point type") literally, independently of the harness's
// own implementation, so a layout mistake on either side makes the results disagree.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "common.cuh"

using sb::u16;
using sb::u32;
using sb::u64;

namespace {

// Where a fragment element of mma.m16n8k16 (.f16/.bf16) lives, in the ISA's own words:
//   groupID = %laneid >> 2, threadID_in_group = %laneid % 4
//   A: row = groupID for a_i where 0 <= i < 2 || 4 <= i < 6, groupID + 8 otherwise;
//      col = threadID_in_group * 2 + (i & 0x1) for i < 4, + 8 for i >= 4
//   B: row = threadID_in_group * 2 + (i & 0x1) for b_i where i < 2, + 8 for i >= 2;
//      col = groupID
//   C/D: row = groupID for c0, c1, groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 0x1)
SB_DEVICE u32 a_row(u32 lane, u32 i) { return (i < 2 || (i >= 4 && i < 6)) ? lane / 4 : lane / 4 + 8; }
SB_DEVICE u32 a_col(u32 lane, u32 i) { return (lane % 4) * 2 + (i & 1u) + (i >= 4 ? 8 : 0); }
SB_DEVICE u32 b_row(u32 lane, u32 i) { return (lane % 4) * 2 + (i & 1u) + (i >= 2 ? 8 : 0); }
SB_DEVICE u32 b_col(u32 lane, u32 i) { return lane / 4; }
SB_DEVICE u32 c_row(u32 lane, u32 i) { return i < 2 ? lane / 4 : lane / 4 + 8; }
SB_DEVICE u32 c_col(u32 lane, u32 i) { return (lane % 4) * 2 + (i & 1u); }

// One warp computes D = A * B + C. A: 16x16 row-major, B: 16x8 stored [k][n] row-major
// (16-bit patterns), C and D: 16x8 row-major f32. `wrong_row` swaps the rows of a2/a3 and
// a0/a1 (uses groupID for all of a0..a3): the deliberate fragment-index bug of the tests.
template <bool BF16>
SB_DEVICE void mma_16816(const u16* A, const u16* B, const float* C, float* D, bool wrong_row) {
  const u32 lane = threadIdx.x & 31u;
  u32 a[4], b[2];
  float c[4], d[4];
#pragma unroll
  for (u32 r = 0; r < 4; ++r) {
    u32 lo_hi[2];
#pragma unroll
    for (u32 h = 0; h < 2; ++h) {
      const u32 i = 2 * r + h;
      const u32 row = wrong_row && i < 4 ? lane / 4 : a_row(lane, i);
      lo_hi[h] = A[row * 16 + a_col(lane, i)];
    }
    a[r] = lo_hi[0] | (lo_hi[1] << 16);
  }
#pragma unroll
  for (u32 r = 0; r < 2; ++r) {
    const u32 lo = B[b_row(lane, 2 * r) * 8 + b_col(lane, 2 * r)];
    const u32 hi = B[b_row(lane, 2 * r + 1) * 8 + b_col(lane, 2 * r + 1)];
    b[r] = lo | (hi << 16);
  }
#pragma unroll
  for (u32 i = 0; i < 4; ++i) c[i] = C[c_row(lane, i) * 8 + c_col(lane, i)];
  if (BF16) sb::mma_m16n8k16_bf16(d, a, b, c);
  else sb::mma_m16n8k16_f16(d, a, b, c);
#pragma unroll
  for (u32 i = 0; i < 4; ++i) D[c_row(lane, i) * 8 + c_col(lane, i)] = d[i];
}

}  // namespace

// <<<1, 32>>>
SB_KERNEL void isa_mma_bf16(const u16* A, const u16* B, const float* C, float* D) {
  mma_16816<true>(A, B, C, D, false);
}
SB_KERNEL void isa_mma_f16(const u16* A, const u16* B, const float* C, float* D) {
  mma_16816<false>(A, B, C, D, false);
}
// BROKEN ON PURPOSE (tests/broken.rs): a0..a3 all taken from row groupID.
SB_KERNEL void broken_mma_fragment(const u16* A, const u16* B, const float* C, float* D) {
  mma_16816<true>(A, B, C, D, true);
}

// <<<1, 32>>>: src holds four 8x8 matrices of 16-bit elements (matrix j, row r at
// src[(8 * j + r) * 8]). They are staged in shared memory at a 32-byte row pitch; lane
// 8 * j + r passes the address of row r of matrix j; out[lane * 4 + j] = register j.
SB_KERNEL void isa_ldmatrix_x4(const u16* src, u32* out, u32 trans) {
  __shared__ __align__(16) u16 tile[32 * 16];
  const u32 lane = threadIdx.x & 31u;
  for (u32 e = lane; e < 256; e += 32) tile[(e / 8) * 16 + e % 8] = src[e];
  __syncwarp();
  u32 r[4];
  if (trans) sb::ldmatrix_x4_trans(r, &tile[lane * 16]);
  else sb::ldmatrix_x4(r, &tile[lane * 16]);
#pragma unroll
  for (u32 j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

// <<<1, 32>>>: the standard tensor-core recipe: A's fragment with ldmatrix_x4 from a
// row-major tile, B's with ldmatrix_x4_trans from a [k][n] tile, one bf16 mma. Proves the
// ldmatrix and mma layouts compose as kernels will use them.
SB_KERNEL void isa_ldmatrix_mma_bf16(const u16* A, const u16* B, float* D) {
  __shared__ __align__(16) u16 As[16 * 16];
  __shared__ __align__(16) u16 Bs[16 * 8];
  const u32 lane = threadIdx.x & 31u;
  for (u32 e = lane; e < 256; e += 32) As[e] = A[e];
  for (u32 e = lane; e < 128; e += 32) Bs[e] = B[e];
  __syncwarp();
  u32 a[4], bt[4], b[2];
  sb::ldmatrix_x4(a, &As[(lane % 16) * 16 + (lane / 16) * 8]);
  sb::ldmatrix_x4_trans(bt, &Bs[(lane % 16) * 8]);
  b[0] = bt[0];
  b[1] = bt[1];
  float c[4] = {0.f, 0.f, 0.f, 0.f}, d[4];
  sb::mma_m16n8k16_bf16(d, a, b, c);
#pragma unroll
  for (u32 i = 0; i < 4; ++i) D[c_row(lane, i) * 8 + c_col(lane, i)] = d[i];
}

// <<<1, N>>> with 2 * N * 16 bytes of dynamic shared memory. Two commit groups of cp.async
// (the second zero-filling all but `zfill_bytes` of each 16 bytes); after wait_group 1 the
// first group has landed, after wait_group 0 both. Each thread then reads ANOTHER thread's
// copy (after a barrier): out[t] = src[(t + 1) % N], out[N + t] = src[N + (t + 1) % N]
// (zero-filled).
SB_KERNEL void isa_cp_async(const uint4* src, uint4* out, u32 zfill_bytes) {
  SB_DYNAMIC_SHARED(uint4, stage);
  const u32 t = threadIdx.x, n = blockDim.x;
  sb::cp_async_16(&stage[t], &src[t]);
  sb::cp_async_commit();
  sb::cp_async_16_zfill(&stage[n + t], &src[n + t], zfill_bytes);
  sb::cp_async_commit();
  sb::cp_async_wait<1>();
  __syncthreads();
  out[t] = stage[(t + 1) % n];
  sb::cp_async_wait<0>();
  __syncthreads();
  out[n + t] = stage[n + (t + 1) % n];
}

// <<<1, 64>>>: eight results per thread from the warp intrinsics (see tests/isa.rs).
SB_KERNEL void isa_warp_ops(u32* out) {
  const u32 t = threadIdx.x, lane = t & 31u, v = t * 3u + 1u;
  u32* o = out + t * 8;
  o[0] = __shfl_sync(0xffffffffu, v, (int)((lane + 5) & 31u));
  o[1] = __shfl_xor_sync(0xffffffffu, v, 3);
  o[2] = __shfl_down_sync(0xffffffffu, v, 4);
  o[3] = __shfl_up_sync(0xffffffffu, v, 2, 16);
  o[4] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  // Divergent halves, each with its own mask (independent thread scheduling).
  if (lane < 16) o[5] = __shfl_sync(0x0000ffffu, v, 15);
  else o[5] = __shfl_sync(0xffff0000u, v, 16);
  o[6] = (u32)__syncthreads_count(t % 5 == 0);
  o[7] = sb::warp_sum(v);
}

// Grid-stride: every thread adds 1 to *count and 0.5 to *sum, and block 0's reduction of
// its thread indices goes to *block0 (sb::block_sum: shuffles, static shared memory).
SB_KERNEL void isa_atomics(u32* count, float* sum, u32* block0) {
  atomicAdd(count, 1u);
  atomicAdd(sum, 0.5f);
  const u32 total = sb::block_sum(threadIdx.x);
  if (blockIdx.x == 0 && threadIdx.x == 0) *block0 = total;
}

// Grid-stride over n floats: their bf16 and f16 roundings (bit patterns) and values back.
SB_KERNEL void isa_convert(const float* in, u16* bf, u16* h, float* bf_back, float* h_back, u64 n) {
  for (u64 i = sb::global_thread(); i < n; i += sb::grid_threads()) {
    const __nv_bfloat16 b = __float2bfloat16_rn(in[i]);
    const __half x = __float2half_rn(in[i]);
    bf[i] = __bfloat16_as_ushort(b);
    h[i] = __half_as_ushort(x);
    bf_back[i] = __bfloat162float(b);
    h_back[i] = __half2float(x);
  }
}
