//! Decoding: a per-layer key/value cache and attention of a few new queries against it.
//!
//! [`LayerCache`] stores keys and values as `[b, h_kv, capacity, d]`; appending grows the
//! capacity geometrically (amortised O(1) per position, no quadratic copying), and it can be
//! truncated (to roll back a speculative or rejected continuation) or reset. A sliding-window
//! layer forgets the positions its window can no longer see ([`LayerCache::forget_before`]):
//! its memory then stays bounded by the window however long the text grows. Attention over the
//! cache runs the fused kernel with the cache's strides — no copy — and, with few queries, the
//! grouped path: each GQA group's queries share one pass over K and V, and a long cache is
//! split across threads, so the cost is bound by reading K and V once.
//!
//! ```
//! use attend::{decode::LayerCache, AttnParams, Layout, Mask, Shape};
//! let (h, h_kv, d) = (4, 2, 8);
//! let mut cache = LayerCache::new(1, h_kv, d, d)?;
//! for step in 0..3 {
//!     let k = vec![0.1 * step as f32; h_kv * d]; // one new position, [b, 1, h_kv, d]
//!     cache.append(&k, &k, 1, Layout::Bshd)?;
//!     let q = vec![0.5; h * d];
//!     let p = AttnParams::new(Shape::new(1, h, 1, cache.len(), d).with_kv_heads(h_kv))
//!         .layout(Layout::Bshd)
//!         .mask(Mask::causal());
//!     let o = cache.attend(&p, &q)?;
//!     assert_eq!(o.out.len(), h * d);
//! }
//! # Ok::<(), attend::Error>(())
//! ```

use crate::params::{AttnParams, Layout, Strides};
use crate::shape::{check_finite, check_len, product, zeros};
use crate::tile::Ctx;
use crate::{Error, Output, Result};

