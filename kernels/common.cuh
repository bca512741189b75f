// kernels/common.cuh: the portability header every solbench CUDA kernel includes.
//
// It must compile under both nvcc and NVRTC (which has no C or C++ standard library
// headers unless the caller passes include paths), so it includes nothing and defines
// its own fixed-width types.
//
// RULES FOR THE WHOLE PROJECT
//  * ALL inline PTX (`asm` / `asm volatile`) lives in small, named wrapper functions in
//    THIS header, one instruction (or one tight idiom) per wrapper, each documented with
//    its semantics. Kernel files never contain `asm` themselves. A future CPU SIMT
//    emulation harness (see docs/architecture.md) compiles the same kernel sources on the
//    host with SB_EMULATION defined and supplies its own definitions of exactly these
//    wrappers; anything written in PTX outside this file would be invisible to it.
//  * Memory accesses with cache hints also go through the helpers below (sb::ldcg, ...)
//    rather than calling the CUDA intrinsics directly, for the same reason.
//  * The memory kernels (memory.cu) use no inline PTX at all.
//  * Dynamic shared memory is declared with SB_DYNAMIC_SHARED(T, name) inside the kernel
//    body, never with `extern __shared__` directly: the harness gives every block a fresh,
//    poisoned, bounds-checked buffer of the launch's size through the same macro.
//  * Exported kernels are `SB_KERNEL` (extern "C" __global__) with non-template names so
//    NVRTC and cuModuleGetFunction find them by their plain names. Templates are fine
//    for the __device__ helpers behind them.
#pragma once

// ---------------------------------------------------------------------------------------
// Fixed-width types (no <cstdint> under NVRTC). Checked below with static_assert.
namespace sb {
typedef signed char        i8;
typedef unsigned char      u8;
typedef short              i16;
typedef unsigned short     u16;
typedef int                i32;
typedef unsigned int       u32;
typedef long long          i64;
typedef unsigned long long u64;
typedef float              f32;
typedef double             f64;
}  // namespace sb

static_assert(sizeof(sb::i8) == 1 && sizeof(sb::u8) == 1, "8-bit types");
static_assert(sizeof(sb::i16) == 2 && sizeof(sb::u16) == 2, "16-bit types");
static_assert(sizeof(sb::i32) == 4 && sizeof(sb::u32) == 4, "32-bit types");
static_assert(sizeof(sb::i64) == 8 && sizeof(sb::u64) == 8, "64-bit types");
static_assert(sizeof(sb::f32) == 4 && sizeof(sb::f64) == 8, "float types");
static_assert(sizeof(uint4) == 16 && sizeof(float4) == 16 && sizeof(double2) == 16,
              "16-byte vector types");

// ---------------------------------------------------------------------------------------
// Function qualifiers.
#define SB_DEVICE   __device__ __forceinline__
#define SB_KERNEL   extern "C" __global__
#define SB_RESTRICT __restrict__
// T* name = the block's dynamic shared memory (16-byte aligned). Use inside the kernel body.
// The emulation harness (SB_EMULATION) defines its own version before this header.
#ifndef SB_DYNAMIC_SHARED
#define SB_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif
// Every memory kernel is compiled for up to 1024 threads per block, so any legal block
// size launches (ptxas then keeps each kernel at <= 64 registers).
#define SB_MAX_THREADS 1024

namespace sb {

SB_DEVICE u32 lane_id() { return threadIdx.x & 31u; }
SB_DEVICE u32 warp_id() { return threadIdx.x >> 5; }
// Global thread index and total thread count of a 1-D grid, in 64 bits (sizes can exceed 2^32).
SB_DEVICE u64 global_thread() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }
SB_DEVICE u64 grid_threads() { return (u64)gridDim.x * blockDim.x; }

