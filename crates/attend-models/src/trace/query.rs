//! The questions every front end asks of a trace, answered once: which token a user means
//! ([`find_token`]), the weights of a layer's head or of the mean of its heads
//! ([`Trace::weights`]), the keys a query attends to most ([`top`]), which heads separate two
//! keys ([`compare`]) and the JSON document of an explanation ([`explain_json`]). The CLI,
//! `serve` and the Python package call these; none has its own.

use serde_json::{json, Value};

use super::{TokenInfo, Trace};

/// A layer's head, or the mean of its heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadSel {
    /// The mean of the layer's heads.
    Mean,
    /// One head.
    One(usize),
}

/// How a token's text is compared with what a user typed: surrounding spaces (a GGUF token
/// carries its leading space; SentencePiece spells it `▁`), one WordPiece continuation mark
/// `##` and case do not count.
pub fn normalize(text: &str) -> String {
    let space = |c: char| c.is_whitespace() || c == '\u{2581}';
    let t = text.trim_matches(space);
    t.strip_prefix("##").unwrap_or(t).to_lowercase()
}

/// The token `what` names: a position (`"3"`), or the first token whose text matches it
/// ([`normalize`]d); `None` when neither.
pub fn find_token(tokens: &[TokenInfo], what: &str) -> Option<usize> {
    if let Ok(i) = what.trim().parse::<usize>() {
        if i < tokens.len() {
            return Some(i);
        }
    }
    let w = normalize(what);
    tokens.iter().position(|t| normalize(&t.text) == w)
}

/// The tokens as `0:the 1:cat …`, for messages that say what could have been meant.
pub fn token_list(tokens: &[TokenInfo]) -> String {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i}:{}", t.text))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Trace {
    /// The `[query][key]` weights of one head of `layer`, or of the mean of its heads.
    pub fn weights(&self, layer: usize, head: HeadSel) -> Vec<f32> {
        match head {
            HeadSel::Mean => self.head_mean(layer),
            HeadSel::One(h) => self.matrix(layer, h),
        }
    }
}

/// The `k` largest weights of a row with their keys, largest first (ties in key order).
pub fn top(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    crate::nn::logits::top_k(row, k)
}

/// One row of a comparison: what a layer's head gives key `a` and key `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Versus {
    /// The layer.
    pub layer: usize,
    /// The head.
    pub head: usize,
    /// The weight of key `a`.
    pub a: f32,
    /// The weight of key `b`.
    pub b: f32,
}

/// Which heads separate two keys for one query.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The query.
    pub query: usize,
    /// The first key.
    pub a: usize,
    /// The second key.
    pub b: usize,
    /// Every layer × head, the largest `|a − b|` first (ties in layer, head order).
    pub rows: Vec<Versus>,
}

/// Every layer × head by the weight query `q` gives key `a` against key `b`, largest margin
/// first.
pub fn compare(trace: &Trace, q: usize, a: usize, b: usize) -> Comparison {
    let mut rows: Vec<Versus> = (0..trace.layers)
        .flat_map(|l| (0..trace.heads).map(move |h| (l, h)))
        .map(|(l, h)| Versus {
            layer: l,
            head: h,
            a: trace.weight(l, h, q, a),
            b: trace.weight(l, h, q, b),
        })
        .collect();
    rows.sort_by(|x, y| (y.a - y.b).abs().total_cmp(&(x.a - x.b).abs()));
    Comparison {
        query: q,
        a,
        b,
        rows,
    }
}

/// The JSON document of an explanation (`attend explain --format json`,
/// `Explanation.to_json()` in Python): `model`, `layers`, `heads`, `tokens` (`id`, `text`,
/// `start`, `end`), `attention` `[layer][head][query][key]`, and when given, `next` (a causal
/// model's likeliest next tokens, `text` and `p`) and `compare` (`token`, `a`, `b`, `rows` of
/// `layer`, `head`, `a`, `b`).
pub fn explain_json(
    model: &str,
    trace: &Trace,
    next: Option<&[(String, f32)]>,
    versus: Option<&Comparison>,
) -> Value {
    let n = trace.len();
    let att: Vec<Vec<Vec<Vec<f32>>>> = (0..trace.layers)
        .map(|l| {
            (0..trace.heads)
                .map(|h| (0..n).map(|q| trace.row(l, h, q)).collect())
                .collect()
        })
        .collect();
    let mut v = json!({"model": model, "layers": trace.layers, "heads": trace.heads,
                       "tokens": trace.tokens, "attention": att});
    if let Some(top) = next {
        v["next"] = json!(top
            .iter()
            .map(|(t, p)| json!({"text": t, "p": p}))
            .collect::<Vec<_>>());
    }
    if let Some(c) = versus {
        v["compare"] = json!({"token": c.query, "a": c.a, "b": c.b, "rows": c.rows.iter().map(|r| json!({
            "layer": r.layer, "head": r.head, "a": r.a, "b": r.b})).collect::<Vec<_>>()});
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str) -> TokenInfo {
        TokenInfo {
            id: 0,
            text: text.into(),
            start: 0,
            end: 0,
        }
    }

    #[test]
    fn tokens_are_found_by_position_or_text() {
        let t = [
            tok("[CLS]"),
            tok("The"),
            tok(" it"),
            tok("##ing"),
            tok("▁x"),
        ];
        assert_eq!(find_token(&t, "1"), Some(1));
        assert_eq!(find_token(&t, "the"), Some(1));
        assert_eq!(
            find_token(&t, "it"),
            Some(2),
            "a GGUF token's leading space"
        );
        assert_eq!(find_token(&t, "ing"), Some(3));
        assert_eq!(find_token(&t, "##ing"), Some(3));
        assert_eq!(find_token(&t, "x"), Some(4));
        assert_eq!(find_token(&t, "9"), None);
        assert_eq!(find_token(&t, "road"), None);
        // one `##` is the WordPiece mark; a second is text
        assert_eq!(normalize("####"), "##");
        assert_eq!(token_list(&t[..2]), "0:[CLS] 1:The");
    }
}
