//! The standard benchmark cases (`bench/README.md`), as data shared by `cargo bench` and
//! `attend bench`, with their inputs and FLOP counts. No timing or printing here.

use crate::{AttnParams, Mask, Shape};

/// A mask kind of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseMask {
    /// No mask.
    None,
    /// Causal.
    Causal,
    /// Key padding with lengths spread over `[min, s_kv]`.
    Padding {
        /// Shortest valid length.
        min: usize,
    },
}

/// One benchmark case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Name, as in bench/README.md.
    pub name: &'static str,
    /// Sizes.
    pub shape: Shape,
    /// Mask.
    pub mask: CaseMask,
    /// Whether it is a backward case.
    pub backward: bool,
    /// Whether the reference implementation is run on it (it is skipped where it would need
    /// more memory or minutes than it is worth).
    pub reference: bool,
}

/// The standard cases.
pub fn standard() -> Vec<Case> {
    let s = |b, h, hkv, sq, skv, d| Shape::new(b, h, sq, skv, d).with_kv_heads(hkv);
    let c = |name, shape, mask, backward, reference| Case {
        name,
        shape,
        mask,
        backward,
        reference,
    };
    vec![
        c(
            "minilm-batch",
            s(64, 12, 12, 32, 32, 32),
            CaseMask::Padding { min: 12 },
            false,
            true,
        ),
        c(
            "enc-512",
            s(1, 12, 12, 512, 512, 64),
            CaseMask::None,
            false,
            true,
        ),
        c(
            "enc-4096",
            s(1, 12, 12, 4096, 4096, 64),
            CaseMask::None,
            false,
            false,
        ),
        c(
            "causal-4096",
            s(1, 12, 12, 4096, 4096, 64),
            CaseMask::Causal,
            false,
            false,
        ),
        c(
            "gqa-2048",
            s(1, 9, 3, 2048, 2048, 64),
            CaseMask::Causal,
            false,
            false,
        ),
        c(
            "decode-8192",
            s(1, 9, 3, 1, 8192, 64),
            CaseMask::Causal,
            false,
            true,
        ),
        c(
            "long-16384",
            s(1, 12, 12, 16384, 16384, 64),
            CaseMask::Causal,
            false,
            false,
        ),
        c(
            "bwd-2048",
            s(1, 12, 12, 2048, 2048, 64),
            CaseMask::None,
            true,
            false,
        ),
        c(
            "bwd-causal-2048",
            s(1, 12, 12, 2048, 2048, 64),
            CaseMask::Causal,
            true,
            false,
        ),
    ]
}

impl Case {
    /// Key lengths for a padding mask (deterministic, spread over `[min, s_kv]`).
    pub fn key_lengths(&self) -> Vec<usize> {
        match self.mask {
            CaseMask::Padding { min } => (0..self.shape.b)
                .map(|b| min + (b * 7919) % (self.shape.s_kv - min + 1))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The parameters of the case (`lengths` from [`Case::key_lengths`]).
    pub fn params<'a>(&self, lengths: &'a [usize]) -> AttnParams<'a> {
        let mask = match self.mask {
            CaseMask::None => Mask::none(),
            CaseMask::Causal => Mask::causal(),
            CaseMask::Padding { .. } => Mask::none().with_key_lengths(lengths),
        };
        AttnParams::new(self.shape).mask(mask)
    }

    /// Query–key pairs that take part, summed over batch and heads.
    pub fn pairs(&self) -> f64 {
        let sh = self.shape;
        let lengths = self.key_lengths();
        let p = self.params(&lengths);
        let per_head: usize = (0..sh.b)
            .flat_map(|b| (0..sh.s_q).map(move |i| (b, i)))
            .map(|(b, i)| {
                let (lo, hi) = p.mask.row_range(&sh, b, i);
                hi - lo
            })
            .sum();
        per_head as f64 * sh.h as f64
    }

    /// FLOPs: forward `4·d·pairs` (bench/README.md), backward 2.5× that.
    pub fn flops(&self) -> f64 {
        let f = 4.0 * self.shape.d as f64 * self.pairs();
        if self.backward {
            2.5 * f
        } else {
            f
        }
    }

    /// Bytes of K and V read once (for decode cases).
    pub fn kv_bytes(&self) -> f64 {
        let sh = self.shape;
        (sh.b * sh.h_kv * sh.s_kv * (sh.d + sh.d_v) * 4) as f64
    }

    /// Deterministic inputs `(q, k, v)` in `[-1, 1)`.
    pub fn inputs(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let sh = self.shape;
        (
            fill(sh.q_len(), 1),
            fill(sh.k_len(), 2),
            fill(sh.v_len(), 3),
        )
    }
}

/// `n` deterministic pseudo-random values in `[-1, 1)` (xorshift; no dependency).
pub fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
