//! An in-memory communicator: every rank lives in this process, collectives are computed
//! directly on host buffers. It is how the harness itself (layouts, fills, checks, #wrong,
//! in-place pointers, rank gathering) is tested without a GPU or MPI, and a `Fault` makes it
//! misbehave the way a broken library would.

use crate::comm::{BufferId, Call, Communicator, RankInfo};
use crate::data::{decode, encode, size_of};
use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};
use std::time::Instant;

/// A deliberate bug, to prove the harness catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// all_gather writes rank 1's block where rank 2's belongs.
    SwapGatherBlocks,
    /// Reductions leave out the last rank.
    DropLastRank,
    /// The last element of every output is never written.
    ShortByOne,
}

pub struct SimWorld {
    ranks: usize,
    buffers: Vec<Vec<Vec<u8>>>, // [rank][buffer]
    fault: Fault,
}

impl SimWorld {
    pub fn new(ranks: usize, fault: Fault) -> SimWorld {
        SimWorld {
            ranks,
            buffers: vec![Vec::new(); ranks],
            fault,
        }
    }

    fn el(&self, rank: usize, c: &Call, i: u64) -> f64 {
        let w = size_of(c.dtype);
        let (b, off) = c.send;
        let at = off + i as usize * w;
        decode(c.dtype, &self.buffers[rank][b.0][at..at + w])
    }

    fn reduce(&self, calls: &[Call], i: u64) -> f64 {
        let c = &calls[0];
        let contributors = if self.fault == Fault::DropLastRank {
            self.ranks - 1
        } else {
            self.ranks
        };
        let vals: Vec<f64> = (0..contributors)
            .map(|q| self.el(q, &calls[q], i))
            .collect();
        let r = c.reduce.unwrap_or(ReduceOp::Sum);
        let v = match r {
            ReduceOp::Sum => vals.iter().sum(),
            ReduceOp::Avg => vals.iter().sum::<f64>() / self.ranks as f64,
            ReduceOp::Prod => vals.iter().product(),
            ReduceOp::Max => vals.iter().cloned().fold(f64::MIN, f64::max),
            ReduceOp::Min => vals.iter().cloned().fold(f64::MAX, f64::min),
        };
        round(c.dtype, v)
    }
}

fn round(d: Dtype, v: f64) -> f64 {
    let mut b = vec![0u8; size_of(d)];
    encode(d, v, &mut b);
    decode(d, &b)
}

impl Communicator for SimWorld {
    fn world_size(&self) -> usize {
        self.ranks
    }
    fn local_ranks(&self) -> Vec<usize> {
        (0..self.ranks).collect()
    }
    fn describe(&self, local: usize) -> RankInfo {
        RankInfo {
            rank: local,
            host: "sim".into(),
            pid: std::process::id(),
            device: format!("sim:{local}"),
        }
    }
    fn library(&self) -> String {
        "in-memory simulation".into()
    }
    fn supports(&self, _: CollectiveOp, d: Dtype, _: Option<ReduceOp>) -> Result<(), String> {
        if d == Dtype::Tf32 {
            return Err("tf32 is not a collective data type".into());
        }
        Ok(())
    }
    fn memory_limit(&self) -> u64 {
        256 << 20
    }
    fn alloc(&mut self, local: usize, bytes: usize) -> Result<BufferId, String> {
        self.buffers[local].push(vec![0u8; bytes]);
        Ok(BufferId(self.buffers[local].len() - 1))
    }
    fn free_all(&mut self) {
        for b in &mut self.buffers {
            b.clear();
        }
    }
    fn write(
        &mut self,
        local: usize,
        buf: BufferId,
        offset: usize,
        data: &[u8],
    ) -> Result<(), String> {
        let b = &mut self.buffers[local][buf.0];
        b.get_mut(offset..offset + data.len())
            .ok_or("write out of bounds")?
            .copy_from_slice(data);
        Ok(())
    }
    fn read(
        &mut self,
        local: usize,
        buf: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), String> {
        let b = &self.buffers[local][buf.0];
        out.copy_from_slice(
            b.get(offset..offset + out.len())
                .ok_or("read out of bounds")?,
        );
        Ok(())
    }
    fn run_once(&mut self, calls: &[Call]) -> Result<(), String> {
        let n = self.ranks as u64;
        let c = calls[0];
        let w = size_of(c.dtype);
        let count = c.count;
        // Compute every rank's output first (inputs may alias outputs in place).
        let mut outs: Vec<Vec<(u64, f64)>> = vec![Vec::new(); self.ranks];
        for (rank, out) in outs.iter_mut().enumerate() {
            let recv_len = match c.op {
                CollectiveOp::AllGather | CollectiveOp::Alltoall => count * n,
                _ => count,
            };
            let last = if self.fault == Fault::ShortByOne {
                recv_len - 1
            } else {
                recv_len
            };
            for j in 0..last {
                let v = match c.op {
                    CollectiveOp::AllReduce => self.reduce(calls, j),
                    CollectiveOp::Reduce if rank == c.root => self.reduce(calls, j),
                    CollectiveOp::Reduce => continue,
                    CollectiveOp::Broadcast => self.el(c.root, &calls[c.root], j),
                    CollectiveOp::AllGather => {
                        let mut src = (j / count) as usize;
                        if self.fault == Fault::SwapGatherBlocks && (src == 1 || src == 2) {
                            src = 3 - src;
                        }
                        self.el(src, &calls[src], j % count)
                    }
                    CollectiveOp::ReduceScatter => self.reduce(calls, rank as u64 * count + j),
                    CollectiveOp::Alltoall => {
                        let src = (j / count) as usize;
                        self.el(src, &calls[src], rank as u64 * count + j % count)
                    }
                    CollectiveOp::Sendrecv => {
                        let src = (rank + self.ranks - 1) % self.ranks;
                        self.el(src, &calls[src], j)
                    }
                };
                out.push((j, v));
            }
        }
        for (rank, out) in outs.into_iter().enumerate() {
            let (b, off) = calls[rank].recv;
            for (j, v) in out {
                let at = off + j as usize * w;
                encode(c.dtype, v, &mut self.buffers[rank][b.0][at..at + w]);
            }
        }
        Ok(())
    }
    fn time(&mut self, calls: &[Call], iters: u32) -> Result<Vec<f64>, String> {
        let t = Instant::now();
        for _ in 0..iters {
            self.run_once(calls)?;
        }
        Ok(vec![
            t.elapsed().as_secs_f64() / iters.max(1) as f64;
            self.ranks
        ])
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
    fn is_root_process(&self) -> bool {
        true
    }
}
