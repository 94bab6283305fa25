//! The pieces every fused path shares: the call context, query rows with their key ranges,
//! packing, score tiles with soft-cap and mask applied, and the online-softmax accumulator
//! (written once, used by the forward, decode and probability paths).
//!
//! Two orientations of a score tile are used:
//! - *columns* (forward, decode): `st[j][lane]`, keys as rows and queries in SIMD lanes, so the
//!   online softmax and the rescaling of the output are plain vertical operations;
//! - *rows* (probabilities, backward): `s[r][lane]`, queries as rows and keys in lanes.
//!
//! Scores are kept in "raw units": `z / scale`, where `z` is the logit of the reference
//! (`reference.rs`). The exponentials then use `c = scale · log2(e)` and `exp2`.

use std::cell::RefCell;

use crate::mask::ExplicitRow;
use crate::params::{AttnParams, Strides};
use crate::Result;
use attend_kernels::{Kern, MatMut, MatRef, NR};

/// Everything a fused kernel needs about one call.
pub(crate) struct Ctx<'a> {
    pub p: &'a AttnParams<'a>,
    pub kern: Kern,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub qs: Strides,
    pub ks: Strides,
    pub vs: Strides,
    pub scale: f32,
    /// `scale · log2(e)`: raw scores to log2 units.
    pub c: f32,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        p: &'a AttnParams<'a>,
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
    ) -> Result<Self> {
        let kern = p.isa.kern()?;
        let scale = p.effective_scale();
        Ok(Ctx {
            p,
            kern,
            q,
            k,
            v,
            qs: p.q_strides(),
            ks: p.k_strides(),
            vs: p.v_strides(),
            scale,
            c: scale * std::f32::consts::LOG2_E,
        })
    }

    /// With key/value strides that differ from the layout's (a KV cache).
    pub(crate) fn with_kv_strides(mut self, ks: Strides, vs: Strides) -> Self {
        self.ks = ks;
        self.vs = vs;
        self
    }

    /// Query row `(h, i)` of batch row `b` with its band/padding key range.
    pub(crate) fn row(&self, b: usize, h: usize, i: usize) -> Row {
        let (lo, hi) = self.p.mask.row_range(&self.p.shape, b, i);
        Row { h, i, lo, hi }
    }

    /// The key range `[start, end)` that any of `rows` may see; `None` if none sees any key.
    pub(crate) fn key_span(rows: &[Row]) -> Option<(usize, usize)> {
        let live = rows.iter().filter(|r| r.lo < r.hi);
        let start = live.clone().map(|r| r.lo).min()?;
        let end = live.map(|r| r.hi).max()?;
        Some((start, end))
    }

    /// How the key tile `[t0, t1)` meets `rows`: `None` if every pair is masked by the band or
    /// padding, `Some(true)` if no pair needs masking, `Some(false)` if some do.
    pub(crate) fn classify(&self, rows: &[Row], t0: usize, t1: usize) -> Option<bool> {
        if !rows.iter().any(|r| r.lo < t1 && r.hi > t0 && r.lo < r.hi) {
            return None;
        }
        let full = self.p.mask.explicit.is_none()
            && !self.p.mask.hides_any(t0, t1)
            && rows.iter().all(|r| r.lo <= t0 && r.hi >= t1);
        Some(full)
    }

    /// Packs the query rows transposed into panels, `qp[(r/16)·d·16 + e·16 + r%16]`.
    pub(crate) fn pack_queries(&self, b: usize, rows: &[Row], qp: &mut [f32]) {
        let d = self.p.shape.d;
        let uniform = rows
            .windows(2)
            .all(|w| w[1].h == w[0].h && w[1].i == w[0].i + 1);
        if uniform {
            let off = self.qs.at(b, rows[0].h, rows[0].i);
            let src = MatRef::new(self.q, off, self.qs.row, rows.len(), d);
            self.kern.pack_panels(src, qp);
        } else {
            let panels = rows.len().div_ceil(NR);
            qp[..panels * d * NR].fill(0.0);
            for (lane, r) in rows.iter().enumerate() {
                let src = &self.q[self.qs.at(b, r.h, r.i)..][..d];
                let panel = &mut qp[(lane / NR) * d * NR..];
                for (e, &x) in src.iter().enumerate() {
                    panel[e * NR + lane % NR] = x;
                }
            }
        }
    }

    /// Soft-cap and mask a score tile in raw units. `at(r, jj)` is the tile index of row `r`
    /// (an index into `rows`) and key `t0 + jj`. With `full`, only the soft-cap is applied.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_scores(
        &self,
        b: usize,
        rows: &[Row],
        t0: usize,
        nk: usize,
        full: bool,
        tile: &mut [f32],
        at: impl Fn(usize, usize) -> usize,
    ) {
        let sh = &self.p.shape;
        if let Some(cap) = self.p.softcap {
            for r in 0..rows.len() {
                for jj in 0..nk {
                    let x = &mut tile[at(r, jj)];
                    *x = cap * (*x * self.scale / cap).tanh() / self.scale;
                }
            }
        }
        if full {
            return;
        }
        for (r, row) in rows.iter().enumerate() {
            let explicit = self.p.mask.explicit_row(sh, b, row.h, row.i);
            for jj in 0..nk {
                let j = t0 + jj;
                let x = &mut tile[at(r, jj)];
                if j < row.lo || j >= row.hi || self.p.mask.hides(j) {
                    *x = f32::NEG_INFINITY;
                    continue;
                }
                match explicit {
                    Some(ExplicitRow::Bool(m)) if !m[j] => *x = f32::NEG_INFINITY,
                    Some(ExplicitRow::Additive(m)) => *x += m[j] / self.scale,
                    _ => {}
                }
            }
        }
    }
}

