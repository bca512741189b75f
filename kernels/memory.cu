// kernels/memory.cu: memory-family kernels (HBM / L2 streaming and shared-memory bandwidth).
//
// Semantics follow BabelStream (UoB-HPC/BabelStream): read (a reduction), write, copy and
// triad, in f64 and f32. Accesses are 16-byte vectors (double2 / float4) in a grid-stride
// loop with SB_MEM_UNROLL independent vector loads per array in flight per thread, then a
// scalar tail for the last n % width elements. Loads use ld.global.cg (L2 only, no L1
// allocation) and stores st.global.cg, so L2-resident sizes still hit L2 (the L2 knee
// shows in a size sweep) and nothing is kept in L1 between iterations.
// No inline PTX here (see common.cuh).
//
// ===================================== LAUNCH CONTRACT =====================================
// All kernels: 1-D grid, 1-D block. blockDim.x a multiple of 32, 32..1024 (256 is the
// intended default). Every array pointer 16-byte aligned (cuMemAlloc gives 256 B; a
// sub-buffer offset must be a multiple of 16 B). Arrays of one call must not overlap.
//
// Streaming kernels (T = f64 or f32, suffix _f64 / _f32):
//   `n` = number of ELEMENTS of type T in each array (not bytes, not vectors). Any n >= 0;
//   n need not be a multiple of the vector width (2 for f64, 4 for f32) nor of the grid.
//   Grid: any size >= 1. To fill the GPU use SMs x (max resident blocks per SM, from
//   cuOccupancyMaxActiveBlocksPerMultiprocessor); a grid larger than n / width / blockDim
//   only adds idle threads. Dynamic shared memory: 0 bytes (sb_read_* uses
//   32 * sizeof(T) bytes of static shared memory for its block reduction).
//
//   sb_read_T (const T* a, u64 n, T* partials)
//       partials[blockIdx.x] = sum of the elements of a this block visited. partials must
//       hold gridDim.x elements. Check on the host: sum(partials) == n * a_value within a
//       relative tolerance (BabelStream uses 1e7 * epsilon(T) for its dot; f32 partials are
//       accumulated in f32, four lanes per thread).
//       Bytes counted: n * sizeof(T)                       (read only; partials ignored)
//   sb_write_T(T* a, u64 n, T value)            a[i] = value
//       Bytes counted: n * sizeof(T)                       (written only)
//   sb_copy_T (const T* a, T* c, u64 n)          c[i] = a[i]
//       Bytes counted: 2 * n * sizeof(T)                   (read + written; BabelStream)
//       A copy figure "counting bytes once" (nvbandwidth style) is half of this.
//   sb_triad_T(T* a, const T* b, const T* c, T scalar, u64 n)   a[i] = b[i] + scalar * c[i]
//       Bytes counted: 3 * n * sizeof(T)                   (2 read + 1 written; BabelStream)
//       b + scalar * c is contracted to one FMA (nvcc/NVRTC default --fmad=true), so the
//       host check must use a relative tolerance (BabelStream: 100 * epsilon(T)).
//
// Shared-memory bandwidth kernel:
//   sb_smem_bw(u32 iters, u32* out)
//       Dynamic shared memory: exactly blockDim.x * SB_SMEM_VECS * 16 bytes
//       (SB_SMEM_VECS = 4: 16 KiB for 256 threads, 64 KiB for 1024 threads; above 48 KiB
//       set CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first), plus 128 bytes of static
//       shared memory for the final block reduction. Each warp owns a
//       region of 32 * SB_SMEM_VECS uint4 slots. Per iteration every thread reads
//       SB_SMEM_VECS uint4 from slots written by other lanes in the previous iteration,
//       then writes SB_SMEM_VECS uint4 to its own slots (value read + 1 in .x). All
//       accesses are conflict-free (consecutive lanes touch consecutive 16-byte slots).
//       The loaded data feeds both the stores and a per-thread sum, so nothing can be
//       elided; __syncwarp orders the read and write phases.
//       out[blockIdx.x] = sum over the block of the .x values read, modulo 2^32. Expected:
//           blockDim.x * SB_SMEM_VECS * iters * (iters - 1) / 2   (mod 2^32)
//       Bytes counted: gridDim.x * blockDim.x * iters * SB_SMEM_VECS * 16 * 2  (read + written;
//       the initial zeroing and the final reduction are not counted).
//       Per SM: launch 1 block (of 1024 threads) -- it runs on one SM.
//       Whole GPU: SMs x max resident blocks per SM.
// ==========================================================================================
#include "common.cuh"

