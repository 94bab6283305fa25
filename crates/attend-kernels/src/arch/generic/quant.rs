//! Quantised dot products, portable scalar Rust: the safe twins of every SIMD build (see
//! `crate::Kern::dot` and the formulas in `crate::quant`).

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8, BlockQ8_0};

/// [`crate::Kern::dot_rows`] for `Q4_0` weights.
pub fn dot_q4_0(w: &[BlockQ4_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(a.len())) {
        row_q4_0(wr, a, o);
    }
}

/// [`crate::Kern::dot_rows`] for `Q4_1` weights.
pub fn dot_q4_1(w: &[BlockQ4_1], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(a.len())) {
        row_q4_1(wr, a, o);
    }
}

/// [`crate::Kern::dot_rows`] for `Q8_0` weights.
pub fn dot_q8_0(w: &[BlockQ8_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(a.len())) {
        row_q8_0(wr, a, o);
    }
}

/// `out[t] = Σ w · a[t]` for one `Q4_0` row.
fn row_q4_0(w: &[BlockQ4_0], a: &[&[BlockQ8]], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(a) {
        let mut acc = 0.0f32;
        for (b, a) in w.iter().zip(a.iter()) {
            let (mut isum, mut qsum) = (0i32, 0i32);
            for (j, &q) in b.qs.iter().enumerate() {
                isum += (q & 0x0f) as i32 * a.q[j] as i32;
                isum += (q >> 4) as i32 * a.q[j + 16] as i32;
                qsum += a.q[j] as i32 + a.q[j + 16] as i32;
            }
            acc += b.scale() * a.d * (isum - 8 * qsum) as f32;
        }
        *o = acc;
    }
}

/// `out[t] = Σ w · a[t]` for one `Q4_1` row.
fn row_q4_1(w: &[BlockQ4_1], a: &[&[BlockQ8]], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(a) {
        let mut acc = 0.0f32;
        for (b, a) in w.iter().zip(a.iter()) {
            let (d, m) = b.scale_min();
            let mut isum = 0i32;
            for (j, &q) in b.qs.iter().enumerate() {
                isum += (q & 0x0f) as i32 * a.q[j] as i32;
                isum += (q >> 4) as i32 * a.q[j + 16] as i32;
            }
            acc += d * a.d * isum as f32 + m * a.s;
        }
        *o = acc;
    }
}

/// `out[t] = Σ w · a[t]` for one `Q8_0` row.
fn row_q8_0(w: &[BlockQ8_0], a: &[&[BlockQ8]], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(a) {
        let mut acc = 0.0f32;
        for (b, a) in w.iter().zip(a.iter()) {
            let isum: i32 =
                b.qs.iter()
                    .zip(&a.q)
                    .map(|(&w, &q)| w as i32 * q as i32)
                    .sum();
            acc += b.scale() * a.d * isum as f32;
        }
        *o = acc;
    }
}

/// One row times one activation row, whatever the type (the oracle of the tests).
#[cfg(test)]
pub fn dot_one(w: crate::quant::QBlocks<'_>, a: &[BlockQ8]) -> f32 {
    use crate::quant::QBlocks;
    let mut out = [0.0];
    match w {
        QBlocks::Q4_0(w) => row_q4_0(w, &[a], &mut out),
        QBlocks::Q4_1(w) => row_q4_1(w, &[a], &mut out),
        QBlocks::Q8_0(w) => row_q8_0(w, &[a], &mut out),
    }
    out[0]
}
