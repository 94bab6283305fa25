//! Properties that hold whatever the numbers: rows sum to 1, masked pairs are 0, causality,
//! permutation equivariance, GQA = MHA with repeated K/V, padding does not leak, and decoding
//! through the KV cache equals one causal forward.

mod common;

use attend::{fused, AttnParams, Isa, KvCache, Layout, Mask, Shape};
use common::*;

#[test]
fn probability_rows_sum_to_one_and_masked_pairs_are_zero() {
    let sh = Shape::new(2, 4, 37, 70, 24).with_kv_heads(2);
    let (q, k, v) = (rnd(sh.q_len(), 1), rnd(sh.k_len(), 2), rnd(sh.v_len(), 3));
    for kind in ALL_KINDS {
        let md = MaskData::new(kind, &sh, 7);
        let p = AttnParams::new(sh).mask(md.mask());
        for isa in Isa::available() {
            let probs = fused::probabilities(&p.clone().isa(isa), &q, &k, &v, None).unwrap();
            for (x, row) in probs.chunks(sh.s_kv).enumerate() {
                let (bh, i) = (x / sh.s_q, x % sh.s_q);
                let (b, h) = (bh / sh.h, bh % sh.h);
                let sum: f32 = row.iter().sum();
                let any = (0..sh.s_kv).any(|j| md.logit_bias(&sh, b, h, i, j).is_some());
                if any {
                    assert!(
                        (sum - 1.0).abs() < 1e-5,
                        "{kind:?} {isa:?}: row sums to {sum}"
                    );
                } else {
                    assert_eq!(sum, 0.0, "{kind:?}: a fully masked row must be all zeros");
                }
                for (j, &pj) in row.iter().enumerate() {
                    if md.logit_bias(&sh, b, h, i, j).is_none() {
                        assert_eq!(pj, 0.0, "{kind:?}: masked pair ({i},{j}) has weight {pj}");
                    }
                }
            }
        }
    }
}

#[test]
fn selected_heads_match_all_heads() {
    let sh = Shape::new(2, 6, 19, 23, 16).with_kv_heads(3);
    let (q, k, v) = (rnd(sh.q_len(), 4), rnd(sh.k_len(), 5), rnd(sh.v_len(), 6));
    let p = AttnParams::new(sh)
        .mask(Mask::causal())
        .layout(Layout::Bshd);
    let all = fused::probabilities(&p, &q, &k, &v, None).unwrap();
    let some = fused::probabilities(&p, &q, &k, &v, Some(&[4, 1])).unwrap();
    let per = sh.s_q * sh.s_kv;
    for b in 0..sh.b {
        for (x, &h) in [4usize, 1].iter().enumerate() {
            assert_eq!(
                &some[(b * 2 + x) * per..][..per],
                &all[(b * sh.h + h) * per..][..per]
            );
        }
    }
}

#[test]
fn causal_output_ignores_the_future() {
    let sh = Shape::new(1, 3, 150, 150, 32);
    let (q, k, v) = (rnd(sh.q_len(), 7), rnd(sh.k_len(), 8), rnd(sh.v_len(), 9));
    let p = AttnParams::new(sh).mask(Mask::causal());
    let cut = 77;
    // change every token after `cut` (Bhsd: rows of each head)
    let perturb = |x: &[f32], heads: usize, dim: usize| {
        let mut y = x.to_vec();
        for h in 0..heads {
            for s in cut + 1..sh.s_q {
                for c in 0..dim {
                    y[(h * sh.s_q + s) * dim + c] += 0.5 + c as f32 * 0.01;
                }
            }
        }
        y
    };
    let (q2, k2, v2) = (
        perturb(&q, sh.h, sh.d),
        perturb(&k, sh.h, sh.d),
        perturb(&v, sh.h, sh.d_v),
    );
    for isa in Isa::available() {
        let p = p.clone().isa(isa);
        let a = fused::forward(&p, &q, &k, &v).unwrap();
        let b = fused::forward(&p, &q2, &k2, &v2).unwrap();
        for h in 0..sh.h {
            let rows = |o: &[f32]| o[h * sh.s_q * sh.d..][..(cut + 1) * sh.d].to_vec();
            assert_eq!(
                rows(&a.out),
                rows(&b.out),
                "{isa:?}: the future leaked into the past"
            );
            assert_ne!(
                a.out[(h * sh.s_q + cut + 1) * sh.d],
                b.out[(h * sh.s_q + cut + 1) * sh.d]
            );
        }
    }
}

