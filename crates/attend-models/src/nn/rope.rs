//! Rotary position embeddings (RoPE) on adjacent pairs `(2i, 2i + 1)`: GGUF conversion
//! (llama.cpp's `convert_hf_to_gguf.py`) permutes the rows of `W_q` and `W_k` so that each
//! head's rotation pairs are adjacent elements — not the halves `(i, i + d/2)` of
//! transformers' `rotate_half`.

/// The rotation of a model: `dims` rotated dims per head (even), base frequency `base`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Rotated dims per head.
    pub dims: usize,
    /// Base frequency.
    pub base: f32,
}

/// `cos` and `sin` of every rotation angle of some positions, `[position][dims / 2]`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    /// The angles for positions `pos0..pos0 + n` (computed in f64).
    pub fn table(&self, pos0: usize, n: usize) -> RopeTable {
        let half = self.dims / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|i| (self.base as f64).powf(-(2.0 * i as f64) / self.dims as f64))
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in pos0..pos0 + n {
            for f in &freqs {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        RopeTable { cos, sin, half }
    }
}

impl RopeTable {
    /// Rotates every head of every row of `x` (`[rows, heads, head_dim]`, row `r` at the
    /// table's `r`-th position).
    pub fn apply(&self, x: &mut [f32], heads: usize, head_dim: usize) {
        let half = self.half;
        for (r, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let (cos, sin) = (&self.cos[r * half..][..half], &self.sin[r * half..][..half]);
            for h in row.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * cos[i] - b * sin[i];
                    h[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_pairs_by_position_and_keeps_norms() {
        let rope = Rope {
            dims: 4,
            base: 10000.0,
        };
        let t = rope.table(3, 2);
        let mut x = vec![1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5];
        t.apply(&mut x, 1, 4);
        // position 3, pair 0: angle 3 rad
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        // position 4, pair 1: angle 4 / 100
        let a = 4.0f32 / 100.0;
        assert!((x[6] - 0.5 * (a.cos() - a.sin())).abs() < 1e-6);
        for row in x.chunks(2) {
            let n: f32 = row.iter().map(|v| v * v).sum();
            assert!(n == 0.5 || (n - 1.0).abs() < 1e-6 || (n - 0.5).abs() < 1e-6);
        }
    }
}
