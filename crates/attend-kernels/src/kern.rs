//! Capability detection, the instruction-set choice, and the checked dispatcher.
//!
//! The kernels work on *panels*: `NR = 16` lanes, padded with zeros where a tile is narrower.
//! - [`Kern::gemm_a`]: `c[r][l] = Σ_k a[r][k] · bp[k][l]` with `bp` packed panel by panel;
//! - [`Kern::gemm_b`]: `c[r][l] += Σ_t a[t][r] · b[t][l]`;
//! - [`Kern::softmax_cols`]: one online-softmax step with the rows of a tile as keys and the
//!   lanes as queries;
//! - [`Kern::exp_rows`], [`Kern::scale_cols`], [`Kern::pack_panels`]: the glue;
//! - [`Kern::dot`]: quantised weight rows times 8-bit activation rows;
//! - [`Kern::gelu`], [`Kern::epilogue`]: element-wise work of the linear layers;
//!   [`Kern::all_finite`]: the NaN/inf check of inputs; [`Kern::lse`]: the online softmax's
//!   final log-sum-exp.
//!
//! Invariant: every method of [`Kern`] asserts the bounds its kernel touches before the
//! `unsafe` call; a violated bound is a bug of the caller inside attend, and panics here.

use std::sync::OnceLock;

use crate::arch::{self, Table};
use crate::mat::{MatMut, MatRef};
use crate::quant::{BlockQ8, BlockQ8K, KBlocks, QBlocks, QK};
use crate::tiled::{TiledMatrix, TILE_ROWS};
use crate::{Error, Result};

/// Lanes of a panel.
pub const NR: usize = 16;

/// What this processor offers, detected once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// AVX2.
    pub avx2: bool,
    /// FMA3.
    pub fma: bool,
    /// F16C (half-precision conversions).
    pub f16c: bool,
    /// AVX-512 Foundation (the panel and softmax kernels; the `gemm` crate's sgemm detects it
    /// on its own).
    pub avx512f: bool,
    /// AVX-512 BW, VL and VNNI, all three (the `vpdpbusd` quantised dots).
    pub avx512vnni: bool,
}

impl Features {
    /// The processor's features (detected on the first call, then cached).
    pub fn get() -> Features {
        static F: OnceLock<Features> = OnceLock::new();
        *F.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                Features {
                    avx2: std::is_x86_feature_detected!("avx2"),
                    fma: std::is_x86_feature_detected!("fma"),
                    f16c: std::is_x86_feature_detected!("f16c"),
                    avx512f: std::is_x86_feature_detected!("avx512f"),
                    avx512vnni: std::is_x86_feature_detected!("avx512bw")
                        && std::is_x86_feature_detected!("avx512vl")
                        && std::is_x86_feature_detected!("avx512vnni"),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Features::default()
            }
        })
    }
}

/// An instruction set for every kernel family at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isa {
    /// The best this processor has (detected once, at run time).
    #[default]
    Auto,
    /// Portable scalar Rust: the safe twin of every SIMD kernel.
    Scalar,
    /// AVX2 with FMA and F16C (x86-64).
    Avx2,
    /// AVX-512F for the panel and softmax kernels, AVX2 for the rest (x86-64).
    Avx512,
}

impl Isa {
    /// The concrete instruction sets this processor can run, scalar first.
    pub fn available() -> Vec<Isa> {
        arch::ALL
            .iter()
            .filter_map(|t| t())
            .map(|t| t.isa)
            .collect()
    }

    /// The kernels for this instruction set; an error if the processor lacks it.
    pub fn kern(self) -> Result<Kern> {
        if self == Isa::Auto {
            return Ok(auto());
        }
        arch::ALL
            .iter()
            .filter_map(|t| t())
            .find(|t| t.isa == self)
            .map(|t| Kern { t })
            .ok_or(Error::IsaUnavailable(self))
    }

    /// The instruction set `Auto` resolves to on this processor.
    pub fn detected() -> Isa {
        auto().t.isa
    }
}

/// What `Isa::Auto` resolves to, once: [`force_isa`]'s choice, else the instruction set the
/// environment variable `ATTEND_ISA` names (`generic`, `avx2`, `avx512`) when this processor
/// runs it, else the best available.
static BEST: OnceLock<&'static Table> = OnceLock::new();

