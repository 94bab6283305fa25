//! Matrix products with pre-packed weights, on the attention kernels' own micro-kernels.
//!
//! A linear layer computes `y = x · Wᵀ` with the same `W` for every call. General-purpose
//! sgemm (the `gemm` crate, BLAS) re-packs `W` on every call; for a sentence of 20 tokens that
//! packing costs as much as the product. [`PackedMatrix`] packs `W` once, at load, into the
//! 16-lane panels the micro-kernel reads (`panel[k][lane] = W[panel·16 + lane][k]`), and
//! [`matmul_packed`] streams `x` past it in cache-sized blocks:
//!
//! - many rows: parallel tasks own 48-row blocks of `y`; within a task, `k` is walked in chunks
//!   of 256 so that the six `x` rows in flight and the panel chunk (16 KiB) stay in L1;
//! - few rows (decode, one sentence): parallel tasks own blocks of 8 panels (128 columns) and
//!   write them to `y` afterwards, so both cores work even on a single row; each block's
//!   first rows stream its panels from memory with a prefetch ahead ([`Kern::gemm_a_stream`]),
//!   the rows after them find the panels in cache.
//!
//! And [`sgemm_strided`]: the `gemm` crate's sgemm behind a safe, bounds-checked signature,
//! for products whose operands change every call (training), read through strides so that
//! transposed operands cost nothing.

use rayon::prelude::*;

use crate::{Error, Isa, Kern, MatMut, MatRef, Result, NR};

/// Rows of `x` per task in the row-parallel schedule (a multiple of the micro-kernel's 6).
const ROW_BLOCK: usize = 48;
/// Elements of `k` per pass over a panel.
const K_CHUNK: usize = 256;
/// Panels per task in the column-parallel schedule.
const PANEL_BLOCK: usize = 8;

