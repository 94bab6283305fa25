//! The fused kernel: tiles of queries × keys with the online softmax, never materialising the
//! `s_q × s_kv` scores. Extra memory is a few tiles per task.
//!
//! - [`forward`] / [`forward_into`]: the output and the per-row log-sum-exp. Work is split
//!   over batch × head × query tile with rayon; key tiles that the band or key padding remove
//!   entirely are skipped. When there are few queries per key/value head (decoding), the
//!   queries of a whole GQA group share one pass over K and V, and the keys are split across
//!   threads, the partial results merged exactly.
//! - [`probabilities`]: the attention weights of chosen heads, recomputed exactly from the
//!   saved log-sum-exp (no slow second implementation).
//! - the backward pass is in [`crate::backward`].

use rayon::prelude::*;

use crate::params::{AttnParams, Layout};
use crate::shape::{check_finite, check_len, product, zeros};
use crate::tile::{with_scratch, Acc, Ctx, Row, FEW_ROWS};
use crate::{Error, Output, Result};
use attend_kernels::{MatMut, MatRef, NR};

/// Queries per task tile.
pub(crate) const BR: usize = 64;
/// Keys per tile.
pub(crate) const BC: usize = 128;
/// Fewest keys per task when the keys are split across threads.
const MIN_SPLIT: usize = 512;

/// Attention output and log-sum-exp (natural log, `[b, h, s_q]`; `-inf` for a row that sees
/// no key).
///
/// ```
/// use attend::{fused, AttnParams, Mask, Shape};
/// // one batch row, 2 heads, 3 queries over 3 keys, head dim 4
/// let shape = Shape::new(1, 2, 3, 3, 4);
/// let q = vec![0.1; shape.q_len()];
/// let (k, v) = (vec![0.2; shape.k_len()], vec![1.0; shape.v_len()]);
/// let params = AttnParams::new(shape).mask(Mask::causal());
/// let o = fused::forward(&params, &q, &k, &v)?;
/// assert!(o.out.iter().all(|x| (x - 1.0).abs() < 1e-6));
/// # Ok::<(), attend::Error>(())
/// ```
pub fn forward(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32]) -> Result<Output> {
    // validated before anything is allocated from the shape (the values of k and v as they
    // are read, or first: `run_checking_kv`)
    p.validate_but_kv_values(q, k, v)?;
    let mut out = zeros("out", p.shape.o_len())?;
    let mut lse = zeros("lse", p.shape.lse_len())?;
    // the buffers are ours and dropped on an error: results may be written as they come
    run_checking_kv(
        &Ctx::new(p, q, k, v)?,
        &mut out,
        &mut lse,
        Writes::AsTheyCome,
    )?;
    Ok(Output { out, lse })
}

/// [`forward`] into caller-owned buffers (`out` in the call's layout, `lse` as `[b, h, s_q]`).
pub fn forward_into(
    p: &AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) -> Result<()> {
    p.validate_but_kv_values(q, k, v)?;
    check_len("out", out, p.shape.o_len())?;
    check_len("lse", lse, p.shape.lse_len())?;
    run_checking_kv(&Ctx::new(p, q, k, v)?, out, lse, Writes::AfterTheChecks)
}

/// When a call that checks its keys and values as it reads them may write its results.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Each task writes its rows when it is done (the buffers are the call's own).
    AsTheyCome,
    /// Only once every tile has passed: a caller's buffers are left untouched on an error.
    AfterTheChecks,
}

/// Whether a call takes the grouped (decode) path.
fn grouped(ctx: &Ctx) -> bool {
    ctx.p.shape.s_q * ctx.p.shape.group() <= BR
}

/// Chooses the grouped (decode) or tiled (prefill) path; inputs already validated.
pub(crate) fn run(ctx: &Ctx, out: &mut [f32], lse: &mut [f32]) {
    if grouped(ctx) {
        forward_grouped(ctx, out, lse, false, Writes::AsTheyCome);
    } else {
        forward_tiled(ctx, out, lse);
    }
}

/// [`run`] on keys and values whose values are not checked yet. A decode call checks each
/// key/value tile as it reads it, so that K and V — nearly all of its memory traffic — are
/// read once rather than twice; a prefill (whose tiles are re-read many times anyway) checks
/// them first. On a NaN or infinity the error names the first one, as the up-front check does,
/// and with [`Writes::AfterTheChecks`] `out` and `lse` are left untouched.
fn run_checking_kv(ctx: &Ctx, out: &mut [f32], lse: &mut [f32], writes: Writes) -> Result<()> {
    if !grouped(ctx) {
        check_finite("k", ctx.k)?;
        check_finite("v", ctx.v)?;
        forward_tiled(ctx, out, lse);
        return Ok(());
    }
    if !forward_grouped(ctx, out, lse, true, writes) {
        check_finite("k", ctx.k)?;
        check_finite("v", ctx.v)?;
    }
    Ok(())
}

