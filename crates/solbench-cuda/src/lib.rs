//! The CUDA backend of solbench: NVIDIA GPUs through cudarc's driver API, loaded at run
//! time (nothing links against CUDA at build time), kernels from kernels/ compiled by
//! NVRTC for the exact device and cached on disk, and NVML telemetry.
//!
//! Layers: [`probe`] (is CUDA usable, in one sentence if not) → [`compile`] (NVRTC) →
//! [`gpu`] (checked RAII over the driver: buffers, modules, the batch timer) →
//! [`device`] (the `Backend`/`Device` of solbench-core) → workloads ([`memory`]).
//! [`launch`] and [`pattern`] are pure and unit-tested without a GPU.

pub mod attention;
pub mod attention_launch;
pub mod attention_prefill;
pub mod attention_prefill_launch;
pub mod compile;
pub mod cublaslt;
pub mod device;
pub mod gemm;
pub mod gemm_rules;
pub mod gpu;
pub mod launch;
pub mod memory;
pub mod nccl_world;
pub use solbench_core::numeric;
pub mod pattern;
pub mod probe;
pub mod telemetry;

pub use device::{CudaBackend, CudaDevice};
