//! What the harness needs from a collectives library, and nothing more: buffers, one
//! collective call per local rank, timing, and host-side coordination between processes.
//! NCCL, RCCL and MPI implement it; [`crate::sim::SimWorld`] implements it in memory for tests.

use serde::{Deserialize, Serialize};
use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};

/// A buffer allocated by a communicator for one local rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferId(pub usize);

/// One rank's part of one collective, in NCCL's terms (`count` is NCCL's count argument:
/// the per-rank count for all_gather/reduce_scatter/alltoall, the total otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Call {
    pub op: CollectiveOp,
    pub dtype: Dtype,
    pub reduce: Option<ReduceOp>,
    pub root: usize,
    pub count: u64,
    /// Buffer and byte offset of the input.
    pub send: (BufferId, usize),
    /// Buffer and byte offset of the output (the same buffer in place).
    pub recv: (BufferId, usize),
}

/// Who a rank is, for the record and the report's device list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankInfo {
    pub rank: usize,
    pub host: String,
    pub pid: u32,
    /// `cuda:3 NVIDIA H100 80GB HBM3 [0000:1b:00.0]`, `host (MPI)`, ...
    pub device: String,
}

pub trait Communicator {
    /// Ranks in the whole communicator (every process).
    fn world_size(&self) -> usize;
    /// The global ranks this process drives (one per GPU it owns; one for MPI).
    fn local_ranks(&self) -> Vec<usize>;
    /// Identity of a local rank (`local` indexes `local_ranks()`).
    fn describe(&self, local: usize) -> RankInfo;
    /// The library and its version (`NCCL 2.32.3`, `Open MPI 4.1.4`).
    fn library(&self) -> String;
    /// Whether the library runs this combination (one sentence if not).
    fn supports(
        &self,
        op: CollectiveOp,
        dtype: Dtype,
        reduce: Option<ReduceOp>,
    ) -> Result<(), String>;
    /// Bytes a local rank may allocate for one size's buffers (0 = no limit known).
    fn memory_limit(&self) -> u64;

    fn alloc(&mut self, local: usize, bytes: usize) -> Result<BufferId, String>;
    /// Frees every buffer (between sizes).
    fn free_all(&mut self);
    fn write(
        &mut self,
        local: usize,
        buf: BufferId,
        offset: usize,
        data: &[u8],
    ) -> Result<(), String>;
    fn read(
        &mut self,
        local: usize,
        buf: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), String>;

    /// Runs one collective (one call per local rank, as one group) and waits for it,
    /// within the communicator's timeout.
    fn run_once(&mut self, calls: &[Call]) -> Result<(), String>;
    /// Runs `iters` collectives back to back and returns, per local rank, the seconds per
    /// collective (GPU events around the batch where there is a GPU).
    fn time(&mut self, calls: &[Call], iters: u32) -> Result<Vec<f64>, String>;

    /// Host-side coordination across processes (no-ops for a single process).
    fn barrier(&mut self) -> Result<(), String>;
    fn sum_u64(&mut self, v: u64) -> Result<u64, String>;
    /// Every process's bytes at rank 0 (in process order); `None` elsewhere.
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String>;
    /// Whether this process reports (rank 0's process).
    fn is_root_process(&self) -> bool;
}

/// Host-side coordination between the processes of one job: what a GPU library's
/// communicator needs besides the collectives themselves (MPI has its own; NCCL gets one
/// from the launcher's TCP rendezvous, or [`Alone`] for a single process).
pub trait Coordinator {
    /// Processes in the job.
    fn processes(&self) -> usize;
    /// This process's index (0 = the one that reports).
    fn process(&self) -> usize;
    fn barrier(&mut self) -> Result<(), String>;
    fn sum_u64(&mut self, v: u64) -> Result<u64, String>;
    /// Every process's bytes at process 0 (in process order); `None` elsewhere.
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String>;
    /// Process 0's bytes everywhere (how the NCCL unique id travels).
    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, String>;
    /// Tells every other process this one failed, so they stop waiting for it.
    fn abort(&mut self, reason: &str);
    /// A failure another process reported (or its death), noticed in the background, so a
    /// wait on the GPU can give up early instead of running into its deadline.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// The coordinator of a job of one process.
pub struct Alone;

impl Coordinator for Alone {
    fn processes(&self) -> usize {
        1
    }
    fn process(&self) -> usize {
        0
    }
    fn barrier(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn sum_u64(&mut self, v: u64) -> Result<u64, String> {
        Ok(v)
    }
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String> {
        Ok(Some(vec![bytes]))
    }
    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(bytes)
    }
    fn abort(&mut self, _reason: &str) {}
}
