// crates/solbench-simt/cpp/simt.h: the CUDA emulation header of the SIMT harness.
//
// Force-included (g++ -include simt.h -DSB_EMULATION) before every kernel translation unit,
// so the UNCHANGED sources in kernels/*.cu build as ordinary C++17 and run on the CPU:
//   * each CUDA thread of a block is a real OS thread (runtime.cpp), so __syncthreads() is
//     a real barrier; blocks run one after another;
//   * threadIdx / blockIdx / blockDim / gridDim are thread_local;
//   * warp intrinsics (_sync) are rendezvous of the lanes named in their mask;
//   * the inline-PTX wrappers of kernels/common.cuh (sb::smid, sb::mma_*, sb::ldmatrix_*,
//     sb::cp_async_*) are implemented here from the PTX ISA's documented semantics;
//   * global loads/stores with cache hints (__ldcg, __stcg, ...) are bounds-checked
//     against the harness's guarded allocations.
// This header is test infrastructure: nothing in it models timing, caches or occupancy.
// See docs/simt-harness.md for what the harness proves and what it does not.
#pragma once

#if !defined(SB_EMULATION)
#error "simt.h is the CPU emulation header: compile with -DSB_EMULATION"
#endif

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// ======================================================================= qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
// Static shared memory. Every CUDA thread of a block is an OS thread of this process, so a
// function-local `static` is visible to all of them, which is what __shared__ means. That
// is sound only because the runtime runs ONE block at a time and ONE launch at a time
// (runtime.cpp serialises both). Consequences, documented in docs/simt-harness.md: static
// shared memory is zero before the first block and then keeps the previous block's values
// (the GPU leaves it undefined); it is not poisoned between blocks and has no guard
// margins. Dynamic shared memory (SB_DYNAMIC_SHARED) is fresh, poisoned and guarded.
#define __shared__ static
// Dynamic shared memory: a fresh, poisoned, guarded buffer per block, sized by the launch.
// Must be used inside the function body (it is a local pointer here).
#define SB_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(::sb_emu::dynamic_shared())

