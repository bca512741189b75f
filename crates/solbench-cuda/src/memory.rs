//! The memory family on NVIDIA GPUs: streaming kernels (read, write, copy, triad) over a
//! size sweep that shows the L2 knee and the HBM plateau, shared-memory bandwidth per SM
//! and for the whole GPU, and copy-engine transfers (device-local, host to device, device
//! to host, both at once, and to every peer GPU), measured as nvbandwidth and BabelStream
//! measure them and verified element by element after copying the results back.

use crate::device::CudaDevice;
use crate::gpu::{
    allow_shared_memory, check, cuda_err, failed, BatchTimer, DeviceBuffer, Kernels, PinnedBuffer,
};
use crate::launch::{self, Launch1d};
use crate::pattern::{self, Comparison, Element};
use crate::probe;
use cudarc::driver::{sys, CudaContext, CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg};
use serde_json::json;
use solbench_core::backend::{Check, Notes, PrepareError, RunError, Workload};
use solbench_core::case::{Dtype, MemoryCase, MemoryOp};
use solbench_core::size::format_size;
use solbench_core::work::{memory_work, ByteCounting, Work};
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

/// Device memory is read back for verification in chunks of this size.
const VERIFY_CHUNK: usize = 256 << 20;
/// Inner iterations of `sb_smem_bw` per launch: about a millisecond per launch on Hopper.
const SMEM_ITERS: u32 = 1024;
/// Seeds of the arrays (distinct, so a kernel reading the wrong array is caught).
const SEED_A: u64 = 0x5EED_0001;
const SEED_B: u64 = 0x5EED_0002;
const SEED_C: u64 = 0x5EED_0003;
const SEED_POISON: u64 = 0xDEAD_BEEF;

pub fn prepare<'a>(
    dev: &'a CudaDevice,
    case: &MemoryCase,
) -> Result<Box<dyn Workload + 'a>, PrepareError> {
    if !matches!(case.dtype, Dtype::F64 | Dtype::F32) {
        return Err(PrepareError::Unsupported(format!(
            "memory kernels run on f64 or f32 elements, not {}",
            case.dtype
        )));
    }
    // A previous case may have left another GPU's context current (peer copies).
    dev.ctx
        .bind_to_thread()
        .map_err(|e| failed(format!("binding the CUDA context failed: {e}")))?;
    // Device bytes on this GPU, and pinned host bytes, each case allocates.
    let (footprint, host_bytes) = match case.op {
        MemoryOp::Smem | MemoryOp::SmemSm => (0, 0),
        MemoryOp::CeCopy => (2 * case.working_set, 0),
        MemoryOp::H2d | MemoryOp::D2h => (case.working_set, case.working_set),
        MemoryOp::Bidir => (2 * case.working_set, 2 * case.working_set),
        _ => (case.working_set, 0),
    };
    if let Some(avail) = solbench_core::env::available_memory_bytes() {
        if host_bytes > avail / 2 {
            return Err(PrepareError::Unsupported(format!(
                "{} of pinned host memory is more than half the {} available; pinning it would starve the host",
                format_size(host_bytes),
                format_size(avail)
            )));
        }
    }
    let (free, _) = dev
        .ctx
        .mem_get_info()
        .map_err(|e| failed(format!("reading free GPU memory failed: {e}")))?;
    if footprint > (free as u64) / 100 * 95 {
        return Err(PrepareError::Unsupported(format!(
            "{} of buffers does not fit in the {} of GPU memory free",
            format_size(footprint),
            format_size(free as u64)
        )));
    }
    match (case.op, case.dtype) {
        (op, _) if op.is_shared_memory() => Ok(Box::new(SharedMemory::prepare(dev, op)?)),
        (op, Dtype::F64) if op.is_copy_engine() => {
            Ok(Box::new(Transfer::<f64>::prepare(dev, case)?))
        }
        (op, _) if op.is_copy_engine() => Ok(Box::new(Transfer::<f32>::prepare(dev, case)?)),
        (_, Dtype::F64) => Ok(Box::new(Streaming::<f64>::prepare(dev, case)?)),
        _ => Ok(Box::new(Streaming::<f32>::prepare(dev, case)?)),
    }
}

