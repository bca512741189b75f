// kernels/util.cu: helpers every CUDA workload uses: device-side random fill (so multi-GiB
// inputs never cross PCIe and are never zeros) and the stream-blocking wait that keeps
// launch overhead out of event-timed batches (nvbandwidth's technique).
// No inline PTX here (see common.cuh).
//
// ===================================== LAUNCH CONTRACT =====================================
// sb_fill_f64(f64* a, u64 n, u64 seed)   a[i] = sb::random_f64(seed, i), uniform in [1, 2)
// sb_fill_f32(f32* a, u64 n, u64 seed)   a[i] = sb::random_f32(seed, i), uniform in [1, 2)
//   1-D grid of any size >= 1, 1-D block of any size (256 intended); grid-stride loop over
//   n ELEMENTS. Any n >= 0; no alignment beyond the element's. The values are a pure
//   function of (seed, i), reproduced bit for bit on the host by
//   solbench_cuda::pattern::{random_f64, random_f32} (SplitMix64's finaliser of
//   seed + (i + 1) * golden ratio, top bits placed in the mantissa of 1.0).
//
// sb_wait_flag(const volatile u32* flag, u64 timeout_ns, u32* timed_out)
//   Launch <<<1, 1>>>. Spins until *flag != 0, where flag is host-mapped pinned memory
//   (cuMemHostAlloc DEVICEMAP) the host sets after it has enqueued a whole batch, so the
//   batch starts back to back regardless of launch overhead. Gives up after timeout_ns of
//   %globaltimer and then writes 1 to *timed_out (device memory), so a host that never
//   releases the flag (or a queue that filled up before the release) cannot hang the GPU;
//   the host checks timed_out and discards that batch.
// ==========================================================================================
#include "common.cuh"

namespace {
using sb::u32;
using sb::u64;

template <class T>
SB_DEVICE void fill_impl(T* SB_RESTRICT a, u64 n, u64 seed) {
  const u64 stride = sb::grid_threads();
  for (u64 i = sb::global_thread(); i < n; i += stride) a[i] = sb::random_value<T>(seed, i);
}
}  // namespace

SB_KERNEL void __launch_bounds__(SB_MAX_THREADS) sb_fill_f64(sb::f64* a, u64 n, u64 seed) {
  fill_impl(a, n, seed);
}
SB_KERNEL void __launch_bounds__(SB_MAX_THREADS) sb_fill_f32(sb::f32* a, u64 n, u64 seed) {
  fill_impl(a, n, seed);
}

SB_KERNEL void sb_wait_flag(const volatile u32* flag, u64 timeout_ns, u32* timed_out) {
  const u64 start = sb::globaltimer_ns();
  while (*flag == 0u) {
    if (sb::globaltimer_ns() - start > timeout_ns) {
      *timed_out = 1u;
      return;
    }
  }
}
