//! The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`), built with the
//! Hugging Face `tokenizers` crate as transformers' GGUF loader builds it, so that ids match
//! the reference tokenizer exactly.
//!
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE: tokens, merges, token types, BOS/EOS,
//!   whether BOS is added). The text is split first as `tokenizer.ggml.pre` says
//!   ([`PRE_TOKENIZERS`]: GPT-2's rule, Llama 3's, Qwen 2's, …; an unknown name is refused
//!   rather than guessed). Control tokens (`<|im_start|>`, ...) are matched whole in the
//!   text, as transformers does.
//! - `tokenizer.ggml.model = "llama"` (SentencePiece BPE: tokens, scores and types, merges
//!   rebuilt from the vocabulary when the file has none, byte fallback `<0xNN>`), in one of
//!   three styles that the architecture chooses ([`SpmStyle`]): Llama's (a `▁` before the
//!   first word, merges ranked by score), Phi-3's (a `▁` before the text from a normalizer)
//!   and Gemma's (no prefix, merges ranked by position in the file, whitespace-only tokens
//!   respelled with `▁`). Control tokens are matched whole as special tokens and
//!   user-defined ones (`\n\n`, `<b>`, ...) as plain added tokens.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::{NormalizerWrapper, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::TokenInfo;
use crate::formats::gguf::{Gguf, Value};
use crate::{Error, Result};

/// How a byte-level vocabulary splits text before its merges apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pre {
    /// GPT-2's rule (the `ByteLevel` pre-tokenizer's own regex).
    Gpt2,
    /// Every digit alone, then GPT-2's rule (StarCoder, SmolLM: what llama.cpp applies).
    DigitsThenGpt2,
    /// A regex whose matches (and the text between them) are the pieces.
    Split(&'static str),
}

/// Llama 3's split (`llama-bpe`): numbers in runs of up to three digits.
const LLAMA3_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// Qwen 2's split: digits one by one.
const QWEN2_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// Mistral's Tekken split.
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// GPT-4o's split (also Llama 4's).
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The pre-tokenizers of byte-level vocabularies, by the `tokenizer.ggml.pre` names that
/// llama.cpp's converter writes (the splits are transformers' GGUF loader's).
pub const PRE_TOKENIZERS: &[(&[&str], Pre)] = &[
    (&["default", "gpt-2", "gpt2", "jais"], Pre::Gpt2),
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva",
        ],
        Pre::DigitsThenGpt2,
    ),
    (
        &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "dbrx",
            "smaug-bpe",
            "lfm2",
            "midm-2.0",
        ],
        Pre::Split(LLAMA3_SPLIT),
    ),
    (
        &["qwen2", "deepseek-r1-qwen", "megrez", "kormo"],
        Pre::Split(QWEN2_SPLIT),
    ),
    (&["tekken"], Pre::Split(TEKKEN_SPLIT)),
    (&["gpt-4o", "llama4", "minimax-m2"], Pre::Split(GPT4O_SPLIT)),
];

/// The pre-tokenizer `tokenizer.ggml.pre = name` names.
pub fn pre_tokenizer(name: &str) -> Option<Pre> {
    PRE_TOKENIZERS
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|&(_, p)| p)
}

/// How a SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`) is read; the
/// architecture decides, as in transformers' GGUF loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpmStyle {
    /// `▁` before the first word (`Metaspace`, prepend "first"); merges ranked by the
    /// tokens' scores (Llama 2, Mistral, TinyLlama, …).
    Llama,
    /// `▁` before the text and every space a `▁`, by a normalizer (Phi-3).
    Phi3,
    /// No prefix; whitespace-only tokens respelled with `▁`; merges ranked by position in
    /// the file (Gemma's scores do not follow its merge order).
    Gemma,
}

/// ggml token types.
const TYPE_CONTROL: u64 = 3;
const TYPE_USER_DEFINED: u64 = 4;
const TYPE_BYTE: u64 = 6;

