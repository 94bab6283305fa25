//! The fused backward pass (FlashAttention-2 style): probabilities are recomputed tile by tile
//! from the forward's log-sum-exp instead of being stored.
//!
//! Forward, restated (see `reference.rs`): `z = scale·q·kᵀ` (soft-capped, masked, biased),
//! `p = exp(z - lse)`, `o = p·v`. Its derivatives, per tile:
//!
//! ```text
//! dv_j += Σ_i p_ij do_i                 (o = p v)
//! dp_ij = do_i · v_j
//! dz_ij = p_ij (dp_ij - D_i),  D_i = do_i · o_i      (softmax; Σ_j p_ij dp_ij = do_i·o_i)
//! dq_i += scale Σ_j dz_ij k_j,  dk_j += scale Σ_i dz_ij q_i
//! ```
//!
//! Work is split over batch × key/value head (and over key ranges when there are fewer heads
//! than threads); each task loops over key tiles, keeps them packed, and streams every query
//! tile of every head of its GQA group past them, so `dk` and `dv` need no reduction across
//! tasks. `dq` is accumulated per task and summed.

use rayon::prelude::*;

use crate::params::AttnParams;
use crate::shape::{check_finite, check_len, zeros};
use crate::tile::{Ctx, Row};
use crate::{Error, Grads, Result};
use attend_kernels::{MatMut, MatRef, NR};

/// Queries per tile.
const BR: usize = 64;
/// Keys per tile.
const BC: usize = 64;
/// Fewest keys per task when keys are split across threads.
const MIN_SPLIT: usize = 256;

/// Gradients with respect to `q`, `k`, `v` (in the call's layout), given the forward's `out`
/// and `lse` (from [`crate::fused::forward`]) and `dout = ∂L/∂out`.
pub fn backward(
    p: &AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
) -> Result<Grads> {
    p.validate_qkv(q, k, v)?;
    let sh = p.shape;
    check_len("out", out, sh.o_len())?;
    check_len("lse", lse, sh.lse_len())?;
    check_len("dout", dout, sh.o_len())?;
    check_finite("out", out)?;
    check_finite("dout", dout)?;
    let ctx = Ctx::new(p, q, k, v)?;
    let os = p.o_strides();

    // D_i = do_i · o_i, and lse in log2 units (+inf zeroes a row that saw no key)
    let mut dd = zeros("lse", sh.lse_len())?;
    let mut lse2 = zeros("lse", sh.lse_len())?;
    for b in 0..sh.b {
        for h in 0..sh.h {
            for i in 0..sh.s_q {
                let x = (b * sh.h + h) * sh.s_q + i;
                let o = &out[os.at(b, h, i)..][..sh.d_v];
                let g = &dout[os.at(b, h, i)..][..sh.d_v];
                dd[x] = o.iter().zip(g).map(|(a, b)| a * b).sum();
                // lse is finite, or -inf for a row that saw no key (whose output is zero);
                // NaN, +inf, or -inf beside a row with output is not a forward's lse
                let l = lse[x];
                let no_key = l == f32::NEG_INFINITY && o.iter().all(|&a| a == 0.0);
                if !(l.is_finite() || no_key) {
                    return Err(Error::NonFinite {
                        what: "lse (finite, or -inf only where the row saw no key and out is 0)",
                        index: x,
                        value: l,
                    });
                }
                lse2[x] = if no_key {
                    f32::INFINITY
                } else {
                    l * std::f32::consts::LOG2_E
                };
            }
        }
    }

    let groups = sh.b * sh.h_kv;
    let threads = rayon::current_num_threads();
    let want = if groups >= threads {
        1
    } else {
        (2 * threads).div_ceil(groups)
    };
    let chunks = want.min(sh.s_kv / MIN_SPLIT).max(1);
    let step = sh.s_kv.div_ceil(chunks).div_ceil(BC) * BC;
    let tasks: Vec<(usize, usize, usize, usize)> = (0..groups)
        .flat_map(|bg| {
            (0..sh.s_kv.div_ceil(step)).map(move |c| {
                (
                    bg / sh.h_kv,
                    bg % sh.h_kv,
                    c * step,
                    ((c + 1) * step).min(sh.s_kv),
                )
            })
        })
        .collect();
    let env = Env {
        ctx: &ctx,
        dout,
        dd: &dd,
        lse2: &lse2,
    };
    let parts: Vec<Part> = tasks.par_iter().map(|&t| env.task(t)).collect();

    // scatter: dk, dv rows are disjoint across tasks; dq partials add up
    let (ks, vs, qs) = (ctx.ks, ctx.vs, ctx.qs);
    let mut g = Grads {
        dq: vec![0.0; sh.q_len()],
        dk: vec![0.0; sh.k_len()],
        dv: vec![0.0; sh.v_len()],
    };
    for (&(b, hk, c0, c1), part) in tasks.iter().zip(&parts) {
        for j in c0..c1 {
            g.dk[ks.at(b, hk, j)..][..sh.d].copy_from_slice(&part.dk[(j - c0) * sh.d..][..sh.d]);
            g.dv[vs.at(b, hk, j)..][..sh.d_v]
                .copy_from_slice(&part.dv[(j - c0) * sh.d_v..][..sh.d_v]);
        }
        for (hh, dq) in part.dq.chunks(sh.s_q * part.d_pad).enumerate() {
            let h = hk * sh.group() + hh;
            for i in 0..sh.s_q {
                let row = &mut g.dq[qs.at(b, h, i)..][..sh.d];
                for (x, y) in row.iter_mut().zip(&dq[i * part.d_pad..]) {
                    *x += y * ctx.scale;
                }
            }
        }
    }
    Ok(g)
}

