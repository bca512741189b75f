// crates/solbench-simt/tests/kernels/broken.cu: kernels that are wrong ON PURPOSE, one bug
// each, next to a fixed twin where it helps. tests/broken.rs asserts the harness reports
// every bug (and passes every fix). Test-only: never part of kernels/.
#include "common.cuh"

using sb::u32;
using sb::u64;

// <<<1, N>>>, N * 4 bytes of dynamic shared memory. Each thread stages in[t], then reads
// its neighbour's slot. BUG: no __syncthreads() between the write and the read.
SB_KERNEL void broken_missing_barrier(const float* in, float* out) {
  SB_DYNAMIC_SHARED(float, s);
  const u32 t = threadIdx.x;
  s[t] = in[t];
  out[t] = s[(t + 1) % blockDim.x];
}
SB_KERNEL void fixed_missing_barrier(const float* in, float* out) {
  SB_DYNAMIC_SHARED(float, s);
  const u32 t = threadIdx.x;
  s[t] = in[t];
  __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

// a[i] *= 2 over n floats, grid-stride. BUG: `i <= n` writes one element past the end.
SB_KERNEL void broken_tail(float* a, u64 n) {
  for (u64 i = sb::global_thread(); i <= n; i += sb::grid_threads()) a[i] = 2.0f * a[i];
}
SB_KERNEL void fixed_tail(float* a, u64 n) {
  for (u64 i = sb::global_thread(); i < n; i += sb::grid_threads()) a[i] = 2.0f * a[i];
}

// out[i] = a[i + 1] through sb::ldcg. BUG: the last thread reads one element past the end.
SB_KERNEL void broken_read_past_end(const float* a, float* out, u64 n) {
  const u64 i = sb::global_thread();
  if (i < n) out[i] = sb::ldcg(a + i + 1);
}

// <<<1, 64>>>. BUG: only the first warp reaches the barrier; the second never does.
SB_KERNEL void broken_divergent_barrier(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// <<<1, 64>>>. BUG: thread 0 waits for a flag nobody sets, the others wait at the barrier.
SB_KERNEL void broken_spin(const u32* flag, float* out) {
  if (threadIdx.x == 0) {
    while (sb::ldcg(flag) == 0u) {
    }
  }
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// <<<1, 32>>>. BUG: lanes 16..31 pass a mask that does not name them.
SB_KERNEL void broken_shfl_mask(u32* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, threadIdx.x, 0);
}