/// SentencePiece's space.
const SPM_SPACE: char = '\u{2581}';

/// A GGUF file's tokenizer.
pub struct GgufTokenizer {
    /// The `tokenizers` pipeline; behind a lock because whether it parses control tokens is a
    /// setting of the tokenizer, switched per call ([`GgufTokenizer::encode`] never does).
    inner: std::sync::Mutex<Tokenizer>,
    /// Each id's bytes when decoded (byte-level alphabet undone; none for control tokens,
    /// which add nothing to a text: their names are `tokens`).
    bytes: Vec<Vec<u8>>,
    /// Each id's text as stored.
    pub tokens: Vec<String>,
    /// Whether each id is a control token ([`GgufTokenizer::is_control`]).
    control: Vec<bool>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Whether encoding adds BOS in front.
    pub add_bos: bool,
    /// The Jinja chat template, if any.
    pub chat_template: Option<String>,
    /// Ids that end a chat turn as well as EOS (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`).
    pub stop_ids: Vec<u32>,
}

/// GPT-2's map from bytes to printable characters (the byte-level BPE alphabet).
fn byte_to_unicode() -> Vec<char> {
    let mut out = vec![' '; 256];
    for (c, b) in unicode_to_byte() {
        out[b as usize] = c;
    }
    out
}

/// GPT-2's map from bytes to printable characters (the byte-level BPE alphabet), inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(&cs)
        .map(|(&b, &c)| {
            (
                char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
                b as u8,
            )
        })
        .collect()
}

fn strings(g: &Gguf, key: &str) -> Result<Vec<String>> {
    let a = g
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Tokenizer(format!("metadata `{key}` is missing or not an array")))?;
    a.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Tokenizer(format!("`{key}` holds a non-string")))
        })
        .collect()
}

/// Whether a user-defined token is spelled like a control token (`<|user|>`, `<|end|>`,
/// `<s>`): some converters label a model's turn markers user-defined (Phi-3's), and a marker a
/// user can type is a role a user can inject, so attend treats these as control tokens.
fn marks_a_turn(s: &str) -> bool {
    let bracketed = s.len() > 2 && s.starts_with('<') && s.ends_with('>');
    bracketed && !s.contains(char::is_whitespace)
}

/// The token types (llama.cpp's: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined,
/// 5 unused, 6 byte; all normal when the array is absent), after checking every piece of
/// tokenizer metadata against the vocabulary before anything trusts it: a special token's id
/// in range, one type and one score per token, each of them valid.
fn checked_metadata(g: &Gguf, n: usize) -> Result<Vec<u64>> {
    if n == 0 {
        return Err(Error::Tokenizer(
            "`tokenizer.ggml.tokens` is empty: the file has no vocabulary".into(),
        ));
    }
    const TYPES: &str = "tokenizer.ggml.token_type";
    let types: Vec<u64> = match g.get(TYPES) {
        None => vec![1; n],
        Some(v) => {
            let a = v
                .as_array()
                .ok_or_else(|| Error::Tokenizer(format!("`{TYPES}` is not an array")))?;
            a.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().filter(|&t| t <= 6).ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "`{TYPES}` gives token {i} the type {v:?}; types are 0 to 6"
                        ))
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    if types.len() != n {
        return Err(Error::Tokenizer(format!(
            "`{TYPES}` holds {} types for {n} tokens",
            types.len()
        )));
    }
    if g.get("tokenizer.ggml.scores").is_some() {
        floats(g, "tokenizer.ggml.scores", n)?;
    }
    // (the ids attend uses; a padding or mask id out of range, which some converted files
    // carry, is ignored as llama.cpp ignores it)
    for what in ["bos", "eos", "unknown", "eot"] {
        let key = format!("tokenizer.ggml.{what}_token_id");
        if let Some(v) = g.get(&key) {
            if v.as_u64().is_none_or(|i| (i as usize) >= n) {
                return Err(Error::Tokenizer(format!(
                    "`{key}` is {v:?}, not a token of the {n} in the vocabulary"
                )));
            }
        }
    }
    Ok(types)
}

