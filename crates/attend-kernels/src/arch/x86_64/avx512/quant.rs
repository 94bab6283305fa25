//! AVX-512 VNNI kernel of repacked weights ([`crate::Kern::dot_tiled`]): sixteen weight rows in
//! the lanes of a `zmm`, `vpdpbusd` against four activation bytes broadcast. Its scalar twin
//! is `dot_tiled` in `arch/generic/quant.rs`; the block-by-block dots are the generic ones of
//! `arch/simd/quant.rs`.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX-512F/BW/VL/VNNI besides AVX2, FMA and F16C (it holds the VNNI table)
//! and that `crate::Kern::dot_tiled`'s bounds hold.

use std::arch::x86_64::*;

use crate::mat::MatMut;
use crate::quant::BlockQ8;
use crate::tiled::{Bits, Group};

/// The repacked kernel is a SIMD build on this table (the models repack their weights for it).
pub(crate) const TILED_NATIVE: bool = true;

/// [`crate::Kern::dot_tiled`] with `vpdpbusd`: sixteen weight rows in the lanes, four
/// activation bytes broadcast, up to eight activation rows per pass over the group's blocks
/// (a block's values are unpacked once for eight rows).
pub(crate) unsafe fn dot_tiled(
    grp: Group<'_>,
    a: &[&[BlockQ8]],
    sums: &[&[f32]],
    mut out: MatMut<'_>,
) {
    let (blocks, lanes, stride) = (grp.blocks, out.cols(), out.stride());
    let mask: __mmask16 = if lanes >= 16 {
        0xffff
    } else {
        ((1u32 << lanes) - 1) as __mmask16
    };
    let (v, s, o) = (grp.vals.as_ptr(), grp.scales.as_ptr(), out.ptr_mut());
    macro_rules! go {
        ($bits:expr, $halves:expr) => {
            for (c, a) in a.chunks(8).enumerate() {
                let sm = if $halves { &sums[8 * c..] } else { &[][..] };
                // SAFETY: the caller's contract (module docs) is the kernels' contract: `out`
                // holds every activation row's 16 lanes at `t·stride`.
                unsafe {
                    let o = o.add(8 * c * stride);
                    match a.len() {
                        1 => tile::<$bits, $halves, 1>(v, s, blocks, a, sm, o, stride, mask),
                        2 => tile::<$bits, $halves, 2>(v, s, blocks, a, sm, o, stride, mask),
                        3 => tile::<$bits, $halves, 3>(v, s, blocks, a, sm, o, stride, mask),
                        4 => tile::<$bits, $halves, 4>(v, s, blocks, a, sm, o, stride, mask),
                        5 => tile::<$bits, $halves, 5>(v, s, blocks, a, sm, o, stride, mask),
                        6 => tile::<$bits, $halves, 6>(v, s, blocks, a, sm, o, stride, mask),
                        7 => tile::<$bits, $halves, 7>(v, s, blocks, a, sm, o, stride, mask),
                        _ => tile::<$bits, $halves, 8>(v, s, blocks, a, sm, o, stride, mask),
                    }
                }
            }
        };
    }
    match (grp.bits, grp.halves) {
        (Bits::Four, false) => go!(4, false),
        (Bits::Five, false) => go!(5, false),
        (Bits::Six, false) => go!(6, false),
        (Bits::Eight, false) => go!(8, false),
        (Bits::Four, true) => go!(4, true),
        (Bits::Five, true) => go!(5, true),
        (Bits::Six, true) => go!(6, true),
        (Bits::Eight, true) => go!(8, true),
    }
}

