//! AVX2 k-quant dot products (x86-64), each with its scalar twin in `arch/generic/quant.rs`.
//!
//! The k-quants (`Q4_K`, `Q5_K`, `Q6_K` against `Q8_K` activations) keep every sum of a
//! 256-element super-block in `i32` (`vpmaddubsw`, then `vpmaddwd` against the sub-blocks'
//! scales), sum the lanes as integers, and only then scale: the same integers and the same
//! float operations as the twins, so the results are the twins' bits.
//!
//! The 32-element types are the generic kernels of `arch/simd/quant.rs`; the helpers they
//! share with the k-quants (`f16`, `nibbles`, `bits_to_bytes`, `hsum`) are here.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX2, FMA and F16C (it holds this instruction set's table) and that
//! `crate::Kern::dot_rows`' bounds hold: whole rows of `per_row` weight blocks, activation rows
//! of `per_row` blocks each, one output per (weight row, activation row).

use std::arch::x86_64::*;

/// No AVX2 build of the repacked kernel (AVX2 has no `vpdpbusd`; `vpmaddubsw` saturates on
/// 8-bit weights): the twin, and the models keep their stored blocks.
pub(crate) use crate::arch::generic::quant::dot_tiled;
/// Not a SIMD build.
pub(crate) const TILED_NATIVE: bool = false;

use crate::quant::{scales_mins_k4, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

/// Every weight row of `w` (`per_row` blocks each) times every activation row of `a`, four
/// activation rows per pass over a weight row (`row::<N>` for the last 1 to 3), into `out`.
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

pub(crate) unsafe fn dot_q4_k(w: &[BlockQ4K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    by_rows!(q4_k, w, per_row, a, out)
}

pub(crate) unsafe fn dot_q5_k(w: &[BlockQ5K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    by_rows!(q5_k, w, per_row, a, out)
}

pub(crate) unsafe fn dot_q6_k(w: &[BlockQ6K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    by_rows!(q6_k, w, per_row, a, out)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16(bits: [u8; 2]) -> f32 {
    let bits = u16::from_le_bytes(bits);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The 16 bytes at `p` as 32 nibbles: low nibbles in lanes 0..16, high in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
    _mm256_set_m128i(hi, lo)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Byte `j` all ones where bit `j` of `bits` is set, else zero.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    // byte j of the result takes byte j / 8 of `bits`, then tests its bit j % 8
    let x = _mm256_set1_epi32(bits as i32);
    let pick = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let all_but = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    let b = _mm256_or_si256(_mm256_shuffle_epi8(x, pick), all_but);
    _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// `Σ_j m_j (bsum_2j + bsum_2j+1)`: the minimums' integer part of a `Q4_K` / `Q5_K` block.
#[inline]
fn k4_mins(m: &[u8; 8], b: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| m[j] as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32))
        .sum()
}

/// What the `Q4_K` / `Q5_K` row kernel reads of a block: `(d, dmin, scales, qs, qh)`, the
/// fifth bits `qh` only when `FIVE`.
trait K4 {
    /// Whether the block has fifth bits.
    const FIVE: bool;
    #[allow(clippy::type_complexity)]
    fn parts(&self) -> ([u8; 2], [u8; 2], &[u8; 12], &[u8; 128], &[u8; 32]);
}

impl K4 for BlockQ4K {
    const FIVE: bool = false;
    fn parts(&self) -> ([u8; 2], [u8; 2], &[u8; 12], &[u8; 128], &[u8; 32]) {
        (self.d, self.dmin, &self.scales, &self.qs, &[0; 32])
    }
}

impl K4 for BlockQ5K {
    const FIVE: bool = true;
    fn parts(&self) -> ([u8; 2], [u8; 2], &[u8; 12], &[u8; 128], &[u8; 32]) {
        (self.d, self.dmin, &self.scales, &self.qs, &self.qh)
    }
}

/// A `Q4_K` or `Q5_K` row times `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_row<B: K4, const N: usize>(w: &[B], a: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [0.0f32; N];
    let mut mins = [0.0f32; N];
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    for (i, blk) in w.iter().enumerate() {
        let (d, dmin, scales, qs, qh) = blk.parts();
        let (d, dmin) = (f16(d), f16(dmin));
        let (sc, m) = scales_mins_k4(scales);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut hb = if B::FIVE {
            _mm256_loadu_si256(qh.as_ptr() as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        for c in 0..4 {
            let raw = _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i);
            let mut lo = _mm256_and_si256(raw, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            if B::FIVE {
                // bits 2c and 2c + 1 of each qh byte (shifted down by 2 each chunk)
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                let h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 1), one);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            let s_lo = _mm256_set1_epi16(sc[2 * c] as i16);
            let s_hi = _mm256_set1_epi16(sc[2 * c + 1] as i16);
            for t in 0..N {
                let q = a[t].get_unchecked(i).q.as_ptr().add(64 * c);
                let qa_lo = _mm256_loadu_si256(q as *const __m256i);
                let qa_hi = _mm256_loadu_si256(q.add(32) as *const __m256i);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, qa_lo), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, qa_hi), s_hi);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            acc[t] += d * b.d * hsum_i32(sumi[t]) as f32;
            mins[t] += dmin * b.d * k4_mins(&m, b) as f32;
        }
    }
    std::array::from_fn(|t| acc[t] - mins[t])
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k<const N: usize>(w: &[BlockQ4K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    k4_row(w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k<const N: usize>(w: &[BlockQ5K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    k4_row(w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k<const N: usize>(w: &[BlockQ6K], a: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [0.0f32; N];
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    for (i, blk) in w.iter().enumerate() {
        let d = f16(blk.d);
        let sc = &blk.scales;
        let mut sumi = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let ql = blk.ql.as_ptr().add(64 * half);
            let ql0 = _mm256_loadu_si256(ql as *const __m256i);
            let ql1 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.qh.as_ptr().add(32 * half) as *const __m256i);
            let high = |shift: i32| -> __m256i {
                // bits `shift, shift + 1` of each qh byte, moved to bits 4, 5
                let h = match shift {
                    0 => qh,
                    2 => _mm256_srli_epi16(qh, 2),
                    4 => _mm256_srli_epi16(qh, 4),
                    _ => _mm256_srli_epi16(qh, 6),
                };
                _mm256_slli_epi16(_mm256_and_si256(h, m2), 4)
            };
            // the unsigned six bits of elements 128·half + 32k + l, k = 0..4
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(6)),
            ];
            for (k, &qk) in q.iter().enumerate() {
                // the 32 elements span two sub-blocks of 16: one scale per 128-bit half
                let s = 8 * half + 2 * k;
                let scv = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
                for t in 0..N {
                    let qa = a[t].get_unchecked(i).q.as_ptr().add(128 * half + 32 * k);
                    let qa = _mm256_loadu_si256(qa as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, qa), scv);
                    sumi[t] = _mm256_add_epi32(sumi[t], p);
                }
            }
        }
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            // the − 32 of every six-bit value: 32·Σ_s sc_s·bsum_s
            let off: i32 = (0..16).map(|s| sc[s] as i32 * b.bsums[s] as i32).sum();
            acc[t] += d * b.d * (hsum_i32(sumi[t]) - 32 * off) as f32;
        }
    }
    acc
}
