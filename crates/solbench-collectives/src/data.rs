//! Inputs chosen so every reduction is exact whatever order the library reduces in, and
//! the output every rank must hold, computed locally from (rank, index) alone: no rank
//! needs another's data to check its own result (nccl-tests' "verifiable" idea, our own
//! construction).
//!
//! * sum: small non-negative integers, at most `limit / ranks`, so every partial sum is an
//!   integer the type represents exactly;
//! * prod: each element is 1 or 2, and at most `max_doublings` ranks contribute a 2, so
//!   products are exact powers of two;
//! * max / min: small integers;
//! * avg: like sum, checked within 2 units in the last place (libraries divide or
//!   pre-multiply by 1/n, which rounds), as nccl-tests does;
//! * the poison written to outputs before a check (all bytes 0xFF: NaN for floats, the
//!   largest value for unsigned and −1 for signed integers) is never an expected value.

use solbench_core::case::{CollectiveOp, Dtype, ReduceOp};
use solbench_core::numeric::{decode as decode_float, e4m3_to_f64, e5m2_to_f64};

/// The largest integer below which every integer is exact in `d` (floats), or the type's
/// maximum (integers) — minus one, so the poison value is never reached.
pub fn exact_limit(d: Dtype) -> f64 {
    match d {
        Dtype::F64 => 2f64.powi(53),
        Dtype::F32 => 2f64.powi(24),
        Dtype::F16 => 2048.0,
        Dtype::Bf16 => 256.0,
        Dtype::Fp8E4m3 => 16.0,
        Dtype::Fp8E5m2 => 8.0,
        Dtype::I8 => 126.0,
        Dtype::U8 => 254.0,
        Dtype::I32 => (i32::MAX - 1) as f64,
        Dtype::U32 => (u32::MAX - 1) as f64,
        Dtype::I64 | Dtype::U64 => 2f64.powi(52),
        Dtype::Tf32 => 2f64.powi(11),
    }
}

/// How many ranks may contribute a factor 2 to a product without overflow.
fn max_doublings(d: Dtype) -> u64 {
    match d {
        Dtype::I8 | Dtype::U8 | Dtype::Fp8E5m2 => 6,
        Dtype::Fp8E4m3 => 8,
        Dtype::F16 => 14,
        Dtype::I32 | Dtype::U32 => 30,
        _ => 60,
    }
}

fn hash(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one element of rank `rank`'s input holds, `i` being its index in that rank's
/// send buffer.
pub fn input(d: Dtype, reduce: Option<ReduceOp>, ranks: u64, rank: u64, i: u64) -> f64 {
    let h = hash(i.wrapping_mul(1_000_003).wrapping_add(rank));
    match reduce {
        Some(ReduceOp::Prod) => {
            // Element i doubles on ranks (i + r) mod n < j(i), j(i) <= max_doublings.
            let j = hash(i) % (ranks.min(max_doublings(d)) + 1);
            if (i + rank) % ranks < j {
                2.0
            } else {
                1.0
            }
        }
        Some(ReduceOp::Sum) | Some(ReduceOp::Avg) => {
            let k = (exact_limit(d) / ranks as f64).floor().clamp(1.0, 64.0) as u64;
            (h % (k + 1)) as f64
        }
        _ => (h % exact_limit(d).min(64.0) as u64) as f64,
    }
}

/// The reduction of element `i` over every rank's input.
fn reduced(d: Dtype, r: ReduceOp, ranks: u64, i: u64) -> f64 {
    let vals = (0..ranks).map(|q| input(d, Some(r), ranks, q, i));
    match r {
        ReduceOp::Sum => vals.sum(),
        ReduceOp::Avg => vals.sum::<f64>() / ranks as f64,
        ReduceOp::Prod => vals.product(),
        ReduceOp::Max => vals.fold(f64::MIN, f64::max),
        ReduceOp::Min => vals.fold(f64::MAX, f64::min),
    }
}

/// Element counts of one rank's buffers for an operation with NCCL's `count` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub send: u64,
    pub recv: u64,
    /// In-place: where the send data sits inside the single (receive-sized or larger)
    /// buffer, in elements (nccl-tests' in-place pointers).
    pub inplace_send_offset: u64,
    /// In-place: where the result sits inside that buffer, in elements.
    pub inplace_recv_offset: u64,
    /// In-place buffer size, in elements.
    pub inplace_len: u64,
}

