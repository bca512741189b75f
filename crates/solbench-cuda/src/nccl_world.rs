//! NCCL collectives on NVIDIA GPUs for the collectives harness: one process driving every
//! local GPU (one communicator over all of them, created in one `ncclCommInitAll`), or one
//! process per GPU on any number of nodes (ranks from the launcher, the unique id over the
//! job's [`Coordinator`]). Every wait is bounded: a rank that dies or hangs makes the
//! others abort their communicators and stop with a sentence saying what happened.

use crate::gpu::{cuda_err, DeviceBuffer};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};
use solbench_collectives::comm::{BufferId, Call, Communicator, Coordinator, RankInfo};
use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};
use solbench_nccl::safe::{wait_all, Comm, DataType, Group, Nccl, ReduceOp as NcclOp, UniqueId};
use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One GPU this process drives.
struct LocalGpu {
    rank: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
    buffers: Vec<DeviceBuffer>,
    info: RankInfo,
    free_bytes: u64,
}

pub struct NcclWorld {
    nccl: Nccl,
    gpus: Vec<LocalGpu>,
    comms: Vec<Comm>,
    world: usize,
    coordinator: Box<dyn Coordinator>,
    timeout: Duration,
    sm_major: i32,
}

fn dtype(d: Dtype) -> Option<DataType> {
    Some(match d {
        Dtype::I8 => DataType::Int8,
        Dtype::U8 => DataType::Uint8,
        Dtype::I32 => DataType::Int32,
        Dtype::U32 => DataType::Uint32,
        Dtype::I64 => DataType::Int64,
        Dtype::U64 => DataType::Uint64,
        Dtype::F16 => DataType::Float16,
        Dtype::F32 => DataType::Float32,
        Dtype::F64 => DataType::Float64,
        Dtype::Bf16 => DataType::Bfloat16,
        Dtype::Fp8E4m3 => DataType::Float8E4M3,
        Dtype::Fp8E5m2 => DataType::Float8E5M2,
        Dtype::Tf32 => return None,
    })
}

fn redop(r: ReduceOp) -> NcclOp {
    match r {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Prod => NcclOp::Prod,
        ReduceOp::Max => NcclOp::Max,
        ReduceOp::Min => NcclOp::Min,
        ReduceOp::Avg => NcclOp::Avg,
    }
}

fn open_gpu(ordinal: usize, rank: usize) -> Result<LocalGpu, String> {
    let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| format!("creating a CUDA context on GPU {ordinal} panicked inside cudarc"))?
        .map_err(cuda_err("creating a CUDA context"))?;
    // SAFETY: raw pointers only; no cudarc slices shared across streams.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
    let ev = || {
        ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err("creating a timing event"))
    };
    let name = ctx.name().unwrap_or_default();
    let (free, _) = ctx
        .mem_get_info()
        .map_err(cuda_err("reading free GPU memory"))?;
    let mut bus = [0i8; 64];
    // SAFETY: the buffer holds 64 chars.
    let _ = unsafe { sys::cuDeviceGetPCIBusId(bus.as_mut_ptr(), 64, ctx.cu_device()) };
    let bus: String = bus
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    Ok(LocalGpu {
        rank,
        start: ev()?,
        end: ev()?,
        ctx,
        stream,
        buffers: Vec::new(),
        info: RankInfo {
            rank,
            host: solbench_core::env::HostEnvironment::detect().hostname,
            pid: std::process::id(),
            device: format!("cuda:{ordinal} {name} [{bus}]"),
        },
        free_bytes: free as u64,
    })
}

impl NcclWorld {
    /// One process, every GPU in `ordinals`, one communicator over them all.
    pub fn all_local(
        nccl: Nccl,
        ordinals: &[usize],
        timeout: Duration,
    ) -> Result<NcclWorld, String> {
        if ordinals.is_empty() {
            return Err("no GPU to run collectives on".into());
        }
        let gpus = ordinals
            .iter()
            .enumerate()
            .map(|(rank, &o)| open_gpu(o, rank))
            .collect::<Result<Vec<_>, _>>()?;
        let devs: Vec<i32> = ordinals.iter().map(|&o| o as i32).collect();
        let comms = Comm::init_all(&nccl, &devs).map_err(|e| {
            format!("creating the NCCL communicator over GPUs {devs:?} failed: {e}")
        })?;
        Self::finish(
            nccl,
            gpus,
            comms,
            ordinals.len(),
            Box::new(solbench_collectives::comm::Alone),
            timeout,
        )
    }

