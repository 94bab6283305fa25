//! `cargo bench -p attend`: the standard cases (bench/README.md) through criterion, fused against the
//! reference where the reference is affordable. `attend bench --format json` prints the same
//! cases as JSON lines with sgemm and memcpy baselines.

use attend::{backward, cases, fused, reference, LayerCache, Layout};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn kernels(c: &mut Criterion) {
    let only: Vec<String> = std::env::var("ATTEND_BENCH_CASES")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for case in cases::standard() {
        // the 16k case takes seconds per run: opt in with ATTEND_BENCH_CASES=long-16384
        if (!only.is_empty() && !only.iter().any(|o| o == case.name))
            || (only.is_empty() && case.name == "long-16384")
        {
            continue;
        }
        let lengths = case.key_lengths();
        let p = case.params(&lengths);
        let sh = case.shape;
        let (q, k, v) = case.inputs();
        let mut g = c.benchmark_group(case.name);
        g.sample_size(10);
        g.throughput(Throughput::Elements(case.flops() as u64));
        if case.backward {
            let f = fused::forward(&p, &q, &k, &v).unwrap();
            let dout = cases::fill(sh.o_len(), 4);
            g.bench_function(BenchmarkId::new("backward-fused", "flops"), |b| {
                b.iter(|| backward::backward(&p, &q, &k, &v, &f.out, &f.lse, &dout).unwrap())
            });
        } else if sh.s_q == 1 {
            let mut cache = LayerCache::new(sh.b, sh.h_kv, sh.d, sh.d_v).unwrap();
            cache.append(&k, &v, sh.s_kv, Layout::Bhsd).unwrap();
            g.bench_function(BenchmarkId::new("decode", "flops"), |b| {
                b.iter(|| cache.attend(&p, &q).unwrap())
            });
        } else {
            g.bench_function(BenchmarkId::new("fused", "flops"), |b| {
                b.iter(|| fused::forward(&p, &q, &k, &v).unwrap())
            });
        }
        if case.reference {
            g.bench_function(BenchmarkId::new("reference", "flops"), |b| {
                b.iter(|| reference::forward(&p, &q, &k, &v).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
