//! The reference implementation: materialises every score, written to be read, never
//! optimised. It is the oracle that every test of the fused kernels compares against.
//!
//! For each batch row `b`, query head `h` (which reads key/value head `h / (h / h_kv)`) and
//! query `i`:
//!
//! ```text
//! s_ij = scale · q_i·k_j                      raw score
//! t_ij = cap · tanh(s_ij / cap)               soft-cap (if any), else t_ij = s_ij
//! z_ij = t_ij + bias_ij, or -inf if masked     logits
//! p_ij = exp(z_ij - lse_i),  lse_i = log Σ_j exp(z_ij)
//! o_i  = Σ_j p_ij v_j
//! ```
//! A row with every key masked has `o_i = 0`, `p_i· = 0` and `lse_i = -inf`.

use crate::params::AttnParams;
use crate::shape::{check_finite, check_len, zeros};
use crate::{Grads, Output, Result};

/// The logits `z_ij` of one query row against every key, plus the soft-capped score `t_ij`
/// (needed by the backward pass). Masked keys get `-inf`.
fn logits(
    p: &AttnParams,
    q: &[f32],
    k: &[f32],
    (b, h, i): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let sh = &p.shape;
    let (qs, ks) = (p.q_strides(), p.k_strides());
    let hk = h / sh.group();
    let scale = p.effective_scale();
    let qi = &q[qs.at(b, h, i)..][..sh.d];
    let mut z = vec![f32::NEG_INFINITY; sh.s_kv];
    let mut t = vec![0.0; sh.s_kv];
    for j in 0..sh.s_kv {
        let kj = &k[ks.at(b, hk, j)..][..sh.d];
        let s: f32 = scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>();
        t[j] = match p.softcap {
            Some(cap) => cap * (s / cap).tanh(),
            None => s,
        };
        if p.mask.allows(sh, b, h, i, j) {
            z[j] = t[j] + p.mask.bias(sh, b, h, i, j);
        }
    }
    (z, t)
}

/// Softmax of one row of logits; all zeros when every logit is `-inf`. Returns `(p, lse)`.
fn softmax(z: &[f32]) -> (Vec<f32>, f32) {
    // pass 1: row maximum
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (vec![0.0; z.len()], f32::NEG_INFINITY);
    }
    // pass 2: exponentials and their sum
    let e: Vec<f32> = z.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    // pass 3: normalise
    (e.iter().map(|x| x / sum).collect(), max + sum.ln())
}

/// Attention output and log-sum-exp (natural log, `[b, h, s_q]`).
pub fn forward(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32]) -> Result<Output> {
    p.validate_qkv(q, k, v)?;
    let sh = p.shape;
    let (vs, os) = (p.v_strides(), p.o_strides());
    let mut out = zeros("out", sh.o_len())?;
    let mut lse = zeros("lse", sh.lse_len())?;
    for b in 0..sh.b {
        for h in 0..sh.h {
            let hk = h / sh.group();
            for i in 0..sh.s_q {
                let (z, _) = logits(p, q, k, (b, h, i));
                let (pr, l) = softmax(&z);
                lse[(b * sh.h + h) * sh.s_q + i] = l;
                let o = &mut out[os.at(b, h, i)..][..sh.d_v];
                for (j, &pj) in pr.iter().enumerate() {
                    let vj = &v[vs.at(b, hk, j)..][..sh.d_v];
                    for (oc, vc) in o.iter_mut().zip(vj) {
                        *oc += pj * vc;
                    }
                }
            }
        }
    }
    Ok(Output { out, lse })
}

/// The attention probabilities of every head, `[b, h, s_q, s_kv]`.
pub fn probabilities(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32]) -> Result<Vec<f32>> {
    p.validate_qkv(q, k, v)?;
    let sh = p.shape;
    crate::shape::check_size("probabilities", sh.probs_len())?;
    let mut probs = Vec::new();
    probs
        .try_reserve_exact(sh.probs_len())
        .map_err(|_| crate::Error::OutOfMemory {
            what: "probabilities",
            elements: sh.probs_len(),
        })?;
    for b in 0..sh.b {
        for h in 0..sh.h {
            for i in 0..sh.s_q {
                probs.extend(softmax(&logits(p, q, k, (b, h, i)).0).0);
            }
        }
    }
    Ok(probs)
}

/// Gradients of a scalar loss `L` with respect to `q`, `k`, `v`, given `dout = ∂L/∂out`.
pub fn backward(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32], dout: &[f32]) -> Result<Grads> {
    p.validate_qkv(q, k, v)?;
    check_len("dout", dout, p.shape.o_len())?;
    check_finite("dout", dout)?;
    let sh = p.shape;
    let (qs, ks, vs, os) = (p.q_strides(), p.k_strides(), p.v_strides(), p.o_strides());
    let scale = p.effective_scale();
    let mut g = Grads {
        dq: zeros("dq", sh.q_len())?,
        dk: zeros("dk", sh.k_len())?,
        dv: zeros("dv", sh.v_len())?,
    };
    for b in 0..sh.b {
        for h in 0..sh.h {
            let hk = h / sh.group();
            for i in 0..sh.s_q {
                let (z, t) = logits(p, q, k, (b, h, i));
                let (pr, _) = softmax(&z);
                let doi = &dout[os.at(b, h, i)..][..sh.d_v];
                // o_i = Σ_j p_ij v_j  ⇒  dv_j += p_ij do_i  and  dp_ij = do_i·v_j
                let mut dp = vec![0.0; sh.s_kv];
                for j in 0..sh.s_kv {
                    let vj = &v[vs.at(b, hk, j)..][..sh.d_v];
                    dp[j] = doi.iter().zip(vj).map(|(a, b)| a * b).sum();
                    let dvj = &mut g.dv[vs.at(b, hk, j)..][..sh.d_v];
                    for (d, o) in dvj.iter_mut().zip(doi) {
                        *d += pr[j] * o;
                    }
                }
                // p = softmax(z)  ⇒  dz_ij = p_ij (dp_ij - Σ_j' p_ij' dp_ij')
                let dot: f32 = pr.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..sh.s_kv {
                    let mut ds = pr[j] * (dp[j] - dot);
                    // t = cap·tanh(s/cap)  ⇒  ds = dt (1 - (t/cap)²)
                    if let Some(cap) = p.softcap {
                        ds *= 1.0 - (t[j] / cap) * (t[j] / cap);
                    }
                    // s = scale·q_i·k_j  ⇒  dq_i += scale ds k_j,  dk_j += scale ds q_i
                    let qo = qs.at(b, h, i);
                    let ko = ks.at(b, hk, j);
                    for c in 0..sh.d {
                        g.dq[qo + c] += scale * ds * k[ko + c];
                        g.dk[ko + c] += scale * ds * q[qo + c];
                    }
                }
            }
        }
    }
    Ok(g)
}
