//! Test helpers: an independent f64 attention (written from the contract, not from the crate's
//! code), random inputs, and mask builders.
#![allow(dead_code)]

use attend::{AttnParams, Layout, Mask, MaskScope, Shape};

/// Deterministic values in [-1, 1).
pub fn rnd(n: usize, seed: u64) -> Vec<f32> {
    attend::cases::fill(n, seed)
}

/// The kinds of mask the suites sweep.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    None,
    Causal,
    Window(usize),
    Band(usize, usize),
    Padding,
    CausalPadding,
    /// Causal, with a list of keys no query sees (a knockout).
    CausalHidden,
    Bool(MaskScope),
    Additive(MaskScope),
}

pub const ALL_KINDS: [Kind; 11] = [
    Kind::None,
    Kind::Causal,
    Kind::Window(5),
    Kind::Band(3, 9),
    Kind::Padding,
    Kind::CausalPadding,
    Kind::CausalHidden,
    Kind::Bool(MaskScope::Shared),
    Kind::Bool(MaskScope::PerHead),
    Kind::Additive(MaskScope::PerBatch),
    Kind::Additive(MaskScope::PerHead),
];

/// Owned mask data for a kind and shape.
pub struct MaskData {
    pub kind: Kind,
    pub lengths: Vec<usize>,
    pub hidden: Vec<usize>,
    pub keep: Vec<bool>,
    pub bias: Vec<f32>,
}

impl MaskData {
    pub fn new(kind: Kind, sh: &Shape, seed: u64) -> Self {
        let count = |scope: MaskScope| match scope {
            MaskScope::Shared => sh.s_q * sh.s_kv,
            MaskScope::PerBatch => sh.b * sh.s_q * sh.s_kv,
            MaskScope::PerHead => sh.b * sh.h * sh.s_q * sh.s_kv,
        };
        let r = rnd(4 * sh.b * sh.h * sh.s_q * sh.s_kv + 8, seed);
        let lengths: Vec<usize> = (0..sh.b)
            .map(|b| (b * 37 + seed as usize * 13) % (sh.s_kv + 1))
            .collect();
        // key 0, a run of three, and every 11th key from a seeded offset: whole tiles, tile
        // edges and (with few keys) rows left with nothing
        let mut hidden: Vec<usize> = (0..sh.s_kv)
            .filter(|&j| j == 0 || (5..8).contains(&j) || (j + seed as usize).is_multiple_of(11))
            .collect();
        hidden.dedup();
        let mut keep = Vec::new();
        let mut bias = Vec::new();
        match kind {
            Kind::Bool(scope) => {
                keep = (0..count(scope)).map(|i| r[i] > -0.4).collect();
                // one fully masked row when there is room for it
                if sh.s_q > 2 {
                    keep[sh.s_kv..2 * sh.s_kv]
                        .iter_mut()
                        .for_each(|x| *x = false);
                }
            }
            Kind::Additive(scope) => {
                let n = count(scope);
                bias = (0..n).map(|i| r[i] * 3.0).collect();
                // random blocks of -inf, ggml-style
                let mut i = 0;
                while i < n {
                    if r[n + i] > 0.6 {
                        let len = 1 + ((r[2 * n + i] + 1.0) * 6.0) as usize;
                        for x in bias.iter_mut().skip(i).take(len) {
                            *x = f32::NEG_INFINITY;
                        }
                        i += len;
                    }
                    i += 1 + ((r[3 * n + i.min(n - 1)] + 1.0) * 4.0) as usize;
                }
            }
            _ => {}
        }
        MaskData {
            kind,
            lengths,
            hidden,
            keep,
            bias,
        }
    }