/// Buffer layout of `op` with NCCL's `count` argument (per-rank count for gather-like
/// operations, as `solbench_core::work::collective_count` computes it).
pub fn layout(op: CollectiveOp, count: u64, ranks: u64, rank: u64) -> Layout {
    let n = ranks;
    let (send, recv) = match op {
        CollectiveOp::AllGather => (count, count * n),
        CollectiveOp::ReduceScatter => (count * n, count),
        CollectiveOp::Alltoall => (count * n, count * n),
        _ => (count, count),
    };
    let (s_off, r_off) = match op {
        // all_gather: the rank's own block of the output is its input.
        CollectiveOp::AllGather => (rank * count, 0),
        // reduce_scatter: the result lands in the rank's own block of the input.
        CollectiveOp::ReduceScatter => (0, rank * count),
        _ => (0, 0),
    };
    Layout {
        send,
        recv,
        inplace_send_offset: s_off,
        inplace_recv_offset: r_off,
        inplace_len: send.max(recv),
    }
}

/// What element `j` of rank `rank`'s receive buffer must hold after `op`, or `None` where
/// the operation defines nothing (reduce on a non-root rank).
#[allow(clippy::too_many_arguments)]
pub fn expected(
    op: CollectiveOp,
    d: Dtype,
    reduce: Option<ReduceOp>,
    count: u64,
    ranks: u64,
    root: u64,
    rank: u64,
    j: u64,
) -> Option<f64> {
    let n = ranks;
    let r = reduce.unwrap_or(ReduceOp::Sum);
    Some(match op {
        CollectiveOp::AllReduce => reduced(d, r, n, j),
        CollectiveOp::Reduce if rank == root => reduced(d, r, n, j),
        CollectiveOp::Reduce => return None,
        CollectiveOp::Broadcast => input(d, reduce, n, root, j),
        CollectiveOp::AllGather => input(d, reduce, n, j / count, j % count),
        CollectiveOp::ReduceScatter => reduced(d, r, n, rank * count + j),
        // Block p of my output is block `rank` of rank p's input.
        CollectiveOp::Alltoall => input(d, reduce, n, j / count, rank * count + j % count),
        // A ring: each rank receives from rank - 1.
        CollectiveOp::Sendrecv => input(d, reduce, n, (rank + n - 1) % n, j),
    })
}

/// Bytes of one element.
pub fn size_of(d: Dtype) -> usize {
    d.size_bytes() as usize
}

/// Writes `v` (an exact small value) in `d`'s encoding.
pub fn encode(d: Dtype, v: f64, out: &mut [u8]) {
    match d {
        Dtype::F64 => out.copy_from_slice(&v.to_le_bytes()),
        Dtype::F32 | Dtype::Tf32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
        Dtype::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_bits().to_le_bytes()),
        Dtype::Bf16 => out.copy_from_slice(&half::bf16::from_f64(v).to_bits().to_le_bytes()),
        Dtype::Fp8E4m3 => out[0] = fp8_code(v, e4m3_to_f64),
        Dtype::Fp8E5m2 => out[0] = fp8_code(v, e5m2_to_f64),
        Dtype::I8 => out[0] = (v as i8) as u8,
        Dtype::U8 => out[0] = v as u8,
        Dtype::I32 => out.copy_from_slice(&(v as i32).to_le_bytes()),
        Dtype::U32 => out.copy_from_slice(&(v as u32).to_le_bytes()),
        Dtype::I64 => out.copy_from_slice(&(v as i64).to_le_bytes()),
        Dtype::U64 => out.copy_from_slice(&(v as u64).to_le_bytes()),
    }
}

/// The FP8 code of an exactly representable value (the values used here all are).
fn fp8_code(v: f64, decode: fn(u8) -> f64) -> u8 {
    (0u8..=255).find(|&c| decode(c) == v).unwrap_or(0xFF)
}

/// Reads one element of `d`.
pub fn decode(d: Dtype, b: &[u8]) -> f64 {
    match d {
        Dtype::I8 => b[0] as i8 as f64,
        Dtype::U8 => b[0] as f64,
        Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        Dtype::I64 => i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f64,
        Dtype::U64 => u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f64,
        other => decode_float(other, b),
    }
}

