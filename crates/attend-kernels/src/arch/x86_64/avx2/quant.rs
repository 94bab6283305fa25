//! AVX2 quantised dot products (x86-64), each with its scalar twin in `arch/generic/quant.rs`.
//!
//! One 32-element block: the weights' 4-bit (or 8-bit) integers and the activation's `i8`s are
//! multiplied and summed pairwise by `vpmaddubsw` (unsigned × signed → `i16`), widened by
//! `vpmaddwd` against ones (→ 8 × `i32`), converted to `f32` and accumulated with the product
//! of the two scales by one FMA. `Q4_1`'s offset `m` adds `m·s` per block, `s = d·Σq` being
//! stored with the activation. Two accumulators per activation row (even and odd blocks), so
//! that one FMA need not wait for the previous one.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX2, FMA and F16C (it holds this instruction set's table) and that
//! `crate::Kern::dot_rows`' bounds hold: whole rows of `per_row` weight blocks, activation rows
//! of `per_row` blocks each, one output per (weight row, activation row).

use std::arch::x86_64::*;

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8, BlockQ8_0};

/// Every weight row of `$w` (`$per_row` blocks each) times every activation row of `$a`, four
/// activation rows per pass over a weight row (`$k::<N>` for the last 1 to 3), into `$out`
/// (`[rows × n]`).
macro_rules! by_rows {
    ($k:ident, $w:expr, $per_row:expr, $a:expr, $out:expr) => {{
        let (w, per_row, a, out) = ($w, $per_row, $a, $out);
        let n = a.len();
        for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(n)) {
            for (a, o) in a.chunks(4).zip(o.chunks_mut(4)) {
                // SAFETY: the caller's contract (module docs) is the kernels' contract.
                unsafe {
                    match a.len() {
                        1 => o.copy_from_slice(&$k::<1>(wr, [a[0]])),
                        2 => o.copy_from_slice(&$k::<2>(wr, [a[0], a[1]])),
                        3 => o.copy_from_slice(&$k::<3>(wr, [a[0], a[1], a[2]])),
                        _ => o.copy_from_slice(&$k::<4>(wr, [a[0], a[1], a[2], a[3]])),
                    }
                }
            }
        }
    }};
}

pub(crate) unsafe fn dot_q4_0(w: &[BlockQ4_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    by_rows!(q4_0, w, per_row, a, out)
}

pub(crate) unsafe fn dot_q4_1(w: &[BlockQ4_1], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    by_rows!(q4_1, w, per_row, a, out)
}

pub(crate) unsafe fn dot_q8_0(w: &[BlockQ8_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    by_rows!(q8_0, w, per_row, a, out)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(bits: [u8; 2]) -> f32 {
    let bits = u16::from_le_bytes(bits);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The 16 bytes at `p` as 32 nibbles: low nibbles in lanes 0..16, high in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
    _mm256_set_m128i(hi, lo)
}

/// 8 × `i32` partial sums of `u8 w · i8 a` as `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum(w: __m256i, a: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(w, a);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1<const N: usize>(w: &[BlockQ4_1], a: [&[BlockQ8]; N]) -> [f32; N] {
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    let mut off = [[0.0f32; N]; 2];
    for (i, blk) in w.iter().enumerate() {
        let (dw, m) = (f16(blk.d), f16(blk.m));
        let qw = nibbles(blk.qs.as_ptr());
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
            let s = _mm256_set1_ps(dw * b.d);
            acc[i & 1][t] = _mm256_fmadd_ps(s, mul_sum(qw, qa), acc[i & 1][t]);
            off[i & 1][t] += m * b.s;
        }
    }
    std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])) + off[0][t] + off[1][t])
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0<const N: usize>(w: &[BlockQ4_0], a: [&[BlockQ8]; N]) -> [f32; N] {
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    for (i, blk) in w.iter().enumerate() {
        let dw = f16(blk.d);
        let qw = nibbles(blk.qs.as_ptr());
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
            // (q - 8)·a = q·a - 8·a: the nibbles stay unsigned for vpmaddubsw
            let v = _mm256_sub_ps(mul_sum(qw, qa), mul_sum(_mm256_set1_epi8(8), qa));
            acc[i & 1][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * b.d), v, acc[i & 1][t]);
        }
    }
    std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0<const N: usize>(w: &[BlockQ8_0], a: [&[BlockQ8]; N]) -> [f32; N] {
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    for (i, blk) in w.iter().enumerate() {
        let dw = f16(blk.d);
        let qw = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
        // signed × signed: |w| (unsigned) times a with w's sign
        let aw = _mm256_sign_epi8(qw, qw);
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
            let v = mul_sum(aw, _mm256_sign_epi8(qa, qw));
            acc[i & 1][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * b.d), v, acc[i & 1][t]);
        }
    }
    std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])))
}