#ifndef SB_MEM_UNROLL
#define SB_MEM_UNROLL 4   // independent 16-byte loads in flight per array per thread
#endif
#ifndef SB_SMEM_VECS
#define SB_SMEM_VECS 4    // uint4 slots per thread in sb_smem_bw (power of two)
#endif
static_assert(SB_MEM_UNROLL >= 1 && SB_MEM_UNROLL <= 16, "SB_MEM_UNROLL in 1..16");
static_assert(SB_SMEM_VECS >= 1 && (SB_SMEM_VECS & (SB_SMEM_VECS - 1)) == 0,
              "SB_SMEM_VECS must be a power of two");

namespace {

using sb::u32;
using sb::u64;

// ------------------------------------------------------------------------------ read
template <class T>
SB_DEVICE void read_impl(const T* SB_RESTRICT a, u64 n, T* SB_RESTRICT partials) {
  typedef typename sb::vec<T>::type V;
  constexpr u32 W = sb::vec<T>::width;
  const V* av = reinterpret_cast<const V*>(a);
  const u64 nv = n / W;
  const u64 stride = sb::grid_threads();
  const u64 tid = sb::global_thread();

  V acc = sb::splat(T(0), V());
  u64 i = tid;
  for (; i + (SB_MEM_UNROLL - 1) * stride < nv; i += SB_MEM_UNROLL * stride) {
    V r[SB_MEM_UNROLL];
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) r[k] = sb::ldcg(av + i + k * stride);
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) acc = sb::add(acc, r[k]);
  }
  for (; i < nv; i += stride) acc = sb::add(acc, sb::ldcg(av + i));

  T sum = sb::hsum(acc);
  for (u64 j = nv * W + tid; j < n; j += stride) sum += sb::ldcg(a + j);

  const T total = sb::block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// ------------------------------------------------------------------------------ write
template <class T>
SB_DEVICE void write_impl(T* SB_RESTRICT a, u64 n, T value) {
  typedef typename sb::vec<T>::type V;
  constexpr u32 W = sb::vec<T>::width;
  V* av = reinterpret_cast<V*>(a);
  const u64 nv = n / W;
  const u64 stride = sb::grid_threads();
  const u64 tid = sb::global_thread();
  const V v = sb::splat(value, V());

  u64 i = tid;
  for (; i + (SB_MEM_UNROLL - 1) * stride < nv; i += SB_MEM_UNROLL * stride) {
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) sb::stcg(av + i + k * stride, v);
  }
  for (; i < nv; i += stride) sb::stcg(av + i, v);
  for (u64 j = nv * W + tid; j < n; j += stride) sb::stcg(a + j, value);
}

// ------------------------------------------------------------------------------ copy
template <class T>
SB_DEVICE void copy_impl(const T* SB_RESTRICT a, T* SB_RESTRICT c, u64 n) {
  typedef typename sb::vec<T>::type V;
  constexpr u32 W = sb::vec<T>::width;
  const V* av = reinterpret_cast<const V*>(a);
  V* cv = reinterpret_cast<V*>(c);
  const u64 nv = n / W;
  const u64 stride = sb::grid_threads();
  const u64 tid = sb::global_thread();

  u64 i = tid;
  for (; i + (SB_MEM_UNROLL - 1) * stride < nv; i += SB_MEM_UNROLL * stride) {
    V r[SB_MEM_UNROLL];
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) r[k] = sb::ldcg(av + i + k * stride);
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) sb::stcg(cv + i + k * stride, r[k]);
  }
  for (; i < nv; i += stride) sb::stcg(cv + i, sb::ldcg(av + i));
  for (u64 j = nv * W + tid; j < n; j += stride) sb::stcg(c + j, sb::ldcg(a + j));
}