/// The byte-level BPE of a `gpt2` file, and each id's bytes.
fn byte_level(tokens: &[String], types: &[u64], g: &Gguf) -> Result<(Tokenizer, Vec<Vec<u8>>)> {
    let merges = file_merges(g)?;
    // a token spelled outside the byte alphabet is looked up by its UTF-8 bytes spelled in
    // it (transformers does the same)
    let alphabet = byte_to_unicode();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let inside = t.chars().all(|c| alphabet.contains(&c));
            let key = if inside {
                t.clone()
            } else {
                t.bytes().map(|b| alphabet[b as usize]).collect()
            };
            (key, i as u32)
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("building BPE: {e}")))?;
    let mut inner = Tokenizer::new(bpe);
    let pre_name = g
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        let known: Vec<&str> = PRE_TOKENIZERS
            .iter()
            .flat_map(|(n, _)| n.iter().copied())
            .collect();
        Error::Tokenizer(format!(
            "tokenizer.ggml.pre `{pre_name}` is not a pre-tokenizer attend knows ({})",
            known.join(", ")
        ))
    })?;
    let byte_level = ByteLevel::new(false, true, true);
    let pre = match pre {
        Pre::Gpt2 => PreTokenizerWrapper::ByteLevel(byte_level),
        Pre::DigitsThenGpt2 => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        Pre::Split(re) => {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer `{pre_name}`: {e}")))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ]))
        }
    };
    inner.with_pre_tokenizer(Some(pre));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let map = unicode_to_byte();
    // a control token spelled outside the byte alphabet is a mislabel of the converter's:
    // transformers leaves it out, and so does attend; a user-defined one spelled so (a space)
    // is not in the byte-level vocabulary under that spelling, and would be given an id past
    // its end: left to the BPE, which spells it in the alphabet
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(s, &t)| {
            (t == TYPE_USER_DEFINED || t == TYPE_CONTROL) && s.chars().all(|c| map.contains_key(&c))
        })
        .map(|(s, &t)| AddedToken::from(s.clone(), t == TYPE_CONTROL || marks_a_turn(s)))
        .collect();
    inner.add_special_tokens(&special);

    let bytes: Vec<Vec<u8>> = tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| {
            if ty == TYPE_CONTROL {
                Vec::new()
            } else {
                // a character outside the alphabet (should not occur) keeps its UTF-8
                t.chars()
                    .flat_map(|c| match map.get(&c) {
                        Some(&b) => vec![b],
                        None => c.to_string().into_bytes(),
                    })
                    .collect()
            }
        })
        .collect();
    Ok((inner, bytes))
}

