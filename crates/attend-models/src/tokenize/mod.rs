//! Tokenizers, behind one trait: Hugging Face `tokenizer.json` files ([`hf`], the encoders),
//! the byte-level BPE vocabulary stored in a GGUF file ([`gguf`], with the chat template and
//! UTF-8 streaming), and the toy models' byte or word lists ([`vocab`]).
//!
//! Invariant: token boundaries come from the `tokenizers` crate wherever the model's own
//! tokenizer is one it implements, so they are the reference's.

use std::borrow::Cow;

use serde::Serialize;

use crate::Result;

/// One token of a text, as a tokenizer made it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenInfo {
    /// Vocabulary id.
    pub id: u32,
    /// The token's text as the tokenizer spells it (`[CLS]`, `##ing`, ...).
    pub text: String,
    /// Byte offset of the token's start in the input text (0 for special tokens).
    pub start: usize,
    /// Byte offset of its end.
    pub end: usize,
}

pub mod gguf;
pub mod hf;
pub mod vocab;

/// What every tokenizer offers.
pub trait Tokenizer: Sync {
    /// The tokens of `text`, with the special tokens the model adds (BOS, `[CLS]` … `[SEP]`),
    /// each with its byte offsets in `text`.
    /// Control tokens' spellings typed in `text` are text, never control tokens.
    fn encode(&self, text: &str) -> Result<Vec<TokenInfo>>;

    /// [`Tokenizer::encode`], parsing the control tokens spelled in `text` (a prompt written
    /// in the model's own format, by choice). Tokenizers without control tokens: the same.
    fn encode_with_control(&self, text: &str) -> Result<Vec<TokenInfo>> {
        self.encode(text)
    }

    /// The bytes token `id` adds to a generated text (empty for control tokens).
    fn token_bytes(&self, id: u32) -> Cow<'_, [u8]>;

    /// Token `id` as it is shown to a person: its text, or its name where it adds none.
    fn display(&self, id: u32) -> String {
        String::from_utf8_lossy(&self.token_bytes(id)).into_owned()
    }

    /// Token `id` as a list of tokens names it (the likeliest next tokens): the vocabulary's
    /// own spelling where it has one (a word model's word, without the space that joins it to
    /// a text), else [`Tokenizer::display`].
    fn name(&self, id: u32) -> String {
        self.display(id)
    }

    /// Tokens in the vocabulary.
    fn vocab_size(&self) -> usize;
}