/// An element type with its fill kernel and kernel-name suffix.
trait GpuElement: Element + DeviceRepr {}
impl GpuElement for f64 {}
impl GpuElement for f32 {}

fn config(l: Launch1d) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (l.grid, 1, 1),
        block_dim: (l.block, 1, 1),
        shared_mem_bytes: l.shared_bytes,
    }
}

/// Fills `buf` (elements of T) on the device with `sb_fill_T(seed)` and waits.
fn fill_device<T: GpuElement>(
    util: &Kernels,
    timer: &BatchTimer,
    buf: &DeviceBuffer,
    seed: u64,
    sms: u32,
) -> Result<(), String> {
    let f = util.function(&format!("sb_fill_{}", T::NAME))?;
    let n = (buf.bytes() / std::mem::size_of::<T>()) as u64;
    let l = launch::streaming(n, std::mem::size_of::<T>() as u64, sms, 4);
    let ptr = buf.ptr();
    // SAFETY: sb_fill_T(T* a, u64 n, u64 seed) over n elements of a live buffer.
    unsafe {
        timer
            .stream
            .launch_builder(&f)
            .arg(&ptr)
            .arg(&n)
            .arg(&seed)
            .launch(config(l))
    }
    .map_err(cuda_err("launching the fill kernel"))?;
    timer
        .stream
        .synchronize()
        .map_err(cuda_err("filling device memory"))
}

// ------------------------------------------------------------------------ streaming

/// BabelStream's kernels from kernels/memory.cu on `n` elements per array.
struct Streaming<'a, T: GpuElement> {
    dev: &'a CudaDevice,
    case: MemoryCase,
    timer: BatchTimer,
    func: CudaFunction,
    arrays: Vec<DeviceBuffer>,
    partials: Option<DeviceBuffer>,
    n: u64,
    launch: Launch1d,
    blocks_per_sm: u32,
    scalar: T,
    value: T,
    read_reference: f64,
    origin: String,
}