/// One query tile `[i0, i0 + n)` of head `h`, over every key it may see.
fn run_tile(ctx: &Ctx, b: usize, h: usize, i0: usize, n: usize) -> Acc {
    let sh = &ctx.p.shape;
    let rows: Vec<Row> = (i0..i0 + n).map(|i| ctx.row(b, h, i)).collect();
    let mut acc = Acc::new(n, sh.d_v);
    if let Some(span) = Ctx::key_span(&rows) {
        with_scratch(acc.width * sh.d, |qp| {
            ctx.pack_queries(b, &rows, qp);
            acc.attend(ctx, b, h / sh.group(), &rows, Some(qp), span, BC, false);
        });
    }
    acc
}

/// Prefill: one task per batch row × head × query tile (per batch row × query tile for
/// `[b, s, h, d]`, whose output chunks hold every head).
fn forward_tiled(ctx: &Ctx, out: &mut [f32], lse: &mut [f32]) {
    let sh = ctx.p.shape;
    let (hq, dv, sq) = (sh.h, sh.d_v, sh.s_q);
    match ctx.p.layout {
        // a tile's output rows and log-sum-exps are both contiguous: written in place
        Layout::Bhsd => out
            .par_chunks_mut(sq * dv)
            .zip(lse.par_chunks_mut(sq))
            .enumerate()
            .for_each(|(bh, (head, head_lse))| {
                head.par_chunks_mut(BR * dv)
                    .zip(head_lse.par_chunks_mut(BR))
                    .enumerate()
                    .for_each(|(t, (chunk, l))| {
                        let acc = run_tile(ctx, bh / hq, bh % hq, t * BR, l.len());
                        acc.lse(ctx.kern, l);
                        for r in 0..l.len() {
                            acc.write_row(r, &mut chunk[r * dv..][..dv]);
                        }
                    })
            }),
        // a tile's output chunk holds every head, whose log-sum-exps lie `s_q` apart: each
        // task returns its own, copied after
        Layout::Bshd => {
            let parts: Vec<Vec<(usize, usize, Vec<f32>)>> = out
                .par_chunks_mut(sq * hq * dv)
                .enumerate()
                .flat_map(|(b, batch)| {
                    batch
                        .par_chunks_mut(BR * hq * dv)
                        .enumerate()
                        .map(move |(t, chunk)| {
                            let (i0, n) = (t * BR, chunk.len() / (hq * dv));
                            (0..hq)
                                .map(|h| {
                                    let acc = run_tile(ctx, b, h, i0, n);
                                    for r in 0..n {
                                        acc.write_row(r, &mut chunk[(r * hq + h) * dv..][..dv]);
                                    }
                                    let mut l = vec![0.0; n];
                                    acc.lse(ctx.kern, &mut l);
                                    (b * hq + h, i0, l)
                                })
                                .collect()
                        })
                })
                .collect();
            for (bh, i0, l) in parts.into_iter().flatten() {
                lse[bh * sq + i0..][..l.len()].copy_from_slice(&l);
            }
        }
    }
}

/// The rows of a GQA group: every query of every head that reads key/value head `hk`.
fn group_rows(ctx: &Ctx, b: usize, hk: usize) -> Vec<Row> {
    let sh = &ctx.p.shape;
    let g = sh.group();
    (hk * g..(hk + 1) * g)
        .flat_map(|h| (0..sh.s_q).map(move |i| (h, i)))
        .map(|(h, i)| ctx.row(b, h, i))
        .collect()
}