    pub fn mask(&self) -> Mask<'_> {
        match self.kind {
            Kind::None => Mask::none(),
            Kind::Causal => Mask::causal(),
            Kind::Window(w) => Mask::sliding_window(w),
            Kind::Band(l, r) => Mask::none().with_window(Some(l), Some(r)),
            Kind::Padding => Mask::none().with_key_lengths(&self.lengths),
            Kind::CausalPadding => Mask::causal().with_key_lengths(&self.lengths),
            Kind::CausalHidden => Mask::causal().with_hidden_keys(&self.hidden),
            Kind::Bool(scope) => Mask::none().with_bool(&self.keep, scope),
            Kind::Additive(scope) => Mask::none().with_additive(&self.bias, scope),
        }
    }

    /// Independent statement of the mask: `None` if `(b, h, i, j)` is removed, else its bias.
    pub fn logit_bias(&self, sh: &Shape, b: usize, h: usize, i: usize, j: usize) -> Option<f64> {
        let pos = sh.s_kv as i64 - sh.s_q as i64 + i as i64;
        let j64 = j as i64;
        let at = |scope: MaskScope| {
            let m = match scope {
                MaskScope::Shared => 0,
                MaskScope::PerBatch => b,
                MaskScope::PerHead => b * sh.h + h,
            };
            (m * sh.s_q + i) * sh.s_kv + j
        };
        match self.kind {
            Kind::None => Some(0.0),
            Kind::Causal => (j64 <= pos).then_some(0.0),
            Kind::Window(w) => (j64 <= pos && j64 > pos - w as i64).then_some(0.0),
            Kind::Band(l, r) => (j64 >= pos - l as i64 && j64 <= pos + r as i64).then_some(0.0),
            Kind::Padding => (j < self.lengths[b]).then_some(0.0),
            Kind::CausalPadding => (j < self.lengths[b] && j64 <= pos).then_some(0.0),
            Kind::CausalHidden => (j64 <= pos && !self.hidden.contains(&j)).then_some(0.0),
            Kind::Bool(scope) => self.keep[at(scope)].then_some(0.0),
            Kind::Additive(scope) => {
                let x = self.bias[at(scope)];
                (x != f32::NEG_INFINITY).then_some(x as f64)
            }
        }
    }
}

/// Element offset of `(b, h, s)` for a tensor of `heads × seq × dim`.
pub fn off(
    layout: Layout,
    heads: usize,
    seq: usize,
    dim: usize,
    b: usize,
    h: usize,
    s: usize,
) -> usize {
    match layout {
        Layout::Bhsd => ((b * heads + h) * seq + s) * dim,
        Layout::Bshd => ((b * seq + s) * heads + h) * dim,
    }
}

/// f64 attention: (out, lse, probs[b,h,s_q,s_kv]), straight from the definition.
pub fn attention_f64(
    p: &AttnParams,
    md: &MaskData,
    q: &[f64],
    k: &[f64],
    v: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let sh = p.shape;
    let scale = p.scale.map_or(1.0 / (sh.d as f64).sqrt(), |s| s as f64);
    let g = sh.h / sh.h_kv;
    let mut out = vec![0.0; sh.o_len()];
    let mut lse = vec![0.0; sh.lse_len()];
    let mut probs = vec![0.0; sh.probs_len()];
    for b in 0..sh.b {
        for h in 0..sh.h {
            for i in 0..sh.s_q {
                let qo = off(p.layout, sh.h, sh.s_q, sh.d, b, h, i);
                let mut z = vec![f64::NEG_INFINITY; sh.s_kv];
                for (j, zj) in z.iter_mut().enumerate() {
                    let ko = off(p.layout, sh.h_kv, sh.s_kv, sh.d, b, h / g, j);
                    let mut s: f64 = (0..sh.d).map(|c| q[qo + c] * k[ko + c]).sum::<f64>() * scale;
                    if let Some(cap) = p.softcap {
                        s = cap as f64 * (s / cap as f64).tanh();
                    }
                    if let Some(bias) = md.logit_bias(&sh, b, h, i, j) {
                        *zj = s + bias;
                    }
                }
                let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let x = (b * sh.h + h) * sh.s_q + i;
                if m == f64::NEG_INFINITY {
                    lse[x] = f64::NEG_INFINITY;
                    continue;
                }
                let sum: f64 = z.iter().map(|zj| (zj - m).exp()).sum();
                lse[x] = m + sum.ln();
                let oo = off(p.layout, sh.h, sh.s_q, sh.d_v, b, h, i);
                for j in 0..sh.s_kv {
                    let pj = (z[j] - m).exp() / sum;
                    probs[x * sh.s_kv + j] = pj;
                    let vo = off(p.layout, sh.h_kv, sh.s_kv, sh.d_v, b, h / g, j);
                    for c in 0..sh.d_v {
                        out[oo + c] += pj * v[vo + c];
                    }
                }
            }
        }
    }
    (out, lse, probs)
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Largest absolute difference (treating equal infinities as equal).
pub fn max_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x as f64 == y {
                0.0
            } else {
                (x as f64 - y).abs()
            }
        })
        .fold(0.0, f64::max)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, f32::max)
}
