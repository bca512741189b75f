//! solbench-host: the CPU backend, always built.
//!
//! It runs every family for real on the host (memory bandwidth across the cache
//! hierarchy, GEMM, attention), and its reference implementations are the oracle GPU
//! results are checked against. Host collectives run across processes through MPI (the
//! `mpi` feature, module `mpi`), driven by `solbench collectives`, not by `run`.

pub mod attention;
pub mod attention_reference;
pub mod cpu;
pub mod gemm;
pub mod memory;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pool;

use pool::PinnedPool;
use solbench_core::backend::{Availability, Backend, Device, DeviceInfo, PrepareError, Workload};
use solbench_core::case::Case;
use solbench_core::env::HostEnvironment;
use std::sync::Arc;

pub struct HostBackend;

impl HostBackend {
    fn info() -> DeviceInfo {
        let env = HostEnvironment::detect();
        let cpus = cpu::allowed_cpus();
        let mut info = DeviceInfo {
            backend: "host".into(),
            index: 0,
            name: env.cpu.clone(),
            memory_bytes: env.memory_bytes,
            compute_units: Some(cpus.len() as u32),
            arch: Some(format!("{}+{}", std::env::consts::ARCH, cpu::simd_label())),
            memory_levels: cpu::memory_levels(&cpus, env.memory_bytes),
            ..Default::default()
        };
        info.properties.insert("cpus".into(), format!("{cpus:?}"));
        info.properties
            .insert("threads_pinned".into(), "one worker per allowed CPU".into());
        info
    }
}

impl Backend for HostBackend {
    fn name(&self) -> &'static str {
        "host"
    }

    fn availability(&self) -> Availability {
        let env = HostEnvironment::detect();
        Availability::Available {
            detail: cpu::describe(&env, cpu::allowed_cpus().len()),
        }
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, String> {
        Ok(vec![HostBackend::info()])
    }

    fn open(&self, index: usize) -> Result<Box<dyn Device>, String> {
        if index != 0 {
            return Err(format!("the host backend has one device (0), not {index}"));
        }
        Ok(Box::new(HostDevice {
            info: HostBackend::info(),
            pool: Arc::new(PinnedPool::new()?),
        }))
    }
}

pub struct HostDevice {
    info: DeviceInfo,
    pool: Arc<PinnedPool>,
}

impl HostDevice {
    pub fn new() -> Result<HostDevice, String> {
        Ok(HostDevice {
            info: HostBackend::info(),
            pool: Arc::new(PinnedPool::new()?),
        })
    }

    pub fn pool(&self) -> Arc<PinnedPool> {
        self.pool.clone()
    }
}

impl Device for HostDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn timing_method(&self) -> &'static str {
        "host monotonic clock around synchronous, parallel CPU work"
    }

    fn prepare(&self, case: &Case) -> Result<Box<dyn Workload + '_>, PrepareError> {
        match case {
            Case::Memory(m) => memory::prepare(m, self.pool.clone()),
            Case::Gemm(g) => Ok(Box::new(gemm::GemmWorkload::prepare(g, self.pool.clone())?)),
            Case::Attention(a) => Ok(Box::new(attention::AttentionWorkload::prepare(a, self.pool.clone())?)),
            Case::Collective(_) => Err(PrepareError::Unsupported(
                "collectives need every rank at once, so they run through `solbench collectives` (host: `mpirun -np N solbench collectives --backend host`, built with --features mpi), not `solbench run`".into(),
            )),
        }
    }
}