// ======================================================================= vector types
struct __align__(4) char4 { signed char x, y, z, w; };
struct __align__(4) uchar4 { unsigned char x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(8) uint2 { unsigned int x, y; };
struct int3 { int x, y, z; };
struct uint3 { unsigned int x, y, z; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
struct __align__(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) double2 { double x, y; };
struct __align__(16) longlong2 { long long x, y; };
struct __align__(16) ulonglong2 { unsigned long long x, y; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

// ======================================================================= built-in variables
// Set by the runtime for each emulated thread before it enters a kernel.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ======================================================================= runtime interface
// Implemented in runtime.cpp (compiled WITHOUT ThreadSanitizer instrumentation, so the
// harness's own bookkeeping is invisible to TSan; only kernel code is instrumented).
namespace sb_emu {

// What a warp collective is, for matching lanes and for error messages.
enum class Coll : int { Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp, Mma,
                        Ldmatrix, LdmatrixDone, Reduce, Match };

void syncthreads();
int syncthreads_reduce(int pred, int op);  // op 0: count, 1: and, 2: or
// Rendezvous of the lanes in `mask` (the calling lane must be in it). Every lane deposits
// `bytes` (<= 32) of `in`; when all lanes in `mask` have arrived, `out` receives all 32
// lanes' deposits (32 x bytes; absent lanes' entries are poison). `orders_memory`: the
// collective orders memory among its lanes (true only for __syncwarp).
void warp_allgather(Coll kind, unsigned mask, const void* in, unsigned bytes, void* out,
                    bool orders_memory);
// The tensor-core multiply of one warp (m16n8k16, f32 accumulate; bf16 or f16 inputs),
// computed from the fragments of all 32 lanes as the PTX ISA lays them out.
void mma_m16n8k16(bool bf16, float* d, const unsigned* a, const unsigned* b, const float* c);
unsigned active_lanes();  // lanes of the caller's warp that have not exited
void* dynamic_shared();
unsigned smid();
unsigned long long globaltimer_ns();
// Checks an access of `bytes` at `p` to global memory. Returns false (and records an error
// naming the kernel) when p is outside every guarded allocation; an access that lands in a
// guard margin is recorded and allowed (the margin check after the launch sees it too).
bool check_global(const void* p, std::size_t bytes, bool write, const char* what);
// Checks that p is not global memory (for shared-memory-only instructions).
bool check_shared(const void* p, std::size_t bytes, const char* what);
void report(const char* what);  // records a kernel error (launch fails, message kept)
// An abort point: unwinds the calling thread out of the kernel when its launch was aborted
// (deadlock, watchdog). Called by every checked access, so even spinning loops end.
void poll_abort();

// ---------------------------------------------------------------- cp.async emulation
// Copies issued by this thread and not yet waited for, in commit groups. The copy happens
// when the group is waited for (a legal schedule of the asynchronous copy, and the one
// that exposes a read of shared memory before cp.async.wait_group as poison).
struct AsyncCopy { void* dst; const void* src; unsigned src_bytes; unsigned group; };
struct AsyncQueue {
  static constexpr unsigned kMax = 256;
  AsyncCopy copies[kMax];
  unsigned count = 0;
  unsigned open_group = 0;  // group id of copies issued since the last commit
};
inline thread_local AsyncQueue async_queue;

// Performs (in this thread, so TSan sees the accesses) every copy of a group older than
// the newest `keep` committed groups; keep = -1 means everything, uncommitted included.
inline void async_complete(int keep) {
  AsyncQueue& q = async_queue;
  unsigned limit = keep < 0 ? q.open_group + 1 : (q.open_group >= (unsigned)keep ? q.open_group - keep : 0);
  unsigned kept = 0;
  for (unsigned i = 0; i < q.count; ++i) {
    AsyncCopy c = q.copies[i];
    if (c.group < limit) {
      unsigned char* d = static_cast<unsigned char*>(c.dst);
      const unsigned char* s = static_cast<const unsigned char*>(c.src);
      for (unsigned k = 0; k < 16; ++k) d[k] = k < c.src_bytes ? s[k] : 0;
    } else {
      q.copies[kept++] = c;
    }
  }
  q.count = kept;
}

inline void async_issue(void* dst, const void* src, unsigned src_bytes) {
  poll_abort();
  if (src_bytes > 16) { report("cp.async: src_bytes above 16"); return; }
  if ((reinterpret_cast<std::uintptr_t>(dst) | reinterpret_cast<std::uintptr_t>(src)) & 15u) {
    report("cp.async: a 16-byte copy needs 16-byte aligned source and destination");
    return;
  }
  if (!check_shared(dst, 16, "cp.async destination")) return;
  if (src_bytes > 0 && !check_global(src, src_bytes, false, "cp.async source")) return;
  AsyncQueue& q = async_queue;
  if (q.count == AsyncQueue::kMax) async_complete(0);  // a deep pipeline: land the oldest early
  if (q.count == AsyncQueue::kMax) { report("cp.async: more than 256 copies in flight in one thread"); return; }
  q.copies[q.count++] = AsyncCopy{dst, src, src_bytes, q.open_group};
}

// Run by the kernel trampoline after the kernel returns: the GPU completes outstanding
// copies even if the thread never waited for them.
inline void async_drain() {
  async_complete(-1);
  async_queue.count = 0;
  async_queue.open_group = 0;
}

// ---------------------------------------------------------------- kernel registry
// Parameter kinds, checked by the Rust side before it calls a kernel.
enum ParamKind : unsigned { kPointer = 1, kInt32 = 2, kInt64 = 3, kF32 = 4, kF64 = 5, kOther = 6 };

template <class T> constexpr unsigned param_kind() {
  using U = std::remove_cv_t<T>;
  if (std::is_pointer<U>::value) return kPointer;
  if (std::is_same<U, float>::value) return kF32;
  if (std::is_same<U, double>::value) return kF64;
  if (std::is_integral<U>::value && sizeof(U) == 4) return kInt32;
  if (std::is_integral<U>::value && sizeof(U) == 8) return kInt64;
  return kOther;
}

// One kernel: its name, a cuLaunchKernel-style trampoline (args[i] points at the value of
// parameter i) and its parameter kinds.
struct KernelEntry {
  const char* name;
  void (*call)(void** args);
  const unsigned* params;
  unsigned nparams;
};
struct KernelTable {
  const char* file;
  const KernelEntry* entries;
  unsigned count;
};

template <class F, F f> struct Trampoline;
template <class... A, void (*f)(A...)> struct Trampoline<void (*)(A...), f> {
  static constexpr unsigned kinds[sizeof...(A) + 1] = {param_kind<A>()..., 0u};
  template <std::size_t... I> static void invoke(void** args, std::index_sequence<I...>) {
    (void)args;
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
  }
  static void call(void** args) {
    invoke(args, std::index_sequence_for<A...>{});
    async_drain();
  }
};

}  // namespace sb_emu

// The generated registry files use this for every SB_KERNEL found in a kernel file.
#define SB_EMU_ENTRY(k)                                                                  \
  ::sb_emu::KernelEntry {                                                                \
    #k, &::sb_emu::Trampoline<decltype(&k), &k>::call,                                   \
        ::sb_emu::Trampoline<decltype(&k), &k>::kinds,                                   \
        (unsigned)(sizeof(::sb_emu::Trampoline<decltype(&k), &k>::kinds) / sizeof(unsigned) - 1) \
  }

// ======================================================================= synchronisation
inline void __syncthreads() { sb_emu::syncthreads(); }
inline int __syncthreads_count(int p) { return sb_emu::syncthreads_reduce(p, 0); }
inline int __syncthreads_and(int p) { return sb_emu::syncthreads_reduce(p, 1); }
inline int __syncthreads_or(int p) { return sb_emu::syncthreads_reduce(p, 2); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  sb_emu::warp_allgather(sb_emu::Coll::SyncWarp, mask, nullptr, 0, nullptr, true);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned __activemask() { return sb_emu::active_lanes(); }

// ======================================================================= warp shuffles
namespace sb_emu {
inline unsigned lane_of_caller() { return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u; }

// The value lane `src` deposited, or `own` when `src` is out of the caller's segment rules.
template <class T> T shfl_impl(Coll kind, unsigned mask, T var, int arg, int width) {
  static_assert(sizeof(T) <= 8, "__shfl_*_sync moves at most 8 bytes");
  static_assert(std::is_trivially_copyable<T>::value, "__shfl_*_sync needs a trivially copyable type");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    report("__shfl_*_sync: width must be a power of two in 1..32");
    return var;
  }
  unsigned long long mine = 0, all[32];
  std::memcpy(&mine, &var, sizeof(T));
  warp_allgather(kind, mask, &mine, 8, all, false);
  const int lane = (int)lane_of_caller();
  const int base = lane & ~(width - 1);
  int src = lane;
  switch (kind) {
    case Coll::Shfl: src = base + (arg & (width - 1)); break;
    case Coll::ShflUp: src = (lane - arg >= base) ? lane - arg : lane; break;
    case Coll::ShflDown: src = (lane + arg < base + width) ? lane + arg : lane; break;
    case Coll::ShflXor: src = lane ^ arg; if (src >= base + width) src = lane; break;
    default: break;
  }
  if (src < 0 || src > 31 || !((mask >> src) & 1u)) {
    // Reading a lane that is not taking part is undefined on the device: return poison.
    std::memset(&var, 0xFF, sizeof(T));
    return var;
  }
  T out;
  std::memcpy(&out, &all[src], sizeof(T));
  return out;
}
}  // namespace sb_emu

template <class T> inline T __shfl_sync(unsigned mask, T var, int src, int width = 32) {
  return sb_emu::shfl_impl(sb_emu::Coll::Shfl, mask, var, src, width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return sb_emu::shfl_impl(sb_emu::Coll::ShflUp, mask, var, (int)delta, width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return sb_emu::shfl_impl(sb_emu::Coll::ShflDown, mask, var, (int)delta, width);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return sb_emu::shfl_impl(sb_emu::Coll::ShflXor, mask, var, lane_mask, width);
}

namespace sb_emu {
// Gathers one int per lane and returns the mask of lanes (in `mask`) whose value is non-zero.
inline unsigned vote(Coll kind, unsigned mask, int pred) {
  int mine = pred != 0, all[32];
  warp_allgather(kind, mask, &mine, sizeof(int), all, false);
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && all[l]) bits |= 1u << l;
  return bits;
}
}  // namespace sb_emu

inline unsigned __ballot_sync(unsigned mask, int pred) { return sb_emu::vote(sb_emu::Coll::Ballot, mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return sb_emu::vote(sb_emu::Coll::Any, mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return sb_emu::vote(sb_emu::Coll::All, mask, pred) == mask; }

namespace sb_emu {
template <class Op> inline unsigned reduce(unsigned mask, unsigned v, Op op, unsigned init) {
  unsigned all[32];
  warp_allgather(Coll::Reduce, mask, &v, sizeof(unsigned), all, false);
  unsigned r = init;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l) & 1u) r = op(r, all[l]);
  return r;
}
}  // namespace sb_emu
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
  return sb_emu::reduce(mask, v, [](unsigned a, unsigned b) { return a + b; }, 0u);
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) {
  return sb_emu::reduce(mask, v, [](unsigned a, unsigned b) { return a < b ? a : b; }, ~0u);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) {
  return sb_emu::reduce(mask, v, [](unsigned a, unsigned b) { return a > b ? a : b; }, 0u);
}

// ======================================================================= cache-hinted memory
// All of these are GLOBAL-memory instructions: the address must lie in a guarded buffer.
// An access outside every buffer is reported and skipped (a load returns zero).
namespace sb_emu {
template <class T> inline T checked_load(const T* p, const char* what) {
  if (!check_global(p, sizeof(T), false, what)) return T{};
  return *p;
}
template <class T> inline void checked_store(T* p, const T& v, const char* what) {
  if (check_global(p, sizeof(T), true, what)) *p = v;
}
}  // namespace sb_emu
template <class T> inline T __ldg(const T* p) { return sb_emu::checked_load(p, "__ldg"); }
template <class T> inline T __ldcg(const T* p) { return sb_emu::checked_load(p, "__ldcg"); }
template <class T> inline T __ldca(const T* p) { return sb_emu::checked_load(p, "__ldca"); }
template <class T> inline T __ldcs(const T* p) { return sb_emu::checked_load(p, "__ldcs"); }
template <class T> inline T __ldlu(const T* p) { return sb_emu::checked_load(p, "__ldlu"); }
template <class T> inline T __ldcv(const T* p) { return sb_emu::checked_load(p, "__ldcv"); }
template <class T> inline void __stcg(T* p, T v) { sb_emu::checked_store(p, v, "__stcg"); }
template <class T> inline void __stcs(T* p, T v) { sb_emu::checked_store(p, v, "__stcs"); }
template <class T> inline void __stwb(T* p, T v) { sb_emu::checked_store(p, v, "__stwb"); }
template <class T> inline void __stwt(T* p, T v) { sb_emu::checked_store(p, v, "__stwt"); }

// ======================================================================= bit casts, integer ops
namespace sb_emu {
template <class To, class From> inline To bit_cast(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast sizes");
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}
}  // namespace sb_emu
inline double __longlong_as_double(long long x) { return sb_emu::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return sb_emu::bit_cast<long long>(x); }
inline float __uint_as_float(unsigned x) { return sb_emu::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return sb_emu::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return sb_emu::bit_cast<float>(x); }
inline int __float_as_int(float x) { return sb_emu::bit_cast<int>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
// CUDA's overloaded min/max for scalars.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Fast-math intrinsics: exact C library versions (the device's are approximate, so a kernel
// verified here with a tight tolerance may still need a looser one on the GPU).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
// expf, exp2f, fmaxf, sqrtf, fmaf, ... come from <cmath>'s C declarations.

// ======================================================================= atomics
// GCC's __atomic builtins on plain memory: ThreadSanitizer understands them, so atomics
// never show up as races. Atomics may target global or shared memory.
#define SB_EMU_ATOMIC_INT(T)                                                                      \
  inline T atomicAdd(T* p, T v) { sb_emu::poll_abort(); return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); } \
  inline T atomicSub(T* p, T v) { sb_emu::poll_abort(); return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); } \
  inline T atomicExch(T* p, T v) { sb_emu::poll_abort(); return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); } \
  inline T atomicAnd(T* p, T v) { sb_emu::poll_abort(); return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); } \
  inline T atomicOr(T* p, T v) { sb_emu::poll_abort(); return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }  \
  inline T atomicXor(T* p, T v) { sb_emu::poll_abort(); return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); } \
  inline T atomicCAS(T* p, T cmp, T v) {                                                          \
    sb_emu::poll_abort();                                                                         \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);           \
    return cmp;                                                                                   \
  }                                                                                               \
  inline T atomicMin(T* p, T v) {                                                                 \
    sb_emu::poll_abort();                                                                         \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                 \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
    return old;                                                                                   \
  }                                                                                               \
  inline T atomicMax(T* p, T v) {                                                                 \
    sb_emu::poll_abort();                                                                         \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                 \
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} \
    return old;                                                                                   \
  }