/// The SentencePiece BPE of a `llama` file in `style` (see the module's notes), and each
/// id's bytes.
fn sentencepiece(
    tokens: &[String],
    types: &[u64],
    g: &Gguf,
    style: SpmStyle,
) -> Result<(Tokenizer, Vec<Vec<u8>>)> {
    // Gemma: whitespace-only tokens with a space are looked up as `▁`s
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            // Python's `not t.strip()`: every character is whitespace as `str.isspace` counts it
            let py_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
            if style == SpmStyle::Gemma && t.contains(' ') && t.chars().all(py_space) {
                SPM_SPACE.to_string().repeat(t.chars().count())
            } else {
                t.clone()
            }
        })
        .collect();
    // a repeated spelling keeps its last id (and its first place in the order of the merges)
    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    let mut order: Vec<&str> = Vec::with_capacity(spelled.len());
    for (i, t) in spelled.iter().enumerate() {
        if vocab.insert(t.clone(), i as u32).is_none() {
            order.push(t);
        }
    }
    let merges = if g.get("tokenizer.ggml.merges").is_some() {
        file_merges(g)?
    } else if style == SpmStyle::Gemma {
        // by position: a later token merges later (its id is its last position)
        rebuild_merges(&order, &vocab, |_, id| -(id as f64))
    } else {
        let scores = floats(g, "tokenizer.ggml.scores", tokens.len())?;
        // a repeated spelling takes its last score (Python's dict of the pairs)
        let mut last: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
        for (t, &s) in spelled.iter().zip(&scores) {
            last.insert(t, s as f64);
        }
        rebuild_merges(&order, &vocab, |t, _| last.get(t).copied().unwrap_or(0.0))
    };
    let unk = g
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_u64)
        .and_then(|i| tokens.get(i as usize))
        .cloned()
        .unwrap_or_else(|| "<unk>".into());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| Error::Tokenizer(format!("building BPE: {e}")))?;
    let mut inner = Tokenizer::new(bpe);
    let replace = || {
        Replace::new(" ", SPM_SPACE.to_string())
            .map_err(|e| Error::Tokenizer(format!("normalizer: {e}")))
    };
    match style {
        SpmStyle::Gemma => {
            inner.with_normalizer(Some(replace()?));
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenizer: {e}")))?;
            inner.with_pre_tokenizer(Some(split));
        }
        SpmStyle::Phi3 => {
            inner.with_normalizer(Some(NormalizerSequence::new(vec![
                NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.to_string())),
                NormalizerWrapper::Replace(replace()?),
            ])));
        }
        SpmStyle::Llama => {
            inner.with_pre_tokenizer(Some(Metaspace::new(SPM_SPACE, PrependScheme::First, false)));
        }
    }
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == TYPE_CONTROL)
        .map(|(s, _)| AddedToken::from(s.clone(), true).normalized(false))
        .collect();
    inner.add_special_tokens(&control);
    // (one the vocabulary holds under its own spelling: the respelled whitespace runs are
    // left to the BPE, as transformers leaves them)
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .zip(&spelled)
        .filter(|((s, &t), sp)| t == TYPE_USER_DEFINED && s == sp)
        .map(|((s, _), _)| AddedToken::from(s.clone(), marks_a_turn(s)).normalized(false))
        .collect();
    inner.add_tokens(&user);
    let bytes = tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| match ty {
            TYPE_BYTE => byte_token(t).map_or_else(|| t.as_bytes().to_vec(), |b| vec![b]),
            TYPE_CONTROL => Vec::new(),
            _ => t.replace(SPM_SPACE, " ").into_bytes(),
        })
        .collect();
    Ok((inner, bytes))
}

/// `tokenizer.ggml.merges` as pairs.
fn file_merges(g: &Gguf) -> Result<Vec<(String, String)>> {
    strings(g, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("merge `{m}` is not two tokens")))
        })
        .collect()
}

/// The `n` numbers of the array `key`.
fn floats(g: &Gguf, key: &str, n: usize) -> Result<Vec<f32>> {
    let a = g
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Tokenizer(format!("metadata `{key}` is missing or not an array")))?;
    if a.len() != n {
        return Err(Error::Tokenizer(format!(
            "`{key}` holds {} values for {n} tokens",
            a.len()
        )));
    }
    a.iter()
        .map(|v| {
            v.as_f64()
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
                .ok_or_else(|| Error::Tokenizer(format!("`{key}` holds {v:?}, not a number")))
        })
        .collect()
}

