//! The backward pass of a toy model: the loss gradient, then each block in reverse — MLP,
//! layer norm, output projection, `attend::backward` for attention, QKV projection, layer norm
//! — and the embeddings last, adding into one flat gradient vector laid out as the parameters.

use std::ops::Range;
use std::time::Instant;

use super::layers::{cross_entropy, gelu_bwd, layer_norm_bwd, linear_bwd};
use crate::models::toy::{sized, zeros, Activations, ToyModel};
use crate::{Error, Result};

/// Seconds spent in each part of a training step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// The forward pass (embeddings to loss).
    pub forward: f64,
    /// `attend::backward`, all layers.
    pub attn_backward: f64,
    /// Every other backward (linear layers, norms, GELU, embeddings, loss).
    pub other_backward: f64,
    /// Clipping and the AdamW update.
    pub optimizer: f64,
}

/// The backward's buffers.
#[derive(Default)]
pub struct Scratch {
    dlogits: Vec<f32>,
    dh: Vec<f32>,
    dx: Vec<f32>,
    dg: Vec<f32>,
    du: Vec<f32>,
    dqkv: Vec<f32>,
    dout: Vec<f32>,
}

/// Two disjoint mutable sub-slices (`a` before `b`).
fn pair<'a>(
    v: &'a mut [f32],
    a: &Range<usize>,
    b: &Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    debug_assert!(a.end <= b.start);
    let (lo, hi) = v.split_at_mut(b.start);
    (&mut lo[a.clone()], &mut hi[..b.len()])
}

