//! Every bad call is a typed error that names what is wrong — never a panic.

use attend::{
    backward, decode::LayerCache, fused, reference, AttnParams, Error, Isa, Layout, Mask,
    MaskScope, Shape,
};

fn ok_inputs(sh: Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        vec![0.1; sh.q_len()],
        vec![0.2; sh.k_len()],
        vec![0.3; sh.v_len()],
    )
}

#[test]
fn zero_dimension() {
    let sh = Shape::new(1, 2, 0, 3, 4);
    let (q, k, v) = ok_inputs(sh);
    let e = fused::forward(&AttnParams::new(sh), &q, &k, &v).unwrap_err();
    assert_eq!(e, Error::ZeroDim { dim: "s_q" });
    assert!(e.to_string().contains("s_q"));
}

#[test]
fn heads_not_divisible() {
    let sh = Shape::new(1, 6, 3, 3, 4).with_kv_heads(4);
    let e = reference::forward(&AttnParams::new(sh), &[], &[], &[]).unwrap_err();
    assert_eq!(e, Error::HeadsNotDivisible { h: 6, h_kv: 4 });
}

#[test]
fn wrong_buffer_lengths_name_the_buffer() {
    let sh = Shape::new(2, 2, 3, 5, 4);
    let (q, k, v) = ok_inputs(sh);
    let p = AttnParams::new(sh);
    assert_eq!(
        fused::forward(&p, &q[1..], &k, &v).unwrap_err(),
        Error::ShapeMismatch {
            what: "q",
            expected: 48,
            got: 47
        }
    );
    assert!(matches!(
        fused::forward(&p, &q, &v[..10], &v).unwrap_err(),
        Error::ShapeMismatch { what: "k", .. }
    ));
    assert!(matches!(
        fused::forward(&p, &q, &k, &v[..3]).unwrap_err(),
        Error::ShapeMismatch { what: "v", .. }
    ));
    let mut out = vec![0.0; 3];
    let mut lse = vec![0.0; sh.lse_len()];
    assert!(matches!(
        fused::forward_into(&p, &q, &k, &v, &mut out, &mut lse).unwrap_err(),
        Error::ShapeMismatch { what: "out", .. }
    ));
    let mut out = vec![0.0; sh.o_len()];
    assert!(matches!(
        fused::forward_into(&p, &q, &k, &v, &mut out, &mut lse[1..]).unwrap_err(),
        Error::ShapeMismatch { what: "lse", .. }
    ));
    let f = fused::forward(&p, &q, &k, &v).unwrap();
    assert!(matches!(
        backward::backward(&p, &q, &k, &v, &f.out, &f.lse, &[0.0]).unwrap_err(),
        Error::ShapeMismatch { what: "dout", .. }
    ));
    assert!(matches!(
        reference::backward(&p, &q, &k, &v, &[0.0]).unwrap_err(),
        Error::ShapeMismatch { what: "dout", .. }
    ));
}

#[test]
fn mask_of_the_wrong_size() {
    let sh = Shape::new(2, 2, 3, 5, 4);
    let (q, k, v) = ok_inputs(sh);
    let keep = vec![true; 15];
    let p = AttnParams::new(sh).mask(Mask::none().with_bool(&keep, MaskScope::PerHead));
    assert_eq!(
        fused::forward(&p, &q, &k, &v).unwrap_err(),
        Error::ShapeMismatch {
            what: "bool mask",
            expected: 60,
            got: 15
        }
    );
    let bias = vec![0.0; 16];
    let p = AttnParams::new(sh).mask(Mask::none().with_additive(&bias, MaskScope::Shared));
    assert!(matches!(
        fused::forward(&p, &q, &k, &v).unwrap_err(),
        Error::ShapeMismatch {
            what: "additive mask",
            ..
        }
    ));
    let lens = [5usize];
    let p = AttnParams::new(sh).mask(Mask::none().with_key_lengths(&lens));
    assert!(matches!(
        fused::forward(&p, &q, &k, &v).unwrap_err(),
        Error::ShapeMismatch {
            what: "key_lengths",
            ..
        }
    ));
    let lens = [5usize, 6];
    let p = AttnParams::new(sh).mask(Mask::none().with_key_lengths(&lens));
    assert_eq!(
        fused::forward(&p, &q, &k, &v).unwrap_err(),
        Error::KeyLengthOutOfRange {
            batch: 1,
            got: 6,
            s_kv: 5
        }
    );
}

