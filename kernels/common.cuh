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
#endif  // !SB_EMULATION

}  // namespace sb