// ---------------------------------------------------------------------------------------
// 16-byte vector types per element type: vec<T>::type holds vec<T>::width elements.
template <class T> struct vec;
template <> struct vec<f64> { typedef double2 type; static constexpr u32 width = 2; };
template <> struct vec<f32> { typedef float4  type; static constexpr u32 width = 4; };
template <> struct vec<u32> { typedef uint4   type; static constexpr u32 width = 4; };

// 16-byte loads and stores. The pointer must be 16-byte aligned.
//   ld / st     : default caching (L1 + L2).
//   ldcg / stcg : "cache global": cached in L2 only, bypassing L1. For streaming kernels:
//                 no L1 pollution, but L2-resident working sets still hit in L2, so a size
//                 sweep still shows the L2 knee.
//   ldcs / stcs : "cache streaming": evict-first in L1 and L2. Do not use for L2 sweeps.
template <class V> SB_DEVICE V    ld(const V* p) { return *p; }
template <class V> SB_DEVICE void st(V* p, const V& v) { *p = v; }
template <class V> SB_DEVICE V    ldcg(const V* p) { return __ldcg(p); }
template <class V> SB_DEVICE void stcg(V* p, const V& v) { __stcg(p, v); }
template <class V> SB_DEVICE V    ldcs(const V* p) { return __ldcs(p); }
template <class V> SB_DEVICE void stcs(V* p, const V& v) { __stcs(p, v); }

