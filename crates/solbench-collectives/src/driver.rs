//! The sweep every library shares (nccl-tests' common.cu, our way): for each size, fill
//! exact inputs, warm up, time batches of back-to-back collectives on every rank, then run
//! checked collectives and count wrong elements on every rank; gather every rank's numbers
//! at rank 0.

use crate::comm::{BufferId, Call, Communicator, RankInfo};
use crate::data::{count_wrong, fill, layout, size_of, Layout};
use serde::{Deserialize, Serialize};
use solbench_core::case::CollectiveCase;
use solbench_core::work::{bus_factor, collective_count, collective_effective_bytes};

/// How each size is measured (nccl-tests' `-n`, `-w`, `-c`, plus samples for statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Collectives per timed batch (`-n`, default 20).
    pub iters: u32,
    /// Untimed collectives before timing (`-w`, default 5).
    pub warmup: u32,
    /// Timed batches; the median is reported and the spread recorded (default 5).
    pub samples: u32,
    /// Checked collectives after timing (`-c`, default 1; 0 disables the check).
    pub check: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            iters: 20,
            warmup: 5,
            samples: 5,
            check: 1,
        }
    }
}

/// One rank's numbers for one case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankResult {
    pub info: RankInfo,
    /// Seconds per collective, one per timed batch.
    pub samples_s: Vec<f64>,
    pub wrong: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_wrong: Option<String>,
}

/// What a case came to (complete at rank 0's process; other processes get `None` cases).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub case: CollectiveCase,
    /// NCCL's count argument.
    pub count: u64,
    /// nccl-tests' `size` (bytes divided by time for algbw).
    pub size_bytes: u64,
    /// Set when the case did not run; the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Seconds per collective per timed batch, averaged over ranks (nccl-tests' `-a 1`).
    pub samples_s: Vec<f64>,
    /// Wrong elements summed over every rank and check (None: not checked).
    pub wrong: Option<u64>,
    pub ranks: Vec<RankResult>,
}

impl Outcome {
    /// Median seconds per collective.
    pub fn time_s(&self) -> Option<f64> {
        let mut v = self.samples_s.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    }

    /// (algbw, busbw) in GB/s at the median time.
    pub fn bandwidth(&self) -> Option<(f64, f64)> {
        let t = self.time_s()?;
        let alg = self.size_bytes as f64 / t / 1e9;
        Some((alg, alg * bus_factor(self.case.op, self.case.ranks)))
    }
}

fn buffers_for(
    comm: &mut dyn Communicator,
    l: &[Layout],
    case: &CollectiveCase,
) -> Result<Vec<(BufferId, BufferId)>, String> {
    let w = size_of(case.dtype);
    let mut out = Vec::new();
    for (local, l) in l.iter().enumerate() {
        if case.in_place {
            let b = comm.alloc(local, l.inplace_len as usize * w)?;
            out.push((b, b));
        } else {
            let s = comm.alloc(local, l.send as usize * w)?;
            let r = comm.alloc(local, l.recv.max(1) as usize * w)?;
            out.push((s, r));
        }
    }
    Ok(out)
}

/// Writes every local rank's input and poisons its output.
fn prepare(
    comm: &mut dyn Communicator,
    case: &CollectiveCase,
    count: u64,
    layouts: &[Layout],
    bufs: &[(BufferId, BufferId)],
) -> Result<(), String> {
    let w = size_of(case.dtype);
    let n = comm.world_size() as u64;
    for (local, rank) in comm.local_ranks().into_iter().enumerate() {
        let l = layouts[local];
        let (s, r) = bufs[local];
        let poison =
            vec![0xFFu8; (if case.in_place { l.inplace_len } else { l.recv }) as usize * w];
        comm.write(local, r, 0, &poison)?;
        let mut input = vec![0u8; l.send as usize * w];
        fill(case.dtype, case.reduce, n, rank as u64, 0, &mut input);
        let at = if case.in_place {
            l.inplace_send_offset as usize * w
        } else {
            0
        };
        comm.write(local, s, at, &input)?;
        let _ = count;
    }
    Ok(())
}

fn calls(
    comm: &dyn Communicator,
    case: &CollectiveCase,
    count: u64,
    layouts: &[Layout],
    bufs: &[(BufferId, BufferId)],
) -> Vec<Call> {
    let w = size_of(case.dtype);
    comm.local_ranks()
        .iter()
        .enumerate()
        .map(|(local, _)| {
            let l = layouts[local];
            let (s, r) = bufs[local];
            let (so, ro) = if case.in_place {
                (
                    l.inplace_send_offset as usize * w,
                    l.inplace_recv_offset as usize * w,
                )
            } else {
                (0, 0)
            };
            Call {
                op: case.op,
                dtype: case.dtype,
                reduce: case.reduce,
                root: case.root as usize,
                count,
                send: (s, so),
                recv: (r, ro),
            }
        })
        .collect()
}