/// The byte of a byte-fallback token `<0xNN>`.
fn byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// The merges a SentencePiece BPE vocabulary implies, best first (transformers'
/// `generate_merges`): every split of a token (taken in `order`, each spelling once) into two
/// tokens of `vocab`, one token's splits by the ids of their pieces; then all of them by the
/// merged token's `score` (its spelling and id) from high to low, the longer left piece first,
/// the longer right piece next, ties kept in that order.
fn rebuild_merges(
    order: &[&str],
    vocab: &tokenizers::models::bpe::Vocab,
    score: impl Fn(&str, u32) -> f64,
) -> Vec<(String, String)> {
    // (score, left length, right length, left, right), lengths in characters
    let mut all: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for t in order {
        let Some(&id) = vocab.get(*t) else { continue };
        let s = score(t, id);
        let mut local = Vec::new();
        for (k, (i, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(i);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((il, ir, k, l, r));
            }
        }
        local.sort_by_key(|&(il, ir, ..)| (il, ir));
        let n = t.chars().count();
        all.extend(
            local
                .into_iter()
                .map(|(_, _, ll, l, r)| (s, ll, n - ll, l, r)),
        );
    }
    all.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| b.2.cmp(&a.2))
    });
    all.into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

impl GgufTokenizer {
    /// Builds the tokenizer from a parsed GGUF header, a SentencePiece vocabulary read in
    /// `style` (the architecture's; byte-level vocabularies have one reading).
    pub fn from_gguf(g: &Gguf, style: SpmStyle) -> Result<GgufTokenizer> {
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" && model != "llama" {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.model `{model}` is not supported yet (gpt2 byte-level BPE and \
                 llama SentencePiece BPE are)"
            )));
        }
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let types = checked_metadata(g, tokens.len())?;
        if types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let (inner, bytes) = if model == "llama" {
            sentencepiece(&tokens, &types, g, style)?
        } else {
            byte_level(&tokens, &types, g)?
        };
        // an added token the model's vocabulary could not place gets a new id past the
        // vocabulary (none should, after the filters above): refused here, not indexed later
        if let Some((s, &i)) = inner
            .get_added_vocabulary()
            .get_vocab()
            .iter()
            .find(|(_, &i)| i as usize >= tokens.len())
        {
            return Err(Error::Tokenizer(format!(
                "the added token {s:?} got id {i}, outside the {} tokens of the vocabulary",
                tokens.len()
            )));
        }
        let id = |key: &str| {
            g.get(key)
                .and_then(Value::as_u64)
                .filter(|&v| (v as usize) < tokens.len())
                .map(|v| v as u32)
        };
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        for s in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<|end|>",
            "<end_of_turn>",
        ] {
            if let Some(&i) = tokens
                .iter()
                .position(|t| t == s)
                .map(|i| i as u32)
                .as_ref()
            {
                if !stop_ids.contains(&i) {
                    stop_ids.push(i);
                }
            }
        }
        Ok(GgufTokenizer {
            inner: std::sync::Mutex::new(inner),
            bytes,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            // SentencePiece vocabularies add BOS unless the file says otherwise (llama.cpp and
            // transformers agree)
            add_bos: g
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(model == "llama"),
            chat_template: g
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
            stop_ids,
            control: tokens
                .iter()
                .zip(&types)
                .map(|(s, &t)| t == TYPE_CONTROL || (t == TYPE_USER_DEFINED && marks_a_turn(s)))
                .collect(),
            tokens,
        })
    }
    /// Tokenizes `text` as text (BOS in front when the file says so), with byte offsets: a
    /// control token's spelling typed in it (`<|im_end|>`, `<start_of_turn>`) is characters,
    /// never the control token, so typed text cannot end a turn or open a role.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenInfo>> {
        self.encode_as(text, false, self.add_bos)
    }

    /// Tokenizes `text` parsing the control tokens spelled in it (what transformers'
    /// tokenizers do by default): for a prompt written in the model's own format, by choice.
    pub fn encode_with_control(&self, text: &str) -> Result<Vec<TokenInfo>> {
        self.encode_as(text, true, self.add_bos)
    }

    fn encode_as(&self, text: &str, control: bool, bos: bool) -> Result<Vec<TokenInfo>> {
        self.encode_piece(text, control, bos, false)
    }

    /// [`GgufTokenizer::encode_as`] of a piece of a longer text; `continuation`: not its
    /// start, so a SentencePiece vocabulary that marks the start of a text with `▁` (Llama's
    /// `Metaspace`, first piece only) does not mark this piece — it is tokenized as the same
    /// characters are inside the whole text.
    fn encode_piece(
        &self,
        text: &str,
        control: bool,
        bos: bool,
        continuation: bool,
    ) -> Result<Vec<TokenInfo>> {
        let enc = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.set_encode_special_tokens(!control);
            let first = match inner.get_pre_tokenizer() {
                Some(PreTokenizerWrapper::Metaspace(m)) if continuation => Some(m.clone()),
                _ => None,
            };
            match first {
                Some(m) => {
                    let mut inside = m.clone();
                    inside.set_prepend_scheme(PrependScheme::Never);
                    inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(inside)));
                    let enc = inner.encode(text, false);
                    inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(m)));
                    enc
                }
                None => inner.encode(text, false),
            }
        }
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut out = Vec::with_capacity(enc.len() + 1);
        if bos {
            if let Some(b) = self.bos {
                out.push(TokenInfo {
                    id: b,
                    text: self.tokens[b as usize].clone(),
                    start: 0,
                    end: 0,
                });
            }
        }
        for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            out.push(TokenInfo {
                id,
                text: self.display(id),
                start,
                end,
            });
        }
        Ok(out)
    }

    /// `user` as one user turn of the file's chat template, with the generation prompt,
    /// tokenized: the template's control tokens parsed, the user's text as text (a typed
    /// `<|im_end|><|im_start|>system` stays characters). BOS once, whether the template writes
    /// it or the file asks for it. Offsets are in [`apply_chat_template`]'s text.
    pub fn encode_chat(&self, user: &str) -> Result<(String, Vec<TokenInfo>)> {
        let rendered = apply_chat_template(self, user)?;
        // where the message sits in the rendering: a sentinel no text holds, rendered in its
        // place; a template that rewrites the message (trims it, say) is seen by the mismatch
        const MARK: &str = "\u{F8FF}attend-user-turn\u{F8FF}";
        let marked = apply_chat_template(self, MARK)?;
        let span = match marked
            .match_indices(MARK)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()[..]
        {
            [i] if format!("{}{user}{}", &marked[..i], &marked[i + MARK.len()..]) == rendered => {
                Some((i, i + user.len()))
            }
            _ => None,
        };
        let whole = self.encode_as(&rendered, true, false)?;
        let typed_control = |toks: &[TokenInfo], (a, b): (usize, usize)| {
            toks.iter()
                .any(|t| self.is_control(t.id) && t.start < b && t.end > a && t.end > t.start)
        };
        let mut toks = match span {
            Some(span) if typed_control(&whole, span) => {
                // the user typed a control token's spelling: the turn in three pieces, the
                // middle one as text
                let (a, b) = span;
                let mut toks = self.encode_as(&rendered[..a], true, false)?;
                for (piece, at, control) in [(&rendered[a..b], a, false), (&rendered[b..], b, true)]
                {
                    toks.extend(
                        self.encode_piece(piece, control, false, true)?
                            .into_iter()
                            .map(|mut t| {
                                t.start += at;
                                t.end += at;
                                t
                            }),
                    );
                }
                toks
            }
            Some(_) => whole,
            None => {
                let plain = self.encode_as(user, true, false)?;
                if plain.iter().any(|t| self.is_control(t.id)) {
                    return Err(Error::Tokenizer(
                        "this chat template rewrites the message, so attend cannot keep the control \
                         tokens typed in it as text; remove them, or write the prompt in the \
                         model's format without --chat"
                            .into(),
                    ));
                }
                whole
            }
        };
        if self.add_bos {
            if let Some(b) = self.bos {
                if toks.first().map(|t| t.id) != Some(b) {
                    toks.insert(
                        0,
                        TokenInfo {
                            id: b,
                            text: self.tokens[b as usize].clone(),
                            start: 0,
                            end: 0,
                        },
                    );
                }
            }
        }
        Ok((rendered, toks))
    }

    /// Whether `id` is a control token (BOS, `<|im_end|>`, `<start_of_turn>`, and turn markers
    /// a converter labelled user-defined, such as Phi-3's `<|user|>`).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes token `id` adds to a text (empty for a control token or an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], |b| b)
    }

    /// Token `id` as a person reads it: its text, or its name where it adds none (a control
    /// token such as `<|im_end|>`).
    pub fn display(&self, id: u32) -> String {
        match self.token_bytes(id) {
            [] => self.tokens.get(id as usize).cloned().unwrap_or_default(),
            b => String::from_utf8_lossy(b).into_owned(),
        }
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Turns a stream of token bytes into text, holding back a UTF-8 character split across
/// tokens until it is complete.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes`; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // an incomplete character at the end: wait for the next token
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // invalid bytes: replace them now and go on
                        Some(n) => {
                            out.push('\u{fffd}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Renders the file's Jinja chat template for one user message, with the generation prompt
/// (what transformers' `apply_chat_template(..., add_generation_prompt=True)` gives).
pub fn apply_chat_template(tok: &GgufTokenizer, user: &str) -> Result<String> {
    let template = tok
        .chat_template
        .as_deref()
        .ok_or_else(|| Error::Tokenizer("this model has no chat template".into()))?;
    let mut env = minijinja::Environment::new();
    // the template comes from the file: its work and its output are bounded (a real chat
    // template spends a few thousand units of fuel and writes a few hundred bytes)
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
    let name = |id: Option<u32>| {
        id.and_then(|i| tok.tokens.get(i as usize).cloned())
            .unwrap_or_default()
    };
    let mut out = Capped {
        buf: Vec::new(),
        limit: TEMPLATE_OUTPUT + user.len(),
    };
    let rendered = env.get_template("chat").and_then(|t| {
        t.render_captured_to(
            minijinja::context! {
                messages => vec![minijinja::context!{ role => "user", content => user }],
                add_generation_prompt => true,
                bos_token => name(tok.bos),
                eos_token => name(tok.eos),
            },
            &mut out,
        )
    });
    match rendered {
        Ok(_) => String::from_utf8(out.buf)
            .map_err(|_| Error::Tokenizer("chat template: the output is not UTF-8".into())),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(Error::Tokenizer(format!(
            "chat template: it runs past its limit of {TEMPLATE_FUEL} steps; the file's \
             template is broken or hostile (generate without --chat)"
        ))),
        Err(_) if out.buf.len() >= out.limit => Err(Error::Tokenizer(format!(
            "chat template: its output passes the limit of {} bytes; the file's template is \
             broken or hostile (generate without --chat)",
            out.limit
        ))),
        Err(e) => Err(Error::Tokenizer(format!("chat template: {e}"))),
    }
}

/// The work a chat template may do (minijinja's fuel: about one unit per instruction).
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// The bytes a chat template may write besides the message itself.
pub const TEMPLATE_OUTPUT: usize = 64 << 10;

/// A writer that refuses to grow past `limit` bytes.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            self.buf
                .extend_from_slice(&b[..self.limit - self.buf.len()]);
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl super::Tokenizer for GgufTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<TokenInfo>> {
        GgufTokenizer::encode(self, text)
    }

    fn encode_with_control(&self, text: &str) -> Result<Vec<TokenInfo>> {
        GgufTokenizer::encode_with_control(self, text)
    }

    fn token_bytes(&self, id: u32) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(GgufTokenizer::token_bytes(self, id))
    }

    fn display(&self, id: u32) -> String {
        GgufTokenizer::display(self, id)
    }

    fn vocab_size(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_round_trips() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
    }

    #[test]
    fn utf8_split_across_tokens_waits() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(b"caf"), "caf");
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(s.push(&[0xe2, 0x82]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
