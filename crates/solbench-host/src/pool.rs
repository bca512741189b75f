//! A thread pool with one worker pinned to each allowed CPU. Workloads hand every worker
//! the same slice of their arrays on every call (`broadcast` gives each worker its
//! index), so pages stay local to the core that first touched them.

use crate::cpu::{allowed_cpus, pin_current_thread};
use rayon::{ThreadPool, ThreadPoolBuilder};

pub struct PinnedPool {
    pool: ThreadPool,
    cpus: Vec<usize>,
}

impl PinnedPool {
    pub fn new() -> Result<PinnedPool, String> {
        let cpus = allowed_cpus();
        let pin = cpus.clone();
        let pool = ThreadPoolBuilder::new()
            .num_threads(cpus.len())
            .thread_name(|i| format!("solbench-host-{i}"))
            .start_handler(move |i| {
                pin_current_thread(pin[i]);
            })
            .build()
            .map_err(|e| format!("cannot start the host thread pool: {e}"))?;
        Ok(PinnedPool { pool, cpus })
    }

    pub fn threads(&self) -> usize {
        self.cpus.len()
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Runs `f(worker_index)` once on every worker and waits for all of them.
    pub fn broadcast<R: Send>(&self, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        self.pool.broadcast(|ctx| f(ctx.index()))
    }

    /// Runs `f` inside the pool (so rayon-parallel code in it uses these workers).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// Splits `n` elements into `parts` contiguous ranges whose starts are multiples of
/// `align` elements (so each worker's chunk starts on a cache line).
pub fn split_aligned(n: usize, parts: usize, align: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    let align = align.max(1);
    let blocks = n.div_ceil(align);
    (0..parts)
        .map(|p| {
            let lo = (blocks * p / parts * align).min(n);
            let hi = (blocks * (p + 1) / parts * align).min(n);
            lo..hi
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_everything_once() {
        for (n, parts, align) in [
            (1000, 3, 8),
            (7, 4, 8),
            (0, 2, 8),
            (1 << 20, 7, 16),
            (64, 64, 1),
        ] {
            let r = split_aligned(n, parts, align);
            assert_eq!(r.len(), parts);
            assert_eq!(r.first().unwrap().start, 0);
            assert_eq!(r.last().unwrap().end, n);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for x in &r[..r.len() - 1] {
                assert!(x.end % align == 0 || x.end == n);
            }
        }
    }

    #[test]
    fn broadcast_reaches_every_worker() {
        let pool = PinnedPool::new().unwrap();
        let mut seen = pool.broadcast(|i| i);
        seen.sort();
        assert_eq!(seen, (0..pool.threads()).collect::<Vec<_>>());
    }
}