/// Runs one case on every local rank and, at rank 0's process, returns its outcome with
/// every rank's numbers. Every process must call this with the same case.
pub fn run_case(
    comm: &mut dyn Communicator,
    case: &CollectiveCase,
    s: &Settings,
) -> Result<Option<Outcome>, String> {
    let n = comm.world_size() as u64;
    let elem = size_of(case.dtype) as u64;
    let count = collective_count(case.op, case.bytes, elem, n as u32);
    let size_bytes = collective_effective_bytes(case.op, case.bytes, elem, n as u32);
    let mut outcome = Outcome {
        case: case.clone(),
        count,
        size_bytes,
        skipped: None,
        samples_s: Vec::new(),
        wrong: None,
        ranks: Vec::new(),
    };
    let skip = |mut o: Outcome, why: String| {
        o.skipped = Some(why);
        o
    };
    if case.ranks as u64 != n {
        return Ok(Some(skip(
            outcome,
            format!(
                "the case is for {} ranks; the communicator has {n}",
                case.ranks
            ),
        )));
    }
    if let Err(e) = comm.supports(case.op, case.dtype, case.reduce) {
        return Ok(Some(skip(outcome, e)));
    }
    if count == 0 {
        return Ok(Some(skip(
            outcome,
            format!(
                "{} bytes of {} over {n} ranks rounds to zero elements per rank",
                case.bytes, case.dtype
            ),
        )));
    }
    let locals = comm.local_ranks();
    let layouts: Vec<Layout> = locals
        .iter()
        .map(|&r| layout(case.op, count, n, r as u64))
        .collect();
    let need = layouts
        .iter()
        .map(|l| if case.in_place { l.inplace_len } else { l.send + l.recv } * elem)
        .max()
        .unwrap_or(0);
    let limit = comm.memory_limit();
    if limit > 0 && need > limit {
        return Ok(Some(skip(outcome, format!(
            "{} of buffers per rank exceed the {} this device can spare (largest size capped to free memory)",
            solbench_core::size::format_size(need),
            solbench_core::size::format_size(limit)
        ))));
    }
    comm.free_all();
    let bufs = buffers_for(comm, &layouts, case)?;
    prepare(comm, case, count, &layouts, &bufs)?;
    let cl = calls(comm, case, count, &layouts, &bufs);

    for _ in 0..s.warmup {
        comm.run_once(&cl)?;
    }
    let mut local_samples: Vec<Vec<f64>> = vec![Vec::new(); locals.len()];
    for _ in 0..s.samples.max(1) {
        comm.barrier()?;
        let t = comm.time(&cl, s.iters.max(1))?;
        for (k, v) in t.into_iter().enumerate() {
            local_samples[k].push(v);
        }
    }

    // Check: fresh inputs (in place, timing overwrote them), poisoned outputs, one call.
    let mut local_wrong = vec![0u64; locals.len()];
    let mut local_first: Vec<Option<String>> = vec![None; locals.len()];
    for _ in 0..s.check {
        prepare(comm, case, count, &layouts, &bufs)?;
        comm.run_once(&cl)?;
        for (local, &rank) in locals.iter().enumerate() {
            let l = layouts[local];
            let (_, r) = bufs[local];
            let off = if case.in_place {
                l.inplace_recv_offset as usize * elem as usize
            } else {
                0
            };
            let mut got = vec![0u8; l.recv as usize * elem as usize];
            comm.read(local, r, off, &mut got)?;
            let (wrong, first) = count_wrong(
                case.op,
                case.dtype,
                case.reduce,
                count,
                n,
                case.root as u64,
                rank as u64,
                0,
                &got,
            );
            local_wrong[local] += wrong;
            if let (None, Some((j, g, w))) = (&local_first[local], first) {
                local_first[local] =
                    Some(format!("rank {rank} element {j}: got {g}, expected {w}"));
            }
        }
    }
    comm.free_all();

    // Everyone's numbers to rank 0.
    let mine: Vec<RankResult> = locals
        .iter()
        .enumerate()
        .map(|(local, _)| RankResult {
            info: comm.describe(local),
            samples_s: local_samples[local].clone(),
            wrong: local_wrong[local],
            first_wrong: local_first[local].clone(),
        })
        .collect();
    let bytes =
        serde_json::to_vec(&mine).map_err(|e| format!("encoding rank results failed: {e}"))?;
    let Some(all) = comm.gather(bytes)? else {
        return Ok(None);
    };
    for part in all {
        let ranks: Vec<RankResult> = serde_json::from_slice(&part)
            .map_err(|e| format!("a rank sent results that do not parse: {e}"))?;
        outcome.ranks.extend(ranks);
    }
    outcome.ranks.sort_by_key(|r| r.info.rank);
    let samples = s.samples.max(1) as usize;
    outcome.samples_s = (0..samples)
        .map(|k| {
            let v: Vec<f64> = outcome
                .ranks
                .iter()
                .filter_map(|r| r.samples_s.get(k).copied())
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        })
        .collect();
    outcome.wrong = (s.check > 0).then(|| outcome.ranks.iter().map(|r| r.wrong).sum());
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Fault, SimWorld};
    use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};

    fn case(op: CollectiveOp, bytes: u64, ranks: u32, in_place: bool, d: Dtype) -> CollectiveCase {
        CollectiveCase {
            op,
            bytes,
            dtype: d,
            reduce: op.reduces().then_some(ReduceOp::Sum),
            ranks,
            in_place,
            root: 1,
        }
    }

    const QUICK: Settings = Settings {
        iters: 2,
        warmup: 1,
        samples: 3,
        check: 1,
    };

    #[test]
    fn every_op_in_and_out_of_place_is_right_on_a_correct_library() {
        for n in [2usize, 4, 8] {
            let mut w = SimWorld::new(n, Fault::None);
            for op in CollectiveOp::ALL {
                for in_place in [false, true] {
                    for d in [Dtype::F32, Dtype::Bf16, Dtype::I32] {
                        let c = case(op, 4096, n as u32, in_place, d);
                        let o = run_case(&mut w, &c, &QUICK).unwrap().unwrap();
                        assert!(o.skipped.is_none(), "{op:?}: {:?}", o.skipped);
                        assert_eq!(
                            o.wrong,
                            Some(0),
                            "{op:?} n={n} in_place={in_place} {d:?}: {:?}",
                            o.ranks.iter().find_map(|r| r.first_wrong.clone())
                        );
                        assert_eq!(o.ranks.len(), n);
                        assert_eq!(o.samples_s.len(), 3);
                        let (alg, bus) = o.bandwidth().unwrap();
                        assert!(alg > 0.0 && (bus / alg - bus_factor(op, n as u32)).abs() < 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn broken_libraries_are_counted_wrong() {
        for (fault, op) in [
            (Fault::SwapGatherBlocks, CollectiveOp::AllGather),
            (Fault::DropLastRank, CollectiveOp::AllReduce),
            (Fault::DropLastRank, CollectiveOp::ReduceScatter),
            (Fault::ShortByOne, CollectiveOp::Broadcast),
            (Fault::ShortByOne, CollectiveOp::Alltoall),
        ] {
            let mut w = SimWorld::new(4, fault);
            let o = run_case(&mut w, &case(op, 4096, 4, false, Dtype::F32), &QUICK)
                .unwrap()
                .unwrap();
            assert!(o.wrong.unwrap() > 0, "{fault:?} {op:?} went unnoticed");
            assert!(o.ranks.iter().any(|r| r.first_wrong.is_some()));
        }
    }

    #[test]
    fn sizes_round_like_nccl_tests_and_oversize_or_mismatched_cases_skip() {
        let mut w = SimWorld::new(4, Fault::None);
        // all_gather of 1000 bytes f32 over 4 ranks: 250 -> 62 per rank -> rounded to 60.
        let o = run_case(
            &mut w,
            &case(CollectiveOp::AllGather, 1000, 4, false, Dtype::F32),
            &QUICK,
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.count, o.size_bytes), (60, 960));
        let o = run_case(
            &mut w,
            &case(CollectiveOp::AllReduce, 1 << 30, 4, false, Dtype::F32),
            &QUICK,
        )
        .unwrap()
        .unwrap();
        assert!(o.skipped.unwrap().contains("capped to free memory"));
        let o = run_case(
            &mut w,
            &case(CollectiveOp::AllReduce, 4096, 8, false, Dtype::F32),
            &QUICK,
        )
        .unwrap()
        .unwrap();
        assert!(o.skipped.unwrap().contains("8 ranks"));
        let o = run_case(
            &mut w,
            &case(CollectiveOp::AllGather, 8, 4, false, Dtype::F32),
            &QUICK,
        )
        .unwrap()
        .unwrap();
        assert!(o.skipped.unwrap().contains("zero elements"));
    }
}