#[test]
fn invalid_parameters() {
    let sh = Shape::new(1, 1, 3, 3, 4);
    let (q, k, v) = ok_inputs(sh);
    for p in [
        AttnParams::new(sh).scale(0.0),
        AttnParams::new(sh).scale(f32::NAN),
        AttnParams::new(sh).softcap(-1.0),
        AttnParams::new(sh).mask(Mask::sliding_window(0)),
    ] {
        assert!(matches!(
            fused::forward(&p, &q, &k, &v).unwrap_err(),
            Error::InvalidParameter { .. }
        ));
    }
    let p = AttnParams::new(sh);
    let e = fused::probabilities(&p, &q, &k, &v, Some(&[1])).unwrap_err();
    assert!(
        matches!(e, Error::InvalidParameter { name: "heads", .. }),
        "{e}"
    );
}

#[test]
fn non_finite_inputs_are_refused() {
    let sh = Shape::new(1, 1, 3, 3, 4);
    let (mut q, k, v) = ok_inputs(sh);
    q[5] = f32::NAN;
    let e = fused::forward(&AttnParams::new(sh), &q, &k, &v).unwrap_err();
    assert!(matches!(
        e,
        Error::NonFinite {
            what: "q",
            index: 5,
            ..
        }
    ));
    let (q, k, mut v) = ok_inputs(sh);
    v[0] = f32::INFINITY;
    assert!(matches!(
        reference::forward(&AttnParams::new(sh), &q, &k, &v).unwrap_err(),
        Error::NonFinite { what: "v", .. }
    ));
    let mut bias = vec![f32::NEG_INFINITY; 9]; // -inf is allowed ...
    let p = AttnParams::new(sh).mask(Mask::none().with_additive(&bias, MaskScope::Shared));
    assert!(fused::forward(&p, &q, &k, &ok_inputs(sh).2).is_ok());
    bias[2] = f32::NAN; // ... NaN is not
    let p = AttnParams::new(sh).mask(Mask::none().with_additive(&bias, MaskScope::Shared));
    assert!(matches!(
        fused::forward(&p, &q, &k, &ok_inputs(sh).2).unwrap_err(),
        Error::NonFinite {
            what: "additive mask",
            index: 2,
            ..
        }
    ));
}

/// The decode path checks K and V tile by tile as it reads them (when it reads every key of
/// contiguous rows) and first otherwise: either way the error names the first bad value, for
/// every instruction set, layout and position, and a value in keys no query sees is refused too.
#[test]
fn non_finite_keys_and_values_are_refused_on_the_decode_path() {
    let sh = Shape::new(2, 4, 1, 1000, 8).with_kv_heads(2); // grouped: 4 queries per kv head
    for isa in attend::Isa::available() {
        for layout in [Layout::Bhsd, Layout::Bshd] {
            for lengths in [None, Some(vec![1000usize, 300])] {
                for (what, at) in [
                    ("k", 0),
                    ("k", 8 * 999 + 7),
                    ("v", 8 * 1000 * 3 + 3),
                    ("v", 15_999),
                ] {
                    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                        let (q, mut k, mut v) = ok_inputs(sh);
                        let mut p = AttnParams::new(sh).layout(layout).isa(isa);
                        if let Some(l) = &lengths {
                            p = p.mask(Mask::none().with_key_lengths(l));
                        }
                        if what == "k" {
                            k[at] = bad;
                            k[at + 1] = bad; // the first one is named
                        } else {
                            v[at] = bad;
                        }
                        let e = fused::forward(&p, &q, &k, &v).unwrap_err();
                        assert!(
                            matches!(e, Error::NonFinite { what: w, index, .. } if w == what && index == at),
                            "{isa:?} {layout:?} {lengths:?} {what}[{at}] = {bad}: {e}"
                        );
                        let mut out = vec![7.0; sh.o_len()];
                        let mut lse = vec![7.0; sh.lse_len()];
                        assert!(fused::forward_into(&p, &q, &k, &v, &mut out, &mut lse).is_err());
                        // nothing written
                        assert!(out.iter().chain(&lse).all(|&x| x == 7.0));
                    }
                }
                let (q, k, v) = ok_inputs(sh);
                let mut p = AttnParams::new(sh).layout(layout).isa(isa);
                if let Some(l) = &lengths {
                    p = p.mask(Mask::none().with_key_lengths(l));
                }
                let want = reference::forward(&p, &q, &k, &v).unwrap();
                let got = fused::forward(&p, &q, &k, &v).unwrap();
                let err = got
                    .out
                    .iter()
                    .zip(&want.out)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err < 1e-5, "{isa:?} {layout:?} {lengths:?}: {err}");
            }
        }
    }
}