impl<'a, T: GpuElement> Streaming<'a, T> {
    fn prepare(dev: &'a CudaDevice, case: &MemoryCase) -> Result<Self, PrepareError> {
        let n = case.elements_per_array();
        if n == 0 {
            return Err(PrepareError::Unsupported(format!(
                "a {} working set holds no {} element per array",
                format_size(case.working_set),
                case.dtype
            )));
        }
        let util = dev.kernels("util.cu").map_err(failed)?;
        let kernels = dev.kernels("memory.cu").map_err(failed)?;
        let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
        let func = kernels
            .function(&format!("sb_{}_{}", case.op.name(), T::NAME))
            .map_err(failed)?;
        let blocks_per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(launch::STREAM_BLOCK, 0, None)
            .map_err(|e| failed(format!("occupancy query failed: {e}")))?
            .max(1);
        let l = launch::streaming(
            n,
            std::mem::size_of::<T>() as u64,
            dev.sm_count(),
            blocks_per_sm,
        );
        let bytes = n as usize * std::mem::size_of::<T>();
        let arrays = (0..case.op.arrays())
            .map(|_| DeviceBuffer::new(&dev.ctx, bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let sms = dev.sm_count();
        // Inputs random, outputs poisoned (a different random stream), so a kernel that
        // skips elements or reads the wrong array cannot match by accident.
        let seeds: &[u64] = match case.op {
            MemoryOp::Read => &[SEED_A],
            MemoryOp::Write => &[SEED_POISON],
            MemoryOp::Copy => &[SEED_A, SEED_POISON],
            _ => &[SEED_POISON, SEED_B, SEED_C],
        };
        for (buf, &seed) in arrays.iter().zip(seeds) {
            fill_device::<T>(&util, &timer, buf, seed, sms).map_err(failed)?;
        }
        let partials = if case.op == MemoryOp::Read {
            Some(
                DeviceBuffer::new(&dev.ctx, l.grid as usize * std::mem::size_of::<T>())
                    .map_err(failed)?,
            )
        } else {
            None
        };
        // The read check compares with the exact sum of the values, computed once here.
        let read_reference = if case.op == MemoryOp::Read {
            use rayon::prelude::*;
            (0..n)
                .into_par_iter()
                .map(|i| T::random(SEED_A, i).to_f64())
                .sum()
        } else {
            0.0
        };
        Ok(Streaming {
            dev,
            case: case.clone(),
            timer,
            func,
            arrays,
            partials,
            n,
            launch: l,
            blocks_per_sm,
            scalar: T::from_f64(0.4),
            value: T::random(SEED_B, 7),
            read_reference,
            origin: kernels.origin.clone(),
        })
    }

    fn enqueue(&self, stream: &cudarc::driver::CudaStream) -> Result<(), String> {
        let cfg = config(self.launch);
        let p: Vec<u64> = self.arrays.iter().map(|a| a.ptr()).collect();
        let n = self.n;
        let mut b = stream.launch_builder(&self.func);
        let partials = self.partials.as_ref().map(|p| p.ptr()).unwrap_or(0);
        match self.case.op {
            MemoryOp::Read => b.arg(&p[0]).arg(&n).arg(&partials),
            MemoryOp::Write => b.arg(&p[0]).arg(&n).arg(&self.value),
            MemoryOp::Copy => b.arg(&p[0]).arg(&p[1]).arg(&n),
            _ => b.arg(&p[0]).arg(&p[1]).arg(&p[2]).arg(&self.scalar).arg(&n),
        };
        // SAFETY: the arguments match the kernel signatures in kernels/memory.cu's launch
        // contract; every buffer holds n elements of T and lives as long as self.
        unsafe { b.launch(cfg) }.map_err(cuda_err("launching the memory kernel"))?;
        Ok(())
    }
}

impl<T: GpuElement> Workload for Streaming<'_, T> {
    fn work(&self) -> Work {
        memory_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        self.timer
            .time(iters, |s| self.enqueue(s))
            .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let check = self.check_output()?;
        if check.passed {
            // Every operation writes the same output on every run: poison it again so the
            // next check proves the runs since this one really wrote it.
            self.output().poison().map_err(RunError)?;
        }
        Ok(check)
    }

    fn notes(&self) -> Notes {
        self.describe()
    }
}

impl<T: GpuElement> Streaming<'_, T> {
    /// The buffer the operation writes.
    fn output(&self) -> &DeviceBuffer {
        match self.case.op {
            MemoryOp::Read => self.partials.as_ref().unwrap_or(&self.arrays[0]),
            MemoryOp::Copy => &self.arrays[1],
            _ => &self.arrays[0],
        }
    }

