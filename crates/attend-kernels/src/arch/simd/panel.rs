//! The panel micro-kernels ([`crate::Kern::gemm_a`], [`crate::Kern::gemm_b`]), written once
//! over [`F32s`]; their scalar twins are in `arch/generic/panel.rs`.
//!
//! A block is `R` rows of `c` by `V` registers of lanes (one or two panels of 16): its `R × V`
//! accumulators stay in registers over the whole reduction, every element of `a` is
//! broadcast once and multiplied into `V` registers of the packed (or strided) `b`.
//! [`F32s::BLOCK_ROWS`] says how tall a block is on each instruction set.
//!
//! # Safety (every `unsafe fn` here)
//! The instruction set of `S` is enabled, and the views are as `crate::Kern`'s method of the
//! same name asserts.

use super::F32s;
use crate::mat::{MatMut, MatRef};
use crate::NR;

/// Calls `$mk::<G…, R, V>(args)` (`G…` the generic list in brackets: `[S]`, `[S, STREAM]`)
/// for a block of `$n` rows (1 to 12) and `$v` registers (1 or
/// 2) a row: the shapes [`F32s::BLOCK_ROWS`] can ask for.
macro_rules! block {
    ($mk:ident, [$($g:tt)*], $n:expr, $v:expr, ($($arg:expr),*)) => {
        match ($n, $v) {
            (8, 2) => $mk::<$($g)*, 8, 2>($($arg),*),
            (7, 2) => $mk::<$($g)*, 7, 2>($($arg),*),
            (6, 2) => $mk::<$($g)*, 6, 2>($($arg),*),
            (5, 2) => $mk::<$($g)*, 5, 2>($($arg),*),
            (4, 2) => $mk::<$($g)*, 4, 2>($($arg),*),
            (3, 2) => $mk::<$($g)*, 3, 2>($($arg),*),
            (2, 2) => $mk::<$($g)*, 2, 2>($($arg),*),
            (1, 2) => $mk::<$($g)*, 1, 2>($($arg),*),
            (12, 1) => $mk::<$($g)*, 12, 1>($($arg),*),
            (11, 1) => $mk::<$($g)*, 11, 1>($($arg),*),
            (10, 1) => $mk::<$($g)*, 10, 1>($($arg),*),
            (9, 1) => $mk::<$($g)*, 9, 1>($($arg),*),
            (8, 1) => $mk::<$($g)*, 8, 1>($($arg),*),
            (7, 1) => $mk::<$($g)*, 7, 1>($($arg),*),
            (6, 1) => $mk::<$($g)*, 6, 1>($($arg),*),
            (5, 1) => $mk::<$($g)*, 5, 1>($($arg),*),
            (4, 1) => $mk::<$($g)*, 4, 1>($($arg),*),
            (3, 1) => $mk::<$($g)*, 3, 1>($($arg),*),
            (2, 1) => $mk::<$($g)*, 2, 1>($($arg),*),
            (1, 1) => $mk::<$($g)*, 1, 1>($($arg),*),
            _ => unreachable!("a block shape F32s::BLOCK_ROWS does not ask for"),
        }
    };
}

/// The blocks of an `rows × panels·16` product, panel group by panel group, each group split
/// into blocks of [`F32s::BLOCK_ROWS`] rows: `(r, p, n, v)` is the block of rows `r..r+n`
/// and panels from `p`, `v` registers a row. (An iterator, not a closure: a closure's body
/// would be compiled apart from the entry's instruction set.)
struct Blocks {
    rows: usize,
    panels: usize,
    r: usize,
    p: usize,
    one: usize,
    two: usize,
    per_panel: usize,
}

impl Blocks {
    #[inline(always)]
    fn new<S: F32s>(rows: usize, panels: usize) -> Blocks {
        const {
            assert!(NR.is_multiple_of(S::LANES) && S::BLOCK_ROWS[0] > 0);
            assert!(NR / S::LANES <= 2 && (S::BLOCK_ROWS[1] == 0 || NR == S::LANES));
        };
        Blocks {
            rows,
            panels,
            r: 0,
            p: 0,
            one: S::BLOCK_ROWS[0],
            two: S::BLOCK_ROWS[1],
            per_panel: NR / S::LANES,
        }
    }
}

impl Iterator for Blocks {
    type Item = (usize, usize, usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.p >= self.panels || self.rows == 0 {
            return None;
        }
        let np = if self.panels - self.p >= 2 && self.two > 0 {
            2
        } else {
            1
        };
        let mr = if np == 2 { self.two } else { self.one };
        let n = (self.rows - self.r).min(mr);
        let item = (self.r, self.p, n, np * self.per_panel);
        self.r += n;
        if self.r == self.rows {
            self.r = 0;
            self.p += np;
        }
        Some(item)
    }
}

