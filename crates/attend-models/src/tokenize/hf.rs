//! A Hugging Face `tokenizer.json` (WordPiece for BERT, and whatever else the `tokenizers`
//! crate reads), with the truncation an encoder needs.

use std::borrow::Cow;
use std::path::Path;

use super::TokenInfo;
use crate::{Error, Result};

/// A tokenized text.
#[derive(Clone, Debug)]
pub struct Tokenized {
    /// The tokens with ids and byte offsets.
    pub tokens: Vec<TokenInfo>,
    /// Whether the text was cut at the maximum length.
    pub truncated: bool,
}

impl Tokenized {
    /// The ids.
    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

/// A `tokenizer.json` tokenizer, special tokens added, truncated at `max_len` tokens.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

impl HfTokenizer {
    /// Reads `path`; texts are cut at `max_len` tokens (special tokens included).
    pub fn from_file(path: &Path, max_len: usize) -> Result<HfTokenizer> {
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json is missing",
                ),
            });
        }
        crate::formats::check_regular(path)?;
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            what: format!("not a tokenizer.json: {e}"),
        })?;
        inner.with_padding(None);
        // [CLS], [SEP] or [MASK] typed in a text are text: the model's own are added around it
        inner.set_encode_special_tokens(true);
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(HfTokenizer { inner })
    }

    /// Cuts texts at `max_len` tokens from now on.
    pub fn set_max_len(&mut self, max_len: usize) -> Result<()> {
        self.inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(())
    }

    /// Tokenizes `text`, saying whether it was truncated.
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let truncated = !enc.get_overflowing().is_empty();
        let tokens = enc
            .get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets())
            .map(|((&id, t), &(start, end))| TokenInfo {
                id,
                text: t.clone(),
                start,
                end,
            })
            .collect();
        Ok(Tokenized { tokens, truncated })
    }
}

impl super::Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<TokenInfo>> {
        Ok(self.tokenize(text)?.tokens)
    }

    fn token_bytes(&self, id: u32) -> Cow<'_, [u8]> {
        Cow::Owned(self.inner.id_to_token(id).unwrap_or_default().into_bytes())
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
