//! The fused kernel against the reference, both against an independent f64 computation.
//! Error is judged the FlashAttention way: the fused error is at most twice the reference's
//! f32 error, plus a tiny absolute tolerance.

mod common;

use attend::{fused, reference, AttnParams, Isa, Layout, MaskScope, Shape};
use common::*;
use proptest::prelude::*;

const ATOL: f64 = 2e-6;

fn check_case(sh: Shape, kind: Kind, layout: Layout, softcap: Option<f32>, seed: u64) {
    let md = MaskData::new(kind, &sh, seed);
    let q = rnd(sh.q_len(), seed * 3 + 1);
    let k = rnd(sh.k_len(), seed * 3 + 2);
    let v = rnd(sh.v_len(), seed * 3 + 3);
    let mut p = AttnParams::new(sh).layout(layout).mask(md.mask());
    if let Some(c) = softcap {
        p = p.softcap(c).scale(1.3);
    }
    let (o64, lse64, p64) = attention_f64(&p, &md, &to64(&q), &to64(&k), &to64(&v));
    let r = reference::forward(&p, &q, &k, &v).unwrap();
    let rp = reference::probabilities(&p, &q, &k, &v).unwrap();
    let (ref_o, ref_l, ref_p) = (
        max_err(&r.out, &o64),
        max_err(&r.lse, &lse64),
        max_err(&rp, &p64),
    );
    for isa in Isa::available() {
        let p = p.clone().isa(isa);
        let f = fused::forward(&p, &q, &k, &v).unwrap();
        let fo = max_err(&f.out, &o64);
        assert!(
            fo <= 2.0 * ref_o + ATOL,
            "{isa:?} out: fused {fo:e} ref {ref_o:e}"
        );
        let fl = max_err(&f.lse, &lse64);
        assert!(
            fl <= 2.0 * ref_l + 4.0 * ATOL,
            "{isa:?} lse: fused {fl:e} ref {ref_l:e}"
        );
        for (a, b) in f.lse.iter().zip(&lse64) {
            assert_eq!(
                a.is_infinite(),
                b.is_infinite(),
                "{isa:?}: fully masked rows differ"
            );
        }
        assert!(f.out.iter().all(|x| x.is_finite()));
        let fp = fused::probabilities_from_lse(&p, &q, &k, &f.lse, None).unwrap();
        let e = max_err(&fp, &p64);
        assert!(
            e <= 2.0 * ref_p + ATOL,
            "{isa:?} probs: fused {e:e} ref {ref_p:e}"
        );
        // masked pairs are exactly zero
        for (x, y) in fp.iter().zip(&p64) {
            if *y == 0.0 {
                assert_eq!(*x, 0.0);
            }
        }
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::None),
        Just(Kind::Causal),
        (1usize..40).prop_map(Kind::Window),
        (0usize..20, 0usize..20).prop_map(|(l, r)| Kind::Band(l, r)),
        Just(Kind::Padding),
        Just(Kind::CausalPadding),
        Just(Kind::CausalHidden),
        prop_oneof![
            Just(MaskScope::Shared),
            Just(MaskScope::PerBatch),
            Just(MaskScope::PerHead)
        ]
        .prop_map(Kind::Bool),
        prop_oneof![
            Just(MaskScope::Shared),
            Just(MaskScope::PerBatch),
            Just(MaskScope::PerHead)
        ]
        .prop_map(Kind::Additive),
    ]
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    (
        1usize..=3,
        prop_oneof![
            Just((1, 1)),
            Just((2, 1)),
            Just((2, 2)),
            Just((3, 1)),
            Just((4, 2)),
            Just((6, 3)),
            Just((8, 8)),
            Just((8, 2))
        ],
        1usize..=300,
        1usize..=300,
        prop::sample::select(vec![1usize, 7, 8, 33, 59, 64, 80, 128]),
        prop::sample::select(vec![0usize, 0, 0, 5, 16]),
    )
        .prop_map(|(b, (h, h_kv), s_q, s_kv, d, dv)| {
            Shape::new(b, h, s_q, s_kv, d)
                .with_kv_heads(h_kv)
                .with_value_dim(if dv == 0 { d } else { dv })
        })
        // keep each case's reference work bounded
        .prop_filter("small enough", |s| {
            s.b * s.h * s.s_q * s.s_kv * (s.d + s.d_v) <= 12_000_000
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn fused_matches_reference_and_f64(
        sh in shape_strategy(),
        kind in kind_strategy(),
        bshd in any::<bool>(),
        softcap in prop::option::weighted(0.25, 2.0f32..30.0),
        seed in 1u64..1000,
    ) {
        let layout = if bshd { Layout::Bshd } else { Layout::Bhsd };
        check_case(sh, kind, layout, softcap, seed);
    }
}

#[test]
fn awkward_sizes_every_mask() {
    for (i, &(s_q, s_kv, d)) in [
        (1, 1, 1),
        (15, 17, 7),
        (97, 129, 33),
        (17, 300, 59),
        (129, 97, 111),
        (64, 64, 128),
        (1, 257, 64),
    ]
    .iter()
    .enumerate()
    {
        for (j, kind) in ALL_KINDS.iter().enumerate() {
            let sh = Shape::new(2, 4, s_q, s_kv, d).with_kv_heads(2);
            let layout = if (i + j) % 2 == 0 {
                Layout::Bhsd
            } else {
                Layout::Bshd
            };
            check_case(sh, *kind, layout, None, (i * 31 + j) as u64 + 1);
        }
    }
}

/// Decoding shapes (a few queries a key/value head, value dims a multiple of 16: the path
/// with the queries as rows and the keys in the lanes), every mask, with and without a soft
/// cap, caches short and long enough to be split across threads.
#[test]
fn few_queries_per_group_every_mask() {
    let mut seed = 7;
    for &(h, h_kv, s_q) in &[(9, 3, 1), (8, 1, 1), (4, 4, 2), (6, 2, 2), (8, 2, 2)] {
        for &(s_kv, d, d_v) in &[(1, 64, 64), (17, 32, 16), (130, 64, 64), (700, 48, 32)] {
            for (j, kind) in ALL_KINDS.iter().enumerate() {
                let sh = Shape::new(1 + j % 2, h, s_q, s_kv, d)
                    .with_kv_heads(h_kv)
                    .with_value_dim(d_v);
                let layout = if j % 2 == 0 {
                    Layout::Bhsd
                } else {
                    Layout::Bshd
                };
                let softcap = (j % 3 == 0).then_some(5.0);
                seed += 1;
                check_case(sh, *kind, layout, softcap, seed);
            }
        }
    }
}

#[test]
fn large_scores_stay_exact() {
    // scores far from 0 exercise the running-max rescaling
    let sh = Shape::new(1, 2, 70, 200, 16);
    let md = MaskData::new(Kind::Causal, &sh, 5);
    let q: Vec<f32> = rnd(sh.q_len(), 1).iter().map(|x| x * 20.0).collect();
    let k = rnd(sh.k_len(), 2);
    let v = rnd(sh.v_len(), 3);
    let p = AttnParams::new(sh).mask(md.mask());
    let (o64, _, _) = attention_f64(&p, &md, &to64(&q), &to64(&k), &to64(&v));
    let r = max_err(&reference::forward(&p, &q, &k, &v).unwrap().out, &o64);
    for isa in Isa::available() {
        let f = fused::forward(&p.clone().isa(isa), &q, &k, &v).unwrap();
        assert!(max_err(&f.out, &o64) <= 2.0 * r + ATOL);
    }
}

#[test]
fn two_tokens_by_hand() {
    // q = [1, 0], [0, 1]; k = [1, 0], [0, 2]; v = [1, 2], [3, 4]; scale 1, no mask.
    // row 0: scores (1, 0)  -> p = (e/(e+1), 1/(e+1))
    // row 1: scores (0, 2)  -> p = (1/(1+e²), e²/(1+e²))
    let sh = Shape::new(1, 1, 2, 2, 2);
    let (q, k, v) = (
        [1.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0, 2.0],
        [1.0, 2.0, 3.0, 4.0],
    );
    let e = std::f32::consts::E;
    let p0 = [e / (e + 1.0), 1.0 / (e + 1.0)];
    let p1 = [1.0 / (1.0 + e * e), e * e / (1.0 + e * e)];
    let want = [
        p0[0] * 1.0 + p0[1] * 3.0,
        p0[0] * 2.0 + p0[1] * 4.0,
        p1[0] * 1.0 + p1[1] * 3.0,
        p1[0] * 2.0 + p1[1] * 4.0,
    ];
    let want_lse = [(e + 1.0).ln(), (1.0 + e * e).ln()];
    let p = AttnParams::new(sh).scale(1.0);
    let r = reference::forward(&p, &q, &k, &v).unwrap();
    assert!(max_diff(&r.out, &want) < 1e-6, "{:?}", r.out);
    assert!(max_diff(&r.lse, &want_lse) < 1e-6);
    let probs = reference::probabilities(&p, &q, &k, &v).unwrap();
    assert!(max_diff(&probs, &[p0[0], p0[1], p1[0], p1[1]]) < 1e-6);
    // causal: row 0 sees only key 0
    let c = reference::forward(&p.clone().mask(attend::Mask::causal()), &q, &k, &v).unwrap();
    assert!(max_diff(&c.out[..2], &[1.0, 2.0]) < 1e-6);
    for isa in Isa::available() {
        let f = fused::forward(&p.clone().isa(isa), &q, &k, &v).unwrap();
        assert!(max_diff(&f.out, &want) < 1e-6);
    }
}
