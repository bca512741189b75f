//! Host collectives across processes through MPI (rsmpi over the system's MPI, Open MPI on
//! Debian), so the multi-process path of the collectives harness runs for real on machines
//! without a GPU: `mpirun -np 4 solbench collectives --backend host`.
//!
//! Calls go through rsmpi's raw FFI on byte buffers (our buffers are untyped; the element
//! type travels as an MPI datatype). MPI has no half-precision, bfloat16 or FP8 types and
//! no average, so those cases are skipped with that reason. rsmpi does not export
//! `MPI_IN_PLACE`, so in-place cases copy the input to a scratch buffer first and run the
//! out-of-place call into the caller's buffer: the same result in the same place, with one
//! host copy more inside the timing (said in the library string).

use mpi::ffi;
use mpi::traits::*;
// rsmpi's Communicator trait (rank, size, process_at_rank) under no name: ours is `Communicator`.
use mpi::topology::Communicator as _;
use solbench_collectives::comm::{BufferId, Call, Communicator, RankInfo};
use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};
use std::ffi::c_void;
use std::time::Instant;

pub struct MpiWorld {
    _universe: mpi::environment::Universe,
    world: mpi::topology::SimpleCommunicator,
    rank: usize,
    size: usize,
    buffers: Vec<Vec<u64>>, // u64 storage: 8-byte aligned for every element type
    scratch: Vec<u64>,
    host: String,
}

/// Initialises MPI once for the process. Errors (already initialised) are one sentence.
pub fn init() -> Result<MpiWorld, String> {
    let universe = mpi::initialize().ok_or("MPI was already initialised in this process")?;
    let world = universe.world();
    let host = mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into());
    Ok(MpiWorld {
        rank: world.rank() as usize,
        size: world.size() as usize,
        world,
        _universe: universe,
        buffers: Vec::new(),
        scratch: Vec::new(),
        host,
    })
}

fn datatype(d: Dtype) -> Option<ffi::MPI_Datatype> {
    // SAFETY: reading rsmpi's exported datatype handles, initialised with MPI.
    unsafe {
        Some(match d {
            Dtype::F32 => ffi::RSMPI_FLOAT,
            Dtype::F64 => ffi::RSMPI_DOUBLE,
            Dtype::I8 => ffi::RSMPI_INT8_T,
            Dtype::U8 => ffi::RSMPI_UINT8_T,
            Dtype::I32 => ffi::RSMPI_INT32_T,
            Dtype::U32 => ffi::RSMPI_UINT32_T,
            Dtype::I64 => ffi::RSMPI_INT64_T,
            Dtype::U64 => ffi::RSMPI_UINT64_T,
            _ => return None,
        })
    }
}

fn op(r: ReduceOp) -> Option<ffi::MPI_Op> {
    // SAFETY: as above.
    unsafe {
        Some(match r {
            ReduceOp::Sum => ffi::RSMPI_SUM,
            ReduceOp::Prod => ffi::RSMPI_PROD,
            ReduceOp::Max => ffi::RSMPI_MAX,
            ReduceOp::Min => ffi::RSMPI_MIN,
            ReduceOp::Avg => return None,
        })
    }
}

fn check(what: &str, code: i32) -> Result<(), String> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed with MPI error {code}"))
    }
}

impl MpiWorld {
    fn ptr(&mut self, b: BufferId, offset: usize) -> *mut c_void {
        let base = self.buffers[b.0].as_mut_ptr() as *mut u8;
        // SAFETY: offsets come from the harness's layouts, inside the buffer.
        unsafe { base.add(offset) as *mut c_void }
    }

    fn call(&mut self, c: &Call) -> Result<(), String> {
        let dt = datatype(c.dtype).ok_or("unsupported type (a bug: supports() refused it)")?;
        let w = c.dtype.size_bytes() as usize;
        let n = self.size;
        let count = c.count as i32;
        let send_len = match c.op {
            CollectiveOp::ReduceScatter | CollectiveOp::Alltoall => c.count as usize * n,
            _ => c.count as usize,
        } * w;
        let in_place = c.send.0 == c.recv.0;
        let mut send = self.ptr(c.send.0, c.send.1) as *const c_void;
        if in_place {
            // Copy the input aside; the out-of-place call then writes the caller's buffer.
            self.scratch.resize(send_len.div_ceil(8), 0);
            // SAFETY: send_len bytes are inside the source buffer and the scratch.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    send as *const u8,
                    self.scratch.as_mut_ptr() as *mut u8,
                    send_len,
                )
            };
            send = self.scratch.as_ptr() as *const c_void;
        }
        let recv = self.ptr(c.recv.0, c.recv.1);
        let comm = self.world.as_raw();
        let red = c.reduce.map(op).unwrap_or(None);
        // SAFETY: buffers hold the counts the harness's layouts give for this op; every
        // rank makes the same call.
        unsafe {
            match c.op {
                CollectiveOp::AllReduce => check(
                    "MPI_Allreduce",
                    ffi::MPI_Allreduce(send, recv, count, dt, red.ok_or("no reduction")?, comm),
                ),
                CollectiveOp::AllGather => check(
                    "MPI_Allgather",
                    ffi::MPI_Allgather(send, count, dt, recv, count, dt, comm),
                ),
                CollectiveOp::ReduceScatter => check(
                    "MPI_Reduce_scatter_block",
                    ffi::MPI_Reduce_scatter_block(
                        send,
                        recv,
                        count,
                        dt,
                        red.ok_or("no reduction")?,
                        comm,
                    ),
                ),
                CollectiveOp::Alltoall => check(
                    "MPI_Alltoall",
                    ffi::MPI_Alltoall(send, count, dt, recv, count, dt, comm),
                ),
                CollectiveOp::Reduce => check(
                    "MPI_Reduce",
                    ffi::MPI_Reduce(
                        send,
                        recv,
                        count,
                        dt,
                        red.ok_or("no reduction")?,
                        c.root as i32,
                        comm,
                    ),
                ),
                CollectiveOp::Broadcast => {
                    // The root's input becomes its output (in place, `send` is the scratch
                    // copy of it), then MPI broadcasts that buffer.
                    if self.rank == c.root {
                        std::ptr::copy_nonoverlapping(
                            send as *const u8,
                            recv as *mut u8,
                            c.count as usize * w,
                        );
                    }
                    check(
                        "MPI_Bcast",
                        ffi::MPI_Bcast(recv, count, dt, c.root as i32, comm),
                    )
                }
                CollectiveOp::Sendrecv => {
                    let next = ((self.rank + 1) % n) as i32;
                    let prev = ((self.rank + n - 1) % n) as i32;
                    check(
                        "MPI_Sendrecv",
                        ffi::MPI_Sendrecv(
                            send,
                            count,
                            dt,
                            next,
                            7,
                            recv,
                            count,
                            dt,
                            prev,
                            7,
                            comm,
                            ffi::RSMPI_STATUS_IGNORE,
                        ),
                    )
                }
            }
        }
    }
}