/// Keys and values of one attention layer, `[b, h_kv, capacity, d]`.
#[derive(Clone, Debug)]
pub struct LayerCache {
    b: usize,
    h_kv: usize,
    d: usize,
    d_v: usize,
    /// Live positions.
    len: usize,
    /// Where, in `0..cap`, the first live position is stored.
    head: usize,
    /// Positions forgotten from the front: the first live one is position `first`.
    first: usize,
    cap: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl LayerCache {
    /// An empty cache for `b` batch rows, `h_kv` key/value heads, head dims `d` and `d_v`.
    pub fn new(b: usize, h_kv: usize, d: usize, d_v: usize) -> Result<Self> {
        for (dim, x) in [("b", b), ("h_kv", h_kv), ("d", d), ("d_v", d_v)] {
            if x == 0 {
                return Err(Error::ZeroDim { dim });
            }
        }
        // one position of every batch row and head must be a buffer that can exist
        crate::shape::check_size("KV cache keys", product(&[b, h_kv, d]))?;
        crate::shape::check_size("KV cache values", product(&[b, h_kv, d_v]))?;
        Ok(LayerCache {
            b,
            h_kv,
            d,
            d_v,
            len: 0,
            head: 0,
            first: 0,
            cap: 0,
            k: Vec::new(),
            v: Vec::new(),
        })
    }

    /// Positions stored (the live ones: [`LayerCache::first`]`..`[`LayerCache::end`]); the
    /// `s_kv` of attention over the cache.
    pub fn len(&self) -> usize {
        self.len
    }
    /// The position of the first stored key: how many were forgotten from the front
    /// ([`LayerCache::forget_before`]); 0 for a cache that never forgets.
    pub fn first(&self) -> usize {
        self.first
    }
    /// Positions appended so far (and not truncated): the next one appended is this position.
    pub fn end(&self) -> usize {
        self.first + self.len
    }
    /// Whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes of keys and values a new query reads here: every live position of every
    /// batch row and head.
    pub fn live_bytes(&self) -> usize {
        self.b * self.h_kv * self.len * (self.d + self.d_v) * std::mem::size_of::<f32>()
    }
    /// Positions that fit before the next growth.
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.h_kv
    }
    /// `(b, h_kv, d, d_v)`: the geometry it was made with.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        (self.b, self.h_kv, self.d, self.d_v)
    }

    /// Reserves room for `extra` more positions. A request that no memory could hold is
    /// [`Error::TooLarge`] or [`Error::OutOfMemory`]; the cache is unchanged then.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let need = self.len.checked_add(extra).ok_or(Error::TooLarge {
            what: "KV cache",
            elements: usize::MAX,
        })?;
        if self.head + need <= self.cap {
            return Ok(());
        }
        if need <= self.cap && self.head >= need / 2 {
            // forgotten positions free room enough: move the live ones to the front (each
            // position moves at most once per `need / 2` appended: amortised O(1))
            self.compact();
            return Ok(());
        }
        // geometric growth, but never past what was asked when doubling would not fit
        let doubled = self.cap.saturating_mul(2).max(16);
        let cap = if product(&[self.b, self.h_kv, doubled, self.d.max(self.d_v)])
            <= crate::shape::MAX_ELEMENTS
        {
            need.max(doubled)
        } else {
            need
        };
        let (len, head, old_cap) = (self.len, self.head, self.cap);
        let grow = |old: &[f32], dim: usize, what| -> Result<Vec<f32>> {
            let mut new = zeros(what, product(&[self.b, self.h_kv, cap, dim]))?;
            if len == 0 {
                return Ok(new);
            }
            for bh in 0..self.b * self.h_kv {
                new[bh * cap * dim..][..len * dim]
                    .copy_from_slice(&old[(bh * old_cap + head) * dim..][..len * dim]);
            }
            Ok(new)
        };
        let k = grow(&self.k, self.d, "KV cache keys")?;
        let v = grow(&self.v, self.d_v, "KV cache values")?;
        self.k = k;
        self.v = v;
        self.cap = cap;
        self.head = 0;
        Ok(())
    }

    /// Moves the live positions to the front of every head's rows.
    fn compact(&mut self) {
        let (len, head, cap) = (self.len, self.head, self.cap);
        if head == 0 {
            return;
        }
        for (buf, dim) in [(&mut self.k, self.d), (&mut self.v, self.d_v)] {
            for bh in 0..self.b * self.h_kv {
                let base = bh * cap * dim;
                buf.copy_within(base + head * dim..base + (head + len) * dim, base);
            }
        }
        self.head = 0;
    }

    /// Forgets every stored position before `pos` (a sliding window of `w` keys, before
    /// appending position `p`, needs only `p + 1 - w..`): memory is reused, not freed, and
    /// attention over the cache then sees only what is left — with a sliding-window mask
    /// aligned bottom-right, exactly what the window would have kept. A `pos` at or before
    /// [`LayerCache::first`] forgets nothing; past [`LayerCache::end`] it forgets everything.
    pub fn forget_before(&mut self, pos: usize) {
        let drop = pos.saturating_sub(self.first).min(self.len);
        self.head += drop;
        self.len -= drop;
        self.first += drop;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Appends `n` new positions; `k` and `v` are `[b, n, h_kv, d]` (`Layout::Bshd`) or
    /// `[b, h_kv, n, d]` (`Layout::Bhsd`).
    pub fn append(&mut self, k: &[f32], v: &[f32], n: usize, layout: Layout) -> Result<()> {
        check_len("k", k, product(&[self.b, n, self.h_kv, self.d]))?;
        check_len("v", v, product(&[self.b, n, self.h_kv, self.d_v]))?;
        check_finite("k", k)?;
        check_finite("v", v)?;
        if n == 0 {
            // nothing to copy (and no loop over batch rows and heads for it)
            return Ok(());
        }
        self.reserve(n)?;
        let (ks, vs) = (
            Strides::of(layout, self.h_kv, n, self.d),
            Strides::of(layout, self.h_kv, n, self.d_v),
        );
        let (mk, mv) = (self.k_strides(), self.v_strides());
        for b in 0..self.b {
            for h in 0..self.h_kv {
                for t in 0..n {
                    let at = self.head + self.len + t;
                    self.k[mk.at(b, h, at)..][..self.d]
                        .copy_from_slice(&k[ks.at(b, h, t)..][..self.d]);
                    self.v[mv.at(b, h, at)..][..self.d_v]
                        .copy_from_slice(&v[vs.at(b, h, t)..][..self.d_v]);
                }
            }
        }
        self.len += n;
        Ok(())
    }

    /// Keeps positions `..len` (of those appended: [`LayerCache::end`] becomes `len`).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.end() {
            return Err(Error::Cache(format!(
                "cannot truncate to {len} positions: only {} are stored",
                self.end()
            )));
        }
        if len < self.first {
            return Err(Error::Cache(format!(
                "cannot truncate to {len} positions: positions before {} were forgotten",
                self.first
            )));
        }
        self.len = len - self.first;
        Ok(())
    }

    /// Forgets every position (keeps the memory).
    pub fn reset(&mut self) {
        self.len = 0;
        self.head = 0;
        self.first = 0;
    }

    /// The live keys and values: the buffers from the first live position on (with the
    /// strides of [`LayerCache::k_strides`], every head's rows start `head` rows in).
    fn live(&self) -> (&[f32], &[f32]) {
        (
            &self.k[self.head * self.d..],
            &self.v[self.head * self.d_v..],
        )
    }

    fn k_strides(&self) -> Strides {
        Strides {
            batch: self.h_kv * self.cap * self.d,
            head: self.cap * self.d,
            row: self.d,
        }
    }
    fn v_strides(&self) -> Strides {
        Strides {
            batch: self.h_kv * self.cap * self.d_v,
            head: self.cap * self.d_v,
            row: self.d_v,
        }
    }

    /// Attention of `q` (`p.shape.s_q` new queries, in `p.layout`) over every stored position.
    /// `p.shape` must agree with the cache: `b`, `h_kv`, `d`, `d_v`, and `s_kv = len()`. With
    /// `Mask::causal()` the queries are the last `s_q` stored positions.
    pub fn attend(&self, p: &AttnParams, q: &[f32]) -> Result<Output> {
        // every check before anything is allocated from the shape: the output's size follows
        // from `q`'s, which the caller holds
        self.check(p, q)?;
        let mut out = zeros("out", p.shape.o_len())?;
        let mut lse = zeros("lse", p.shape.lse_len())?;
        self.attend_into(p, q, &mut out, &mut lse)?;
        Ok(Output { out, lse })
    }

    /// [`LayerCache::attend`] into caller-owned buffers.
    pub fn attend_into(
        &self,
        p: &AttnParams,
        q: &[f32],
        out: &mut [f32],
        lse: &mut [f32],
    ) -> Result<()> {
        self.check(p, q)?;
        let sh = p.shape;
        check_len("out", out, sh.o_len())?;
        check_len("lse", lse, sh.lse_len())?;
        let (k, v) = self.live();
        let ctx = Ctx::new(p, q, k, v)?.with_kv_strides(self.k_strides(), self.v_strides());
        crate::fused::run(&ctx, out, lse);
        Ok(())
    }

    /// The parameters against the cache's geometry and `q` against them.
    fn check(&self, p: &AttnParams, q: &[f32]) -> Result<()> {
        p.validate()?;
        let sh = p.shape;
        for (what, expected, got) in [
            ("b", self.b, sh.b),
            ("h_kv", self.h_kv, sh.h_kv),
            ("d", self.d, sh.d),
            ("d_v", self.d_v, sh.d_v),
            ("s_kv", self.len, sh.s_kv),
        ] {
            if expected != got {
                return Err(Error::ShapeMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        check_len("q", q, sh.q_len())?;
        check_finite("q", q)
    }

    /// The attention probabilities of `heads` (all when `None`) for queries `q` over the stored
    /// positions, `[b, heads, s_q, len()]`, recomputed exactly from the log-sum-exp that
    /// [`LayerCache::attend_into`] returned for the same `q`.
    pub fn probabilities_from_lse(
        &self,
        p: &AttnParams,
        q: &[f32],
        lse: &[f32],
        heads: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        p.validate()?;
        let sh = p.shape;
        if self.len != sh.s_kv {
            return Err(Error::ShapeMismatch {
                what: "s_kv",
                expected: self.len,
                got: sh.s_kv,
            });
        }
        check_len("q", q, sh.q_len())?;
        check_len("lse", lse, sh.lse_len())?;
        let heads = crate::fused::chosen_heads(heads, sh.h)?;
        let (k, v) = self.live();
        let ctx = Ctx::new(p, q, k, v)?.with_kv_strides(self.k_strides(), self.v_strides());
        crate::fused::probabilities_of(&ctx, lse, &heads)
    }
}

/// The caches of every layer of a model.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// `n_layers` empty layer caches of the same geometry.
    /// The caches are empty (no memory is taken until positions are appended), but the list
    /// of `n_layers` is allocated fallibly: an impossible count is an error, not an abort.
    pub fn new(n_layers: usize, b: usize, h_kv: usize, d: usize, d_v: usize) -> Result<Self> {
        let layer = LayerCache::new(b, h_kv, d, d_v)?;
        let mut layers = Vec::new();
        layers
            .try_reserve_exact(n_layers)
            .map_err(|_| Error::OutOfMemory {
                what: "KV cache layers",
                elements: n_layers,
            })?;
        layers.resize(n_layers, layer);
        Ok(KvCache { layers })
    }
    /// Layer `l`'s cache ([`Error::Cache`] past the last layer).
    pub fn layer(&self, l: usize) -> Result<&LayerCache> {
        let n = self.layers.len();
        self.layers.get(l).ok_or_else(|| no_layer(l, n))
    }
    /// Layer `l`'s cache, mutably.
    pub fn layer_mut(&mut self, l: usize) -> Result<&mut LayerCache> {
        let n = self.layers.len();
        self.layers.get_mut(l).ok_or_else(|| no_layer(l, n))
    }
    /// Layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    /// Positions appended (to layer 0; [`LayerCache::end`]): the next one is this position,
    /// whatever sliding-window layers have forgotten.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.end())
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes of keys and values a new token's attention reads, over every layer.
    pub fn live_bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::live_bytes).sum()
    }
    /// Keeps positions `..len` in every layer.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.truncate(len))
    }
    /// Empties every layer.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(LayerCache::reset);
    }
}

fn no_layer(l: usize, n: usize) -> Error {
    Error::Cache(format!(
        "layer {l} does not exist: the cache has {n} layers"
    ))
}