#[test]
fn self_attention_is_permutation_equivariant() {
    let sh = Shape::new(1, 2, 90, 90, 20);
    let (q, k, v) = (
        rnd(sh.q_len(), 10),
        rnd(sh.k_len(), 11),
        rnd(sh.v_len(), 12),
    );
    let perm: Vec<usize> = (0..sh.s_q).map(|i| (i * 37 + 11) % sh.s_q).collect();
    let permute = |x: &[f32]| {
        let mut y = vec![0.0; x.len()];
        for h in 0..sh.h {
            for (i, &pi) in perm.iter().enumerate() {
                let (dst, src) = ((h * sh.s_q + i) * sh.d, (h * sh.s_q + pi) * sh.d);
                y[dst..dst + sh.d].copy_from_slice(&x[src..src + sh.d]);
            }
        }
        y
    };
    for isa in Isa::available() {
        let p = AttnParams::new(sh).isa(isa);
        let a = fused::forward(&p, &q, &k, &v).unwrap();
        let b = fused::forward(&p, &permute(&q), &permute(&k), &permute(&v)).unwrap();
        assert!(max_diff(&permute(&a.out), &b.out) < 1e-5);
    }
}

#[test]
fn gqa_equals_mha_with_repeated_kv() {
    for layout in [Layout::Bhsd, Layout::Bshd] {
        let sh = Shape::new(2, 6, 41, 66, 16).with_kv_heads(2);
        let (q, k, v) = (
            rnd(sh.q_len(), 13),
            rnd(sh.k_len(), 14),
            rnd(sh.v_len(), 15),
        );
        let mha = Shape::new(2, 6, 41, 66, 16);
        let repeat = |x: &[f32]| {
            let mut y = vec![0.0; mha.k_len()];
            for b in 0..sh.b {
                for h in 0..sh.h {
                    for s in 0..sh.s_kv {
                        let src = off(layout, sh.h_kv, sh.s_kv, sh.d, b, h / sh.group(), s);
                        let dst = off(layout, sh.h, sh.s_kv, sh.d, b, h, s);
                        y[dst..dst + sh.d].copy_from_slice(&x[src..src + sh.d]);
                    }
                }
            }
            y
        };
        for isa in Isa::available() {
            let p = AttnParams::new(sh)
                .layout(layout)
                .mask(Mask::causal())
                .isa(isa);
            let a = fused::forward(&p, &q, &k, &v).unwrap();
            let pm = AttnParams::new(mha)
                .layout(layout)
                .mask(Mask::causal())
                .isa(isa);
            let b = fused::forward(&pm, &q, &repeat(&k), &repeat(&v)).unwrap();
            assert!(max_diff(&a.out, &b.out) < 1e-6, "{layout:?} {isa:?}");
        }
    }
}

#[test]
fn key_padding_equals_the_unpadded_sequence() {
    // batch row 0 padded from 23 to 40 keys must equal attention over its 23 keys alone
    let sh = Shape::new(2, 2, 40, 40, 8);
    let (q, k, v) = (
        rnd(sh.q_len(), 16),
        rnd(sh.k_len(), 17),
        rnd(sh.v_len(), 18),
    );
    let lens = [23usize, 40];
    let p = AttnParams::new(sh)
        .layout(Layout::Bshd)
        .mask(Mask::none().with_key_lengths(&lens));
    let a = fused::forward(&p, &q, &k, &v).unwrap();
    let small = Shape::new(1, 2, 40, 23, 8);
    let row = |x: &[f32], n: usize| x[..n * 2 * 8].to_vec();
    let b = fused::forward(
        &AttnParams::new(small).layout(Layout::Bshd),
        &q[..sh.q_len() / 2],
        &row(&k, 23),
        &row(&v, 23),
    )
    .unwrap();
    assert!(max_diff(&a.out[..sh.o_len() / 2], &b.out) < 1e-6);
}

