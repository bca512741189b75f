//! Criterion benchmarks of the host GEMM (the gemm crate) per type, on square shapes and
//! two LLM layer shapes (Llama-3-8B's QKV projection at decode and prefill token counts):
//! the numbers behind `solbench gemm --backend host`. Every benchmarked workload is
//! verified against the f64 reference afterwards.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use solbench_core::backend::Workload;
use solbench_core::case::{Dtype, GemmCase};
use solbench_core::gemm_shapes::{layer_gemms, model};
use solbench_host::gemm::GemmWorkload;
use solbench_host::pool::PinnedPool;
use std::sync::Arc;

fn gemms(c: &mut Criterion) {
    let pool = Arc::new(PinnedPool::new().expect("thread pool"));
    let mut group = c.benchmark_group("host_gemm");
    let llama = model("llama-3-8b").expect("preset");
    let mut shapes: Vec<(String, u64, u64, u64)> = [256u64, 512]
        .iter()
        .map(|&d| (format!("{d}^3"), d, d, d))
        .collect();
    for t in [1, 128] {
        let q = &layer_gemms(llama, t)[0];
        shapes.push((format!("qkv_M{t}"), q.m, q.n, q.k));
    }
    for dtype in [Dtype::F64, Dtype::F32, Dtype::Bf16] {
        for (label, m, n, k) in &shapes {
            let case = GemmCase::new(*m, *n, *k, dtype);
            let mut w = GemmWorkload::prepare(&case, pool.clone()).expect("prepare");
            group.throughput(Throughput::Elements(2 * m * n * k));
            group.bench_with_input(BenchmarkId::new(dtype.name(), label), label, |b, _| {
                b.iter_custom(|iters| w.run(iters as u32).expect("run"));
            });
            w.run(1).expect("run");
            assert!(
                w.verify().expect("verify").passed,
                "{dtype} {label} is wrong"
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = gemms
}
criterion_main!(benches);
