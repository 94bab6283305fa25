//! The crate's `unsafe` (with `simd_q.rs`): memory-mapping a weights file, and the `gemm`
//! crate's sgemm behind a safe, bounds-checked signature.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use crate::error::{io, Result};

/// Maps `path` read-only.
pub(crate) fn map(path: &Path) -> Result<memmap2::Mmap> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and private to this process; the model files live in
    // attend's cache (or a folder the user named), which attend never writes while a model is
    // loaded. A file truncated by another process under us would fault — the documented risk
    // of every memory-mapped reader (safetensors, llama.cpp, candle).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}

/// `c[m × n] = a[m × k] · bᵀ` where `b` is `[n × k]` (a linear layer's weight), all row-major,
/// on the current rayon pool.
pub(crate) fn matmul_bt(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    // bᵀ is the k × n matrix whose element (t, j) is b[j * k + t]
    sgemm_strided((m, n, k), a, (k, 1), b, (1, k), c, false);
}

/// `c[m × n] (+)= a · b` with `a` (`m × k`) and `b` (`k × n`) read through strides (element
/// `(i, t)` of `a` at `a[i * a_rs + t * a_cs]`), so transposed operands cost nothing; `c` is
/// row-major and is added to when `accumulate`. Training's three products (`x·wᵀ`, `dy·w`,
/// `dyᵀ·x`) are all this one call. Work is split over `m` and `n` only, so the sums over `k`
/// run in the same order whatever the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_strided(
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
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the largest index read from `a` and `b` is asserted in bounds above, and `c` is
    // m × n, row stride n, column stride 1, a unique borrow (no aliasing with `a` or `b`).
    unsafe {
        gemm::gemm(
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
