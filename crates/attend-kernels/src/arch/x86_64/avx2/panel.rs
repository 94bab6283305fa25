//! AVX2 + FMA panel micro-kernels and packing (x86-64). Each has its scalar twin in
//! `arch/generic/panel.rs`.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves that the processor has AVX2 and FMA (it holds this instruction set's
//! table) and that the bounds `crate::Kern`'s method of the same name asserts hold.

use std::arch::x86_64::*;

use crate::NR;

/// Register rows of the `gemm_a` / `gemm_b` micro-kernels (6 rows × 16 lanes = 12 of the 16
/// ymm registers as accumulators).
const MR: usize = 6;

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
    // SAFETY: the caller proves AVX2+FMA; the dispatcher checked that rows × k_len of
    // `a` (from a_off, stride a_stride), panels × k_len × 16 of `bp` and rows × panels × 16
    // of `c` (stride c_stride) are in bounds, which is all the micro-kernels touch.
    unsafe {
        let ap = a.as_ptr().add(a_off);
        let cp = c.as_mut_ptr();
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(MR);
            for p in 0..panels {
                let bpp = bp.as_ptr().add(p * k_len * NR);
                let a0 = ap.add(r * a_stride);
                let c0 = cp.add(r * c_stride + p * NR);
                match n {
                    6 => mk_a::<6>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                    5 => mk_a::<5>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                    4 => mk_a::<4>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                    3 => mk_a::<3>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                    2 => mk_a::<2>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                    _ => mk_a::<1>(a0, a_stride, k_len, bpp, c0, c_stride, acc),
                }
            }
            r += n;
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
    // SAFETY: AVX2+FMA proven by the caller; the dispatcher checked t_len rows of `a` (rows
    // elements each), t_len rows of `b` (panels × 16 each) and rows rows of `c`.
    unsafe {
        let ap = a.as_ptr().add(a_off);
        let bp = b.as_ptr().add(b_off);
        let cp = c.as_mut_ptr();
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(MR);
            for p in 0..panels {
                let a0 = ap.add(r);
                let b0 = bp.add(p * NR);
                let c0 = cp.add(r * c_stride + p * NR);
                match n {
                    6 => mk_b::<6>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                    5 => mk_b::<5>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                    4 => mk_b::<4>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                    3 => mk_b::<3>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                    2 => mk_b::<2>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                    _ => mk_b::<1>(a0, a_stride, t_len, b0, b_stride, c0, c_stride),
                }
            }
            r += n;
        }
    }
}

pub(crate) unsafe fn pack_panels(
    src: &[f32],
    off: usize,
    stride: usize,
    n: usize,
    dim: usize,
    dst: &mut [f32],
) {
    // SAFETY: AVX2 proven by the caller; n rows of dim elements of `src` from `off` and
    // ceil(n/16) × dim × 16 of `dst` checked by the dispatcher.
    unsafe { pack_panels_raw(src.as_ptr().add(off), stride, n, dim, dst.as_mut_ptr()) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn mk_a<const R: usize>(
    a: *const f32,
    a_stride: usize,
    k_len: usize,
    bp: *const f32,
    c: *mut f32,
    c_stride: usize,
    acc: bool,
) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    if acc {
        for r in 0..R {
            lo[r] = _mm256_loadu_ps(c.add(r * c_stride));
            hi[r] = _mm256_loadu_ps(c.add(r * c_stride + 8));
        }
    }
    for k in 0..k_len {
        let b0 = _mm256_loadu_ps(bp.add(k * NR));
        let b1 = _mm256_loadu_ps(bp.add(k * NR + 8));
        for r in 0..R {
            let av = _mm256_broadcast_ss(&*a.add(r * a_stride + k));
            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(c.add(r * c_stride), lo[r]);
        _mm256_storeu_ps(c.add(r * c_stride + 8), hi[r]);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn mk_b<const R: usize>(
    a: *const f32,
    a_stride: usize,
    t_len: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    c_stride: usize,
) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    for r in 0..R {
        lo[r] = _mm256_loadu_ps(c.add(r * c_stride));
        hi[r] = _mm256_loadu_ps(c.add(r * c_stride + 8));
    }
    for t in 0..t_len {
        let b0 = _mm256_loadu_ps(b.add(t * b_stride));
        let b1 = _mm256_loadu_ps(b.add(t * b_stride + 8));
        let at = a.add(t * a_stride);
        for r in 0..R {
            let av = _mm256_broadcast_ss(&*at.add(r));
            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(c.add(r * c_stride), lo[r]);
        _mm256_storeu_ps(c.add(r * c_stride + 8), hi[r]);
    }
}

/// 8×8 transpose of eight rows.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

#[target_feature(enable = "avx2")]
unsafe fn pack_panels_raw(src: *const f32, stride: usize, n: usize, dim: usize, dst: *mut f32) {
    let panels = n.div_ceil(NR);
    for p in 0..panels {
        let panel = dst.add(p * dim * NR);
        for half in 0..2 {
            let t0 = p * NR + half * 8;
            let lane0 = half * 8;
            let full = t0 + 8 <= n;
            let mut e = 0;
            if full {
                while e + 8 <= dim {
                    let mut rows = [_mm256_setzero_ps(); 8];
                    for (i, row) in rows.iter_mut().enumerate() {
                        *row = _mm256_loadu_ps(src.add((t0 + i) * stride + e));
                    }
                    let cols = transpose8(rows);
                    for (j, col) in cols.iter().enumerate() {
                        _mm256_storeu_ps(panel.add((e + j) * NR + lane0), *col);
                    }
                    e += 8;
                }
            }
            for ee in e..dim {
                for i in 0..8 {
                    let t = t0 + i;
                    *panel.add(ee * NR + lane0 + i) = if t < n {
                        *src.add(t * stride + ee)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
