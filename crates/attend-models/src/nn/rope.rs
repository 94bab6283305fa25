//! Rotary position embeddings (RoPE), on one of two pairings ([`Pairs`]): for Llama, GGUF
//! conversion (llama.cpp's `convert_hf_to_gguf.py`) permutes the rows of `W_q` and `W_k` so
//! that each head's rotation pairs are adjacent elements `(2i, 2i + 1)`; other architectures
//! (Gemma, GPT-NeoX: llama.cpp's "NEOX" rope) keep transformers' `rotate_half` pairs, the
//! halves `(i, i + dims/2)`.

/// Which elements of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// `(2i, 2i + 1)`.
    Adjacent,
    /// `(i, i + dims / 2)`.
    Halves,
}

/// The rotation of a model: `dims` rotated dims per head (even), base frequency `base`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// Rotated dims per head.
    pub dims: usize,
    /// Base frequency.
    pub base: f32,
    /// How the rotated dims pair up.
    pub pairs: Pairs,
    /// What each of the `dims / 2` frequencies is divided by (empty: none). Llama 3's
    /// frequency scaling (GGUF `rope_freqs.weight`, what transformers' `rope_type = "llama3"`
    /// computes) and linear position scaling (every factor the same) are both this.
    pub factors: Vec<f32>,
}

/// `cos` and `sin` of every rotation angle of some positions, `[position][dims / 2]`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    pairs: Pairs,
}

impl Rope {
    /// The angles for positions `pos0..pos0 + n` (computed in f64).
    pub fn table(&self, pos0: usize, n: usize) -> RopeTable {
        let half = self.dims / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|i| {
                let f = (self.base as f64).powf(-(2.0 * i as f64) / self.dims as f64);
                f / self.factors.get(i).map_or(1.0, |&d| d as f64)
            })
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for p in pos0..pos0 + n {
            for f in &freqs {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        RopeTable {
            cos,
            sin,
            half,
            pairs: self.pairs,
        }
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
                    let (x, y) = match self.pairs {
                        Pairs::Adjacent => (2 * i, 2 * i + 1),
                        Pairs::Halves => (i, i + half),
                    };
                    let (a, b) = (h[x], h[y]);
                    h[x] = a * cos[i] - b * sin[i];
                    h[y] = a * sin[i] + b * cos[i];
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
            pairs: Pairs::Adjacent,
            factors: vec![],
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

    #[test]
    fn halves_pair_i_with_i_plus_half_as_rotate_half_does() {
        let rope = Rope {
            dims: 4,
            base: 100.0,
            pairs: Pairs::Halves,
            factors: vec![],
        };
        let t = rope.table(2, 1);
        let x0 = [0.3f32, -0.7, 1.1, 0.4];
        let mut x = x0.to_vec();
        t.apply(&mut x, 1, 4);
        // transformers: x·cos + rotate_half(x)·sin, rotate_half(x) = (-x[2], -x[3], x[0], x[1]),
        // angles (2, 2 / 10) repeated over both halves
        let ang = [2.0f32, 0.2, 2.0, 0.2];
        let rot = [-x0[2], -x0[3], x0[0], x0[1]];
        for i in 0..4 {
            let want = x0[i] * ang[i].cos() + rot[i] * ang[i].sin();
            assert!((x[i] - want).abs() < 1e-6, "{i}: {} vs {want}", x[i]);
        }
    }
}