fn auto() -> Kern {
    let t = BEST.get_or_init(|| {
        let best = arch::ALL.iter().rev().find_map(|t| t());
        let named = std::env::var("ATTEND_ISA").ok().and_then(|name| {
            let isa = match name.as_str() {
                "generic" => Isa::Scalar,
                "avx2" => Isa::Avx2,
                "avx512" => Isa::Avx512,
                _ => return None,
            };
            isa.kern().ok().map(|k| k.t)
        });
        named.or(best).unwrap_or(&arch::generic::TABLE)
    });
    Kern { t }
}

/// Makes `Isa::Auto` mean `isa` for the rest of the process (a benchmark run of one
/// instruction set: `attend bench --isa avx2`). Must come before the first kernel call
/// resolves `Auto`; an instruction set this processor lacks, or a second, different choice,
/// is an error.
pub fn force_isa(isa: Isa) -> Result<()> {
    let want = isa.kern()?.t;
    let got = BEST.get_or_init(|| want);
    if std::ptr::eq(*got, want) {
        Ok(())
    } else {
        Err(Error::IsaUnavailable(isa))
    }
}

/// A resolved instruction set: holding one proves the processor runs its kernels.
#[derive(Clone, Copy)]
pub struct Kern {
    t: &'static Table,
}

impl std::fmt::Debug for Kern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kern({:?})", self.t.isa)
    }
}

impl Default for Kern {
    fn default() -> Kern {
        auto()
    }
}

/// The bounds of a quantised product: whole weight rows of `per_row` blocks, activation rows
/// of `per_row` blocks each, one output per (weight row, activation row).
fn check_rows<T>(w_blocks: usize, per_row: usize, a: &[&[T]], out: &[f32]) {
    assert!(per_row > 0 && w_blocks.is_multiple_of(per_row));
    assert!(a.iter().all(|a| a.len() == per_row));
    assert!(out.len() == w_blocks / per_row * a.len());
}

impl Kern {
    /// The best kernels this processor runs (`Isa::Auto`), detected once.
    pub fn best() -> Kern {
        auto()
    }

    /// The instruction set these kernels are for.
    pub fn isa(self) -> Isa {
        self.t.isa
    }

    /// `c[r][p·16 + l] (+)= Σ_k a[r][k] · bp[p·K·16 + k·16 + l]` for every row `r` of `a`
    /// (`K = a.cols()` elements each), panel `p < panels` and lane `l < 16`: `bp` holds
    /// `panels` packed panels of `K × 16` ([`Kern::pack_panels`]), `c` is `a.rows() ×
    /// panels·16`; `acc` adds to `c` instead of overwriting it.
    #[inline]
    pub fn gemm_a(self, a: MatRef<'_>, bp: &[f32], panels: usize, c: MatMut<'_>, acc: bool) {
        self.gemm_a_panels(a, MatRef::dense(bp, panels, a.cols() * NR), c, acc)
    }

    /// [`Kern::gemm_a`] with the panels anywhere: panel `p` is row `p` of `bp` (`K × 16`
    /// elements each, at `bp`'s stride), as when a packed matrix's panels are read a chunk of
    /// `K` at a time.
    #[inline]
    pub fn gemm_a_panels(self, a: MatRef<'_>, bp: MatRef<'_>, c: MatMut<'_>, acc: bool) {
        self.gemm_a_by(self.t.gemm_a, a, bp, c, acc)
    }

    /// [`Kern::gemm_a_panels`] for panels read once, front to back, from memory (a few rows
    /// against a large matrix): each panel is prefetched ahead. The same results; where the
    /// panels are re-read from cache (many rows), the prefetches only cost.
    #[inline]
    pub fn gemm_a_stream(self, a: MatRef<'_>, bp: MatRef<'_>, c: MatMut<'_>, acc: bool) {
        self.gemm_a_by(self.t.gemm_a_stream, a, bp, c, acc)
    }