    fn check_output(&self) -> Result<Check, RunError> {
        let n = self.n;
        let eps = T::EPSILON;
        let chunk = VERIFY_CHUNK - VERIFY_CHUNK % std::mem::size_of::<T>();
        let w = std::mem::size_of::<T>();
        match self.case.op {
            MemoryOp::Read => {
                let p = self
                    .partials
                    .as_ref()
                    .ok_or_else(|| RunError("no partials buffer".into()))?;
                let mut bytes = vec![0u8; p.bytes()];
                p.read(0, &mut bytes).map_err(RunError)?;
                let got: f64 = bytes.chunks_exact(w).map(|b| T::from_le(b).to_f64()).sum();
                let want = self.read_reference;
                let per_thread = launch::elements_per_thread(n, self.launch);
                let tol = pattern::read_sum_tolerance(per_thread, self.launch.block, eps);
                let rel = (got - want).abs() / want.abs();
                let passed = rel <= tol;
                Ok(Check {
                    passed,
                    compared: 1,
                    mismatches: u64::from(!passed),
                    max_abs_err: (got - want).abs(),
                    max_rel_err: rel,
                    tolerance: format!("|sum - ref| <= {tol:.1e} x |ref| (serial-summation bound for {per_thread} elements per thread)"),
                    method: format!("the sum of {} block partials vs the exact f64 sum of all {n} random inputs", self.launch.grid),
                    detail: (!passed).then(|| format!("device sum {got}, reference {want}")),
                })
            }
            op => {
                let out = &self.arrays[if op == MemoryOp::Copy { 1 } else { 0 }];
                let mut cmp = Comparison::default();
                let (value, scalar) = (self.value, self.scalar);
                let (tol, tol_text, method) = match op {
                    MemoryOp::Write => (0.0, "exact", "every element equals the written value"),
                    MemoryOp::Copy => (
                        0.0,
                        "exact",
                        "every element equals the random source element",
                    ),
                    _ => (
                        2.0 * eps,
                        "|err| <= 2 eps x |ref| (FMA or not)",
                        "every element vs b + s*c from the regenerated random inputs",
                    ),
                };
                out.for_each_chunk(chunk, |off, bytes| {
                    let first = (off / w) as u64;
                    match op {
                        MemoryOp::Write => cmp.chunk::<T>(bytes, first, tol, |_| value),
                        MemoryOp::Copy => {
                            cmp.chunk::<T>(bytes, first, tol, |i| T::random(SEED_A, i))
                        }
                        _ => cmp.chunk::<T>(bytes, first, tol, |i| {
                            T::fma(scalar, T::random(SEED_C, i), T::random(SEED_B, i))
                        }),
                    }
                })
                .map_err(RunError)?;
                Ok(cmp.into_check(
                    tol_text.into(),
                    format!("{method}, copied back to the host"),
                ))
            }
        }
    }

    fn describe(&self) -> Notes {
        let mut n = Notes::new();
        n.insert(
            "kernel".into(),
            json!(format!("sb_{}_{}", self.case.op.name(), T::NAME)),
        );
        n.insert("module".into(), json!(self.origin));
        n.insert("grid".into(), json!(self.launch.grid));
        n.insert("block".into(), json!(self.launch.block));
        n.insert("blocks_per_sm".into(), json!(self.blocks_per_sm));
        n.insert(
            "bytes_in_flight_per_sm_per_array".into(),
            json!(launch::bytes_in_flight_per_sm(self.blocks_per_sm)),
        );
        n.insert("elements_per_array".into(), json!(self.n));
        n.insert(
            "access".into(),
            json!("16-byte vectors, ld.global.cg / st.global.cg (L2, not L1)"),
        );
        n.insert(
            "counting".into(),
            json!(ByteCounting::ReadPlusWritten.describe()),
        );
        if let Some(level) = self.dev.info.level_for(self.case.working_set) {
            n.insert("level".into(), json!(level.name));
        }
        n
    }
}

// ------------------------------------------------------------------- shared memory

/// `sb_smem_bw`: shared-memory bandwidth of one SM (one block of 1024 threads) or of the
/// whole GPU (every SM full of blocks).
struct SharedMemory {
    timer: BatchTimer,
    func: CudaFunction,
    out: DeviceBuffer,
    launch: Launch1d,
    per_sm: bool,
    origin: String,
    theoretical: Option<f64>,
}