// ------------------------------------------------------------------------------ triad
template <class T>
SB_DEVICE void triad_impl(T* SB_RESTRICT a, const T* SB_RESTRICT b, const T* SB_RESTRICT c,
                          T scalar, u64 n) {
  typedef typename sb::vec<T>::type V;
  constexpr u32 W = sb::vec<T>::width;
  V* av = reinterpret_cast<V*>(a);
  const V* bv = reinterpret_cast<const V*>(b);
  const V* cv = reinterpret_cast<const V*>(c);
  const u64 nv = n / W;
  const u64 stride = sb::grid_threads();
  const u64 tid = sb::global_thread();

  u64 i = tid;
  for (; i + (SB_MEM_UNROLL - 1) * stride < nv; i += SB_MEM_UNROLL * stride) {
    V rb[SB_MEM_UNROLL], rc[SB_MEM_UNROLL];
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k) {
      rb[k] = sb::ldcg(bv + i + k * stride);
      rc[k] = sb::ldcg(cv + i + k * stride);
    }
#pragma unroll
    for (u32 k = 0; k < SB_MEM_UNROLL; ++k)
      sb::stcg(av + i + k * stride, sb::axpy(rb[k], scalar, rc[k]));
  }
  for (; i < nv; i += stride)
    sb::stcg(av + i, sb::axpy(sb::ldcg(bv + i), scalar, sb::ldcg(cv + i)));
  for (u64 j = nv * W + tid; j < n; j += stride)
    sb::stcg(a + j, sb::ldcg(b + j) + scalar * sb::ldcg(c + j));
}

}  // namespace

// ==================================================================== exported kernels
// __launch_bounds__(SB_MAX_THREADS): any block size up to 1024 can launch.

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_read_f64(const double* SB_RESTRICT a, sb::u64 n, double* SB_RESTRICT partials) {
  read_impl<double>(a, n, partials);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_read_f32(const float* SB_RESTRICT a, sb::u64 n, float* SB_RESTRICT partials) {
  read_impl<float>(a, n, partials);
}

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_write_f64(double* SB_RESTRICT a, sb::u64 n, double value) {
  write_impl<double>(a, n, value);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_write_f32(float* SB_RESTRICT a, sb::u64 n, float value) {
  write_impl<float>(a, n, value);
}

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_copy_f64(const double* SB_RESTRICT a, double* SB_RESTRICT c, sb::u64 n) {
  copy_impl<double>(a, c, n);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_copy_f32(const float* SB_RESTRICT a, float* SB_RESTRICT c, sb::u64 n) {
  copy_impl<float>(a, c, n);
}

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_triad_f64(double* SB_RESTRICT a, const double* SB_RESTRICT b, const double* SB_RESTRICT c,
             double scalar, sb::u64 n) {
  triad_impl<double>(a, b, c, scalar, n);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_triad_f32(float* SB_RESTRICT a, const float* SB_RESTRICT b, const float* SB_RESTRICT c,
             float scalar, sb::u64 n) {
  triad_impl<float>(a, b, c, scalar, n);
}

// ------------------------------------------------------------------ shared memory bandwidth
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS)
sb_smem_bw(sb::u32 iters, sb::u32* SB_RESTRICT out) {
  using sb::u32;
  SB_DYNAMIC_SHARED(uint4, sb_smem);
  constexpr u32 W = 32u * SB_SMEM_VECS;   // uint4 slots per warp region (power of two)
  const u32 lane = sb::lane_id();
  uint4* region = sb_smem + sb::warp_id() * W;

#pragma unroll
  for (u32 j = 0; j < SB_SMEM_VECS; ++j) region[j * 32u + lane] = make_uint4(0u, 0u, 0u, 0u);
  __syncwarp();

  u32 acc = 0;
  for (u32 it = 0; it < iters; ++it) {
    // Read slots owned by other lanes (rotated by it + 1 within the warp's region), ...
    const u32 shift = it + 1u;
    uint4 r[SB_SMEM_VECS];
#pragma unroll
    for (u32 j = 0; j < SB_SMEM_VECS; ++j) r[j] = region[(j * 32u + lane + shift) & (W - 1u)];
    __syncwarp();
    // ... then write this lane's own slots with data that depends on what was read.
#pragma unroll
    for (u32 j = 0; j < SB_SMEM_VECS; ++j) {
      acc += r[j].x;
      r[j].x += 1u;
      region[j * 32u + lane] = r[j];
    }
    __syncwarp();
  }

  const u32 total = sb::block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}
