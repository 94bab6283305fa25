//! Hostile callers: arbitrary sizes — huge ones included — at every public entry point of the
//! crate. Each call must return (an `Ok` or an `attend::Error`), never panic or abort, and
//! never do unbounded work: buffers here are at most a few thousand elements, so any shape
//! that would need more is refused before anything is allocated from it.

use attend::{
    backward, fused, reference, AttnParams, Explicit, KvCache, LayerCache, Layout, Mask, MaskScope,
    Shape,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Dimensions: mostly small, sometimes zero, sometimes enormous.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        40 => 1usize..5,
        1 => Just(0usize),
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 2 + 1),
        1 => Just(isize::MAX as usize),
        1 => Just(1usize << 32),
        1 => Just(1usize << 40),
        1 => Just((1usize << 61) + 3),
    ]
}

/// An optional window side, including the extremes.
fn side() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        2 => Just(None),
        3 => (0usize..6).prop_map(Some),
        1 => Just(Some(usize::MAX)),
        1 => Just(Some(usize::MAX - 1)),
        1 => Just(Some(isize::MAX as usize + 1)),
    ]
}

/// A buffer: the length the shape asks for when that is small, or any small length.
fn buffer(want: usize, pick: u8, seed: u32) -> Vec<f32> {
    let n = if pick < 240 && want <= 4096 {
        want
    } else {
        pick as usize % 40
    };
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

#[derive(Debug, Clone)]
struct Call {
    shape: Shape,
    left: Option<usize>,
    right: Option<usize>,
    lengths: Option<Vec<usize>>,
    explicit: Option<(bool, u8, usize)>,
    layout: bool,
    picks: [u8; 6],
    heads: Option<Vec<usize>>,
    index: [usize; 5],
}

fn call() -> impl Strategy<Value = Call> {
    (
        (dim(), dim(), dim(), dim(), dim(), dim(), dim()),
        (side(), side()),
        proptest::option::weighted(0.2, proptest::collection::vec(dim(), 0..5)),
        proptest::option::weighted(0.3, (any::<bool>(), 0u8..3, 0usize..80)),
        any::<bool>(),
        any::<[u8; 6]>(),
        proptest::option::of(proptest::collection::vec(dim(), 0..4)),
        (dim(), dim(), dim(), dim(), dim()),
    )
        .prop_map(
            |(
                (b, h, h_kv, s_q, s_kv, d, d_v),
                (left, right),
                lengths,
                explicit,
                layout,
                picks,
                heads,
                i,
            )| Call {
                shape: Shape {
                    b,
                    h,
                    h_kv,
                    s_q,
                    s_kv,
                    d,
                    d_v,
                },
                left,
                right,
                lengths,
                explicit,
                layout,
                picks,
                heads,
                index: [i.0, i.1, i.2, i.3, i.4],
            },
        )
}

fn scope(s: u8) -> MaskScope {
    match s {
        0 => MaskScope::Shared,
        1 => MaskScope::PerBatch,
        _ => MaskScope::PerHead,
    }
}

fn run(c: &Call) {
    let sh = c.shape;
    // the size helpers saturate, never overflow
    let _ = (sh.group(), sh.q_len(), sh.k_len(), sh.v_len());
    let _ = (sh.o_len(), sh.lse_len(), sh.probs_len());

    let keep: Vec<bool>;
    let bias: Vec<f32>;
    let mut mask = Mask::none().with_window(c.left, c.right);
    if let Some(l) = &c.lengths {
        mask = mask.with_key_lengths(l);
    }
    if let Some((is_bool, s, n)) = c.explicit {
        // half the time the length the scope asks for (when small), else any
        let want = match scope(s) {
            MaskScope::Shared => sh.s_q.checked_mul(sh.s_kv),
            MaskScope::PerBatch => {
                sh.b.checked_mul(sh.s_q)
                    .and_then(|x| x.checked_mul(sh.s_kv))
            }
            MaskScope::PerHead => {
                sh.b.checked_mul(sh.h)
                    .and_then(|x| x.checked_mul(sh.s_q))
                    .and_then(|x| x.checked_mul(sh.s_kv))
            }
        };
        let n = match want {
            Some(w) if n % 2 == 0 && w <= 4096 => w,
            _ => n,
        };
        if is_bool {
            keep = (0..n).map(|i| i % 3 != 0).collect();
            mask.explicit = Some(Explicit::Bool {
                keep: &keep,
                scope: scope(s),
            });
        } else {
            bias = (0..n)
                .map(|i| if i % 4 == 0 { f32::NEG_INFINITY } else { 0.5 })
                .collect();
            mask.explicit = Some(Explicit::Additive {
                bias: &bias,
                scope: scope(s),
            });
        }
    }
    let [b, h, i, j, extra] = c.index;
    let _ = mask.allows(&sh, b, h, i, j);
    let _ = mask.bias(&sh, b, h, i, j);
    let _ = mask.allows(&sh, 0, 0, 0, 0);
    let _ = mask.bias(&sh, 0, 0, 0, 0);

    let layout = if c.layout { Layout::Bshd } else { Layout::Bhsd };
    let p = AttnParams::new(sh).layout(layout).mask(mask);
    let pk = c.picks;
    let q = buffer(sh.q_len(), pk[0], 1);
    let k = buffer(sh.k_len(), pk[1], 2);
    let v = buffer(sh.v_len(), pk[2], 3);
    let dout = buffer(sh.o_len(), pk[3], 4);
    let mut out = buffer(sh.o_len(), pk[4], 5);
    let mut lse = buffer(sh.lse_len(), pk[5], 6);
    let heads = c.heads.as_deref();

    let fwd = fused::forward(&p, &q, &k, &v);
    if fwd.is_ok() {
        VALID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = fused::forward_into(&p, &q, &k, &v, &mut out, &mut lse);
    let _ = fused::probabilities(&p, &q, &k, &v, heads);
    let _ = fused::probabilities_from_lse(&p, &q, &k, &lse, heads);
    let _ = reference::forward(&p, &q, &k, &v);
    let _ = reference::probabilities(&p, &q, &k, &v);
    let _ = reference::backward(&p, &q, &k, &v, &dout);
    if let Ok(o) = &fwd {
        let _ = backward::backward(&p, &q, &k, &v, &o.out, &o.lse, &dout);
    }
    let _ = backward::backward(&p, &q, &k, &v, &out, &lse, &dout);

    // the KV cache, with the same dimensions
    if let Ok(mut cache) = LayerCache::new(sh.b, sh.h_kv, sh.d, sh.d_v) {
        let _ = cache.append(&k, &v, sh.s_kv, layout);
        let _ = cache.append(&k, &v, extra, layout);
        let _ = cache.attend(&p, &q);
        let _ = cache.attend_into(&p, &q, &mut out, &mut lse);
        let _ = cache.probabilities_from_lse(&p, &q, &lse, heads);
        // only requests that overflow or that no memory holds: a legitimate large one would
        // allocate it
        for huge in [usize::MAX, usize::MAX - cache.len(), 1 << 62, 1 << 50] {
            let before = cache.capacity();
            if cache.reserve(huge).is_err() {
                assert_eq!(
                    cache.capacity(),
                    before,
                    "a failed reserve changed the cache"
                );
            }
        }
        let _ = cache.truncate(extra);
        let _ = cache.truncate(0);
        cache.reset();
    }
    // n_layers small: `KvCache::new` allocates its list of (empty) layers
    if let Ok(mut kv) = KvCache::new(extra.min(3), sh.b, sh.h_kv, sh.d, sh.d_v) {
        let _ = kv.layer(extra).map(|l| l.len());
        let _ = kv.layer_mut(b).map(|l| l.reset());
        let _ = kv.truncate(j);
    }
}

static VALID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn no_public_entry_point_panics(c in call()) {
        run(&c);
    }
}

#[test]
fn some_calls_are_valid() {
    // the property test must also reach the kernels, not only the checks
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let before = VALID.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..400 {
        let c = call().new_tree(&mut runner).unwrap().current();
        run(&c);
    }
    let valid = VALID.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(valid >= 20, "only {valid} of 400 calls were valid");
}

#[test]
fn the_reported_cases_are_errors_or_exact() {
    // Shape::group() with h_kv = 0
    let sh = Shape::new(1, 4, 2, 2, 8).with_kv_heads(0);
    assert_eq!(sh.group(), 0);
    let q = vec![0.0; 64];
    let e = fused::forward(&AttnParams::new(sh), &q, &[], &[]).unwrap_err();
    assert!(matches!(e, attend::Error::ZeroDim { dim: "h_kv" }), "{e}");

    // an overflowing shape is refused by its size, not accepted or allocated
    let sh = Shape::new(1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20);
    assert_eq!(sh.q_len(), usize::MAX);
    let e = fused::forward(&AttnParams::new(sh), &[], &[], &[]).unwrap_err();
    assert!(matches!(e, attend::Error::TooLarge { .. }), "{e}");
    // a shape whose product wraps to a small number is not mistaken for it
    let wraps = Shape::new(1 << 32, 1 << 32, 1, 1, 1);
    assert_eq!(wraps.q_len(), usize::MAX);
    assert!(fused::forward(&AttnParams::new(wraps), &[], &[], &[]).is_err());

    // with_window(None, Some(usize::MAX)) keeps every key at or after the query: here all
    let sh = Shape::new(1, 1, 3, 3, 2);
    let m = Mask::none().with_window(None, Some(usize::MAX));
    for i in 0..3 {
        for j in 0..3 {
            assert!(m.allows(&sh, 0, 0, i, j), "({i}, {j})");
        }
    }
    let m = Mask::none().with_window(Some(usize::MAX - 1), Some(0));
    assert!(m.allows(&sh, 0, 0, 2, 0) && !m.allows(&sh, 0, 0, 0, 1));
    let (q, k, v) = (vec![0.3; 6], vec![0.2; 6], vec![1.0; 6]);
    let wide = AttnParams::new(sh).mask(Mask::none().with_window(None, Some(usize::MAX)));
    let a = fused::forward(&wide, &q, &k, &v).unwrap();
    let b = fused::forward(&AttnParams::new(sh), &q, &k, &v).unwrap();
    assert_eq!(a, b);

    // allows / bias outside the shape or the buffer: false / 0, no panic
    let keep = [true; 2];
    let m = Mask::none().with_bool(&keep, MaskScope::Shared);
    assert!(!m.allows(&sh, 0, 0, 2, 2));
    assert!(!m.allows(&sh, 5, 0, 0, 0));
    assert_eq!(m.bias(&sh, 0, 0, 9, 9), 0.0);
    let lens = [7usize];
    let m = Mask::none().with_key_lengths(&lens);
    assert!(!m.allows(&sh, 1, 0, 0, 0));

    // LayerCache: append that would wrap, reserve(usize::MAX), reserve(1 << 40)
    let mut c = LayerCache::new(1, 1, 4, 4).unwrap();
    c.append(&[0.5; 4], &[0.5; 4], 1, Layout::Bshd).unwrap();
    assert!(c.append(&[], &[], usize::MAX, Layout::Bshd).is_err());
    assert!(c.reserve(usize::MAX).is_err());
    assert!(c.reserve(1 << 40).is_err());
    assert_eq!(c.len(), 1);
    // attend on a cache whose declared batch is huge: refused before the output (2^32 rows,
    // 16 GiB) is allocated — this once allocated it and the OOM killer ended the test
    let big = LayerCache::new(1 << 32, 1, 1, 1).unwrap();
    let p = AttnParams::new(Shape::new(1 << 32, 1, 1, 1, 1)).layout(Layout::Bshd);
    let e = big.attend(&p, &[0.5; 4]).unwrap_err();
    assert!(matches!(e, attend::Error::ShapeMismatch { .. }), "{e}");
    let kv = KvCache::new(2, 1, 1, 4, 4).unwrap();
    assert!(kv.layer(2).is_err());
    assert!(KvCache::new(usize::MAX, 1, 1, 4, 4).is_err());
}