SB_EMU_ATOMIC_INT(int)
SB_EMU_ATOMIC_INT(unsigned int)
SB_EMU_ATOMIC_INT(unsigned long long)
#undef SB_EMU_ATOMIC_INT

namespace sb_emu {
template <class F, class U> inline F atomic_float_add(F* p, F v) {
  poll_abort();
  U old = __atomic_load_n(reinterpret_cast<U*>(p), __ATOMIC_RELAXED);
  for (;;) {
    U next = bit_cast<U>(F(bit_cast<F>(old) + v));
    if (__atomic_compare_exchange_n(reinterpret_cast<U*>(p), &old, next, true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return bit_cast<F>(old);
  }
}
}  // namespace sb_emu
inline float atomicAdd(float* p, float v) { return sb_emu::atomic_float_add<float, unsigned>(p, v); }
inline double atomicAdd(double* p, double v) {
  return sb_emu::atomic_float_add<double, unsigned long long>(p, v);
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  sb_emu::poll_abort();
  unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {}
  return old;
}

// ======================================================================= __half / __nv_bfloat16
// Storage is the 16-bit pattern; conversions from float round to nearest even (what the
// device's cvt.rn does), NaN becomes the canonical 0x7FFF as in CUDA's headers. Arithmetic
// converts to float, computes in float and rounds once back (a double rounding the device's
// native f16 / bf16 instructions do not have; it differs only in rare halfway cases).
namespace sb_emu {
inline unsigned short f32_to_bf16_bits(float f) {
  unsigned u = bit_cast<unsigned>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
inline float bf16_bits_to_f32(unsigned short h) { return bit_cast<float>((unsigned)h << 16); }

inline unsigned short f32_to_f16_bits(float f) {
  const unsigned u = bit_cast<unsigned>(f);
  const unsigned sign = (u >> 16) & 0x8000u;
  const unsigned a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fffu;                       // NaN
  if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (a >= 0x38800000u) {                                    // normal half (>= 2^-14)
    unsigned h = (a >> 13) - (112u << 10);
    const unsigned rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
  }
  if (a <= 0x33000000u) return (unsigned short)sign;         // <= 2^-25 rounds to zero
  // Subnormal half: the value in units of 2^-24, rounded to nearest even.
  const unsigned m = (a & 0x7fffffu) | 0x800000u;
  const unsigned shift = 126u - (a >> 23);
  unsigned q = m >> shift;
  const unsigned rem = m & ((1u << shift) - 1u);
  const unsigned half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return (unsigned short)(sign | q);
}
inline float f16_bits_to_f32(unsigned short h) {
  const unsigned sign = ((unsigned)h & 0x8000u) << 16;
  const unsigned e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return bit_cast<float>(sign | 0x7f800000u | (m << 13));
  if (e != 0) return bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
  const float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
  return sign ? -v : v;
}
}  // namespace sb_emu

struct __half;
struct __nv_bfloat16;
inline __half __float2half_rn(float f);
inline __nv_bfloat16 __float2bfloat16_rn(float f);

struct __align__(2) __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(sb_emu::f32_to_f16_bits(f)) {}
  __half(double f) : __x(sb_emu::f32_to_f16_bits((float)f)) {}
  __half(int v) : __x(sb_emu::f32_to_f16_bits((float)v)) {}
  operator float() const { return sb_emu::f16_bits_to_f32(__x); }
};
struct __align__(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(sb_emu::f32_to_bf16_bits(f)) {}
  __nv_bfloat16(double f) : __x(sb_emu::f32_to_bf16_bits((float)f)) {}
  __nv_bfloat16(int v) : __x(sb_emu::f32_to_bf16_bits((float)v)) {}
  operator float() const { return sb_emu::bf16_bits_to_f32(__x); }
};
struct __align__(4) __half2 { __half x, y; };
struct __align__(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __half half;
typedef __half2 half2;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __half __ushort_as_half(unsigned short x) { __half h; h.__x = x; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { __nv_bfloat16 h; h.__x = x; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __half22float2(__half2 h) { return make_float2(float(h.x), float(h.y)); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2(float(h.x), float(h.y)); }
inline float __low2float(__half2 h) { return float(h.x); }
inline float __high2float(__half2 h) { return float(h.y); }
inline float __low2float(__nv_bfloat162 h) { return float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return float(h.y); }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162{a, b}; }

#define SB_EMU_HALF_OPS(H)                                                                          \
  inline H operator+(H a, H b) { return H(float(a) + float(b)); }                                  \
  inline H operator-(H a, H b) { return H(float(a) - float(b)); }                                  \
  inline H operator*(H a, H b) { return H(float(a) * float(b)); }                                  \
  inline H operator/(H a, H b) { return H(float(a) / float(b)); }                                  \
  inline H operator-(H a) { H r = a; r.__x ^= 0x8000u; return r; }                                 \
  inline H& operator+=(H& a, H b) { return a = a + b; }                                            \
  inline H& operator-=(H& a, H b) { return a = a - b; }                                            \
  inline H& operator*=(H& a, H b) { return a = a * b; }                                            \
  inline bool operator==(H a, H b) { return float(a) == float(b); }                                \
  inline bool operator!=(H a, H b) { return float(a) != float(b); }                                \
  inline bool operator<(H a, H b) { return float(a) < float(b); }                                  \
  inline bool operator>(H a, H b) { return float(a) > float(b); }                                  \
  inline bool operator<=(H a, H b) { return float(a) <= float(b); }                                \
  inline bool operator>=(H a, H b) { return float(a) >= float(b); }                                \
  inline H __hadd(H a, H b) { return a + b; }                                                      \
  inline H __hsub(H a, H b) { return a - b; }                                                      \
  inline H __hmul(H a, H b) { return a * b; }                                                      \
  inline H __hdiv(H a, H b) { return a / b; }                                                      \
  inline H __hneg(H a) { return -a; }                                                              \
  inline H __hfma(H a, H b, H c) { return H(std::fma(float(a), float(b), float(c))); }             \
  inline H __hmax(H a, H b) { return H(std::fmax(float(a), float(b))); }                           \
  inline H __hmin(H a, H b) { return H(std::fmin(float(a), float(b))); }
SB_EMU_HALF_OPS(__half)
SB_EMU_HALF_OPS(__nv_bfloat16)
#undef SB_EMU_HALF_OPS

// ======================================================================= PTX wrappers
// The emulated versions of the inline-PTX wrappers in kernels/common.cuh (which compiles
// its own versions only when SB_EMULATION is not defined). Same names, same signatures.
namespace sb {

inline unsigned int smid() { return sb_emu::smid(); }
inline unsigned long long globaltimer_ns() { return sb_emu::globaltimer_ns(); }

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32: D = A * B + C for the
// whole warp; every lane passes its own fragments (layouts: PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"; implemented in runtime.cpp).
inline void mma_m16n8k16_bf16(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2],
                              const float (&c)[4]) {
  sb_emu::mma_m16n8k16(true, d, a, b, c);
}
inline void mma_m16n8k16_f16(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2],
                             const float (&c)[4]) {
  sb_emu::mma_m16n8k16(false, d, a, b, c);
}

namespace detail {
// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: lane 8*j + r passes the address of row r
// of matrix j (16 bytes: eight b16 elements). Register j of lane t then holds, low half
// first: without .trans, elements 2*(t%4) and 2*(t%4)+1 of row t/4 of matrix j; with
// .trans, element t/4 of rows 2*(t%4) and 2*(t%4)+1 (the matrix transposed).
inline void ldmatrix_x4(unsigned int (&r)[4], const void* row, bool trans) {
  sb_emu::poll_abort();
  const void* rows[32];
  bool ok = (reinterpret_cast<std::uintptr_t>(row) & 15u) == 0;
  if (!ok) sb_emu::report("ldmatrix: a row address is not 16-byte aligned");
  ok = ok && sb_emu::check_shared(row, 16, "ldmatrix");
  sb_emu::warp_allgather(sb_emu::Coll::Ldmatrix, 0xffffffffu, &row, sizeof(row), rows, false);
  const unsigned t = sb_emu::lane_of_caller();
  for (unsigned j = 0; j < 4; ++j) {
    unsigned short lo, hi;
    if (!trans) {
      const unsigned short* p = static_cast<const unsigned short*>(rows[8 * j + t / 4]);
      lo = p[2 * (t % 4)];
      hi = p[2 * (t % 4) + 1];
    } else {
      lo = static_cast<const unsigned short*>(rows[8 * j + 2 * (t % 4)])[t / 4];
      hi = static_cast<const unsigned short*>(rows[8 * j + 2 * (t % 4) + 1])[t / 4];
    }
    r[j] = (unsigned)lo | ((unsigned)hi << 16);
  }
  // Every lane has read its data before any lane goes on (and perhaps overwrites a row):
  // the device's ldmatrix reads all rows as one warp-wide instruction.
  sb_emu::warp_allgather(sb_emu::Coll::LdmatrixDone, 0xffffffffu, nullptr, 0, nullptr, false);
}
}  // namespace detail

inline void ldmatrix_x4(unsigned int (&r)[4], const void* smem_row) { detail::ldmatrix_x4(r, smem_row, false); }
inline void ldmatrix_x4_trans(unsigned int (&r)[4], const void* smem_row) {
  detail::ldmatrix_x4(r, smem_row, true);
}

// cp.async.cg.shared.global [dst], [src], 16 (and the zero-filling form with src-size).
inline void cp_async_16(void* smem_dst, const void* gmem_src) { sb_emu::async_issue(smem_dst, gmem_src, 16); }
inline void cp_async_16_zfill(void* smem_dst, const void* gmem_src, unsigned int src_bytes) {
  sb_emu::async_issue(smem_dst, gmem_src, src_bytes);
}
// cp.async.commit_group: later copies belong to a new group.
inline void cp_async_commit() { sb_emu::poll_abort(); ++sb_emu::async_queue.open_group; }
// cp.async.wait_group N: all but the newest N committed groups have landed.
template <int N> inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
  sb_emu::poll_abort();
  sb_emu::async_complete(N);
}
// cp.async.wait_all: every copy issued so far has landed (commits the open group).
inline void cp_async_wait_all() {
  sb_emu::poll_abort();
  sb_emu::async_complete(-1);
  ++sb_emu::async_queue.open_group;
}

}  // namespace sb