/// A weight matrix `W` (`[n × k]`, row-major: PyTorch's `nn.Linear` layout) packed for
/// [`matmul_packed`].
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedMatrix {
    /// Packs `w` (`n` rows of `k` elements).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<PackedMatrix> {
        Self::pack_with(w, n, k, Isa::Auto)
    }

    /// [`PackedMatrix::pack`] with a chosen instruction set.
    pub fn pack_with(w: &[f32], n: usize, k: usize, isa: Isa) -> Result<PackedMatrix> {
        if n == 0 {
            return Err(Error::ZeroDim { dim: "n" });
        }
        if k == 0 {
            return Err(Error::ZeroDim { dim: "k" });
        }
        check_len("w", n * k, w.len())?;
        let kern = isa.kern()?;
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        data.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, dst)| {
                let rows = (n - p * NR).min(NR);
                kern.pack_panels(MatRef::new(w, p * NR * k, k, rows, k), dst);
            });
        Ok(PackedMatrix { data, n, k })
    }

    /// Output features (rows of `W`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of `W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Panel `p`, from `k = k0`, `len` steps.
    fn panel(&self, p: usize, k0: usize, len: usize) -> &[f32] {
        &self.data[p * self.k * NR + k0 * NR..][..len * NR]
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::ShapeMismatch {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// `y[m × n] = x[m × k] · Wᵀ` (`accumulate`: `y += x · Wᵀ`), rows row-major, on the current
/// rayon pool.
pub fn matmul_packed(
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    matmul_packed_with(x, m, w, y, accumulate, Isa::Auto)
}

/// What [`matmul_packed_map`] calls on each finished piece of the output: the row, the first
/// column, and the values of that row's piece (a whole row, or a block of 128 columns when
/// there are few rows).
pub type Epilogue<'a> = &'a (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// `y[m × n] = x[m × k] · Wᵀ`, then `f(row, col0, values)` on each finished piece of a row
/// while its block is still in cache: where a bias, a residual or an activation is applied
/// without another pass over `y`. Every element is passed exactly once.
pub fn matmul_packed_map(
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    f: Epilogue,
) -> Result<()> {
    run_packed(x, m, w, y, false, Isa::Auto, Some(f))
}

/// [`matmul_packed`] with a chosen instruction set.
pub fn matmul_packed_with(
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    accumulate: bool,
    isa: Isa,
) -> Result<()> {
    run_packed(x, m, w, y, accumulate, isa, None)
}

fn run_packed(
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    accumulate: bool,
    isa: Isa,
    epi: Option<Epilogue>,
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_len("x", m * k, x.len())?;
    check_len("y", m * n, y.len())?;
    if m == 0 {
        return Ok(());
    }
    let kern = isa.kern()?;
    let threads = rayon::current_num_threads();
    if m.div_ceil(ROW_BLOCK) >= 2 * threads {
        y.par_chunks_mut(ROW_BLOCK * n)
            .enumerate()
            .for_each(|(t, yb)| {
                let r0 = t * ROW_BLOCK;
                let rows = yb.len() / n;
                let mut tail = [0.0f32; ROW_BLOCK * NR];
                rows_times_panels(
                    kern,
                    x,
                    r0,
                    rows,
                    w,
                    0..w.panels(),
                    yb,
                    0,
                    &mut tail,
                    accumulate,
                    epi,
                    false, // the panels are re-read from cache by every row block
                );
            });
    } else {
        // column blocks, each computed into its own buffer, then placed
        let blocks: Vec<(usize, Vec<f32>)> = (0..w.panels().div_ceil(PANEL_BLOCK))
            .into_par_iter()
            .map(|b| {
                let p0 = b * PANEL_BLOCK;
                let p1 = (p0 + PANEL_BLOCK).min(w.panels());
                let width = (p1 - p0) * NR;
                let mut buf = vec![0.0f32; m * width];
                let cols = (p1 * NR).min(n) - p0 * NR;
                if accumulate {
                    for (r, row) in buf.chunks_exact_mut(width).enumerate() {
                        row[..cols].copy_from_slice(&y[r * n + p0 * NR..][..cols]);
                    }
                }
                let mut tail = [0.0f32; ROW_BLOCK * NR];
                for r0 in (0..m).step_by(ROW_BLOCK) {
                    let rows = (m - r0).min(ROW_BLOCK);
                    // buf is m × width; this block's rows start at r0 * width, column 0 = p0
                    rows_times_panels(
                        kern,
                        x,
                        r0,
                        rows,
                        w,
                        p0..p1,
                        &mut buf[r0 * width..(r0 + rows) * width],
                        p0,
                        &mut tail,
                        accumulate,
                        epi,
                        // the first row block reads this column block's panels from memory
                        r0 == 0,
                    );
                }
                (p0 * NR, buf)
            })
            .collect();
        for (c0, buf) in blocks {
            let width = buf.len() / m;
            let cols = width.min(n - c0);
            for (r, row) in buf.chunks_exact(width).enumerate() {
                y[r * n + c0..][..cols].copy_from_slice(&row[..cols]);
            }
        }
    }
    Ok(())
}

/// `out[r][(p - p_base)·16 + l] (+)= Σ_k x[r0 + r][k] · W[p·16 + l][k]` for `r < rows` and
/// panels `p` in `panels`; `out` has `rows` rows of stride `out.len() / rows`. Columns past
/// `n` (the last panel's padding) go through `tail`.
#[allow(clippy::too_many_arguments)]
fn rows_times_panels(
    kern: Kern,
    x: &[f32],
    r0: usize,
    rows: usize,
    w: &PackedMatrix,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    p_base: usize,
    tail: &mut [f32; ROW_BLOCK * NR],
    accumulate: bool,
    epi: Option<Epilogue>,
    stream: bool,
) {
    let gemm = if stream {
        Kern::gemm_a_stream
    } else {
        Kern::gemm_a_panels
    };
    let (n, k) = (w.n, w.k);
    let stride = out.len() / rows;
    let full = n / NR; // panels with all 16 columns real
    for k0 in (0..k).step_by(K_CHUNK) {
        let len = (k - k0).min(K_CHUNK);
        let acc = accumulate || k0 > 0;
        let xv = MatRef::new(x, r0 * k + k0, k, rows, len);
        // the panels with all 16 columns real, in one call (blocks of two panels where the
        // instruction set has them)
        let whole = panels.start..panels.end.min(full);
        if !whole.is_empty() {
            let bp = MatRef::new(
                &w.data,
                whole.start * k * NR + k0 * NR,
                k * NR,
                whole.len(),
                len * NR,
            );
            let c0 = (whole.start - p_base) * NR;
            let c = MatMut::new(&mut out[..], c0, stride, rows, whole.len() * NR);
            gemm(kern, xv, bp, c, acc);
        }
        if panels.contains(&full) {
            // the ragged last panel: through a 16-wide scratch tile
            let (p, cols) = (full, n - full * NR);
            let c0 = (p - p_base) * NR;
            if acc {
                for r in 0..rows {
                    tail[r * NR..][..cols].copy_from_slice(&out[r * stride + c0..][..cols]);
                }
            }
            let bp = MatRef::dense(w.panel(p, k0, len), 1, len * NR);
            gemm(kern, xv, bp, MatMut::dense(&mut tail[..], rows, NR), acc);
            for r in 0..rows {
                out[r * stride + c0..][..cols].copy_from_slice(&tail[r * NR..][..cols]);
            }
        }
    }
    // the block is finished: one call per row for all its columns (still in L2)
    if let Some(f) = epi {
        let c_start = (panels.start - p_base) * NR;
        let cols = (panels.end * NR).min(n) - panels.start * NR;
        for r in 0..rows {
            f(
                r0 + r,
                panels.start * NR,
                &mut out[r * stride + c_start..][..cols],
            );
        }
    }
}

/// `c[m × n] = a[m × k] · bᵀ` where `b` is `[n × k]` (a linear layer's weight), all row-major,
/// on the current rayon pool.
pub fn matmul_bt(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    // bᵀ is the k × n matrix whose element (t, j) is b[j * k + t]
    sgemm_strided((m, n, k), a, (k, 1), b, (1, k), c, false);
}

/// `c[m × n] (+)= a · b` with `a` (`m × k`) and `b` (`k × n`) read through strides (element
/// `(i, t)` of `a` at `a[i * a_rs + t * a_cs]`), so transposed operands cost nothing; `c` is
/// row-major and is added to when `accumulate`. Training's three products (`x·wᵀ`, `dy·w`,
/// `dyᵀ·x`) are all this one call. Work is split over `m` and `n` only, so the sums over `k`
/// run in the same order whatever the thread count.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    c: &mut [f32],
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= m * n);
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    assert!(a_rs | a_cs | b_rs | b_cs <= isize::MAX as usize);
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 64 * 64 * 64 {
        gemm_common::Parallelism::Rayon(threads)
    } else {
        gemm_common::Parallelism::None
    };
    // SAFETY: the largest index read from `a` and `b` is asserted in bounds above, and `c` is
    // m × n, row stride n, column stride 1, a unique borrow (no aliasing with `a` or `b`).
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(len: usize, seed: u64) -> Vec<f32> {
        crate::testing::uniform(len, seed as u32)
    }

    fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|t| x[r * k + t] as f64 * w[j * k + t] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn matches_a_naive_product_on_ragged_shapes() {
        for isa in Isa::available() {
            // both schedules (few rows, many rows), ragged n, k over several chunks
            for &(m, n, k) in &[
                (1, 1, 1),
                (1, 37, 5),
                (7, 16, 300),
                (18, 200, 513),
                (200, 33, 64),
                (301, 130, 257),
            ] {
                let x = rnd(m * k, (m * 31 + n) as u64);
                let w = rnd(n * k, (k * 17 + n) as u64);
                let pw = PackedMatrix::pack_with(&w, n, k, isa).unwrap();
                let want = naive(&x, &w, m, n, k);
                let mut y = vec![f32::NAN; m * n];
                matmul_packed_with(&x, m, &pw, &mut y, false, isa).unwrap();
                let tol = 1e-5 * (k as f64).sqrt();
                for (i, (&g, &e)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - e).abs() < tol,
                        "{isa:?} {m}x{n}x{k} at {i}: {g} vs {e}"
                    );
                }
                // accumulate adds onto what is there
                let mut y2 = vec![1.0f32; m * n];
                matmul_packed_with(&x, m, &pw, &mut y2, true, isa).unwrap();
                for (&a, &b) in y2.iter().zip(&y) {
                    assert!((a - 1.0 - b).abs() < 1e-5, "{isa:?} {m}x{n}x{k} accumulate");
                }
            }
        }
    }

    #[test]
    fn the_epilogue_sees_every_finished_piece_once() {
        for &(m, n, k) in &[(3, 37, 300), (200, 33, 64)] {
            let x = rnd(m * k, 5);
            let w = rnd(n * k, 6);
            let pw = PackedMatrix::pack(&w, n, k).unwrap();
            let mut plain = vec![0.0; m * n];
            matmul_packed(&x, m, &pw, &mut plain, false).unwrap();
            let mut y = vec![0.0; m * n];
            let seen = std::sync::atomic::AtomicUsize::new(0);
            // y = 2·(x·Wᵀ) + row + col/1000
            let f = |r: usize, c0: usize, v: &mut [f32]| {
                seen.fetch_add(v.len(), std::sync::atomic::Ordering::Relaxed);
                for (i, e) in v.iter_mut().enumerate() {
                    *e = 2.0 * *e + r as f32 + (c0 + i) as f32 / 1000.0;
                }
            };
            matmul_packed_map(&x, m, &pw, &mut y, &f).unwrap();
            assert_eq!(seen.into_inner(), m * n);
            for r in 0..m {
                for c in 0..n {
                    let want = 2.0 * plain[r * n + c] + r as f32 + c as f32 / 1000.0;
                    assert!((y[r * n + c] - want).abs() < 1e-4, "{m}x{n} at {r},{c}");
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let w = PackedMatrix::pack(&[1.0; 6], 2, 3).unwrap();
        let mut y = vec![0.0; 2];
        assert!(matches!(
            matmul_packed(&[1.0; 4], 1, &w, &mut y, false),
            Err(Error::ShapeMismatch { what: "x", .. })
        ));
        assert!(matches!(
            matmul_packed(&[1.0; 3], 1, &w, &mut [0.0; 3], false),
            Err(Error::ShapeMismatch { what: "y", .. })
        ));
        assert!(PackedMatrix::pack(&[1.0; 5], 2, 3).is_err());
        assert!(PackedMatrix::pack(&[], 0, 3).is_err());
        matmul_packed(&[1.0; 3], 1, &w, &mut y, false).unwrap();
        assert_eq!(y, vec![3.0, 3.0]);
    }
}

#[cfg(test)]
mod sgemm_tests {
    #[test]
    fn matmul_bt_matches_a_triple_loop() {
        let (m, k, n) = (37, 29, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let mut c = vec![0.0; m * n];
        super::matmul_bt(&a, &b, &mut c, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert_eq!(c[i * n + j], want);
            }
        }
    }

    #[test]
    fn strided_products_match_a_triple_loop() {
        let (m, k, n) = (19, 70, 13);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        // a as stored (m × k), and as its transpose (stored k × m)
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        for (lhs, strides) in [(&a, (k, 1)), (&at, (1, m))] {
            for acc in [false, true] {
                let mut c = vec![1.0; m * n];
                super::sgemm_strided((m, n, k), lhs, strides, &b, (n, 1), &mut c, acc);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                        let want = dot + if acc { 1.0 } else { 0.0 };
                        assert_eq!(c[i * n + j], want, "({i}, {j}) accumulate {acc}");
                    }
                }
            }
        }
    }
}
