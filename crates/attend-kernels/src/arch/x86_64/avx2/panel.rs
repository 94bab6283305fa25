//! AVX2 packing into panels (x86-64), also the AVX-512 build's; its scalar twin is
//! `pack_panels` in `arch/generic/panel.rs`. (The panel micro-kernels are the generic ones of
//! `arch/simd/panel.rs`.)
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves that the processor has AVX2 (it holds a table with this entry) and that
//! the bounds `crate::Kern::pack_panels` asserts hold.

use std::arch::x86_64::*;

use crate::mat::MatRef;
use crate::NR;

pub(crate) unsafe fn pack_panels(src: MatRef<'_>, dst: &mut [f32]) {
    // SAFETY: AVX2 proven by the caller; the view's rows and ceil(n/16) × dim × 16 of `dst`
    // checked by the dispatcher.
    unsafe {
        pack_panels_raw(
            src.ptr(),
            src.stride(),
            src.rows(),
            src.cols(),
            dst.as_mut_ptr(),
        )
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
