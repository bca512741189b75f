//! Multi-process jobs for `solbench collectives`: which rank this process is (from the
//! launcher that started it, crates/solbench-launch) and the coordinator that carries the
//! NCCL unique id, gathers every rank's numbers at rank 0, and spreads a failure.

use solbench_collectives::comm::Coordinator;
use solbench_launch::{detect_from_env, FailureWatch, Rendezvous, RendezvousConfig, Timeouts};

/// This process's place in a launcher-started job.
pub struct Job {
    pub rank: usize,
    pub world_size: usize,
    /// The launcher's local rank, else the rank (the caller maps it onto the GPUs).
    pub local_rank: usize,
    pub launch: solbench_launch::Launch,
}

/// The job this process belongs to, if a launcher started more than one process.
pub fn detect_job() -> Result<Option<Job>, String> {
    let Some(l) = detect_from_env().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if l.world_size <= 1 {
        return Ok(None);
    }
    let local_rank = match l.local_rank {
        Some(r) => r,
        None => {
            eprintln!(
                "note: {} gives no local rank; using the global rank modulo the GPU count",
                l.launcher
            );
            l.rank
        }
    };
    Ok(Some(Job {
        rank: l.rank,
        world_size: l.world_size,
        local_rank,
        launch: l,
    }))
}

/// The rendezvous as the collectives harness's coordinator.
struct RendezvousCoordinator {
    rv: Rendezvous,
    watch: FailureWatch,
}

impl Coordinator for RendezvousCoordinator {
    fn processes(&self) -> usize {
        self.rv.world_size()
    }
    fn process(&self) -> usize {
        self.rv.rank()
    }
    fn barrier(&mut self) -> Result<(), String> {
        self.rv.barrier().map_err(|e| e.to_string())
    }
    fn sum_u64(&mut self, v: u64) -> Result<u64, String> {
        let parts = self
            .rv
            .gather(&v.to_le_bytes())
            .map_err(|e| e.to_string())?;
        let total: u64 = parts
            .map(|p| {
                p.iter()
                    .map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap_or([0; 8])))
                    .sum()
            })
            .unwrap_or(0);
        let out = self
            .rv
            .broadcast(&total.to_le_bytes())
            .map_err(|e| e.to_string())?;
        Ok(u64::from_le_bytes(
            out.as_slice().try_into().unwrap_or([0; 8]),
        ))
    }
    fn gather(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, String> {
        self.rv.gather(&bytes).map_err(|e| e.to_string())
    }
    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        self.rv.broadcast(&bytes).map_err(|e| e.to_string())
    }
    fn abort(&mut self, reason: &str) {
        let _ = self.rv.abort(reason);
    }
    fn failure(&self) -> Option<String> {
        self.watch.failure().map(|e| e.to_string())
    }
}

/// Joins the job's rendezvous (rank 0 listens on MASTER_ADDR:MASTER_PORT).
pub fn coordinator(
    job: &Job,
    op_timeout: std::time::Duration,
) -> Result<Box<dyn Coordinator>, String> {
    let mut timeouts = Timeouts::from_env().map_err(|e| e.to_string())?;
    timeouts.op = timeouts.op.max(op_timeout);
    let mut config = RendezvousConfig::from_launch(&job.launch, timeouts);
    // A node with a different build is refused with a sentence, not a protocol mismatch.
    config.build_id = format!("{} {}", env!("CARGO_PKG_VERSION"), env!("SOLBENCH_GIT_REV"));
    let rv = Rendezvous::join(config).map_err(|e| e.to_string())?;
    let watch = rv.failure_watch();
    Ok(Box::new(RendezvousCoordinator { rv, watch }))
}