/// What one task produces: `dk`, `dv` rows of its key range, and `dq / scale` of every head of
/// its group, `[g, s_q, d_pad]`.
struct Part {
    dk: Vec<f32>,
    dv: Vec<f32>,
    dq: Vec<f32>,
    d_pad: usize,
}

/// Packs `n` rows of `dim` elements as panels of 16 dims: `dst[p·n·16 + t·16 + l] =
/// src[off + t·stride + p·16 + l]`, zero past `dim`.
fn pack_row_panels(src: &[f32], off: usize, stride: usize, n: usize, dim: usize, dst: &mut [f32]) {
    for p in 0..dim.div_ceil(NR) {
        let width = NR.min(dim - p * NR);
        for t in 0..n {
            let to = &mut dst[(p * n + t) * NR..][..NR];
            to[..width].copy_from_slice(&src[off + t * stride + p * NR..][..width]);
            to[width..].fill(0.0);
        }
    }
}

struct Env<'a> {
    ctx: &'a Ctx<'a>,
    dout: &'a [f32],
    dd: &'a [f32],
    lse2: &'a [f32],
}

impl Env<'_> {
    fn task(&self, (b, hk, c0, c1): (usize, usize, usize, usize)) -> Part {
        let ctx = self.ctx;
        let sh = &ctx.p.shape;
        let (d, dv, g) = (sh.d, sh.d_v, sh.group());
        let os = ctx.p.o_strides();
        let kern = ctx.kern;
        let dpan = d.div_ceil(NR);
        let d_pad = dpan * NR;
        let mut part = Part {
            dk: vec![0.0; (c1 - c0) * d],
            dv: vec![0.0; (c1 - c0) * dv],
            dq: vec![0.0; g * sh.s_q * d_pad],
            d_pad,
        };
        let mut krp = vec![0.0f32; dpan * BC * NR];
        let w = BC.div_ceil(NR) * NR;
        let mut kp = vec![0.0f32; w * d];
        let mut vp = vec![0.0f32; w * dv];
        let mut dkt = vec![0.0f32; d * w];
        let mut dvt = vec![0.0f32; dv * w];
        let mut s = vec![0.0f32; BR * w];
        let mut dp = vec![0.0f32; BR * w];
        let mut tanh = vec![0.0f32; BR * w];
        let mut t0 = c0;
        while t0 < c1 {
            let t1 = (t0 + BC).min(c1);
            let nk = t1 - t0;
            let kpan = nk.div_ceil(NR);
            let keys = MatRef::new(ctx.k, ctx.ks.at(b, hk, t0), ctx.ks.row, nk, d);
            kern.pack_panels(keys, &mut kp);
            let values = MatRef::new(ctx.v, ctx.vs.at(b, hk, t0), ctx.vs.row, nk, dv);
            kern.pack_panels(values, &mut vp);
            pack_row_panels(ctx.k, ctx.ks.at(b, hk, t0), ctx.ks.row, nk, d, &mut krp);
            dkt.fill(0.0);
            dvt.fill(0.0);
            for h in hk * g..(hk + 1) * g {
                let hh = h - hk * g;
                for i0 in (0..sh.s_q).step_by(BR) {
                    let n = BR.min(sh.s_q - i0);
                    let rows: Vec<Row> = (i0..i0 + n).map(|i| ctx.row(b, h, i)).collect();
                    let Some(full) = ctx.classify(&rows, t0, t1) else {
                        continue;
                    };
                    let x0 = (b * sh.h + h) * sh.s_q + i0;
                    // S = Q Kᵀ (queries as rows, keys in lanes), then P = exp(z - lse)
                    let q_off = ctx.qs.at(b, h, i0);
                    let queries = MatRef::new(ctx.q, q_off, ctx.qs.row, n, d);
                    let sv = MatMut::new(&mut s, 0, w, n, kpan * NR);
                    kern.gemm_a(queries, &kp, kpan, sv, false);
                    if let Some(cap) = ctx.p.softcap {
                        for (tv, sv) in tanh[..n * w].iter_mut().zip(&s[..n * w]) {
                            *tv = (sv * ctx.scale / cap).tanh();
                        }
                    }
                    ctx.finish_scores(b, &rows, t0, nk, full, &mut s, |r, jj| r * w + jj);
                    for r in 0..n {
                        s[r * w + nk..r * w + kpan * NR].fill(f32::NEG_INFINITY);
                    }
                    let sv = MatMut::new(&mut s, 0, w, n, kpan * NR);
                    kern.exp_rows(sv, ctx.c, &self.lse2[x0..x0 + n]);
                    // dP = dO Vᵀ
                    let o_off = os.at(b, h, i0);
                    let dout = MatRef::new(self.dout, o_off, os.row, n, dv);
                    let dpv = MatMut::new(&mut dp, 0, w, n, kpan * NR);
                    kern.gemm_a(dout, &vp, kpan, dpv, false);
                    // dvᵀ += dOᵀ P
                    let p = MatRef::new(&s, 0, w, n, kpan * NR);
                    kern.gemm_b(dout, p, MatMut::new(&mut dvt, 0, w, dv, kpan * NR));
                    // dz = P ∘ (dP - D)   (∘ (1 - tanh²) under a soft-cap)
                    for r in 0..n {
                        let di = self.dd[x0 + r];
                        let (pr, dpr) = (&s[r * w..][..w], &mut dp[r * w..][..w]);
                        for (x, &pv) in dpr.iter_mut().zip(pr) {
                            *x = pv * (*x - di);
                        }
                        if ctx.p.softcap.is_some() {
                            for (x, t) in dpr.iter_mut().zip(&tanh[r * w..][..w]) {
                                *x *= 1.0 - t * t;
                            }
                        }
                    }
                    // dkᵀ += Qᵀ dz
                    let dz = MatRef::new(&dp, 0, w, n, kpan * NR);
                    kern.gemm_b(queries, dz, MatMut::new(&mut dkt, 0, w, d, kpan * NR));
                    // dq += dz K   (K packed as row panels of 16 dims)
                    let dq = &mut part.dq[(hh * sh.s_q + i0) * d_pad..];
                    let dz = MatRef::new(&dp, 0, w, n, nk);
                    kern.gemm_a(
                        dz,
                        &krp,
                        dpan,
                        MatMut::new(dq, 0, d_pad, n, dpan * NR),
                        true,
                    );
                }
            }
            for jj in 0..nk {
                let r = t0 - c0 + jj;
                for e in 0..d {
                    part.dk[r * d + e] = dkt[e * w + jj] * ctx.scale;
                }
                for e in 0..dv {
                    part.dv[r * dv + e] = dvt[e * w + jj];
                }
            }
            t0 = t1;
        }
        part
    }
}
