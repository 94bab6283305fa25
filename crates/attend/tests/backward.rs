//! The backward pass: the reference against central finite differences in f64, and the fused
//! backward against the reference, for every mask kind (random blocks of -inf included).

mod common;

use attend::{backward, fused, reference, AttnParams, Isa, Layout, MaskScope, Shape};
use common::*;

/// L = Σ g ∘ out, in f64.
fn loss(p: &AttnParams, md: &MaskData, q: &[f64], k: &[f64], v: &[f64], g: &[f64]) -> f64 {
    let (o, _, _) = attention_f64(p, md, q, k, v);
    o.iter().zip(g).map(|(a, b)| a * b).sum()
}

#[test]
fn reference_backward_matches_finite_differences() {
    let sh = Shape::new(2, 2, 4, 5, 3).with_kv_heads(1).with_value_dim(2);
    for (n, kind) in ALL_KINDS.iter().enumerate() {
        for softcap in [None, Some(1.5f32)] {
            let md = MaskData::new(*kind, &sh, n as u64 + 3);
            let layout = if n % 2 == 0 {
                Layout::Bhsd
            } else {
                Layout::Bshd
            };
            let mut p = AttnParams::new(sh).layout(layout).mask(md.mask());
            if let Some(c) = softcap {
                p = p.softcap(c).scale(1.7);
            }
            let q: Vec<f32> = rnd(sh.q_len(), 1).iter().map(|x| x * 2.0).collect();
            let k: Vec<f32> = rnd(sh.k_len(), 2).iter().map(|x| x * 2.0).collect();
            let v = rnd(sh.v_len(), 3);
            let g = rnd(sh.o_len(), 4);
            let grads = reference::backward(&p, &q, &k, &v, &g).unwrap();
            let (q64, k64, v64, g64) = (to64(&q), to64(&k), to64(&v), to64(&g));
            let eps = 1e-6;
            for (which, x, dx) in [
                (0, &q64, &grads.dq),
                (1, &k64, &grads.dk),
                (2, &v64, &grads.dv),
            ] {
                for idx in 0..x.len() {
                    let mut plus = x.clone();
                    let mut minus = x.clone();
                    plus[idx] += eps;
                    minus[idx] -= eps;
                    let args = |t: &Vec<f64>| match which {
                        0 => loss(&p, &md, t, &k64, &v64, &g64),
                        1 => loss(&p, &md, &q64, t, &v64, &g64),
                        _ => loss(&p, &md, &q64, &k64, t, &g64),
                    };
                    let fd = (args(&plus) - args(&minus)) / (2.0 * eps);
                    let an = dx[idx] as f64;
                    assert!(
                        (fd - an).abs() <= 1e-4 + 1e-3 * fd.abs(),
                        "{kind:?} softcap {softcap:?} tensor {which} [{idx}]: analytic {an} vs fd {fd}"
                    );
                }
            }
        }
    }
}

fn fused_vs_reference(sh: Shape, kind: Kind, layout: Layout, softcap: Option<f32>, seed: u64) {
    let md = MaskData::new(kind, &sh, seed);
    let mut p = AttnParams::new(sh).layout(layout).mask(md.mask());
    if let Some(c) = softcap {
        p = p.softcap(c);
    }
    let q = rnd(sh.q_len(), seed + 1);
    let k = rnd(sh.k_len(), seed + 2);
    let v = rnd(sh.v_len(), seed + 3);
    let g = rnd(sh.o_len(), seed + 4);
    let r = reference::backward(&p, &q, &k, &v, &g).unwrap();
    for isa in Isa::available() {
        let p = p.clone().isa(isa);
        let fwd = fused::forward(&p, &q, &k, &v).unwrap();
        let f = backward::backward(&p, &q, &k, &v, &fwd.out, &fwd.lse, &g).unwrap();
        for (name, a, b) in [
            ("dq", &f.dq, &r.dq),
            ("dk", &f.dk, &r.dk),
            ("dv", &f.dv, &r.dv),
        ] {
            let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let e = max_diff(a, b);
            assert!(
                e <= 2e-5 * scale,
                "{kind:?} {layout:?} {isa:?} {sh:?}: {name} differs by {e} (scale {scale})"
            );
            assert!(a.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn fused_backward_matches_reference_for_every_mask() {
    let shapes = [
        Shape::new(1, 1, 1, 1, 1),
        Shape::new(2, 4, 17, 15, 7).with_kv_heads(2),
        Shape::new(1, 3, 97, 129, 33)
            .with_kv_heads(1)
            .with_value_dim(20),
        Shape::new(1, 2, 130, 70, 64),
    ];
    for (i, sh) in shapes.iter().enumerate() {
        for (j, kind) in ALL_KINDS.iter().enumerate() {
            let layout = if (i + j) % 2 == 0 {
                Layout::Bhsd
            } else {
                Layout::Bshd
            };
            fused_vs_reference(*sh, *kind, layout, None, (i * 17 + j) as u64);
        }
    }
}

#[test]
fn fused_backward_with_softcap_and_inf_blocks() {
    let sh = Shape::new(2, 2, 50, 90, 16);
    fused_vs_reference(
        sh,
        Kind::Additive(MaskScope::PerHead),
        Layout::Bhsd,
        Some(5.0),
        3,
    );
    fused_vs_reference(sh, Kind::Causal, Layout::Bshd, Some(2.0), 4);
}

#[test]
fn fused_backward_splits_keys_when_heads_are_few() {
    // one head, a long key range: tasks split the keys and their dq partials add up
    let sh = Shape::new(1, 1, 40, 1100, 16);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| fused_vs_reference(sh, Kind::CausalPadding, Layout::Bhsd, None, 9));
}
