//! Times the linear layers' three products (forward, input gradient, weight gradient) on the
//! shapes of the default text model (4096 rows: batch 32 × 128 bytes) and the Winograd model.
//!
//! cargo run --release -p attend-models --example train_shapes
use attend_models::nn::linear::linear_fwd;
use attend_models::train::layers::linear_bwd;
use std::time::Instant;

fn fill(n: usize, s: u64) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u64 * 2654435761 + s) % 1000) as f32 - 500.0) / 500.0)
        .collect()
}

fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    for (n, din, dout) in [
        (4096, 128, 384),
        (4096, 128, 128),
        (4096, 128, 512),
        (4096, 512, 128),
        (4096, 128, 256),
        (1011, 64, 192),
        (1011, 64, 256),
        (1011, 256, 64),
    ] {
        let x = fill(n * din, 1);
        let w = fill(dout * din, 2);
        let dy = fill(n * dout, 3);
        let mut y = vec![0.0; n * dout];
        let mut dw = vec![0.0; dout * din];
        let mut dx = vec![0.0; n * din];
        let fl = 2.0 * (n * din * dout) as f64 / 1e9;
        let f = best(|| linear_fwd(&x, &w, None, &mut y, n, din));
        let g = best(|| linear_bwd(&x, &w, &dy, &mut dw, None, None, n, din));
        let h = best(|| linear_bwd(&x, &w, &dy, &mut dw, None, Some((&mut dx, false)), n, din)) - g;
        println!(
            "{n:>5}×{din:>4}→{dout:>4}: forward {:6.1} GFLOP/s · weight grad {:6.1} · input grad {:6.1}",
            fl / f,
            fl / g,
            fl / h
        );
    }
}
