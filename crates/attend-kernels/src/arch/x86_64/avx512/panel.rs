//! AVX-512F panel micro-kernels (x86-64): a panel of 16 lanes is one `zmm` register. Each has
//! its scalar twin in `arch/generic/panel.rs`; packing is the AVX2 build.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves that the processor has AVX-512F, AVX2 and FMA (it holds this instruction
//! set's table) and that the bounds `crate::Kern`'s method of the same name asserts hold.

use std::arch::x86_64::*;

use crate::NR;

pub(crate) use crate::arch::x86_64::avx2::panel::pack_panels;

/// Register rows of a block when two panels are computed together (8 × 2 accumulators).
const MR2: usize = 8;
/// Register rows of a block of a single panel (12 accumulators: enough independent FMAs to
/// hide their latency).
const MR1: usize = 12;

/// Calls `$mk::<R, P>` for the block of `$n` rows (`1 ..= 12`) and `$p` panels (1 or 2).
macro_rules! block {
    ($mk:ident, $n:expr, $p:expr, ($($arg:expr),*)) => {
        match ($n, $p) {
            (8, 2) => $mk::<8, 2>($($arg),*),
            (7, 2) => $mk::<7, 2>($($arg),*),
            (6, 2) => $mk::<6, 2>($($arg),*),
            (5, 2) => $mk::<5, 2>($($arg),*),
            (4, 2) => $mk::<4, 2>($($arg),*),
            (3, 2) => $mk::<3, 2>($($arg),*),
            (2, 2) => $mk::<2, 2>($($arg),*),
            (_, 2) => $mk::<1, 2>($($arg),*),
            (12, _) => $mk::<12, 1>($($arg),*),
            (11, _) => $mk::<11, 1>($($arg),*),
            (10, _) => $mk::<10, 1>($($arg),*),
            (9, _) => $mk::<9, 1>($($arg),*),
            (8, _) => $mk::<8, 1>($($arg),*),
            (7, _) => $mk::<7, 1>($($arg),*),
            (6, _) => $mk::<6, 1>($($arg),*),
            (5, _) => $mk::<5, 1>($($arg),*),
            (4, _) => $mk::<4, 1>($($arg),*),
            (3, _) => $mk::<3, 1>($($arg),*),
            (2, _) => $mk::<2, 1>($($arg),*),
            _ => $mk::<1, 1>($($arg),*),
        }
    };
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_a(
    a: &[f32],
    a_off: usize,
    a_stride: usize,
    rows: usize,
    k_len: usize,
    bp: &[f32],
    panels: usize,
    c: &mut [f32],
    c_stride: usize,
    acc: bool,
) {
    // SAFETY: the caller proves AVX-512F+FMA; the dispatcher checked that rows × k_len of
    // `a` (from a_off, stride a_stride), panels × k_len × 16 of `bp` and rows × panels × 16
    // of `c` (stride c_stride) are in bounds, which is all the micro-kernels touch.
    unsafe {
        let ap = a.as_ptr().add(a_off);
        let cp = c.as_mut_ptr();
        let mut p = 0;
        while p < panels {
            let np = if panels - p >= 2 { 2 } else { 1 };
            let mr = if np == 2 { MR2 } else { MR1 };
            let bpp = bp.as_ptr().add(p * k_len * NR);
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(mr);
                let a0 = ap.add(r * a_stride);
                let c0 = cp.add(r * c_stride + p * NR);
                block!(mk_a, n, np, (a0, a_stride, k_len, bpp, c0, c_stride, acc));
                r += n;
            }
            p += np;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_b(
    a: &[f32],
    a_off: usize,
    a_stride: usize,
    rows: usize,
    t_len: usize,
    b: &[f32],
    b_off: usize,
    b_stride: usize,
    panels: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    // SAFETY: AVX-512F+FMA proven by the caller; the dispatcher checked t_len rows of `a`
    // (rows elements each), t_len rows of `b` (panels × 16 each) and rows rows of `c`.
    unsafe {
        let ap = a.as_ptr().add(a_off);
        let bp = b.as_ptr().add(b_off);
        let cp = c.as_mut_ptr();
        let mut p = 0;
        while p < panels {
            let np = if panels - p >= 2 { 2 } else { 1 };
            let mr = if np == 2 { MR2 } else { MR1 };
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(mr);
                let a0 = ap.add(r);
                let b0 = bp.add(p * NR);
                let c0 = cp.add(r * c_stride + p * NR);
                block!(
                    mk_b,
                    n,
                    np,
                    (a0, a_stride, t_len, b0, b_stride, c0, c_stride)
                );
                r += n;
            }
            p += np;
        }
    }
}

/// `R` rows × `P` panels of `gemm_a`: `bp` holds `P` consecutive packed panels.
#[target_feature(enable = "avx512f,fma")]
unsafe fn mk_a<const R: usize, const P: usize>(
    a: *const f32,
    a_stride: usize,
    k_len: usize,
    bp: *const f32,
    c: *mut f32,
    c_stride: usize,
    acc: bool,
) {
    let mut s = [[_mm512_setzero_ps(); P]; R];
    if acc {
        for (r, row) in s.iter_mut().enumerate() {
            for (p, x) in row.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(c.add(r * c_stride + p * NR));
            }
        }
    }
    for k in 0..k_len {
        let mut b = [_mm512_setzero_ps(); P];
        for (p, x) in b.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(bp.add(p * k_len * NR + k * NR));
        }
        for (r, row) in s.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * a_stride + k));
            for (x, &bv) in row.iter_mut().zip(&b) {
                *x = _mm512_fmadd_ps(av, bv, *x);
            }
        }
    }
    for (r, row) in s.iter().enumerate() {
        for (p, &x) in row.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * c_stride + p * NR), x);
        }
    }
}

/// `R` rows × `P` panels of `gemm_b`: the panels are consecutive 16-lane groups of `b` and `c`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn mk_b<const R: usize, const P: usize>(
    a: *const f32,
    a_stride: usize,
    t_len: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    let mut s = [[_mm512_setzero_ps(); P]; R];
    for (r, row) in s.iter_mut().enumerate() {
        for (p, x) in row.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(c.add(r * c_stride + p * NR));
        }
    }
    for t in 0..t_len {
        let mut bv = [_mm512_setzero_ps(); P];
        for (p, x) in bv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(b.add(t * b_stride + p * NR));
        }
        let at = a.add(t * a_stride);
        for (r, row) in s.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*at.add(r));
            for (x, &b) in row.iter_mut().zip(&bv) {
                *x = _mm512_fmadd_ps(av, b, *x);
            }
        }
    }
    for (r, row) in s.iter().enumerate() {
        for (p, &x) in row.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * c_stride + p * NR), x);
        }
    }
}
