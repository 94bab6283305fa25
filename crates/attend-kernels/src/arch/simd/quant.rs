//! The 32-element quantised dot products (`Q4_0`, `Q4_1`, `Q5_0`, `Q8_0` weight rows against
//! `Q8` activation rows), written once over [`Q32`]; their scalar twins are in
//! `arch/generic/quant.rs`.
//!
//! A block's 32 weights are decoded once into bytes and multiplied with up to [`Q32::ROWS`]
//! activation blocks. Unsigned weights (`Q4_1`'s nibbles, whose offset `m` adds `m·s` per
//! block, `s = d·Σq` being stored with the activation) go straight into the unsigned × signed
//! dot; signed ones (`Q4_0`'s `q − 8`, `Q5_0`'s `q − 16`, `Q8_0`) as `|w|` against the
//! activation with `w`'s sign. The integer sums are exact; each is scaled by the product of
//! the two blocks' scales into one of two accumulators (even and odd blocks, so that one
//! multiply-add need not wait for the previous one).
//!
//! # Safety (every `unsafe fn` here)
//! The instruction set of `Q` is enabled, and `crate::Kern::dot_rows`' bounds hold: whole rows
//! of `per_row` weight blocks, activation rows of `per_row` blocks each, one output per
//! (weight row, activation row).

use super::Q32;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8, BlockQ8_0};

/// A 32-element weight block as the dot kernels read it.
pub(crate) trait Block32 {
    /// Whether [`Block32::weights`] are signed bytes (else unsigned, with an offset).
    const SIGNED: bool;
    /// The block's scale `d`, IEEE half bits.
    fn d(&self) -> [u8; 2];
    /// The 32 weights as bytes: signed `q − offset`, or the unsigned `q`.
    ///
    /// # Safety
    /// `Q`'s instruction set is enabled.
    unsafe fn weights<Q: Q32>(&self) -> Q::B;
    /// The offset `m` added to every weight (0 for the signed types), IEEE half bits.
    fn m(&self) -> Option<[u8; 2]> {
        None
    }
}

/// `impl Block32 for $t`: signed or not, the weights of block `$b` as `$q::B`, the offset's
/// field where it has one.
macro_rules! block32 {
    ($t:ty, signed: $signed:expr, |$b:ident, $q:ident| $weights:expr $(, offset: $m:ident)?) => {
        impl Block32 for $t {
            const SIGNED: bool = $signed;
            fn d(&self) -> [u8; 2] {
                self.d
            }
            #[inline(always)]
            unsafe fn weights<$q: Q32>(&self) -> $q::B {
                let $b = self;
                // SAFETY: the caller enables `Q`'s instruction set; the block is whole.
                unsafe { $weights }
            }
            $(fn m(&self) -> Option<[u8; 2]> {
                Some(self.$m)
            })?
        }
    };
}

block32!(BlockQ4_0, signed: true, |b, Q| Q::sub_i8(Q::nibbles(b.qs.as_ptr()), 8));
block32!(BlockQ4_1, signed: false, |b, Q| Q::nibbles(b.qs.as_ptr()), offset: m);
block32!(BlockQ5_0, signed: true, |b, Q| {
    let fifth = Q::fifth_bits(u32::from_le_bytes(b.qh));
    Q::sub_i8(Q::or(Q::nibbles(b.qs.as_ptr()), fifth), 16)
});
block32!(BlockQ8_0, signed: true, |b, Q| Q::load(b.qs.as_ptr() as *const u8));

