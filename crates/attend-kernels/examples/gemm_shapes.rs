//! Packed-weight GEMM (`attend_kernels::matmul_packed`) against the `gemm` crate on the shapes of
//! MiniLM's linear layers (a batch of 64 sentences, and one sentence), measured side by side:
//!
//!     cargo run --release -p attend-kernels --example gemm_shapes

fn time(mut f: impl FnMut()) -> f64 {
    let mut ts = vec![];
    for _ in 0..15 {
        let t = std::time::Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    ts[7]
}
fn main() {
    for (m, k, n) in [
        (2048, 2048, 2048),
        (1152, 384, 384),
        (1152, 384, 1536),
        (1152, 1536, 384),
        (18, 384, 1536),
        (18, 1536, 384),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let t1 = time(|| attend_kernels::gemm::matmul_bt(&a, &b, &mut c, m, k, n));
        let pw = attend_kernels::PackedMatrix::pack(&b, n, k).unwrap();
        let t2 = time(|| attend_kernels::matmul_packed(&a, m, &pw, &mut c, false).unwrap());
        let tp = time(|| {
            attend_kernels::PackedMatrix::pack(&b, n, k).unwrap();
        });
        let f = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "{m} {k} {n}: gemm {:.1}  packed {:.1} GFLOP/s; pack {:.2} ms",
            f / t1,
            f / t2,
            tp * 1e3
        );
    }
}