    /// `gemm_a` or `gemm_a_stream` of this table, after the shape checks both need.
    #[inline]
    fn gemm_a_by(self, f: arch::GemmA, a: MatRef<'_>, bp: MatRef<'_>, c: MatMut<'_>, acc: bool) {
        assert!(bp.cols() == a.cols() * NR);
        assert!(c.rows() == a.rows() && c.cols() == bp.rows() * NR);
        // SAFETY: `f` is an entry of the table, which proves the processor; the views checked
        // their extents, and the shapes are asserted.
        unsafe { f(a, bp, c, acc) }
    }

    /// `c[r][l] += Σ_t a[t][r] · b[t][l]`: `a` is `T × R`, `b` is `T × W` with `W` a multiple
    /// of 16, `c` is `R × W`.
    #[inline]
    pub fn gemm_b(self, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>) {
        assert!(a.rows() == b.rows() && b.cols().is_multiple_of(NR));
        assert!(c.rows() == a.cols() && c.cols() == b.cols());
        // SAFETY: as in `gemm_a`.
        unsafe { (self.t.gemm_b)(a, b, c) }
    }

    /// One online-softmax step over a tile `st` (rows: keys, lanes: queries; its width a
    /// multiple of 16), scores in raw units and `c = scale·log2(e)`:
    /// `m' = max(m, c·max_r st)`, `alpha = 2^(m - m')`, `st = 2^(c·st - m')`,
    /// `l' = alpha·l + Σ_r st`. A lane whose `m'` is `-inf` gets `st = 0` and `alpha = 0`.
    #[inline]
    pub fn softmax_cols(
        self,
        st: MatMut<'_>,
        c: f32,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        let width = st.cols();
        assert!(width.is_multiple_of(NR));
        assert!(m.len() >= width && l.len() >= width && alpha.len() >= width);
        // SAFETY: as in `gemm_a`.
        unsafe { (self.t.softmax_cols)(st, c, m, l, alpha) }
    }

    /// `x[r][l] *= alpha[l]` (the width of `x` a multiple of 16).
    #[inline]
    pub fn scale_cols(self, x: MatMut<'_>, alpha: &[f32]) {
        assert!(x.cols().is_multiple_of(NR) && alpha.len() >= x.cols());
        // SAFETY: as in `gemm_a`.
        unsafe { (self.t.scale_cols)(x, alpha) }
    }

    /// `s[r][l] = 2^(c·s[r][l] - sub[r])` (the width of `s` a multiple of 16; `-inf` scores
    /// give exactly 0; `sub = +inf` zeroes a row).
    #[inline]
    pub fn exp_rows(self, s: MatMut<'_>, c: f32, sub: &[f32]) {
        assert!(s.cols().is_multiple_of(NR) && sub.len() >= s.rows());
        // SAFETY: as in `gemm_a`.
        unsafe { (self.t.exp_rows)(s, c, sub) }
    }

    /// Packs the rows of `src` (`n` rows of `dim` elements) transposed into panels of 16 rows:
    /// `dst[(t/16)·dim·16 + e·16 + t%16] = src[t][e]`, zero-padding the last panel.
    #[inline]
    pub fn pack_panels(self, src: MatRef<'_>, dst: &mut [f32]) {
        assert!(src.rows().div_ceil(NR) * src.cols() * NR <= dst.len());
        // SAFETY: as in `gemm_a`.
        unsafe { (self.t.pack_panels)(src, dst) }
    }

    /// `out[r·n + t] = Σ_blocks w_r · a[t]` for every weight row `r` of `w` (`per_row` blocks
    /// each) and every activation row `t` of `a` (`n = a.len()` of them, `per_row` blocks each):
    /// each weight row's blocks are unpacked once for up to four activation rows.
    #[inline]
    pub fn dot_rows(self, w: QBlocks<'_>, per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
        check_rows(w.len(), per_row, a, out);
        if a.is_empty() {
            return; // nothing to write (and no row of zero activations to step over)
        }
        // SAFETY: the table proves the processor; every activation has one block per weight
        // block of a row and `out` one element per (row, activation), all the kernels touch.
        unsafe {
            match w {
                QBlocks::Q4_0(w) => (self.t.dot_q4_0)(w, per_row, a, out),
                QBlocks::Q4_1(w) => (self.t.dot_q4_1)(w, per_row, a, out),
                QBlocks::Q5_0(w) => (self.t.dot_q5_0)(w, per_row, a, out),
                QBlocks::Q8_0(w) => (self.t.dot_q8_0)(w, per_row, a, out),
            }
        }
    }