/// The sizes of the few-rows orientation's scratch ([`Acc::tile_few`]) for `g` rows and
/// tiles of `bc` keys: queries, packed keys, scores, scores transposed, the output rows, and
/// per row the rescaling and the subtrahend of the exponentials.
fn few_scratch(g: usize, d: usize, d_v: usize, bc: usize) -> [usize; 7] {
    let kw = bc.div_ceil(NR) * NR;
    [g * d, kw * d, g * kw, kw * g, g * d_v, g, g]
}

/// The few-rows scratch `buf` cut in its parts ([`few_scratch`]).
fn few_parts(buf: &mut [f32], g: usize, d: usize, d_v: usize, bc: usize) -> [&mut [f32]; 7] {
    let mut rest = buf;
    few_scratch(g, d, d_v, bc).map(|n| {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        part
    })
}

/// Runs `f` on `len` floats of this thread's scratch memory, reused from call to call (a
/// prefill of short sequences runs thousands of tiles; allocating and zeroing each one's
/// buffers cost a fifth of the time). The contents are whatever the last user left: `f`
/// writes before it reads. Re-entrant: a nested call gets a buffer of its own.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    }
    let mut buf = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    POOL.with(|p| p.borrow_mut().push(buf));
    r
}

/// One query row: head, index, and the key range `[lo, hi)` its band and padding leave.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub h: usize,
    pub i: usize,
    pub lo: usize,
    pub hi: usize,
}

/// At most how many query rows [`Acc::tile_few`] takes (the rows of a block of the panel
/// micro-kernels).
pub(crate) const FEW_ROWS: usize = 8;

/// The online-softmax state of up to `width` query rows (one per lane): the output transposed
/// `ot[c][lane]` (unnormalised), the running maximum `m` (log2 units) and sum `l`.
pub(crate) struct Acc {
    pub width: usize,
    pub ot: Vec<f32>,
    pub m: Vec<f32>,
    pub l: Vec<f32>,
}

impl Acc {
    pub(crate) fn new(rows: usize, d_v: usize) -> Acc {
        let width = rows.div_ceil(NR).max(1) * NR;
        Acc {
            width,
            ot: vec![0.0; d_v * width],
            m: vec![f32::NEG_INFINITY; width],
            l: vec![0.0; width],
        }
    }

