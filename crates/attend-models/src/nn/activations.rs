//! Activations over whole buffers, in parallel: the exact (erf) GELU of BERT, the tanh GELU of
//! the toy models (and Gemma), SiLU-gated products of Llama's MLP. The scalar functions are
//! `attend_kernels::math`'s, re-exported here.

use attend_kernels::Kern;
use rayon::prelude::*;

pub use attend_kernels::math::{erf, exp_neg, gelu_erf, gelu_tanh, gelu_tanh_grad, silu, tanh};

/// Elements per parallel task. Fixed, so that the results do not depend on the thread count.
pub const ELEMS_PER_TASK: usize = 16 * 1024;

/// The exact GELU, `x · Φ(x)` (BERT's `"gelu"`), in place, in parallel over chunks, on the
/// best kernels this processor has.
pub fn gelu(x: &mut [f32]) {
    let k = Kern::default();
    x.par_chunks_mut(4096).for_each(|c| k.gelu(c));
}

/// `g = gelu_tanh(u)` element by element (over the shorter of the two), in parallel.
pub fn gelu_tanh_fwd(u: &[f32], g: &mut [f32]) {
    let n = g.len().min(u.len());
    g[..n]
        .par_chunks_mut(ELEMS_PER_TASK)
        .zip(u[..n].par_chunks(ELEMS_PER_TASK))
        .for_each(|(gc, uc)| {
            for (gv, &x) in gc.iter_mut().zip(uc) {
                *gv = gelu_tanh(x);
            }
        });
}

/// `gate = silu(gate) · up`, element by element (Llama's MLP).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attend_kernels::Isa;

    #[test]
    fn gelu_on_every_isa_matches_its_twin() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 50.0).collect();
        let mut want = x.clone();
        want.iter_mut().for_each(|v| *v = gelu_erf(*v));
        for isa in Isa::available() {
            let mut a = x.clone();
            isa.kern().unwrap().gelu(&mut a);
            for (i, (p, q)) in a.iter().zip(&want).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
                    "{isa:?} at {}: {p} vs {q}",
                    x[i]
                );
            }
        }
        // and against erf's definition at a few points: GELU(1) = Φ(1) = 0.8413447
        let mut one = [1.0f32, -1.0, 0.0];
        gelu(&mut one);
        assert!((one[0] - 0.841_344_7).abs() < 1e-6 && (one[1] + 0.158_655_25).abs() < 1e-6);
        assert_eq!(one[2], 0.0);
    }

    #[test]
    fn fast_tanh_matches_libm() {
        let mut worst = 0.0f32;
        for i in -4000..=4000 {
            let z = i as f32 / 400.0;
            worst = worst.max((tanh(z) - z.tanh()).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(-100.0), -1.0);
    }

    #[test]
    fn silu_mul_by_hand() {
        let mut g = [0.0, 2.0];
        silu_mul(&mut g, &[5.0, 3.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 3.0 * 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }
}