#[test]
fn unavailable_instruction_set() {
    let sh = Shape::new(1, 1, 3, 3, 4);
    let (q, k, v) = ok_inputs(sh);
    let r = fused::forward(&AttnParams::new(sh).isa(Isa::Avx2), &q, &k, &v);
    if Isa::available().contains(&Isa::Avx2) {
        assert!(r.is_ok());
    } else {
        assert_eq!(r.unwrap_err(), Error::IsaUnavailable(Isa::Avx2));
    }
}

#[test]
fn cache_misuse() {
    let mut c = LayerCache::new(1, 2, 4, 4).unwrap();
    assert!(matches!(
        LayerCache::new(1, 0, 4, 4).unwrap_err(),
        Error::ZeroDim { dim: "h_kv" }
    ));
    assert!(matches!(
        c.append(&[0.0; 7], &[0.0; 8], 1, Layout::Bshd).unwrap_err(),
        Error::ShapeMismatch { what: "k", .. }
    ));
    c.append(&[0.0; 8], &[0.0; 8], 1, Layout::Bshd).unwrap();
    assert!(matches!(c.truncate(2).unwrap_err(), Error::Cache(_)));
    // the query shape must agree with the cache
    let p = AttnParams::new(Shape::new(1, 2, 1, 5, 4).with_kv_heads(2));
    assert_eq!(
        c.attend(&p, &[0.0; 8]).unwrap_err(),
        Error::ShapeMismatch {
            what: "s_kv",
            expected: 1,
            got: 5
        }
    );
    let p = AttnParams::new(Shape::new(1, 4, 1, 1, 4).with_kv_heads(4));
    assert!(matches!(
        c.attend(&p, &[0.0; 16]).unwrap_err(),
        Error::ShapeMismatch { what: "h_kv", .. }
    ));
    assert!(matches!(
        c.append(&[f32::NAN; 8], &[0.0; 8], 1, Layout::Bshd)
            .unwrap_err(),
        Error::NonFinite { .. }
    ));
}

/// The backward refuses an lse no forward gives: NaN, +inf, or -inf beside a row with output
/// (a fully masked row's -inf, with its zero output, is fine).
#[test]
fn backward_refuses_an_lse_no_forward_gives() {
    let sh = Shape::new(1, 2, 3, 4, 8);
    let (q, k, v) = ok_inputs(sh);
    let p = AttnParams::new(sh);
    let f = fused::forward(&p, &q, &k, &v).unwrap();
    let (out, lse) = (f.out, f.lse);
    let dout = vec![1.0f32; sh.o_len()];
    assert!(backward::backward(&p, &q, &k, &v, &out, &lse, &dout).is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut l = lse.clone();
        l[4] = bad;
        let e = backward::backward(&p, &q, &k, &v, &out, &l, &dout).unwrap_err();
        assert!(
            matches!(e, Error::NonFinite { index: 4, .. }),
            "lse[4] = {bad}: {e}"
        );
    }
    // a row that saw no key: output 0, lse -inf, gradients 0
    let mut o = out.clone();
    let mut l = lse.clone();
    o[8..16].iter_mut().for_each(|x| *x = 0.0);
    l[1] = f32::NEG_INFINITY;
    assert!(backward::backward(&p, &q, &k, &v, &o, &l, &dout).is_ok());
}