/// Few queries per key/value head (decoding, short sequences): the group's queries share one
/// pass over K and V, and long key ranges are split across tasks whose partial states merge
/// exactly.
///
/// With `check`, the values of K and V are checked for NaN/inf too: tile by tile as they are
/// read when the tasks read every key of contiguous rows (the common decode: the last query
/// sees every key), else all of them first. Returns false when one is found; with
/// [`Writes::AfterTheChecks`], before anything is written to `out` or `lse`.
fn forward_grouped(
    ctx: &Ctx,
    out: &mut [f32],
    lse: &mut [f32],
    check: bool,
    writes: Writes,
) -> bool {
    let sh = ctx.p.shape;
    let os = ctx.p.o_strides();
    let groups = sh.b * sh.h_kv;
    let threads = rayon::current_num_threads();
    let want = if groups >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(groups)
    };
    // the rows of each group (b, hk) and the key span they see, built once
    let rows: Vec<Vec<Row>> = (0..groups)
        .map(|bg| group_rows(ctx, bg / sh.h_kv, bg % sh.h_kv))
        .collect();
    let spans: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| Ctx::key_span(r).unwrap_or((0, 0)))
        .collect();
    // tasks (b, hk, first key, end key): a group's key span in `chunks` pieces of whole tiles;
    // a group that sees no key still gets one empty task, so that its rows are written
    let tasks: Vec<(usize, usize, usize, usize)> = (0..groups)
        .flat_map(|bg| {
            let (b, hk) = (bg / sh.h_kv, bg % sh.h_kv);
            let (start, end) = spans[bg];
            let len = end - start;
            let chunks = want.min(len / MIN_SPLIT).max(1);
            let step = len.div_ceil(chunks).div_ceil(BC) * BC;
            (0..chunks).filter_map(move |c| {
                let c0 = (start + c * step).min(end);
                let c1 = (c0 + step).min(end);
                (c0 < c1 || c == 0).then_some((b, hk, c0, c1))
            })
        })
        .collect();
    // one task per group, whose rows are one contiguous piece of `out` and of `lse` (prefills
    // of short sequences): no merge, each task writes its results as it ends
    let g_rows = sh.group() * sh.s_q;
    let one_per_group =
        tasks.len() == groups && ctx.p.layout == Layout::Bhsd && g_rows * sh.d_v > 0;
    // every key of every group read, rows of K and V contiguous: check them tile by tile as
    // they are read; not when a task writes its results before the others have passed their
    // checks into buffers that must be left untouched on an error (holding every task's state
    // to the end costs more than the second pass the check saves)
    let every_key = spans.iter().all(|&span| span == (0, sh.s_kv));
    let in_tiles = check
        && every_key
        && ctx.ks.row == sh.d
        && ctx.vs.row == sh.d_v
        && sh.s_kv > 0
        && (writes == Writes::AsTheyCome || !one_per_group);
    if check
        && !in_tiles
        && (check_finite("k", ctx.k).is_err() || check_finite("v", ctx.v).is_err())
    {
        return false;
    }
    // a few rows a group (decoding): the queries as rows, the keys in the lanes
    let few = g_rows <= FEW_ROWS && sh.d_v.is_multiple_of(NR);
    let task = |&(b, hk, c0, c1): &(usize, usize, usize, usize)| {
        let rows = &rows[b * sh.h_kv + hk];
        let mut acc = Acc::new(rows.len(), sh.d_v);
        let mut finite = true;
        if c0 < c1 && few {
            finite = acc.attend(ctx, b, hk, rows, None, (c0, c1), BC, in_tiles);
        } else if c0 < c1 {
            with_scratch(acc.width * sh.d, |qp| {
                ctx.pack_queries(b, rows, qp);
                finite = acc.attend(ctx, b, hk, rows, Some(qp), (c0, c1), BC, in_tiles);
            });
        }
        (acc, finite)
    };
    if one_per_group {
        return out
            .par_chunks_mut(g_rows * sh.d_v)
            .zip(lse.par_chunks_mut(g_rows))
            .zip(tasks.par_iter())
            .map(|((o, l), t)| {
                let (acc, finite) = task(t);
                if finite {
                    acc.lse(ctx.kern, l);
                    for lane in 0..l.len() {
                        acc.write_row(lane, &mut o[lane * sh.d_v..][..sh.d_v]);
                    }
                }
                finite
            })
            .reduce(|| true, |a, b| a && b);
    }
    let accs: Vec<(Acc, bool)> = tasks.par_iter().map(task).collect();
    if accs.iter().any(|(_, finite)| !finite) {
        return false;
    }
    let accs = accs.into_iter().map(|(acc, _)| acc);
    let mut merged: Vec<Option<Acc>> = (0..groups).map(|_| None).collect();
    for (&(b, hk, _, _), acc) in tasks.iter().zip(accs) {
        match &mut merged[b * sh.h_kv + hk] {
            Some(m) => m.merge(&acc),
            slot => *slot = Some(acc),
        }
    }
    for (bg, acc) in merged.into_iter().enumerate() {
        let Some(acc) = acc else { continue };
        let b = bg / sh.h_kv;
        let mut l = vec![0.0; rows[bg].len()];
        acc.lse(ctx.kern, &mut l);
        for (lane, row) in rows[bg].iter().enumerate() {
            acc.write_row(lane, &mut out[os.at(b, row.h, row.i)..][..sh.d_v]);
            lse[(b * sh.h + row.h) * sh.s_q + row.i] = l[lane];
        }
    }
    true
}

/// The attention probabilities of the query heads `heads` (all when `None`), as
/// `[b, heads.len(), s_q, s_kv]`, exact: the fused forward's log-sum-exp, then each tile's
/// scores recomputed and normalised with it. Masked pairs are exactly 0; rows sum to 1 (or
/// are all 0 when fully masked).
pub fn probabilities(
    p: &AttnParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: Option<&[usize]>,
) -> Result<Vec<f32>> {
    let o = forward(p, q, k, v)?;
    // forward validated every input: no second pass over them
    let heads = chosen_heads(heads, p.shape.h)?;
    probabilities_of(&Ctx::new(p, q, k, v)?, &o.lse, &heads)
}