#[test]
fn decoding_through_the_cache_equals_one_causal_forward() {
    let (h, h_kv, d, n) = (9, 3, 16, 300);
    let sh = Shape::new(1, h, n, n, d).with_kv_heads(h_kv);
    let (q, k, v) = (
        rnd(sh.q_len(), 19),
        rnd(sh.k_len(), 20),
        rnd(sh.v_len(), 21),
    );
    let full_p = AttnParams::new(sh)
        .layout(Layout::Bshd)
        .mask(Mask::causal());
    let full = fused::forward(&full_p, &q, &k, &v).unwrap();
    let row = h * d;
    let kv_row = h_kv * d;
    for isa in Isa::available() {
        let mut cache = KvCache::new(2, 1, h_kv, d, d).unwrap();
        // a prompt of 100, then steps of 1, 3 and 1 ... up to n
        let mut pos = 0;
        let mut step = 100;
        while pos < n {
            let m = step.min(n - pos);
            let layer = cache.layer_mut(1).unwrap();
            layer
                .append(
                    &k[pos * kv_row..(pos + m) * kv_row],
                    &v[pos * kv_row..(pos + m) * kv_row],
                    m,
                    Layout::Bshd,
                )
                .unwrap();
            let p = AttnParams::new(Shape::new(1, h, m, pos + m, d).with_kv_heads(h_kv))
                .layout(Layout::Bshd)
                .mask(Mask::causal())
                .isa(isa);
            let o = cache
                .layer(1)
                .unwrap()
                .attend(&p, &q[pos * row..(pos + m) * row])
                .unwrap();
            let e = max_diff(&o.out, &full.out[pos * row..(pos + m) * row]);
            assert!(e < 2e-6, "{isa:?}: positions {pos}..{}: {e}", pos + m);
            pos += m;
            step = if step == 1 { 3 } else { 1 };
        }
        assert_eq!(cache.layer(1).unwrap().len(), n);
        // roll back and redo the last 10 positions: same answer
        cache.layer_mut(1).unwrap().truncate(n - 10).unwrap();
        cache
            .layer_mut(1)
            .unwrap()
            .append(
                &k[(n - 10) * kv_row..],
                &v[(n - 10) * kv_row..],
                10,
                Layout::Bshd,
            )
            .unwrap();
        let p = AttnParams::new(Shape::new(1, h, 10, n, d).with_kv_heads(h_kv))
            .layout(Layout::Bshd)
            .mask(Mask::causal())
            .isa(isa);
        let o = cache
            .layer(1)
            .unwrap()
            .attend(&p, &q[(n - 10) * row..])
            .unwrap();
        assert!(max_diff(&o.out, &full.out[(n - 10) * row..]) < 2e-6);
        // the probabilities over the cache (its capacity strides) equal the full forward's rows
        let heads = [0, 4, 8];
        let pc = cache
            .layer(1)
            .unwrap()
            .probabilities_from_lse(&p, &q[(n - 10) * row..], &o.lse, Some(&heads))
            .unwrap();
        let pf = fused::probabilities(&full_p, &q, &k, &v, Some(&heads)).unwrap();
        for (hi, _) in heads.iter().enumerate() {
            for i in 0..10 {
                let a = &pc[(hi * 10 + i) * n..][..n];
                let b = &pf[(hi * n + n - 10 + i) * n..][..n];
                assert!(max_diff(a, b) < 1e-6, "{isa:?}: head {hi} row {i}");
            }
        }
        assert!(cache
            .layer(1)
            .unwrap()
            .probabilities_from_lse(&p, &q[(n - 10) * row..], &o.lse, Some(&[9]))
            .is_err());
        cache.reset();
        assert!(cache.layer(1).unwrap().is_empty());
    }
}

