//! Criterion benchmarks of the host memory kernels, per cache level: these are the
//! numbers behind `solbench run`'s host memory rows, measured with criterion's
//! statistics so regressions in the kernels (vectorisation lost, dispatch broken) show.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use solbench_core::case::{Dtype, MemoryCase, MemoryOp};
use solbench_core::work::memory_work;
use solbench_host::memory;
use solbench_host::pool::PinnedPool;
use std::sync::Arc;

fn kernels(c: &mut Criterion) {
    let pool = Arc::new(PinnedPool::new().expect("thread pool"));
    let mut group = c.benchmark_group("host_memory");
    for op in MemoryOp::ALL {
        for ws in [32usize << 10, 1 << 20, 64 << 20] {
            let case = MemoryCase {
                op,
                working_set: ws as u64,
                dtype: Dtype::F64,
                peer: None,
            };
            let mut w = memory::prepare(&case, pool.clone()).expect("prepare");
            group.throughput(Throughput::Bytes(memory_work(&case).bytes as u64));
            group.bench_with_input(BenchmarkId::new(op.name(), ws), &ws, |b, _| {
                b.iter_custom(|iters| w.run(iters as u32).expect("run"));
            });
            // Run once more outside the timing (the benchmark may be filtered out), then check.
            w.run(1).expect("run");
            assert!(
                w.verify().expect("verify").passed,
                "{op:?} {ws} produced a wrong result"
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = kernels
}
criterion_main!(benches);
