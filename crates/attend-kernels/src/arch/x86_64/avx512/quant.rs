//! AVX-512 VNNI quantised dot products (x86-64) for the 32-element types that prompt
//! processing spends its time in (`Q5_0`, `Q8_0`): `vpdpbusd` (unsigned × signed bytes, four
//! products summed into each `i32` lane) replaces AVX2's `vpmaddubsw` + `vpmaddwd` pair, and
//! the weights are made signed once per block (`|w|` and the sign moved onto the activation),
//! so one multiply-accumulate per (weight block, activation block) is left. The other types
//! are the AVX2 builds. Each kernel's scalar twin sits in `arch/generic/quant.rs`.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX-512F/BW/VL/VNNI besides AVX2, FMA and F16C (it holds the VNNI table)
//! and that `crate::Kern::dot_rows`' bounds hold, as for the AVX2 kernels.

use std::arch::x86_64::*;

use super::super::avx2::quant::{bits_to_bytes, f16, hsum, nibbles};
pub(crate) use super::super::avx2::quant::{dot_q4_0, dot_q4_1, dot_q4_k, dot_q5_k, dot_q6_k};
use crate::quant::{BlockQ5_0, BlockQ8, BlockQ8_0};
use crate::tiled::Bits;

/// Every weight row of `$w` (`$per_row` blocks each) times every activation row of `$a`,
/// eight activation rows per pass over a weight row (AVX-512's 32 vector registers hold the
/// sixteen accumulators; a block's weights are unpacked once for eight products), into `$out`
/// (`[rows × n]`).
macro_rules! by_rows8 {
    ($k:ident, $w:expr, $per_row:expr, $a:expr, $out:expr) => {{
        let (w, per_row, a, out) = ($w, $per_row, $a, $out);
        let n = a.len();
        for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(n)) {
            for (a, o) in a.chunks(8).zip(o.chunks_mut(8)) {
                // SAFETY: the caller's contract (module docs) is the kernels' contract.
                unsafe {
                    match a.len() {
                        1 => o.copy_from_slice(&$k::<1>(wr, [a[0]])),
                        2 => o.copy_from_slice(&$k::<2>(wr, [a[0], a[1]])),
                        3 => o.copy_from_slice(&$k::<3>(wr, [a[0], a[1], a[2]])),
                        4 => o.copy_from_slice(&$k::<4>(wr, std::array::from_fn(|i| a[i]))),
                        5 => o.copy_from_slice(&$k::<5>(wr, std::array::from_fn(|i| a[i]))),
                        6 => o.copy_from_slice(&$k::<6>(wr, std::array::from_fn(|i| a[i]))),
                        7 => o.copy_from_slice(&$k::<7>(wr, std::array::from_fn(|i| a[i]))),
                        _ => o.copy_from_slice(&$k::<8>(wr, std::array::from_fn(|i| a[i]))),
                    }
                }
            }
        }
    }};
}

pub(crate) unsafe fn dot_q5_0(w: &[BlockQ5_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    by_rows8!(q5_0, w, per_row, a, out)
}

pub(crate) unsafe fn dot_q8_0(w: &[BlockQ8_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    by_rows8!(q8_0, w, per_row, a, out)
}

/// `Σ |w|·(a with w's sign)` of one block as 8 `f32` partial sums: exact integers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn signed_dot(abs_w: __m256i, w: __m256i, a: __m256i) -> __m256 {
    let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, _mm256_sign_epi8(a, w));
    _mm256_cvtepi32_ps(s)
}

/// The signed weights of a `Q5_0` block: `(|q − 16|, q − 16)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_weights(blk: &BlockQ5_0) -> (__m256i, __m256i) {
    let fifth = _mm256_and_si256(
        bits_to_bytes(u32::from_le_bytes(blk.qh)),
        _mm256_set1_epi8(0x10),
    );
    let qw = _mm256_sub_epi8(
        _mm256_or_si256(nibbles(blk.qs.as_ptr()), fifth),
        _mm256_set1_epi8(16),
    );
    (_mm256_abs_epi8(qw), qw)
}

/// The signed weights of a `Q8_0` block: `(|q|, q)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_weights(blk: &BlockQ8_0) -> (__m256i, __m256i) {
    let qw = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
    (_mm256_abs_epi8(qw), qw)
}

/// A row of blocks (scale `d(block)`, signed weights `weights(block)`) times `N` activation
/// rows: two blocks per step into two named accumulators (an indexed pair would live on the
/// stack), then the odd one out.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row<B, const N: usize>(
    w: &[B],
    a: [&[BlockQ8]; N],
    d: impl Fn(&B) -> [u8; 2],
    weights: impl Fn(&B) -> (__m256i, __m256i),
) -> [f32; N] {
    let mut acc0 = [_mm256_setzero_ps(); N];
    let mut acc1 = [_mm256_setzero_ps(); N];
    let step = |acc: &mut [__m256; N], i: usize, blk: &B| {
        let dw = f16(d(blk));
        let (aw, qw) = weights(blk);
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
            let v = signed_dot(aw, qw, qa);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * b.d), v, acc[t]);
        }
    };
    let pairs = w.len() / 2;
    for p in 0..pairs {
        step(&mut acc0, 2 * p, w.get_unchecked(2 * p));
        step(&mut acc1, 2 * p + 1, w.get_unchecked(2 * p + 1));
    }
    if w.len() % 2 == 1 {
        step(&mut acc0, w.len() - 1, w.get_unchecked(w.len() - 1));
    }
    std::array::from_fn(|t| hsum(_mm256_add_ps(acc0[t], acc1[t])))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0<const N: usize>(w: &[BlockQ5_0], a: [&[BlockQ8]; N]) -> [f32; N] {
    row(w, a, |b| b.d, |b| q5_0_weights(b))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0<const N: usize>(w: &[BlockQ8_0], a: [&[BlockQ8]; N]) -> [f32; N] {
    row(w, a, |b| b.d, |b| q8_0_weights(b))
}

/// The repacked kernel is a SIMD build on this table (the models repack their weights for it).
pub(crate) const TILED_NATIVE: bool = true;

/// [`crate::Kern::dot_tiled`] with `vpdpbusd`: sixteen weight rows in the lanes, four
/// activation bytes broadcast, up to eight activation rows per pass over the group's blocks
/// (a block's values are unpacked once for eight rows).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dot_tiled(
    vals: &[u8],
    scales: &[f32],
    bits: Bits,
    halves: bool,
    blocks: usize,
    a: &[&[BlockQ8]],
    sums: &[&[f32]],
    out: &mut [f32],
    stride: usize,
    lanes: usize,
) {
    let mask: __mmask16 = if lanes >= 16 {
        0xffff
    } else {
        ((1u32 << lanes) - 1) as __mmask16
    };
    let (v, s, o) = (vals.as_ptr(), scales.as_ptr(), out.as_mut_ptr());
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
    match (bits, halves) {
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
