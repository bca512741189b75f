//! One binding for the NCCL C API, loaded at run time, for NVIDIA NCCL (`libnccl.so.2`) and
//! AMD RCCL (`librccl.so.1`), which export the same `nccl*` names.
//!
//! Why not cudarc's NCCL module: it never looks for `libnccl.so.2` (the only name the NCCL
//! runtime packages and the PyPI wheel ship), it panics on a missing symbol, and it is
//! CUDA-only. Here nothing links at build time, a missing library or symbol is a sentence,
//! and streams are opaque pointers (`cudaStream_t` or `hipStream_t`).
//!
//! Three layers, as in cudarc:
//! 1. [`sys`]: the C types and values of NCCL 2.32.3's `nccl.h` (including the exact
//!    `ncclConfig_t`) and [`sys::Library`], every function pointer resolved when the library
//!    is opened (optional newer entry points as `Option`s).
//! 2. [`result`]: each call checked; [`NcclError`] names the call, the code, NCCL's text for
//!    the code and `ncclGetLastError`.
//! 3. [`safe`]: [`Nccl`] (the loaded library, `Arc`-shared), [`UniqueId`], [`Comm`]
//!    (RAII; dropping aborts), [`Group`], and [`wait`] / [`wait_all`], which bound every wait
//!    on peers by a deadline and abort the communicator when it passes.
//!
//! Finding the library: `SOLBENCH_NCCL_LIBRARY` (or `SOLBENCH_RCCL_LIBRARY`) names the file
//! and replaces the search; otherwise `dlopen` searches its usual places (LD_LIBRARY_PATH,
//! the ld.so cache) for the names in [`Flavor::candidates`]. For the PyPI wheel, put
//! `<site-packages>/nvidia/nccl/lib` on LD_LIBRARY_PATH (scripts/install-cuda-toolchain.sh
//! exports it).

pub mod result;
pub mod safe;
pub mod sys;

pub use result::NcclError;
pub use safe::{
    decode_version, encode_version, wait, wait_all, Comm, CommState, DataType, Group, Nccl,
    ReduceOp, UniqueId, WaitError, DEFAULT_CALL_TIMEOUT,
};
pub use sys::{Flavor, LoadError, Stream};