impl SharedMemory {
    fn prepare(dev: &CudaDevice, op: MemoryOp) -> Result<Self, PrepareError> {
        let per_sm = op == MemoryOp::SmemSm;
        let util = dev.kernels("util.cu").map_err(failed)?;
        let kernels = dev.kernels("memory.cu").map_err(failed)?;
        let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
        let func = kernels.function("sb_smem_bw").map_err(failed)?;
        let probe_launch = launch::shared_memory(per_sm, dev.sm_count(), 1);
        allow_shared_memory(&func, probe_launch.shared_bytes).map_err(failed)?;
        let blocks_per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(
                probe_launch.block,
                probe_launch.shared_bytes as usize,
                None,
            )
            .map_err(|e| failed(format!("occupancy query failed: {e}")))?;
        if blocks_per_sm == 0 {
            return Err(PrepareError::Unsupported(format!(
                "a block of {} threads with {} of shared memory does not fit on one SM",
                probe_launch.block,
                format_size(probe_launch.shared_bytes as u64)
            )));
        }
        let l = launch::shared_memory(per_sm, dev.sm_count(), blocks_per_sm);
        let out = DeviceBuffer::new(&dev.ctx, l.grid as usize * 4).map_err(failed)?;
        out.poison().map_err(failed)?;
        let theoretical = dev
            .info
            .properties
            .get("shared_memory_bandwidth_theoretical_gb_s")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| if per_sm { v / dev.sm_count() as f64 } else { v });
        Ok(SharedMemory {
            timer,
            func,
            out,
            launch: l,
            per_sm,
            origin: kernels.origin.clone(),
            theoretical,
        })
    }
}

impl Workload for SharedMemory {
    fn work(&self) -> Work {
        Work {
            bytes: launch::smem_traffic(self.launch, SMEM_ITERS) as f64,
            flops: 0.0,
            counting: ByteCounting::ReadPlusWritten,
            bus_factor: None,
        }
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        let cfg = config(self.launch);
        let out = self.out.ptr();
        let inner = SMEM_ITERS;
        self.timer
            .time(iters, |s| {
                // SAFETY: sb_smem_bw(u32 iters, u32* out) with out holding grid elements and
                // the dynamic shared memory its contract asks for.
                unsafe {
                    s.launch_builder(&self.func)
                        .arg(&inner)
                        .arg(&out)
                        .launch(cfg)
                }
                .map(|_| ())
                .map_err(cuda_err("launching sb_smem_bw"))
            })
            .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let mut bytes = vec![0u8; self.out.bytes()];
        self.out.read(0, &mut bytes).map_err(RunError)?;
        let want = launch::smem_expected(self.launch.block, SMEM_ITERS);
        let mut bad = 0u64;
        let mut first = None;
        for (b, c) in bytes.chunks_exact(4).enumerate() {
            let got = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if got != want {
                bad += 1;
                first.get_or_insert(format!("block {b}: got {got}, expected {want}"));
            }
        }
        if bad == 0 {
            self.out.poison().map_err(RunError)?; // the next check must see new sums
        }
        Ok(Check {
            passed: bad == 0,
            compared: self.launch.grid as u64,
            mismatches: bad,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            tolerance: "exact (u32 sums)".into(),
            method: "every block's checksum of the values read vs block x 4 x iters x (iters - 1) / 2 mod 2^32".into(),
            detail: first,
        })
    }

    fn notes(&self) -> Notes {
        let mut n = Notes::new();
        n.insert("kernel".into(), json!("sb_smem_bw"));
        n.insert("module".into(), json!(self.origin));
        n.insert(
            "scope".into(),
            json!(if self.per_sm {
                "one SM (one block)"
            } else {
                "whole GPU"
            }),
        );
        n.insert("grid".into(), json!(self.launch.grid));
        n.insert("block".into(), json!(self.launch.block));
        n.insert(
            "shared_bytes_per_block".into(),
            json!(self.launch.shared_bytes),
        );
        n.insert("inner_iterations".into(), json!(SMEM_ITERS));
        if let Some(t) = self.theoretical {
            n.insert("theoretical_gb_s".into(), json!((t * 10.0).round() / 10.0));
        }
        n.insert(
            "counting".into(),
            json!(ByteCounting::ReadPlusWritten.describe()),
        );
        n
    }
}

// --------------------------------------------------------------------- copy engines

/// Where one side of a transfer lives.
enum Side {
    Device(DeviceBuffer),
    Host(PinnedBuffer),
}