/// [`probabilities`] from a log-sum-exp already computed by [`forward`] (no second forward).
pub fn probabilities_from_lse(
    p: &AttnParams,
    q: &[f32],
    k: &[f32],
    lse: &[f32],
    heads: Option<&[usize]>,
) -> Result<Vec<f32>> {
    p.validate()?;
    let sh = p.shape;
    check_len("q", q, sh.q_len())?;
    check_len("k", k, sh.k_len())?;
    check_len("lse", lse, sh.lse_len())?;
    check_finite("q", q)?;
    check_finite("k", k)?;
    let heads = chosen_heads(heads, sh.h)?;
    // values are not read: any slice of the right length serves as `v`
    let ctx = Ctx::new(p, q, k, k)?;
    probabilities_of(&ctx, lse, &heads)
}

/// The heads asked for (all of `h` when `None`), each checked to be in range.
pub(crate) fn chosen_heads(heads: Option<&[usize]>, h: usize) -> Result<Vec<usize>> {
    let heads = heads.map_or_else(|| (0..h).collect(), <[usize]>::to_vec);
    if let Some(&bad) = heads.iter().find(|&&x| x >= h) {
        return Err(Error::InvalidParameter {
            name: "heads",
            reason: format!("head {bad} is out of range 0..{h}"),
        });
    }
    Ok(heads)
}

/// The probabilities of `heads` for a validated call context and its log-sum-exp.
pub(crate) fn probabilities_of(ctx: &Ctx, lse: &[f32], heads: &[usize]) -> Result<Vec<f32>> {
    let sh = ctx.p.shape;
    let nh = heads.len();
    let mut probs = zeros("probabilities", product(&[sh.b, nh, sh.s_q, sh.s_kv]))?;
    if probs.is_empty() {
        return Ok(probs);
    }
    probs
        .par_chunks_mut(sh.s_q * sh.s_kv)
        .enumerate()
        .flat_map(|(bh, head)| {
            head.par_chunks_mut(BR * sh.s_kv)
                .enumerate()
                .map(move |(t, chunk)| (bh, t, chunk))
        })
        .for_each(|(bh, t, chunk)| {
            let (b, h) = (bh / nh, heads[bh % nh]);
            let i0 = t * BR;
            let n = chunk.len() / sh.s_kv;
            probability_tile(
                ctx,
                b,
                h,
                i0,
                n,
                &lse[(b * sh.h + h) * sh.s_q + i0..][..n],
                chunk,
            );
        });
    Ok(probs)
}

fn probability_tile(
    ctx: &Ctx,
    b: usize,
    h: usize,
    i0: usize,
    n: usize,
    lse: &[f32],
    out: &mut [f32],
) {
    let sh = &ctx.p.shape;
    let hk = h / sh.group();
    let rows: Vec<Row> = (i0..i0 + n).map(|i| ctx.row(b, h, i)).collect();
    let Some((k0, k1)) = Ctx::key_span(&rows) else {
        return;
    };
    // subtract lse in log2 units; a row that saw no key is zeroed by +inf
    let sub: Vec<f32> = lse
        .iter()
        .map(|&l| {
            if l == f32::NEG_INFINITY {
                f32::INFINITY
            } else {
                l * std::f32::consts::LOG2_E
            }
        })
        .collect();
    let w = BC.div_ceil(NR) * NR;
    let mut kp = vec![0.0f32; w * sh.d];
    let mut s = vec![0.0f32; n * w];
    let mut t0 = k0;
    while t0 < k1 {
        let t1 = (t0 + BC).min(k1);
        let nk = t1 - t0;
        if let Some(full) = ctx.classify(&rows, t0, t1) {
            let panels = nk.div_ceil(NR);
            let keys = MatRef::new(ctx.k, ctx.ks.at(b, hk, t0), ctx.ks.row, nk, sh.d);
            ctx.kern.pack_panels(keys, &mut kp);
            let queries = MatRef::new(ctx.q, ctx.qs.at(b, h, i0), ctx.qs.row, n, sh.d);
            let sv = MatMut::new(&mut s, 0, w, n, panels * NR);
            ctx.kern.gemm_a(queries, &kp, panels, sv, false);
            ctx.finish_scores(b, &rows, t0, nk, full, &mut s, |r, jj| r * w + jj);
            let sv = MatMut::new(&mut s, 0, w, n, panels * NR);
            ctx.kern.exp_rows(sv, ctx.c, &sub);
            for r in 0..n {
                out[r * sh.s_kv + t0..][..nk].copy_from_slice(&s[r * w..][..nk]);
            }
        }
        t0 = t1;
    }
}