/// See [`crate::Kern::gemm_a`]; with `STREAM`, [`crate::Kern::gemm_a_stream`].
#[inline(always)]
pub(crate) unsafe fn gemm_a<S: F32s, const STREAM: bool>(
    a: MatRef<'_>,
    bp: MatRef<'_>,
    mut c: MatMut<'_>,
    acc: bool,
) {
    let (k_len, a_stride, c_stride, p_stride) = (a.cols(), a.stride(), c.stride(), bp.stride());
    let (ap, bpp, cp) = (a.ptr(), bp.ptr(), c.ptr_mut());
    for (r, p, n, v) in Blocks::new::<S>(a.rows(), bp.rows()) {
        // SAFETY: rows r..r+n of `a` and `c`, panels p.. of `bp` and `c`: inside the views
        unsafe {
            let a0 = ap.add(r * a_stride);
            let b0 = bpp.add(p * p_stride);
            let c0 = cp.add(r * c_stride + p * NR);
            block!(
                mk_a,
                [S, STREAM],
                n,
                v,
                (a0, a_stride, k_len, b0, p_stride, c0, c_stride, acc)
            )
        }
    }
}

/// See [`crate::Kern::gemm_b`].
#[inline(always)]
pub(crate) unsafe fn gemm_b<S: F32s>(a: MatRef<'_>, b: MatRef<'_>, mut c: MatMut<'_>) {
    let (t_len, a_stride, b_stride, c_stride) = (a.rows(), a.stride(), b.stride(), c.stride());
    let (ap, bp, cp) = (a.ptr(), b.ptr(), c.ptr_mut());
    for (r, p, n, v) in Blocks::new::<S>(c.rows(), c.cols() / NR) {
        // SAFETY: columns r..r+n of `a`, panels p.. of `b` and `c`, rows r..r+n of `c`
        unsafe {
            let a0 = ap.add(r);
            let b0 = bp.add(p * NR);
            let c0 = cp.add(r * c_stride + p * NR);
            block!(
                mk_b,
                [S],
                n,
                v,
                (a0, a_stride, t_len, b0, b_stride, c0, c_stride)
            )
        }
    }
}

/// How far ahead in a panel `gemm_a_stream` prefetches, in floats (2 KiB). Few activation rows
/// against a weight matrix read each panel once, from memory or L3, where this VM's hardware
/// prefetchers fall behind: MiniLM's one sentence went from 5.0–5.1 to 3.0–3.3 ms on an Intel
/// Xeon.
/// Many rows re-read each panel from L1 or L2, where the prefetches cost 4-5% (`gemm_a`).
const PANEL_PREFETCH: usize = 512;

/// `R` rows × `V` registers of `gemm_a`. Register `j` of a row is lanes `j·LANES ..` of the
/// block: panel `j·LANES / 16` of `bp` (each `k_len × 16`, `p_stride` apart), lane
/// `j·LANES % 16` in it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn mk_a<S: F32s, const STREAM: bool, const R: usize, const V: usize>(
    a: *const f32,
    a_stride: usize,
    k_len: usize,
    bp: *const f32,
    p_stride: usize,
    c: *mut f32,
    c_stride: usize,
    acc: bool,
) {
    unsafe {
        let mut s = [[S::zero(); V]; R];
        if acc {
            for (r, row) in s.iter_mut().enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = S::load(c.add(r * c_stride + j * S::LANES));
                }
            }
        }
        for k in 0..k_len {
            if STREAM {
                // each panel's line PANEL_PREFETCH floats ahead
                for panel in 0..(V * S::LANES).div_ceil(NR) {
                    let ahead = bp.wrapping_add(panel * p_stride + k * NR + PANEL_PREFETCH);
                    S::prefetch(ahead as *const u8);
                }
            }
            let mut b = [S::zero(); V];
            for (j, x) in b.iter_mut().enumerate() {
                // register j: panel j·LANES / 16, lane j·LANES % 16 in it
                let (panel, lane) = (j * S::LANES / NR, j * S::LANES % NR);
                *x = S::load(bp.add(panel * p_stride + k * NR + lane));
            }
            for (r, row) in s.iter_mut().enumerate() {
                let av = S::splat(*a.add(r * a_stride + k));
                for (x, &bv) in row.iter_mut().zip(&b) {
                    *x = av.mul_add(bv, *x);
                }
            }
        }
        store::<S, R, V>(&s, c, c_stride);
    }
}

/// `R` rows × `V` registers of `gemm_b`: register `j` is lanes `j·LANES ..` of `b` and `c`.
#[inline(always)]
unsafe fn mk_b<S: F32s, const R: usize, const V: usize>(
    a: *const f32,
    a_stride: usize,
    t_len: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    unsafe {
        let mut s = [[S::zero(); V]; R];
        for (r, row) in s.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = S::load(c.add(r * c_stride + j * S::LANES));
            }
        }
        for t in 0..t_len {
            let mut bv = [S::zero(); V];
            for (j, x) in bv.iter_mut().enumerate() {
                *x = S::load(b.add(t * b_stride + j * S::LANES));
            }
            let at = a.add(t * a_stride);
            for (r, row) in s.iter_mut().enumerate() {
                let av = S::splat(*at.add(r));
                for (x, &bj) in row.iter_mut().zip(&bv) {
                    *x = av.mul_add(bj, *x);
                }
            }
        }
        store::<S, R, V>(&s, c, c_stride);
    }
}

/// The block's accumulators to `c`.
#[inline(always)]
unsafe fn store<S: F32s, const R: usize, const V: usize>(
    s: &[[S; V]; R],
    c: *mut f32,
    c_stride: usize,
) {
    for (r, row) in s.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            // SAFETY: row r, lanes j·LANES.. of the block, inside `c`'s view
            unsafe { x.store(c.add(r * c_stride + j * S::LANES)) };
        }
    }
}