/// The mean cross-entropy of `targets` (`[b × t]`, [`super::layers::IGNORE`] where not
/// scored) under `acts`, and its gradient with respect to every parameter, added into
/// `grads` (which has the parameters' length). Returns the loss.
pub fn backward(
    model: &ToyModel,
    acts: &Activations,
    scratch: &mut Scratch,
    targets: &[u32],
    grads: &mut [f32],
    times: &mut StepTimes,
) -> Result<f32> {
    let c = &model.config;
    let (d, m, vocab) = (c.dim, c.mlp, c.vocab.len());
    let (b, t) = (acts.b, acts.t);
    let n = b * t;
    if targets.len() != n || grads.len() != model.params.len() {
        return Err(Error::Invalid(format!(
            "backward: {} targets for {n} positions, {} gradients for {} parameters",
            targets.len(),
            grads.len(),
            model.params.len()
        )));
    }
    let t0 = Instant::now();
    let p = &model.params;
    let s = &model.slots;
    let Scratch {
        dlogits,
        dh,
        dx,
        dg,
        du,
        dqkv,
        dout,
    } = scratch;
    zeros(dx, n * d); // layer norms' backward add into it
    for (v, len) in [
        (&mut *dlogits, n * vocab),
        (&mut *dh, n * d),
        (&mut *dg, n * m),
        (&mut *du, n * m),
        (&mut *dqkv, n * 3 * d),
        (&mut *dout, n * d),
    ] {
        sized(v, len);
    }
    let (dlogits, dh, dx, dg, du, dqkv, dout) = (
        &mut dlogits[..],
        &mut dh[..],
        &mut dx[..],
        &mut dg[..],
        &mut du[..],
        &mut dqkv[..],
        &mut dout[..],
    );
    let (loss, _) = cross_entropy(&acts.logits, targets, vocab, Some(&mut *dlogits));
    linear_bwd(
        &acts.hf,
        &p[s.head.clone()],
        dlogits,
        &mut grads[s.head.clone()],
        None,
        Some((&mut *dh, false)),
        n,
        d,
    );
    {
        let (dg, db) = pair(grads, &s.lnf_g, &s.lnf_b);
        let g = &p[s.lnf_g.clone()];
        layer_norm_bwd(dh, &acts.xhatf, &acts.rstdf, g, dg, db, &mut *dx, d);
    }
    let ap = model.attn_params(b, t);
    let mut attn_secs = 0.0;
    for (ls, a) in s.layers.iter().zip(&acts.layers).rev() {
        // x += W2·gelu(W1·LN2(x) + b1) + b2
        {
            let (dw2, db2) = pair(grads, &ls.w2, &ls.b2);
            let w2 = &p[ls.w2.clone()];
            linear_bwd(&a.g, w2, dx, dw2, Some(db2), Some((&mut *dg, false)), n, m);
        }
        gelu_bwd(&a.u, dg, &mut *du);
        {
            let (dw1, db1) = pair(grads, &ls.w1, &ls.b1);
            let w1 = &p[ls.w1.clone()];
            linear_bwd(&a.h2, w1, du, dw1, Some(db1), Some((&mut *dh, false)), n, d);
        }
        {
            let (dg2, db2) = pair(grads, &ls.ln2_g, &ls.ln2_b);
            let g2 = &p[ls.ln2_g.clone()];
            layer_norm_bwd(dh, &a.xhat2, &a.rstd2, g2, dg2, db2, &mut *dx, d);
        }
        // x += Wo·attn(LN1(x))
        linear_bwd(
            &a.o,
            &p[ls.wo.clone()],
            dx,
            &mut grads[ls.wo.clone()],
            None,
            Some((&mut *dout, false)),
            n,
            d,
        );
        let ta = Instant::now();
        let g = attend::backward::backward(&ap, &a.q, &a.k, &a.v, &a.o, &a.lse, dout)?;
        attn_secs += ta.elapsed().as_secs_f64();
        for (i, row) in dqkv.chunks_exact_mut(3 * d).enumerate() {
            row[..d].copy_from_slice(&g.dq[i * d..][..d]);
            row[d..2 * d].copy_from_slice(&g.dk[i * d..][..d]);
            row[2 * d..].copy_from_slice(&g.dv[i * d..][..d]);
        }
        linear_bwd(
            &a.h1,
            &p[ls.wqkv.clone()],
            dqkv,
            &mut grads[ls.wqkv.clone()],
            None,
            Some((&mut *dh, false)),
            n,
            d,
        );
        let (dg1, db1) = pair(grads, &ls.ln1_g, &ls.ln1_b);
        let g1 = &p[ls.ln1_g.clone()];
        layer_norm_bwd(dh, &a.xhat1, &a.rstd1, g1, dg1, db1, &mut *dx, d);
    }
    // embeddings: x = tok[id] + pos[i]
    for (i, (row, &id)) in dx.chunks_exact(d).zip(&acts.tokens).enumerate() {
        let dt = &mut grads[s.tok.start + id as usize * d..][..d];
        dt.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        let dp = &mut grads[s.pos.start + (i % t) * d..][..d];
        dp.iter_mut().zip(row).for_each(|(g, v)| *g += v);
    }
    times.attn_backward += attn_secs;
    times.other_backward += t0.elapsed().as_secs_f64() - attn_secs;
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::toy::{tiny, ToyModel};
    use crate::train::layers::IGNORE;

    /// Every parameter tensor of a two-layer model against central differences of the loss
    /// (in f64 from f32 forwards), on a batch with padding.
    #[test]
    fn whole_model_gradient_matches_finite_differences() {
        let m = tiny(2);
        let (b, t) = (2, 5);
        let tokens = [1, 4, 2, 6, 0, 3, 3, 5, 1, 1];
        let targets = [4, 2, 6, 0, 5, 3, 5, 1, IGNORE, IGNORE];
        let acts = m.forward(&tokens, b, t).unwrap();
        let mut grads = vec![0.0f32; m.params.len()];
        let mut times = StepTimes::default();
        backward(
            &m,
            &acts,
            &mut Scratch::default(),
            &targets,
            &mut grads,
            &mut times,
        )
        .unwrap();
        let loss_at = |params: &[f32]| {
            let mm = ToyModel::from_params(m.config.clone(), params.to_vec()).unwrap();
            let a = mm.forward(&tokens, b, t).unwrap();
            cross_entropy(&a.logits, &targets, 7, None).0 as f64
        };
        let eps = 3e-3f32;
        for spec in m.specs() {
            let r = spec.range();
            // up to 12 coordinates of each tensor, spread over it
            let step = (r.len() / 12).max(1);
            for i in r.clone().step_by(step) {
                let mut pp = m.params.clone();
                pp[i] += eps;
                let mut pm = m.params.clone();
                pm[i] -= eps;
                let num = (loss_at(&pp) - loss_at(&pm)) / (2.0 * eps as f64);
                let err = (num - grads[i] as f64).abs();
                assert!(
                    err < 2e-3 + 2e-2 * num.abs(),
                    "{}[{}]: analytic {} vs finite differences {num}",
                    spec.name,
                    i - r.start,
                    grads[i]
                );
            }
        }
        // position embeddings past the last used position get nothing
        let pos = &m.specs()[1];
        assert!(grads[pos.range()][t * 8..].iter().all(|&g| g == 0.0));
    }
}