/// Whether `got` is acceptable for `want`: exact, except the average (2 ulp of the type).
pub fn matches(d: Dtype, reduce: Option<ReduceOp>, got: f64, want: f64) -> bool {
    if reduce == Some(ReduceOp::Avg) && d.is_float() {
        let ulp =
            solbench_core::numeric::unit_roundoff(d) * 2.0 * want.abs().max(f64::MIN_POSITIVE);
        (got - want).abs() <= 2.0 * ulp
    } else {
        got == want
    }
}

/// Fills `out` (elements `first..` of rank `rank`'s send buffer) with its inputs.
pub fn fill(d: Dtype, reduce: Option<ReduceOp>, ranks: u64, rank: u64, first: u64, out: &mut [u8]) {
    let w = size_of(d);
    for (k, e) in out.chunks_exact_mut(w).enumerate() {
        encode(d, input(d, reduce, ranks, rank, first + k as u64), e);
    }
}

/// Counts the elements of `got` (elements `first..` of rank `rank`'s receive buffer) that
/// differ from what they must hold; returns (wrong, first wrong index and values).
#[allow(clippy::too_many_arguments)]
pub fn count_wrong(
    op: CollectiveOp,
    d: Dtype,
    reduce: Option<ReduceOp>,
    count: u64,
    ranks: u64,
    root: u64,
    rank: u64,
    first: u64,
    got: &[u8],
) -> (u64, Option<(u64, f64, f64)>) {
    let w = size_of(d);
    let mut wrong = 0;
    let mut first_bad = None;
    for (k, e) in got.chunks_exact(w).enumerate() {
        let j = first + k as u64;
        let Some(want) = expected(op, d, reduce, count, ranks, root, rank, j) else {
            continue;
        };
        let v = decode(d, e);
        if !matches(d, reduce, v, want) {
            wrong += 1;
            first_bad.get_or_insert((j, v, want));
        }
    }
    (wrong, first_bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [Dtype; 11] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::Fp8E4m3,
        Dtype::Fp8E5m2,
        Dtype::I8,
        Dtype::U8,
        Dtype::I32,
        Dtype::U32,
        Dtype::I64,
    ];

    /// Simulates `op` over `ranks` host ranks exactly as a library would (reducing in the
    /// type, in an arbitrary order), and returns each rank's receive buffer.
    fn simulate(
        op: CollectiveOp,
        d: Dtype,
        r: Option<ReduceOp>,
        count: u64,
        n: u64,
        root: u64,
    ) -> Vec<Vec<u8>> {
        let w = size_of(d);
        let inputs: Vec<Vec<u8>> = (0..n)
            .map(|q| {
                let l = layout(op, count, n, q);
                let mut b = vec![0u8; l.send as usize * w];
                fill(d, r, n, q, 0, &mut b);
                b
            })
            .collect();
        let el = |q: u64, i: u64| decode(d, &inputs[q as usize][i as usize * w..]);
        // Reduce in reverse rank order, rounding to the type after every step.
        let red = |i: u64| {
            let op = r.unwrap_or(ReduceOp::Sum);
            let mut acc = el(n - 1, i);
            for q in (0..n - 1).rev() {
                let x = el(q, i);
                acc = match op {
                    ReduceOp::Sum | ReduceOp::Avg => acc + x,
                    ReduceOp::Prod => acc * x,
                    ReduceOp::Max => acc.max(x),
                    ReduceOp::Min => acc.min(x),
                };
                let mut tmp = vec![0u8; w];
                encode(d, acc, &mut tmp);
                acc = decode(d, &tmp);
            }
            if op == ReduceOp::Avg {
                acc / n as f64
            } else {
                acc
            }
        };
        (0..n)
            .map(|rank| {
                let l = layout(op, count, n, rank);
                let mut out = vec![0xFFu8; l.recv as usize * w];
                for j in 0..l.recv {
                    let v = match op {
                        CollectiveOp::AllReduce => red(j),
                        CollectiveOp::Reduce if rank == root => red(j),
                        CollectiveOp::Reduce => continue,
                        CollectiveOp::Broadcast => el(root, j),
                        CollectiveOp::AllGather => el(j / count, j % count),
                        CollectiveOp::ReduceScatter => red(rank * count + j),
                        CollectiveOp::Alltoall => el(j / count, rank * count + j % count),
                        CollectiveOp::Sendrecv => el((rank + n - 1) % n, j),
                    };
                    encode(d, v, &mut out[j as usize * w..(j as usize + 1) * w]);
                }
                out
            })
            .collect()
    }

    #[test]
    fn every_op_type_and_reduction_checks_clean_at_2_4_and_8_ranks() {
        for n in [2u64, 4, 8] {
            for op in CollectiveOp::ALL {
                for d in TYPES {
                    let reductions: Vec<Option<ReduceOp>> = if op.reduces() {
                        let mut v = vec![
                            Some(ReduceOp::Sum),
                            Some(ReduceOp::Prod),
                            Some(ReduceOp::Max),
                            Some(ReduceOp::Min),
                        ];
                        if d.is_float() {
                            v.push(Some(ReduceOp::Avg));
                        }
                        v
                    } else {
                        vec![None]
                    };
                    for r in reductions {
                        let count = 37;
                        let outs = simulate(op, d, r, count, n, 1);
                        for (rank, out) in outs.iter().enumerate() {
                            let (wrong, bad) =
                                count_wrong(op, d, r, count, n, 1, rank as u64, 0, out);
                            assert_eq!(wrong, 0, "{op:?} {d:?} {r:?} n={n} rank {rank}: {bad:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_misplaced_block_or_a_missing_rank_is_counted() {
        let (n, count, d) = (4u64, 16u64, Dtype::F32);
        // all_gather with blocks 1 and 2 swapped on rank 0.
        let mut outs = simulate(CollectiveOp::AllGather, d, None, count, n, 0);
        let w = 4usize;
        let (b1, b2) = (count as usize * w, 2 * count as usize * w);
        let block1 = outs[0][b1..b2].to_vec();
        let block2 = outs[0][b2..b2 + count as usize * w].to_vec();
        outs[0][b1..b2].copy_from_slice(&block2);
        outs[0][b2..b2 + count as usize * w].copy_from_slice(&block1);
        let (wrong, _) = count_wrong(
            CollectiveOp::AllGather,
            d,
            None,
            count,
            n,
            0,
            0,
            0,
            &outs[0],
        );
        assert!(wrong >= count, "{wrong}");
        // all_reduce sum that forgot rank 3: every element whose rank-3 input is non-zero.
        let r = Some(ReduceOp::Sum);
        let outs = simulate(CollectiveOp::AllReduce, d, r, count, n - 1, 0);
        let (wrong, _) = count_wrong(CollectiveOp::AllReduce, d, r, count, n, 0, 0, 0, &outs[0]);
        let nonzero = (0..count).filter(|&i| input(d, r, n, 3, i) != 0.0).count() as u64;
        assert!(nonzero > 0);
        // Inputs depend on n as well, so at least every element with a non-zero rank-3 value is off.
        assert!(wrong >= nonzero / 2, "{wrong} of {count}");
        // The poison (never written) is never accepted.
        let poison = vec![0xFFu8; count as usize * w];
        let (wrong, _) = count_wrong(CollectiveOp::Broadcast, d, None, count, n, 0, 1, 0, &poison);
        assert_eq!(wrong, count);
        let poison8 = vec![0xFFu8; count as usize];
        for d8 in [Dtype::U8, Dtype::I8, Dtype::Fp8E4m3] {
            let (wrong, _) =
                count_wrong(CollectiveOp::AllReduce, d8, r, count, n, 0, 1, 0, &poison8);
            assert_eq!(wrong, count, "{d8:?}");
        }
    }

    #[test]
    fn inputs_vary_so_checks_can_fail() {
        for d in TYPES {
            let distinct: std::collections::BTreeSet<u64> = (0..64)
                .map(|i| input(d, Some(ReduceOp::Sum), 8, 0, i).to_bits())
                .collect();
            assert!(distinct.len() >= 2, "{d:?}");
        }
        // Products differ by element.
        let p: std::collections::BTreeSet<u64> = (0..64)
            .map(|i| reduced(Dtype::F32, ReduceOp::Prod, 8, i).to_bits())
            .collect();
        assert!(p.len() >= 3);
    }

    #[test]
    fn in_place_layouts_follow_nccl_tests() {
        let l = layout(CollectiveOp::AllGather, 10, 4, 2);
        assert_eq!(
            (l.send, l.recv, l.inplace_send_offset, l.inplace_len),
            (10, 40, 20, 40)
        );
        let l = layout(CollectiveOp::ReduceScatter, 10, 4, 3);
        assert_eq!(
            (l.send, l.recv, l.inplace_recv_offset, l.inplace_len),
            (40, 10, 30, 40)
        );
        let l = layout(CollectiveOp::Alltoall, 10, 4, 0);
        assert_eq!((l.send, l.recv), (40, 40));
    }
}