/// One block's eight registers of unsigned values (module docs of `crate::tiled`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack<const BITS: u8>(p: *const u8) -> [__m512i; 8] {
    let mut w = [_mm512_setzero_si512(); 8];
    if BITS == 8 {
        for (j, w) in w.iter_mut().enumerate() {
            *w = _mm512_loadu_si512(p.add(64 * j) as *const _);
        }
        return w;
    }
    let m4 = _mm512_set1_epi8(0x0f);
    for j in 0..4 {
        let x = _mm512_loadu_si512(p.add(64 * j) as *const _);
        w[j] = _mm512_and_si512(x, m4);
        w[j + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
    }
    if BITS >= 5 {
        let b4 = _mm512_set1_epi8(0x10);
        for (j, w) in w.iter_mut().enumerate() {
            let k: __mmask64 = (p.add(256 + 8 * j) as *const u64).read_unaligned();
            *w = _mm512_mask_add_epi8(*w, k, *w, b4);
        }
    }
    if BITS == 6 {
        let b5 = _mm512_set1_epi8(0x20);
        for (j, w) in w.iter_mut().enumerate() {
            let k: __mmask64 = (p.add(320 + 8 * j) as *const u64).read_unaligned();
            *w = _mm512_mask_add_epi8(*w, k, *w, b5);
        }
    }
    w
}

/// `N` activation rows times one group of sixteen repacked rows, over every block.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const BITS: u8, const HALVES: bool, const N: usize>(
    v: *const u8,
    s: *const f32,
    blocks: usize,
    a: &[&[BlockQ8]],
    sums: &[&[f32]],
    out: *mut f32,
    stride: usize,
    mask: __mmask16,
) {
    let vb = match BITS {
        4 => Bits::Four,
        5 => Bits::Five,
        6 => Bits::Six,
        _ => Bits::Eight,
    }
    .value_bytes();
    let sb = if HALVES { 64 } else { 32 };
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..blocks {
        let w = unpack::<BITS>(v.add(b * vb));
        let sp = s.add(b * sb);
        #[allow(clippy::needless_range_loop)] // `t` indexes `a`, `sums` and `acc`
        for t in 0..N {
            let blk = a.get_unchecked(t).get_unchecked(b);
            let q = blk.q.as_ptr() as *const i32;
            let x = |j: usize| _mm512_set1_epi32(q.add(j).read_unaligned());
            let z = _mm512_setzero_si512();
            let mut d0 = _mm512_dpbusd_epi32(z, w[0], x(0));
            let mut d1 = _mm512_dpbusd_epi32(z, w[4], x(4));
            d0 = _mm512_dpbusd_epi32(d0, w[1], x(1));
            d1 = _mm512_dpbusd_epi32(d1, w[5], x(5));
            d0 = _mm512_dpbusd_epi32(d0, w[2], x(2));
            d1 = _mm512_dpbusd_epi32(d1, w[6], x(6));
            d0 = _mm512_dpbusd_epi32(d0, w[3], x(3));
            d1 = _mm512_dpbusd_epi32(d1, w[7], x(7));
            let da = _mm512_set1_ps(blk.d);
            if HALVES {
                let sm = sums.get_unchecked(t);
                let sc0 = _mm512_mul_ps(_mm512_loadu_ps(sp), da);
                let sc1 = _mm512_mul_ps(_mm512_loadu_ps(sp.add(16)), da);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), sc0, acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), sc1, acc[t]);
                let s0 = _mm512_set1_ps(*sm.get_unchecked(2 * b));
                let s1 = _mm512_set1_ps(*sm.get_unchecked(2 * b + 1));
                acc[t] = _mm512_fnmadd_ps(_mm512_loadu_ps(sp.add(32)), s0, acc[t]);
                acc[t] = _mm512_fnmadd_ps(_mm512_loadu_ps(sp.add(48)), s1, acc[t]);
            } else {
                let sc = _mm512_mul_ps(_mm512_loadu_ps(sp), da);
                let dp = _mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1));
                acc[t] = _mm512_fmadd_ps(dp, sc, acc[t]);
                let st = _mm512_set1_ps(blk.s);
                acc[t] = _mm512_fnmadd_ps(_mm512_loadu_ps(sp.add(16)), st, acc[t]);
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.add(t * stride), mask, *acc);
    }
}
