//! Criterion benchmarks of the runner's bookkeeping: statistics over samples and result
//! line serialisation, which run once per case and must stay negligible next to the
//! measurements themselves.

use criterion::{criterion_group, criterion_main, Criterion};
use solbench_core::random::SplitMix64;
use solbench_core::stats::Stats;
use std::hint::black_box;

fn stats(c: &mut Criterion) {
    let mut rng = SplitMix64::new(1);
    for n in [10usize, 1000, 100_000] {
        let samples: Vec<f64> = (0..n).map(|_| rng.uniform(1e-3, 2e-3)).collect();
        c.bench_function(&format!("stats_from_{n}_samples"), |b| {
            b.iter(|| Stats::from_samples(black_box(&samples), 10))
        });
    }
}

criterion_group!(benches, stats);
criterion_main!(benches);