impl Communicator for MpiWorld {
    fn world_size(&self) -> usize {
        self.size
    }
    fn local_ranks(&self) -> Vec<usize> {
        vec![self.rank]
    }
    fn describe(&self, _local: usize) -> RankInfo {
        RankInfo {
            rank: self.rank,
            host: self.host.clone(),
            pid: std::process::id(),
            device: "host memory (MPI)".into(),
        }
    }
    fn library(&self) -> String {
        let v = mpi::environment::library_version().unwrap_or_default();
        let first = v.lines().next().unwrap_or("MPI").trim().to_string();
        format!("{first} (in-place cases copy the input aside first)")
    }
    fn supports(&self, o: CollectiveOp, d: Dtype, r: Option<ReduceOp>) -> Result<(), String> {
        if datatype(d).is_none() {
            return Err(format!(
                "MPI has no {d} type; the host backend runs f32, f64 and integer collectives"
            ));
        }
        if o.reduces() && r.and_then(op).is_none() {
            return Err(
                "MPI has no average reduction; use sum, prod, max or min on the host".into(),
            );
        }
        Ok(())
    }
    fn memory_limit(&self) -> u64 {
        // A quarter of the memory available, shared by the ranks on this host.
        solbench_core::env::available_memory_bytes().unwrap_or(1 << 30)
            / 4
            / self.size.max(1) as u64
    }
    fn alloc(&mut self, _local: usize, bytes: usize) -> Result<BufferId, String> {
        self.buffers.push(vec![0u64; bytes.div_ceil(8)]);
        Ok(BufferId(self.buffers.len() - 1))
    }
    fn free_all(&mut self) {
        self.buffers.clear();
        self.scratch = Vec::new();
    }
    fn write(
        &mut self,
        _local: usize,
        b: BufferId,
        offset: usize,
        data: &[u8],
    ) -> Result<(), String> {
        let buf = &mut self.buffers[b.0];
        // SAFETY: viewing the u64 storage as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 8) };
        bytes
            .get_mut(offset..offset + data.len())
            .ok_or("write past the end of a buffer (a bug)")?
            .copy_from_slice(data);
        Ok(())
    }
    fn read(
        &mut self,
        _local: usize,
        b: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), String> {
        let buf = &self.buffers[b.0];
        // SAFETY: viewing the u64 storage as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, buf.len() * 8) };
        out.copy_from_slice(
            bytes
                .get(offset..offset + out.len())
                .ok_or("read past the end of a buffer (a bug)")?,
        );
        Ok(())
    }
    fn run_once(&mut self, calls: &[Call]) -> Result<(), String> {
        self.call(&calls[0])
    }
    fn time(&mut self, calls: &[Call], iters: u32) -> Result<Vec<f64>, String> {
        let t = Instant::now();
        for _ in 0..iters {
            self.call(&calls[0])?;
        }
        Ok(vec![t.elapsed().as_secs_f64() / iters.max(1) as f64])
    }
    fn barrier(&mut self) -> Result<(), String> {
        self.world.barrier();
        Ok(())
    }
    fn sum_u64(&mut self, v: u64) -> Result<u64, String> {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&v, &mut out, mpi::collective::SystemOperation::sum());
        Ok(out)
    }
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String> {
        if self.rank == 0 {
            let mut all = vec![bytes];
            for r in 1..self.size {
                let (msg, _) = self.world.process_at_rank(r as i32).receive_vec::<u8>();
                all.push(msg);
            }
            Ok(Some(all))
        } else {
            self.world.process_at_rank(0).send(&bytes[..]);
            Ok(None)
        }
    }
    fn is_root_process(&self) -> bool {
        self.rank == 0
    }
}