    /// [`Kern::dot_rows`] for k-quant weights and `Q8_K` activations (256 elements a block).
    #[inline]
    pub fn dot_rows_k(self, w: KBlocks<'_>, per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
        check_rows(w.len(), per_row, a, out);
        if a.is_empty() {
            return;
        }
        // SAFETY: as in `dot_rows`.
        unsafe {
            match w {
                KBlocks::Q4K(w) => (self.t.dot_q4_k)(w, per_row, a, out),
                KBlocks::Q5K(w) => (self.t.dot_q5_k)(w, per_row, a, out),
                KBlocks::Q6K(w) => (self.t.dot_q6_k)(w, per_row, a, out),
            }
        }
    }

    /// Whether [`Kern::dot_tiled`] is a SIMD build here (AVX-512 VNNI): repacking weights
    /// into a [`TiledMatrix`] pays only then.
    pub fn tiles_natively(self) -> bool {
        self.t.tiled_native
    }

    /// `out[t][i] = row_{16g+i} · a[t]` for `i < out.cols()` (at most 16, and at most the
    /// rows left in group `g`) and every activation row `t` of `a` (`m.blocks()` blocks each,
    /// `out.rows()` of them): one group of [`TiledMatrix`] rows. `sums[t]` are `a[t]`'s sums
    /// per 16 (`d·Σq`, two a block) when `m.halves()`, and empty otherwise.
    #[inline]
    pub fn dot_tiled(
        self,
        m: &TiledMatrix,
        g: usize,
        a: &[&[BlockQ8]],
        sums: &[&[f32]],
        out: MatMut<'_>,
    ) {
        let lanes = out.cols();
        assert!(g < m.groups() && lanes <= TILE_ROWS && g * TILE_ROWS + lanes <= m.rows());
        assert!(a.iter().all(|a| a.len() == m.blocks()));
        if m.halves() {
            assert!(sums.len() == a.len() && sums.iter().all(|s| s.len() == 2 * m.blocks()));
        }
        assert!(out.rows() == a.len() && (a.len() <= 1 || lanes <= out.stride()));
        // SAFETY: the table proves the processor; the group's values and scales are whole
        // (`TiledMatrix` made them), every activation and sum row is as long as the kernel
        // reads, and the view `out` holds `lanes` elements of every row.
        unsafe { (self.t.dot_tiled)(m.group(g), a, sums, out) }
    }

    /// `out[t] = Σ_blocks w · a[t]` for one quantised weight row and every activation row
    /// (each with one block per weight block).
    #[inline]
    pub fn dot(self, w: QBlocks<'_>, a: &[&[BlockQ8]], out: &mut [f32]) {
        assert!(!w.is_empty(), "a weight row of no blocks");
        self.dot_rows(w, w.len(), a, out);
    }

    /// The exact GELU, `x·Φ(x)` ([`crate::math::gelu_erf`]), in place, on this thread.
    #[inline]
    pub fn gelu(self, x: &mut [f32]) {
        // SAFETY: the table proves the processor; the kernel touches `x` only.
        unsafe { (self.t.gelu)(x) }
    }

    /// `v = gelu?(v + bias) + residual` on one piece of a linear layer's output; `bias` and
    /// `residual` are as long as `v`.
    #[inline]
    pub fn epilogue(
        self,
        v: &mut [f32],
        bias: Option<&[f32]>,
        gelu: bool,
        residual: Option<&[f32]>,
    ) {
        assert!(bias.is_none_or(|b| b.len() >= v.len()));
        assert!(residual.is_none_or(|r| r.len() >= v.len()));
        // SAFETY: the table proves the processor; the slices are at least as long as `v`.
        unsafe { (self.t.epilogue)(v, bias, gelu, residual) }
    }