// Element-wise helpers on the 16-byte vectors.
SB_DEVICE double2 splat(f64 x, double2) { return make_double2(x, x); }
SB_DEVICE float4  splat(f32 x, float4) { return make_float4(x, x, x, x); }
SB_DEVICE double2 add(double2 a, double2 b) { return make_double2(a.x + b.x, a.y + b.y); }
SB_DEVICE float4  add(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
// a + s * b, element-wise (contracted to FMA by default, as in BabelStream built with nvcc).
SB_DEVICE double2 axpy(double2 a, f64 s, double2 b) {
  return make_double2(a.x + s * b.x, a.y + s * b.y);
}
SB_DEVICE float4 axpy(float4 a, f32 s, float4 b) {
  return make_float4(a.x + s * b.x, a.y + s * b.y, a.z + s * b.z, a.w + s * b.w);
}
SB_DEVICE f64 hsum(double2 a) { return a.x + a.y; }
SB_DEVICE f32 hsum(float4 a) { return (a.x + a.y) + (a.z + a.w); }

// ---------------------------------------------------------------------------------------
// Reproducible random values: a pure function of (seed, index), mirrored bit for bit on
// the host (solbench_cuda::pattern). SplitMix64's finaliser of seed + (i + 1) * golden
// ratio; the top bits become the mantissa of a number in [1, 2), so values are never zero,
// never denormal, and sums of them are well conditioned.
SB_DEVICE u64 mix64(u64 z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
SB_DEVICE u64 random_bits(u64 seed, u64 i) { return mix64(seed + (i + 1ull) * 0x9E3779B97F4A7C15ull); }
template <class T> SB_DEVICE T random_value(u64 seed, u64 i);
template <> SB_DEVICE f64 random_value<f64>(u64 seed, u64 i) {
  return __longlong_as_double((long long)(0x3FF0000000000000ull | (random_bits(seed, i) >> 12)));
}
template <> SB_DEVICE f32 random_value<f32>(u64 seed, u64 i) {
  return __uint_as_float(0x3F800000u | (u32)(random_bits(seed, i) >> 41));
}

// ---------------------------------------------------------------------------------------
// Reductions. blockDim.x must be a multiple of 32 and at most 1024.
template <class T> SB_DEVICE T warp_sum(T v) {
#pragma unroll
  for (u32 off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum of v over the block; the result is valid in thread 0 only. Uses 32 * sizeof(T)
// bytes of static shared memory; contains __syncthreads, so every thread must call it.
template <class T> SB_DEVICE T block_sum(T v) {
  __shared__ T warp_sums[32];
  v = warp_sum(v);
  if (lane_id() == 0) warp_sums[warp_id()] = v;
  __syncthreads();
  T total = T(0);
  if (warp_id() == 0) {
    const u32 nwarps = (blockDim.x + 31u) >> 5;
    total = warp_sum(lane_id() < nwarps ? warp_sums[lane_id()] : T(0));
  }
  return total;
}

// ---------------------------------------------------------------------------------------
// Inline PTX wrappers. The ONLY place in the project where `asm` may appear.
//
// Under SB_EMULATION none of this is compiled: the SIMT harness
// (crates/solbench-simt/cpp/simt.h) defines every wrapper below with the same name and
// signature, implemented from the PTX ISA's documented semantics. A new wrapper here needs
// its emulated twin there (and a unit test in crates/solbench-simt/tests/).
#if !defined(SB_EMULATION)
// %smid: the index of the SM this thread runs on (0 .. SM count - 1; may be sparse).
SB_DEVICE u32 smid() {
  u32 id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}
// %globaltimer: a 64-bit nanosecond timer shared by all SMs (resolution ~1 us on some parts).
SB_DEVICE u64 globaltimer_ns() {
  u64 t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// --- Tensor cores (sm_80+): mma.sync.aligned.m16n8k16.row.col, f32 accumulators.
// D = A * B + C for the whole warp; every lane passes its own fragments. Registers hold two
// 16-bit elements each, the lower-indexed one in the low half. With groupID g = lane / 4 and
// tig = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
//   a[r] (A is 16x16, row-major): elements a_{2r}, a_{2r+1}; a_i sits at
//        row g + 8 * ((i / 2) % 2), column 2 * tig + (i % 2) + 8 * (i / 4)
//   b[r] (B is 16x8, "col"):     elements b_{2r}, b_{2r+1}; b_i sits at
//        row (k) 2 * tig + (i % 2) + 8 * (i / 2), column (n) g
//   c[i], d[i] (16x8 f32):       row g + 8 * (i / 2), column 2 * tig + (i % 2)
// Every lane of the warp must execute it (no divergence); d may alias c.
SB_DEVICE void mma_m16n8k16_bf16(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2],
                                 const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
SB_DEVICE void mma_m16n8k16_f16(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2],
                                const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

// The 32-bit shared-state-space address of a generic pointer into shared memory.
SB_DEVICE u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// --- ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (sm_75+): four 8x8 matrices of
// 16-bit elements from shared memory into the warp's registers. Lane 8 * j + r passes the
// address of row r of matrix j (16 bytes, 16-byte aligned). Register r[j] of lane t then
// holds (low half first) elements 2 * (t % 4) and 2 * (t % 4) + 1 of row t / 4 of matrix j;
// with .trans, element t / 4 of rows 2 * (t % 4) and 2 * (t % 4) + 1 (the transpose).
// Every lane of the warp must execute it. Order earlier shared-memory stores before it with
// a barrier (__syncthreads / __syncwarp), which is also a compiler fence.
SB_DEVICE void ldmatrix_x4(u32 (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}
SB_DEVICE void ldmatrix_x4_trans(u32 (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}

// --- cp.async (sm_80+): asynchronous 16-byte copies global -> shared, L2 only (.cg).
// Both addresses 16-byte aligned. The data is in shared memory only after a
// cp_async_wait* that covers its group (and visible to other threads after a barrier).
SB_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
               :: "r"(smem_addr(smem_dst)), "l"(gmem_src) : "memory");
}
// Copies src_bytes (0..16) and zero-fills the rest of the 16 bytes: tails without branches.
SB_DEVICE void cp_async_16_zfill(void* smem_dst, const void* gmem_src, u32 src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(smem_addr(smem_dst)), "l"(gmem_src), "r"(src_bytes) : "memory");
}
// Closes the current group of copies (cp.async.commit_group).
SB_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> SB_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory");
}
// Waits for every copy this thread issued (cp.async.wait_all).
SB_DEVICE void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
#endif  // !SB_EMULATION

}  // namespace sb