/// See [`crate::Kern::dot_rows`]: every weight row of `w` times every activation row of `a`,
/// [`Q32::ROWS`] activation rows per pass over a weight row.
#[inline(always)]
pub(crate) unsafe fn dot_rows<Q: Q32, B: Block32>(
    w: &[B],
    per_row: usize,
    a: &[&[BlockQ8]],
    out: &mut [f32],
) {
    const { assert!(Q::ROWS >= 1 && Q::ROWS <= 8) };
    let n = a.len();
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(n)) {
        for (a, o) in a.chunks(Q::ROWS).zip(o.chunks_mut(Q::ROWS)) {
            // SAFETY: the caller's contract (module docs) is the kernels' contract.
            unsafe {
                match a.len() {
                    1 => o.copy_from_slice(&row::<Q, B, 1>(wr, [a[0]])),
                    2 => o.copy_from_slice(&row::<Q, B, 2>(wr, [a[0], a[1]])),
                    3 => o.copy_from_slice(&row::<Q, B, 3>(wr, [a[0], a[1], a[2]])),
                    4 => o.copy_from_slice(&row::<Q, B, 4>(wr, std::array::from_fn(|i| a[i]))),
                    5 => o.copy_from_slice(&row::<Q, B, 5>(wr, std::array::from_fn(|i| a[i]))),
                    6 => o.copy_from_slice(&row::<Q, B, 6>(wr, std::array::from_fn(|i| a[i]))),
                    7 => o.copy_from_slice(&row::<Q, B, 7>(wr, std::array::from_fn(|i| a[i]))),
                    _ => o.copy_from_slice(&row::<Q, B, 8>(wr, std::array::from_fn(|i| a[i]))),
                }
            }
        }
    }
}

/// How far ahead of the block being multiplied a weight row is prefetched, in bytes, into
/// L2 ([`Q32::prefetch`]). A weight row is read once, front to back, from memory; on an Intel
/// Xeon VM whose own prefetchers left each thread at ~3 GB/s, asking 2 KiB ahead into L1
/// doubled generation, and 8 KiB ahead into L2 (more lines in flight than L1's fill buffers
/// hold) took a one-row `Q8_0` product from 7.7 to 10.4 GB/s a thread (bench/README.md).
const PREFETCH: usize = 8192;

/// One weight row times `N` activation rows: two blocks per step into two named pairs of
/// accumulators (an indexed pair would live on the stack; one offset sum for both would be a
/// chain of dependent additions), then the odd one out.
#[inline(always)]
unsafe fn row<Q: Q32, B: Block32, const N: usize>(w: &[B], a: [&[BlockQ8]; N]) -> [f32; N] {
    unsafe {
        let (mut acc0, mut acc1) = ([Q::fzero(); N], [Q::fzero(); N]);
        let (mut off0, mut off1) = ([0.0f32; N], [0.0f32; N]);
        let pairs = w.len() / 2;
        for p in 0..pairs {
            Q::prefetch((w.as_ptr().wrapping_add(2 * p) as *const u8).wrapping_add(PREFETCH));
            step::<Q, B, N>(&mut acc0, &mut off0, 2 * p, w.get_unchecked(2 * p), &a);
            step::<Q, B, N>(
                &mut acc1,
                &mut off1,
                2 * p + 1,
                w.get_unchecked(2 * p + 1),
                &a,
            );
        }
        if w.len() % 2 == 1 {
            let i = w.len() - 1;
            step::<Q, B, N>(&mut acc0, &mut off0, i, w.get_unchecked(i), &a);
        }
        // a loop, not `array::from_fn`: a closure's body would be compiled apart from the
        // entry's instruction set
        let mut out = [0.0f32; N];
        for t in 0..N {
            out[t] = Q::hsum(Q::fadd(acc0[t], acc1[t])) + (off0[t] + off1[t]);
        }
        out
    }
}

/// Block `i` of the row (`blk`) into `acc`, for every activation row.
#[inline(always)]
unsafe fn step<Q: Q32, B: Block32, const N: usize>(
    acc: &mut [Q::F; N],
    off: &mut [f32; N],
    i: usize,
    blk: &B,
    a: &[&[BlockQ8]; N],
) {
    unsafe {
        let dw = Q::f16(blk.d());
        let qw = blk.weights::<Q>();
        let aw = if B::SIGNED { Q::abs_i8(qw) } else { qw };
        // a match, not `Option::map`: a closure's body would be compiled apart from the
        // entry's instruction set
        #[allow(clippy::manual_map)]
        let m = match blk.m() {
            Some(m) => Some(Q::f16(m)),
            None => None,
        };
        for t in 0..N {
            let b = a[t].get_unchecked(i);
            let qa = Q::load(b.q.as_ptr() as *const u8);
            let qa = if B::SIGNED { Q::sign_i8(qa, qw) } else { qa };
            acc[t] = Q::fmadd(dw * b.d, Q::dot_u8_i8(aw, qa), acc[t]);
            if let Some(m) = m {
                off[t] = m.mul_add(b.s, off[t]);
            }
        }
    }
}