    /// Folds the keys `[k0, k1)` of key/value head `hk` into the state of `rows`, one tile
    /// of `bc` keys at a time, skipping tiles the band or padding removes.
    ///
    /// With the queries packed in `qp` (up to `width` rows, one a lane): a tile that the band
    /// cuts through is split in halves (down to 32 keys), so that little work is spent on
    /// pairs the mask removes. Without (`None`: at most [`FEW_ROWS`] rows, `d_v` a multiple
    /// of 16, an empty state): the other orientation, [`Acc::tile_few`].
    ///
    /// With `check`, each tile's keys and values (rows `d` and `d_v` apart, contiguous) are
    /// first checked for NaN/inf, while they are in cache for the products; returns false, and
    /// stops, at a tile that holds one (always true without `check`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &mut self,
        ctx: &Ctx,
        b: usize,
        hk: usize,
        rows: &[Row],
        qp: Option<&[f32]>,
        (k0, k1): (usize, usize),
        bc: usize,
        check: bool,
    ) -> bool {
        let sh = &ctx.p.shape;
        // a tile never holds more keys than the span (a short sequence's tile is small)
        let bc = bc.min(k1.saturating_sub(k0));
        let st_len = bc * self.width;
        let len = match qp {
            Some(_) => st_len + self.width,
            None => few_scratch(rows.len(), sh.d, sh.d_v, bc).iter().sum(),
        };
        with_scratch(len, |buf| {
            if qp.is_none() {
                self.start_few(ctx, b, rows, bc, buf);
            }
            let mut t0 = k0;
            while t0 < k1 {
                let t1 = (t0 + bc).min(k1);
                if check {
                    let k = &ctx.k[ctx.ks.at(b, hk, t0)..][..(t1 - t0) * sh.d];
                    let v = &ctx.v[ctx.vs.at(b, hk, t0)..][..(t1 - t0) * sh.d_v];
                    if !(ctx.kern.all_finite(k) && ctx.kern.all_finite(v)) {
                        return false;
                    }
                }
                match qp {
                    Some(qp) => {
                        let (st, alpha) = buf.split_at_mut(st_len);
                        self.tile(ctx, b, hk, rows, qp, (t0, t1), st, alpha);
                    }
                    None => self.tile_few(ctx, b, hk, rows, (t0, t1), bc, buf),
                }
                t0 = t1;
            }
            if qp.is_none() {
                self.end_few(rows.len(), sh.d, sh.d_v, bc, buf);
            }
            true
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn tile(
        &mut self,
        ctx: &Ctx,
        b: usize,
        hk: usize,
        rows: &[Row],
        qp: &[f32],
        (t0, t1): (usize, usize),
        st: &mut [f32],
        alpha: &mut [f32],
    ) {
        let sh = &ctx.p.shape;
        let w = self.width;
        let panels = w / NR;
        let nk = t1 - t0;
        let Some(full) = ctx.classify(rows, t0, t1) else {
            return;
        };
        if !full && nk > 32 && ctx.p.mask.explicit.is_none() {
            let mid = t0 + nk / 2;
            self.tile(ctx, b, hk, rows, qp, (t0, mid), st, alpha);
            self.tile(ctx, b, hk, rows, qp, (mid, t1), st, alpha);
            return;
        }
        // st[j][lane] = k_j · q_lane  (raw dot products)
        let k_off = ctx.ks.at(b, hk, t0);
        let keys = MatRef::new(ctx.k, k_off, ctx.ks.row, nk, sh.d);
        let scores = MatMut::new(st, 0, w, nk, w);
        ctx.kern.gemm_a(keys, qp, panels, scores, false);
        ctx.finish_scores(b, rows, t0, nk, full, st, |r, jj| jj * w + r);
        let scores = MatMut::new(st, 0, w, nk, w);
        ctx.kern
            .softmax_cols(scores, ctx.c, &mut self.m, &mut self.l, alpha);
        let ot = MatMut::dense(&mut self.ot, sh.d_v, w);
        ctx.kern.scale_cols(ot, alpha);
        // ot[c][lane] += Σ_j v_j[c] · p[j][lane]
        let v_off = ctx.vs.at(b, hk, t0);
        let values = MatRef::new(ctx.v, v_off, ctx.vs.row, nk, sh.d_v);
        let probs = MatRef::dense(st, nk, w);
        let ot = MatMut::dense(&mut self.ot, sh.d_v, w);
        ctx.kern.gemm_b(values, probs, ot);
    }

    /// The few-rows orientation's scratch before the first tile: the queries as rows, the
    /// output rows zero.
    fn start_few(&mut self, ctx: &Ctx, b: usize, rows: &[Row], bc: usize, buf: &mut [f32]) {
        let (d, d_v) = (ctx.p.shape.d, ctx.p.shape.d_v);
        let [q, _, _, _, o, _, _] = few_parts(buf, rows.len(), d, d_v, bc);
        for (r, row) in rows.iter().enumerate() {
            q[r * d..][..d].copy_from_slice(&ctx.q[ctx.qs.at(b, row.h, row.i)..][..d]);
        }
        o.fill(0.0);
    }

    /// One tile of keys for a few rows (a GQA group's queries while decoding), in the other
    /// orientation than [`Acc::tile`]: the queries as rows and the keys in the lanes, so that
    /// no lane computes for a query that is not there (a group of 3 in lanes of 16 wastes 13).
    /// `K` packed into panels, `S = Q·Kᵀ` (`rows × keys`), each row's online-softmax step,
    /// then `O += P·V` with `V` read as it is stored.
    #[allow(clippy::too_many_arguments)]
    fn tile_few(
        &mut self,
        ctx: &Ctx,
        b: usize,
        hk: usize,
        rows: &[Row],
        (t0, t1): (usize, usize),
        bc: usize,
        buf: &mut [f32],
    ) {
        let sh = &ctx.p.shape;
        let (g, d, d_v, nk) = (rows.len(), sh.d, sh.d_v, t1 - t0);
        let Some(full) = ctx.classify(rows, t0, t1) else {
            return;
        };
        let [q, kp, s, pt, o, alpha, sub] = few_parts(buf, g, d, d_v, bc);
        let panels = nk.div_ceil(NR);
        let w = panels * NR;
        // s[r][jj] = q_r · k_jj  (raw dot products), lanes past the tile masked
        let k = MatRef::new(ctx.k, ctx.ks.at(b, hk, t0), ctx.ks.row, nk, d);
        ctx.kern.pack_panels(k, kp);
        let scores = MatMut::new(&mut s[..], 0, w, g, w);
        ctx.kern
            .gemm_a(MatRef::dense(q, g, d), kp, panels, scores, false);
        ctx.finish_scores(b, rows, t0, nk, full, s, |r, jj| r * w + jj);
        for r in 0..g {
            s[r * w + nk..(r + 1) * w].fill(f32::NEG_INFINITY);
        }
        // each row's online-softmax step: m' = max(m, c·max s), alpha = 2^(m - m'),
        // s = 2^(c·s - m'), l' = alpha·l + Σ s (a row with nothing unmasked yet subtracts 0,
        // so that -inf scores give exactly 0)
        for r in 0..g {
            let mx = s[r * w..][..w]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let m_new = self.m[r].max(mx * ctx.c);
            sub[r] = if m_new == f32::NEG_INFINITY {
                0.0
            } else {
                m_new
            };
            alpha[r] = (self.m[r] - sub[r]).exp2();
            self.m[r] = m_new;
        }
        ctx.kern
            .exp_rows(MatMut::new(&mut s[..], 0, w, g, w), ctx.c, sub);
        // l, o rescaled, and the probabilities transposed: pt[jj][r]
        for r in 0..g {
            let row = &s[r * w..][..nk];
            self.l[r] = self.l[r] * alpha[r] + row.iter().sum::<f32>();
            o[r * d_v..][..d_v].iter_mut().for_each(|x| *x *= alpha[r]);
            for (jj, &p) in row.iter().enumerate() {
                pt[jj * g + r] = p;
            }
        }
        // o[r][c] += Σ_jj pt[jj][r] · v_jj[c]
        let v = MatRef::new(ctx.v, ctx.vs.at(b, hk, t0), ctx.vs.row, nk, d_v);
        let probs = MatRef::new(&pt[..], 0, g, nk, g);
        ctx.kern.gemm_b(probs, v, MatMut::dense(&mut o[..], g, d_v));
    }

    /// The few-rows orientation's output rows into the state as [`Acc::tile`] leaves it:
    /// `ot[c][lane]`.
    fn end_few(&mut self, g: usize, d: usize, d_v: usize, bc: usize, buf: &mut [f32]) {
        let [_, _, _, _, o, _, _] = few_parts(buf, g, d, d_v, bc);
        for r in 0..g {
            for c in 0..d_v {
                self.ot[c * self.width + r] = o[r * d_v + c];
            }
        }
    }

    /// Merges another state of the same rows (the same queries over other keys) into this one.
    pub(crate) fn merge(&mut self, other: &Acc) {
        for lane in 0..self.width {
            let m = self.m[lane].max(other.m[lane]);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let a = (self.m[lane] - m).exp2();
            let b = (other.m[lane] - m).exp2();
            self.l[lane] = self.l[lane] * a + other.l[lane] * b;
            for c in 0..self.ot.len() / self.width {
                let x = c * self.width + lane;
                self.ot[x] = self.ot[x] * a + other.ot[x] * b;
            }
            self.m[lane] = m;
        }
    }

    /// Writes the normalised output of lane `lane` into `out` (`d_v` elements; zeros when the
    /// row saw no key).
    pub(crate) fn write_row(&self, lane: usize, out: &mut [f32]) {
        let l = self.l[lane];
        if l == 0.0 {
            out.fill(0.0);
            return;
        }
        let inv = 1.0 / l;
        for (c, o) in out.iter_mut().enumerate() {
            *o = self.ot[c * self.width + lane] * inv;
        }
    }

    /// The log-sum-exps (natural log; `-inf` for a row that saw no key) of the first
    /// `lse.len()` lanes.
    pub(crate) fn lse(&self, kern: Kern, lse: &mut [f32]) {
        kern.lse(&self.m, &self.l, lse);
    }
}