    /// One process of a multi-process job: this process is `rank` of `world`, on GPU
    /// `ordinal`; process 0 makes the unique id and the coordinator carries it to everyone.
    pub fn one_rank(
        nccl: Nccl,
        ordinal: usize,
        rank: usize,
        world: usize,
        mut coordinator: Box<dyn Coordinator>,
        timeout: Duration,
    ) -> Result<NcclWorld, String> {
        let gpu = open_gpu(ordinal, rank)?;
        let id = if rank == 0 {
            UniqueId::new(&nccl)
                .map_err(|e| format!("creating the NCCL unique id failed: {e}"))?
                .to_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        let id = match coordinator.broadcast(id) {
            Ok(b) => UniqueId::from_slice(&b)?,
            Err(e) => return Err(format!("sharing the NCCL unique id failed: {e}")),
        };
        gpu.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the CUDA context"))?;
        let deadline = Instant::now() + timeout;
        let comm = match Comm::init_rank_by(&nccl, &id, rank, world, deadline) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("rank {rank}: creating the NCCL communicator failed: {e}");
                coordinator.abort(&why);
                return Err(why);
            }
        };
        Self::finish(nccl, vec![gpu], vec![comm], world, coordinator, timeout)
    }

    fn finish(
        nccl: Nccl,
        gpus: Vec<LocalGpu>,
        mut comms: Vec<Comm>,
        world: usize,
        coordinator: Box<dyn Coordinator>,
        timeout: Duration,
    ) -> Result<NcclWorld, String> {
        for c in &mut comms {
            c.set_call_timeout(timeout);
        }
        let sm_major = gpus[0]
            .ctx
            .compute_capability()
            .map(|(a, _)| a)
            .unwrap_or(0);
        Ok(NcclWorld {
            nccl,
            gpus,
            comms,
            world,
            coordinator,
            timeout,
            sm_major,
        })
    }

    fn ptr(&self, local: usize, (b, off): (BufferId, usize)) -> u64 {
        self.gpus[local].buffers[b.0].ptr() + off as u64
    }

    /// Enqueues one collective on every local GPU, as one NCCL group.
    fn enqueue(&self, calls: &[Call]) -> Result<(), String> {
        let group = Group::start(&self.nccl).map_err(|e| e.to_string())?;
        for (k, c) in calls.iter().enumerate() {
            let g = &self.gpus[k];
            g.ctx
                .bind_to_thread()
                .map_err(cuda_err("binding the CUDA context"))?;
            let send = self.ptr(k, c.send) as *const c_void;
            let recv = self.ptr(k, c.recv) as *mut c_void;
            let dt = dtype(c.dtype).ok_or("unsupported type (a bug: supports() refused it)")?;
            let op = redop(c.reduce.unwrap_or(ReduceOp::Sum));
            let count = c.count as usize;
            let s = g.stream.cu_stream() as *mut c_void;
            let comm = &self.comms[k];
            // SAFETY: the buffers were sized by the harness's layouts for this call, live on
            // this GPU, and the stream belongs to it.
            let r = unsafe {
                match c.op {
                    CollectiveOp::AllReduce => comm.all_reduce(send, recv, count, dt, op, s),
                    CollectiveOp::AllGather => comm.all_gather(send, recv, count, dt, s),
                    CollectiveOp::ReduceScatter => {
                        comm.reduce_scatter(send, recv, count, dt, op, s)
                    }
                    CollectiveOp::Broadcast => comm.broadcast(send, recv, count, dt, c.root, s),
                    CollectiveOp::Reduce => comm.reduce(send, recv, count, dt, op, c.root, s),
                    CollectiveOp::Alltoall => comm.alltoall(send, recv, count, dt, s),
                    CollectiveOp::Sendrecv => {
                        let n = self.world;
                        comm.send(send, count, dt, (g.rank + 1) % n, s)
                            .and_then(|_| comm.recv(recv, count, dt, (g.rank + n - 1) % n, s))
                    }
                }
            };
            r.map_err(|e| e.to_string())?;
        }
        let refs: Vec<&Comm> = self.comms.iter().collect();
        group.end(&refs).map_err(|e| e.to_string())
    }

    /// Waits until `done` holds on every local GPU, bounded, aborting on failure.
    fn wait(&mut self, what: &str, events: bool) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let refs: Vec<&Comm> = self.comms.iter().collect();
        let gpus = &self.gpus;
        let coordinator = &self.coordinator;
        let r = wait_all(&refs, deadline, || {
            if let Some(f) = coordinator.failure() {
                return Err(f);
            }
            for g in gpus {
                let done = if events {
                    g.end.try_is_complete().map_err(|e| e.to_string())?
                } else {
                    // SAFETY: a live stream of this process.
                    match unsafe { sys::cuStreamQuery(g.stream.cu_stream()) } {
                        sys::CUresult::CUDA_SUCCESS => true,
                        sys::CUresult::CUDA_ERROR_NOT_READY => false,
                        e => return Err(format!("the stream failed: {e:?}")),
                    }
                };
                if !done {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        r.map_err(|e| {
            let why = format!("{what}: {e}");
            self.coordinator.abort(&why);
            why
        })
    }
}

impl Communicator for NcclWorld {
    fn world_size(&self) -> usize {
        self.world
    }
    fn local_ranks(&self) -> Vec<usize> {
        self.gpus.iter().map(|g| g.rank).collect()
    }
    fn describe(&self, local: usize) -> RankInfo {
        self.gpus[local].info.clone()
    }
    fn library(&self) -> String {
        format!(
            "{} {}",
            self.nccl.library_name(),
            self.nccl.version_string()
        )
    }
    fn supports(&self, op: CollectiveOp, d: Dtype, r: Option<ReduceOp>) -> Result<(), String> {
        if dtype(d).is_none() {
            return Err(format!("{d} is not an NCCL data type"));
        }
        let (maj, min, _) = self.nccl.version();
        if matches!(d, Dtype::Fp8E4m3 | Dtype::Fp8E5m2) {
            if (maj, min) < (2, 24) {
                return Err(format!(
                    "FP8 collectives need NCCL 2.24 or newer; this is {}",
                    self.nccl.version_string()
                ));
            }
            if op.reduces() && self.sm_major < 9 {
                return Err("FP8 reductions need compute capability 9.0 or newer".into());
            }
        }
        if d == Dtype::Bf16 && (maj, min) < (2, 10) {
            return Err("bf16 collectives need NCCL 2.10 or newer".into());
        }
        if r == Some(ReduceOp::Avg) && (maj, min) < (2, 10) {
            return Err("the average reduction needs NCCL 2.10 or newer".into());
        }
        Ok(())
    }
    fn memory_limit(&self) -> u64 {
        // Leave a GiB (and 1/16) of each GPU for NCCL's own buffers and the driver.
        self.gpus
            .iter()
            .map(|g| g.free_bytes.saturating_sub((1 << 30) + g.free_bytes / 16))
            .min()
            .unwrap_or(0)
    }
    fn alloc(&mut self, local: usize, bytes: usize) -> Result<BufferId, String> {
        let g = &mut self.gpus[local];
        g.buffers.push(DeviceBuffer::new(&g.ctx, bytes)?);
        Ok(BufferId(g.buffers.len() - 1))
    }
    fn free_all(&mut self) {
        for g in &mut self.gpus {
            g.buffers.clear();
        }
    }
    fn write(
        &mut self,
        local: usize,
        b: BufferId,
        offset: usize,
        data: &[u8],
    ) -> Result<(), String> {
        self.gpus[local].buffers[b.0].write(offset, data)
    }
    fn read(
        &mut self,
        local: usize,
        b: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), String> {
        self.gpus[local].buffers[b.0].read(offset, out)
    }
    fn run_once(&mut self, calls: &[Call]) -> Result<(), String> {
        self.enqueue(calls)?;
        self.wait("a collective", false)
    }
    fn time(&mut self, calls: &[Call], iters: u32) -> Result<Vec<f64>, String> {
        for g in &self.gpus {
            g.ctx
                .bind_to_thread()
                .map_err(cuda_err("binding the CUDA context"))?;
            g.start
                .record(&g.stream)
                .map_err(cuda_err("recording the start event"))?;
        }
        for _ in 0..iters {
            self.enqueue(calls)?;
        }
        for g in &self.gpus {
            g.end
                .record(&g.stream)
                .map_err(cuda_err("recording the end event"))?;
        }
        self.wait("a timed batch of collectives", true)?;
        self.gpus
            .iter()
            .map(|g| {
                let ms = g
                    .start
                    .elapsed_ms(&g.end)
                    .map_err(cuda_err("reading the timing events"))?;
                Ok(ms as f64 / 1e3 / iters.max(1) as f64)
            })
            .collect()
    }
    fn barrier(&mut self) -> Result<(), String> {
        self.coordinator.barrier()
    }
    fn sum_u64(&mut self, v: u64) -> Result<u64, String> {
        self.coordinator.sum_u64(v)
    }
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String> {
        self.coordinator.gather(bytes)
    }
    fn is_root_process(&self) -> bool {
        self.coordinator.process() == 0
    }
}

impl Drop for NcclWorld {
    fn drop(&mut self) {
        // Buffers first (in their contexts), then the communicators: destroy cleanly when
        // the last collective finished, abort otherwise (Comm's own Drop).
        for g in &mut self.gpus {
            g.buffers.clear();
        }
        for c in self.comms.drain(..) {
            let _ = c.destroy();
        }
    }
}