impl Side {
    fn bytes(&self) -> usize {
        match self {
            Side::Device(d) => d.bytes(),
            Side::Host(h) => h.as_slice().len(),
        }
    }
}

/// One direction of a transfer: `src` → `dst`.
struct Copy1 {
    src: Side,
    dst: Side,
    /// Set for peer copies: (destination context, source context).
    peer: Option<(Arc<CudaContext>, Arc<CudaContext>)>,
}

impl Copy1 {
    fn enqueue(&self, stream: &cudarc::driver::CudaStream) -> Result<(), String> {
        let s = stream.cu_stream();
        let bytes = self.src.bytes();
        // SAFETY: both sides are live buffers of `bytes` bytes; pinned host memory makes
        // the async copies truly asynchronous.
        let r = unsafe {
            match (&self.src, &self.dst, &self.peer) {
                (Side::Device(a), Side::Device(b), Some((dst_ctx, src_ctx))) => {
                    sys::cuMemcpyPeerAsync(
                        b.ptr(),
                        dst_ctx.cu_ctx(),
                        a.ptr(),
                        src_ctx.cu_ctx(),
                        bytes,
                        s,
                    )
                }
                (Side::Device(a), Side::Device(b), None) => {
                    sys::cuMemcpyDtoDAsync_v2(b.ptr(), a.ptr(), bytes, s)
                }
                (Side::Host(a), Side::Device(b), _) => {
                    sys::cuMemcpyHtoDAsync_v2(b.ptr(), a.host_ptr() as *const c_void, bytes, s)
                }
                (Side::Device(a), Side::Host(b), _) => {
                    sys::cuMemcpyDtoHAsync_v2(b.host_ptr() as *mut c_void, a.ptr(), bytes, s)
                }
                (Side::Host(_), Side::Host(_), _) => {
                    return Err("host-to-host copies are not a GPU transfer (a bug)".into())
                }
            }
        };
        check("enqueueing a copy", r)
    }

    /// Compares every element of the destination with the source's random values.
    fn verify<T: Element>(&self, cmp: &mut Comparison) -> Result<(), String> {
        let w = std::mem::size_of::<T>();
        match &self.dst {
            Side::Host(h) => {
                cmp.chunk::<T>(h.as_slice(), 0, 0.0, |i| T::random(SEED_A, i));
                Ok(())
            }
            Side::Device(d) => d.for_each_chunk(VERIFY_CHUNK - VERIFY_CHUNK % w, |off, bytes| {
                cmp.chunk::<T>(bytes, (off / w) as u64, 0.0, |i| T::random(SEED_A, i))
            }),
        }
    }
}

/// Runs `f` with the calling thread pinned to the CPUs local to the GPU, so pinned host
/// buffers are allocated on the GPU's NUMA node (nvbandwidth does the same), then restores
/// the thread's affinity. Returns whether pinning took effect.
fn on_local_cpus<R>(bus_id: Option<&str>, f: impl FnOnce() -> R) -> (R, bool) {
    let cpus = bus_id.and_then(probe::local_cpus).filter(|c| !c.is_empty());
    let Some(cpus) = cpus else {
        return (f(), false);
    };
    // SAFETY: cpu_set_t is plain data; the calls read/write only the sets given.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut old) != 0 {
            return (f(), false);
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus.into_iter().filter(|&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        let pinned = libc::sched_setaffinity(0, size, &set) == 0;
        let r = f();
        libc::sched_setaffinity(0, size, &old);
        (r, pinned)
    }
}

/// Copy-engine transfers: `cuMemcpy*Async` of the whole buffer per iteration.
struct Transfer<T: Element> {
    case: MemoryCase,
    timer: BatchTimer,
    copies: Vec<Copy1>,
    notes: Notes,
    _t: std::marker::PhantomData<T>,
}