/// A sliding-window layer that forgets what its window can no longer see gives the same
/// outputs and probabilities as a full cache under the same window mask, and its memory stays
/// bounded by the window however many positions pass through it.
#[test]
fn a_cache_that_forgets_behind_the_window_equals_the_full_one() {
    let (h, h_kv, d, n, w) = (4, 1, 16, 700, 37);
    let sh = Shape::new(1, h, n, n, d).with_kv_heads(h_kv);
    let (q, k, v) = (
        rnd(sh.q_len(), 31),
        rnd(sh.k_len(), 32),
        rnd(sh.v_len(), 33),
    );
    let full_p = AttnParams::new(sh)
        .layout(Layout::Bshd)
        .mask(Mask::sliding_window(w));
    let full = fused::forward(&full_p, &q, &k, &v).unwrap();
    let (row, kv_row) = (h * d, h_kv * d);
    for isa in Isa::available() {
        let mut kv = KvCache::new(2, 1, h_kv, d, d).unwrap();
        let (mut pos, mut step) = (0, 90);
        while pos < n {
            let m = step.min(n - pos);
            // layer 0 keeps everything; layer 1 forgets what position `pos` can no longer see
            for l in 0..2 {
                let c = kv.layer_mut(l).unwrap();
                if l == 1 {
                    c.forget_before((pos + 1).saturating_sub(w));
                }
                c.append(
                    &k[pos * kv_row..(pos + m) * kv_row],
                    &v[pos * kv_row..(pos + m) * kv_row],
                    m,
                    Layout::Bshd,
                )
                .unwrap();
            }
            let c = kv.layer(1).unwrap();
            assert_eq!(c.end(), pos + m);
            assert_eq!(c.first(), (pos + 1).saturating_sub(w));
            let p = AttnParams::new(Shape::new(1, h, m, c.len(), d).with_kv_heads(h_kv))
                .layout(Layout::Bshd)
                .mask(Mask::sliding_window(w))
                .isa(isa);
            let o = c.attend(&p, &q[pos * row..(pos + m) * row]).unwrap();
            let e = max_diff(&o.out, &full.out[pos * row..(pos + m) * row]);
            assert!(e < 2e-6, "{isa:?}: positions {pos}..{}: {e}", pos + m);
            if m == 1 {
                // the one row of probabilities is the full row's live part; the rest is 0
                let pc = c.probabilities_from_lse(&p, &q[pos * row..][..row], &o.lse, None);
                let pf = fused::probabilities(&full_p, &q, &k, &v, Some(&[2])).unwrap();
                let want = &pf[pos * n..][..n];
                let got = &pc.unwrap()[2 * c.len()..][..c.len()];
                assert!(max_diff(got, &want[c.first()..c.end()]) < 1e-6);
                assert!(want[..c.first()].iter().all(|&x| x == 0.0));
            }
            // a long text, a bounded memory: live positions and capacity stay near the window
            assert!(c.len() < w + m && c.capacity() <= 2 * (w + 90).next_power_of_two());
            pos += m;
            step = if step == 1 { 3 } else { 1 };
        }
        assert_eq!(kv.len(), n);
        // rolling back within what is kept works; past it is refused
        let c = kv.layer_mut(1).unwrap();
        c.truncate(n - 3).unwrap();
        assert_eq!((c.end(), c.len()), (n - 3, w - 3));
        let err = c.truncate(n - w - 10).unwrap_err();
        assert!(err.to_string().contains("forgotten"), "{err}");
        c.reset();
        assert_eq!((c.first(), c.end()), (0, 0));
    }
}

#[test]
fn long_cache_splits_keys_across_threads_exactly() {
    // long enough that the grouped path splits the keys; compare with the tiled reference path
    let sh = Shape::new(1, 4, 1, 5000, 64).with_kv_heads(1);
    let (q, k, v) = (
        rnd(sh.q_len(), 22),
        rnd(sh.k_len(), 23),
        rnd(sh.v_len(), 24),
    );
    let p = AttnParams::new(sh).mask(Mask::causal());
    let r = attend::reference::forward(&p, &q, &k, &v).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for isa in Isa::available() {
        let f = pool
            .install(|| fused::forward(&p.clone().isa(isa), &q, &k, &v))
            .unwrap();
        assert!(max_diff(&f.out, &r.out) < 1e-6);
        assert!(max_diff(&f.lse, &r.lse) < 1e-4);
    }
}