    /// True when `x` holds no NaN and no infinity (the check of every input attend takes), on
    /// this thread.
    #[inline]
    pub fn all_finite(self, x: &[f32]) -> bool {
        // SAFETY: the table proves the processor; the kernel reads `x` only.
        unsafe { (self.t.all_finite)(x) }
    }

    /// Each 32 values of `x` to a [`BlockQ8`] of `out` (`x.len() / 32` of them; a shorter
    /// tail is not read): `d = max|x|/127`, `q = round(x/d)` half away from zero,
    /// `s = d·Σq` — the same bits on every instruction set. `x` must be finite (check with
    /// [`Kern::all_finite`]; [`crate::quant::quantize_q8`] does).
    #[inline]
    pub fn quantize_q8(self, x: &[f32], out: &mut [BlockQ8]) {
        assert!(
            out.len() == x.len() / QK,
            "{} blocks for {} values",
            out.len(),
            x.len()
        );
        // SAFETY: the table proves the processor; the kernel reads whole blocks of `x` and
        // writes `out`, as long as it is.
        unsafe { (self.t.quantize_q8)(x, out) }
    }

    /// `out[i] = (m[i] + log2 l[i]) · ln 2`, the natural log-sum-exp of an online-softmax
    /// state (running maximum `m` in log2 units, sum `l` ≥ 0), `-inf` where `l[i]` is 0; the
    /// log2 within 2e-7 relative, the result as exact as the f32 sum `m + log2 l` allows.
    #[inline]
    pub fn lse(self, m: &[f32], l: &[f32], out: &mut [f32]) {
        assert!(m.len() >= out.len() && l.len() >= out.len());
        // SAFETY: the table proves the processor; `m` and `l` are as long as `out`.
        unsafe { (self.t.lse)(m, l, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::generic::panel as generic_panel;
    use crate::arch::generic::softmax as generic_softmax;

    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        crate::testing::uniform(n, seed)
            .iter()
            .map(|x| 2.0 * x)
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn every_kernel_matches_its_scalar_twin() {
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            let shapes = [
                (1, 1, 1),
                (5, 7, 2),
                (6, 64, 4),
                (13, 33, 3),
                (7, 3, 1),
                (25, 16, 5),
            ];
            for (rows, klen, panels) in shapes {
                let a = rnd(rows * klen + 5, 1);
                let bp = rnd(panels * klen * NR, 2);
                let st = panels * NR + 3;
                let mut c1 = vec![0.0; rows * st];
                let mut c2 = c1.clone();
                for acc in [false, true] {
                    let av = MatRef::new(&a, 2, klen, rows, klen);
                    k.gemm_a(
                        av,
                        &bp,
                        panels,
                        MatMut::new(&mut c1, 0, st, rows, panels * NR),
                        acc,
                    );
                    let c = MatMut::new(&mut c2, 0, st, rows, panels * NR);
                    let bv = MatRef::dense(&bp, panels, klen * NR);
                    generic_panel::gemm_a(av, bv, c, acc);
                    close(&c1, &c2, 1e-5);
                    // the streaming build: the same bits as the plain one
                    let mut c3 = vec![0.0; c1.len()];
                    if acc {
                        c3.copy_from_slice(&c2);
                        c1.copy_from_slice(&c2);
                        k.gemm_a_panels(
                            av,
                            bv,
                            MatMut::new(&mut c1, 0, st, rows, panels * NR),
                            acc,
                        );
                    }
                    k.gemm_a_stream(av, bv, MatMut::new(&mut c3, 0, st, rows, panels * NR), acc);
                    assert_eq!(c1, c3, "{isa:?} gemm_a_stream");
                }

                let a = rnd(klen * (rows + 2), 3);
                let b = rnd(klen * panels * NR + 1, 4);
                let mut c1 = rnd(rows * panels * NR, 5);
                let mut c2 = c1.clone();
                let av = MatRef::new(&a, 1, rows + 1, klen, rows);
                let bv = MatRef::new(&b, 1, panels * NR, klen, panels * NR);
                k.gemm_b(av, bv, MatMut::dense(&mut c1, rows, panels * NR));
                generic_panel::gemm_b(av, bv, MatMut::dense(&mut c2, rows, panels * NR));
                close(&c1, &c2, 1e-5);

                let src = rnd(rows * 40 + 9, 6);
                let mut d1 = vec![1.0; rows.div_ceil(NR) * klen * NR];
                let mut d2 = vec![2.0; d1.len()];
                let sv = MatRef::new(&src, 3, 40, rows, klen.min(37));
                k.pack_panels(sv, &mut d1);
                generic_panel::pack_panels(sv, &mut d2);
                let used = rows.div_ceil(NR) * klen.min(37) * NR;
                assert_eq!(&d1[..used], &d2[..used]);
            }
            for (rows, stride) in [(1, 32), (3, 48), (64, 32)] {
                let width = 32;
                let mut s1: Vec<f32> = rnd(rows * stride, 7).iter().map(|x| x * 30.0).collect();
                s1[0] = f32::NEG_INFINITY;
                for r in 0..rows {
                    s1[r * stride + 5] = f32::NEG_INFINITY; // lane 5 fully masked
                }
                let mut s2 = s1.clone();
                let mut m1 = vec![f32::NEG_INFINITY; width];
                m1[3] = 4.0;
                let (mut l1, mut a1) = (vec![1.0; width], vec![0.0; width]);
                let (mut m2, mut l2, mut a2) = (m1.clone(), l1.clone(), a1.clone());
                let t1 = MatMut::new(&mut s1, 0, stride, rows, width);
                k.softmax_cols(t1, 1.3, &mut m1, &mut l1, &mut a1);
                let t2 = MatMut::new(&mut s2, 0, stride, rows, width);
                generic_softmax::softmax_cols(t2, 1.3, &mut m2, &mut l2, &mut a2);
                close(&s1, &s2, 1e-6);
                close(&l1, &l2, 1e-6);
                close(&a1, &a2, 1e-6);
                assert_eq!(m1, m2);
                assert!(s1.iter().all(|x| x.is_finite()));
                for r in 0..rows {
                    assert_eq!(s1[r * stride + 5], 0.0);
                }
                let mut x1 = rnd(rows * stride, 8);
                let mut x2 = x1.clone();
                let sub: Vec<f32> = (0..rows).map(|r| r as f32 - 1.0).collect();
                k.exp_rows(MatMut::new(&mut x1, 0, stride, rows, width), 2.0, &sub);
                generic_softmax::exp_rows(MatMut::new(&mut x2, 0, stride, rows, width), 2.0, &sub);
                close(&x1, &x2, 1e-6);
                k.scale_cols(MatMut::new(&mut x1, 0, stride, rows, width), &a1);
                generic_softmax::scale_cols(MatMut::new(&mut x2, 0, stride, rows, width), &a2);
                close(&x1, &x2, 1e-6);
            }
        }
    }

    /// Activations to `Q8` on every instruction set: the scalar twin's bits, on random blocks,
    /// blocks of zeros, of subnormals, of values at ±127 steps and of ties at half a step.
    #[test]
    fn quantize_q8_matches_its_twin_on_every_isa() {
        let mut x = crate::testing::uniform(32 * 64, 3);
        x.iter_mut().skip(320).take(32).for_each(|v| *v = 0.0);
        x.iter_mut().skip(352).take(32).for_each(|v| *v = 1e-40);
        for (i, v) in x.iter_mut().skip(384).take(32).enumerate() {
            *v = (i as f32 - 16.0) * 127.0 / 16.0;
        }
        for (i, v) in x.iter_mut().skip(416).take(32).enumerate() {
            // ties: 127 at the maximum, so a step is 1 and x = k + ½ rounds away from zero
            *v = if i == 0 { 127.0 } else { i as f32 - 16.5 };
        }
        x.extend([1.0; 7]); // a tail shorter than a block is not read
        let scalar = Isa::Scalar.kern().unwrap();
        let mut want = vec![BlockQ8::default(); x.len() / 32];
        scalar.quantize_q8(&x, &mut want);
        assert_eq!(want[13].q[0], 127);
        assert_eq!(want[13].q[1], -16); // -15.5 → -16
        assert_eq!(want[13].q[17], 1); // 0.5 → 1
        assert!(want[11].q.iter().all(|&q| q == 0) && want[11].d == 0.0);
        for isa in Isa::available() {
            let mut got = vec![BlockQ8::default(); x.len() / 32];
            isa.kern().unwrap().quantize_q8(&x, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn all_finite_matches_the_standard_library_on_every_isa() {
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45, // subnormal
            -0.0,
        ];
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            for n in [0, 1, 7, 1023, 1024, 1025, 5000] {
                let clean = rnd(n, 9);
                assert!(k.all_finite(&clean), "{isa:?} n={n}");
                for at in [0, n / 2, n.saturating_sub(1)]
                    .into_iter()
                    .filter(|&i| i < n)
                {
                    for x in specials {
                        let mut v = clean.clone();
                        v[at] = x;
                        assert_eq!(
                            k.all_finite(&v),
                            x.is_finite(),
                            "{isa:?} n={n} at={at} x={x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lse_matches_the_standard_library_on_every_isa() {
        // sums as the online softmax leaves them (1 to a few thousand), and the edges
        let mut l: Vec<f32> = (0..4000).map(|i| 1.0 + i as f32 * 0.7731).collect();
        l.extend([
            0.0,
            f32::MIN_POSITIVE,
            0.5,
            // either side of √½ and √2, where the reduction switches
            f32::from_bits(std::f32::consts::FRAC_1_SQRT_2.to_bits() - 1),
            f32::from_bits(std::f32::consts::FRAC_1_SQRT_2.to_bits() + 1),
            f32::from_bits(std::f32::consts::SQRT_2.to_bits() - 1),
            f32::from_bits(std::f32::consts::SQRT_2.to_bits() + 1),
            2.0,
        ]);
        l.extend([1e-30, 3e30, f32::MAX]);
        let shifted: Vec<f32> = (0..l.len()).map(|i| (i % 37) as f32 * 3.1 - 60.0).collect();
        // with m = 0 the tolerance below is the log2's own accuracy
        for (m, isa) in [vec![0.0; l.len()], shifted].into_iter().flat_map(|m| {
            Isa::available()
                .into_iter()
                .map(move |isa| (m.clone(), isa))
        }) {
            let k = isa.kern().unwrap();
            for n in [0, 1, 7, 8, 9, 17, l.len()] {
                let mut out = vec![0.0; n];
                k.lse(&m, &l, &mut out);
                for i in 0..n {
                    let want = if l[i] == 0.0 {
                        f64::NEG_INFINITY
                    } else {
                        (m[i] as f64 + (l[i] as f64).log2()) * std::f64::consts::LN_2
                    };
                    let got = out[i] as f64;
                    // the f32 sum m + log2 l rounds at the larger term's scale, as with libm
                    let scale = (m[i].abs() as f64 + (l[i] as f64).log2().abs()).max(1.0);
                    assert!(
                        got == want || (got - want).abs() <= 3e-7 * scale,
                        "{isa:?} m={} l={}: {got} vs {want}",
                        m[i],
                        l[i]
                    );
                }
            }
        }
    }

    #[test]
    fn exp2_is_accurate_and_exact_at_the_edges() {
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            let xs: Vec<f32> = (0..NR * 200).map(|i| -140.0 + i as f32 * 0.0537).collect();
            let mut s = xs.clone();
            k.exp_rows(MatMut::dense(&mut s, 200, NR), 1.0, &[0.0; 200]);
            for (x, y) in xs.iter().zip(&s) {
                let want = (*x as f64).exp2();
                if *x < -126.0 {
                    assert!(*y == 0.0 || (*y as f64 - want).abs() < 1e-37, "{x}: {y}");
                } else {
                    assert!(
                        ((*y as f64) - want).abs() <= 4e-7 * want,
                        "{x}: {y} vs {want}"
                    );
                }
            }
            let mut z = vec![f32::NEG_INFINITY; NR];
            k.exp_rows(MatMut::dense(&mut z, 1, NR), 1.0, &[0.0]);
            assert!(z.iter().all(|&v| v == 0.0));
            let mut z = vec![3.0; NR];
            k.exp_rows(MatMut::dense(&mut z, 1, NR), 1.0, &[f32::INFINITY]);
            assert!(z.iter().all(|&v| v == 0.0));
        }
    }
}