impl<T: GpuElement> Transfer<T> {
    fn prepare(dev: &CudaDevice, case: &MemoryCase) -> Result<Self, PrepareError> {
        let n = case.elements_per_array();
        let bytes = n as usize * std::mem::size_of::<T>();
        if bytes == 0 {
            return Err(PrepareError::Unsupported(
                "a zero-byte copy measures nothing".into(),
            ));
        }
        let util = dev.kernels("util.cu").map_err(failed)?;
        let timer = BatchTimer::new(&dev.ctx, &util).map_err(failed)?;
        let sms = dev.sm_count();
        let bus = dev.info.pci_bus_id.clone();
        let mut notes = Notes::new();
        // Random source on the device, destination poisoned with 0xFF bytes (NaN for both
        // element types; never a value the random pattern produces).
        let dev_src = || -> Result<Side, String> {
            let b = DeviceBuffer::new(&dev.ctx, bytes)?;
            fill_device::<T>(&util, &timer, &b, SEED_A, sms)?;
            Ok(Side::Device(b))
        };
        let dev_dst = |ctx: &Arc<CudaContext>| -> Result<Side, String> {
            let b = DeviceBuffer::new(ctx, bytes)?;
            b.poison()?;
            Ok(Side::Device(b))
        };
        let host = |random: bool| -> Result<(Side, bool), String> {
            // Page-locking allocates every page inside cuMemHostAlloc, on the NUMA node
            // of the calling thread; only the allocation runs on the GPU's CPUs (filling
            // there would also pin rayon's pool, if this started it, to those CPUs).
            let (buf, pinned) =
                on_local_cpus(bus.as_deref(), || PinnedBuffer::new(&dev.ctx, bytes, false));
            let mut h = buf?;
            if random {
                pattern::fill_host::<T>(h.as_mut_slice(), SEED_A, 0);
            } else {
                h.as_mut_slice().fill(0xFF);
            }
            Ok((Side::Host(h), pinned))
        };
        let mut numa_pinned = false;
        let copies = match case.op {
            MemoryOp::CeCopy => vec![Copy1 {
                src: dev_src().map_err(failed)?,
                dst: dev_dst(&dev.ctx).map_err(failed)?,
                peer: None,
            }],
            MemoryOp::H2d => {
                let (src, p) = host(true).map_err(failed)?;
                numa_pinned = p;
                vec![Copy1 {
                    src,
                    dst: dev_dst(&dev.ctx).map_err(failed)?,
                    peer: None,
                }]
            }
            MemoryOp::D2h => {
                let (dst, p) = host(false).map_err(failed)?;
                numa_pinned = p;
                vec![Copy1 {
                    src: dev_src().map_err(failed)?,
                    dst,
                    peer: None,
                }]
            }
            MemoryOp::Bidir => {
                let (src, p) = host(true).map_err(failed)?;
                let (dst, _) = host(false).map_err(failed)?;
                numa_pinned = p;
                vec![
                    Copy1 {
                        src,
                        dst: dev_dst(&dev.ctx).map_err(failed)?,
                        peer: None,
                    },
                    Copy1 {
                        src: dev_src().map_err(failed)?,
                        dst,
                        peer: None,
                    },
                ]
            }
            MemoryOp::Peer => {
                let j = case.peer.ok_or_else(|| {
                    failed("a peer copy case names no peer GPU (a bug in the plan)".into())
                })? as usize;
                if j == dev.info.index {
                    return Err(PrepareError::Unsupported(
                        "a GPU is not its own peer".into(),
                    ));
                }
                let peer_ctx = dev.peer_context(j).map_err(failed)?;
                let mut can = 0;
                // SAFETY: valid out-pointer and device handles.
                check("asking whether the GPUs are peers", unsafe {
                    sys::cuDeviceCanAccessPeer(&mut can, dev.ctx.cu_device(), peer_ctx.cu_device())
                })
                .map_err(failed)?;
                if can == 0 {
                    return Err(PrepareError::Unsupported(format!(
                        "GPU {} cannot access GPU {j} directly (no NVLink or PCIe peer path), so a copy would be staged through host memory; reported as N/A, as nvbandwidth does",
                        dev.info.index
                    )));
                }
                dev.ctx
                    .bind_to_thread()
                    .map_err(|e| failed(e.to_string()))?;
                // SAFETY: both contexts are live; enabling twice returns a harmless error.
                let r = unsafe { sys::cuCtxEnablePeerAccess(peer_ctx.cu_ctx(), 0) };
                if r != sys::CUresult::CUDA_SUCCESS
                    && r != sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED
                {
                    return Err(failed(format!(
                        "enabling peer access to GPU {j} failed: {r:?}"
                    )));
                }
                let src = dev_src().map_err(failed)?;
                let dst = dev_dst(&peer_ctx).map_err(failed)?;
                dev.ctx
                    .bind_to_thread()
                    .map_err(|e| failed(e.to_string()))?;
                notes.insert("peer".into(), json!(j));
                notes.insert(
                    "direction".into(),
                    json!(format!(
                        "write: GPU {} pushes to GPU {j} (copy issued in the source's context)",
                        dev.info.index
                    )),
                );
                vec![Copy1 {
                    src,
                    dst,
                    peer: Some((peer_ctx, dev.ctx.clone())),
                }]
            }
            op => {
                return Err(failed(format!(
                    "{} is not a copy-engine operation (a bug)",
                    op.name()
                )))
            }
        };
        if matches!(case.op, MemoryOp::H2d | MemoryOp::D2h | MemoryOp::Bidir) {
            notes.insert(
                "host_memory".into(),
                json!("pinned (cuMemHostAlloc PORTABLE, not write-combined)"),
            );
            notes.insert(
                "host_numa".into(),
                json!(
                    match (numa_pinned, bus.as_deref().and_then(probe::numa_node)) {
                        (true, Some(node)) => format!("allocated on the GPU's NUMA node {node}"),
                        (true, None) => "allocated from the GPU's local CPUs".to_string(),
                        _ => "GPU-local CPUs unknown; allocated where the thread ran".to_string(),
                    }
                ),
            );
        }
        notes.insert("copy_bytes".into(), json!(bytes));
        notes.insert(
            "counting".into(),
            json!(ByteCounting::CopiedOnce.describe()),
        );
        if case.op == MemoryOp::Bidir {
            notes.insert("bidir".into(), json!("host-to-device and device-to-host on two streams at once; the figure is the sum of both directions"));
        }
        if case.op == MemoryOp::CeCopy {
            notes.insert("traffic".into(), json!("a device-local copy reads and writes every byte: HBM traffic is twice the figure"));
        }
        Ok(Transfer {
            case: case.clone(),
            timer,
            copies,
            notes,
            _t: std::marker::PhantomData,
        })
    }
}

impl<T: GpuElement> Workload for Transfer<T> {
    fn work(&self) -> Work {
        memory_work(&self.case)
    }

    fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
        match self.copies.as_slice() {
            [one] => self.timer.time(iters, |s| one.enqueue(s)),
            [a, b] => self
                .timer
                .time_two(iters, |s| a.enqueue(s), |s| b.enqueue(s)),
            _ => Err("a transfer has one or two directions (a bug)".into()),
        }
        .map_err(RunError)
    }

    fn verify(&mut self) -> Result<Check, RunError> {
        let mut cmp = Comparison::default();
        for c in &self.copies {
            c.verify::<T>(&mut cmp).map_err(RunError)?;
        }
        if cmp.mismatches == 0 {
            // Poison the destinations again so the next check proves the timed copies.
            for c in &mut self.copies {
                match &mut c.dst {
                    Side::Device(d) => d.poison().map_err(RunError)?,
                    Side::Host(h) => h.as_mut_slice().fill(0xFF),
                }
            }
        }
        Ok(cmp.into_check(
            "exact".into(),
            "every destination element equals its random source element (device data copied back to the host)".into(),
        ))
    }

    fn notes(&self) -> Notes {
        self.notes.clone()
    }
}
