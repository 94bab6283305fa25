//! Tokenizers of the toy models: bytes (any text) or a closed list of words (the Winograd task).

use serde::{Deserialize, Serialize};

use super::TokenInfo;
use crate::{Error, Result};

/// How a toy model reads text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Vocab {
    /// One token per byte (256 tokens).
    Bytes,
    /// One token per word or punctuation mark, from a closed list; `<eos>` ends a text.
    Words {
        /// The words; a token's id is its index.
        words: Vec<String>,
    },
}

/// The end-of-text token of a word vocabulary.
pub const EOS: &str = "<eos>";

impl Vocab {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Vocab::Bytes => 256,
            Vocab::Words { words } => words.len(),
        }
    }

    /// Whether the vocabulary is empty (never, for a valid model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of a word (exact, else lower-cased); `None` for a byte vocabulary.
    pub fn word_id(&self, w: &str) -> Option<u32> {
        match self {
            Vocab::Bytes => None,
            Vocab::Words { words } => words
                .iter()
                .position(|x| x == w)
                .or_else(|| words.iter().position(|x| *x == w.to_lowercase()))
                .map(|i| i as u32),
        }
    }

    /// The end token, if the vocabulary has one.
    pub fn eos(&self) -> Option<u32> {
        self.word_id(EOS)
    }

    /// Splits `text` into tokens. Words are runs of letters, digits and apostrophes; every
    /// other non-space character is a token of its own. A word outside the list is an error
    /// that names it and lists the known words.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenInfo>> {
        match self {
            Vocab::Bytes => Ok(text
                .bytes()
                .enumerate()
                .map(|(i, b)| TokenInfo {
                    id: b as u32,
                    text: self.token_text(b as u32),
                    start: i,
                    end: i + 1,
                })
                .collect()),
            Vocab::Words { words } => {
                let mut out = Vec::new();
                for (start, end) in split_words(text) {
                    let w = &text[start..end];
                    let id = self.word_id(w).ok_or_else(|| {
                        let known: Vec<&str> = words
                            .iter()
                            .filter(|w| !w.starts_with('<'))
                            .map(String::as_str)
                            .collect();
                        Error::Invalid(format!(
                            "`{w}` is not in this model's vocabulary of {} words: {}",
                            known.len(),
                            known.join(" ")
                        ))
                    })?;
                    out.push(TokenInfo {
                        id,
                        text: words[id as usize].clone(),
                        start,
                        end,
                    });
                }
                Ok(out)
            }
        }
    }

    /// A token's text for display (`\n` and non-printing bytes escaped).
    pub fn token_text(&self, id: u32) -> String {
        match self {
            Vocab::Bytes => match id as u8 {
                b'\n' => "\\n".into(),
                b'\t' => "\\t".into(),
                b if b.is_ascii_graphic() || b == b' ' => (b as char).to_string(),
                b => format!("<{b:02X}>"),
            },
            Vocab::Words { words } => words.get(id as usize).cloned().unwrap_or_default(),
        }
    }

    /// The bytes a generated token adds to the text (words are preceded by a space, except
    /// punctuation).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self {
            Vocab::Bytes => vec![id as u8],
            Vocab::Words { words } => {
                let w = words.get(id as usize).map_or("", String::as_str);
                if w == EOS {
                    Vec::new()
                } else if w.len() == 1 && w.chars().all(|c| c.is_ascii_punctuation() && c != '=') {
                    w.as_bytes().to_vec()
                } else {
                    format!(" {w}").into_bytes()
                }
            }
        }
    }
}

impl super::Tokenizer for Vocab {
    fn encode(&self, text: &str) -> Result<Vec<TokenInfo>> {
        Vocab::encode(self, text)
    }

    fn token_bytes(&self, id: u32) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(Vocab::token_bytes(self, id))
    }

    /// The token's text; a word model's end token, which adds none, by name.
    fn display(&self, id: u32) -> String {
        let bytes = Vocab::token_bytes(self, id);
        if bytes.is_empty() {
            self.token_text(id)
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    fn name(&self, id: u32) -> String {
        self.token_text(id)
    }

    fn vocab_size(&self) -> usize {
        self.len()
    }
}

/// Byte ranges of the words and marks of `text`.
pub(crate) fn split_words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let in_word = c.is_alphanumeric() || c == '\'' || c == '’';
        if in_word {
            word.get_or_insert(i);
            continue;
        }
        if let Some(s) = word.take() {
            out.push((s, i));
        }
        if !c.is_whitespace() {
            out.push((i, i + c.len_utf8()));
        }
    }
    if let Some(s) = word {
        out.push((s, text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_marks() {
        let v = Vocab::Words {
            words: ["<eos>", "The", "dog", "didn't", ".", "it", "="]
                .map(String::from)
                .to_vec(),
        };
        let t = v.encode("The DOG didn't. it =").unwrap();
        let ids: Vec<u32> = t.iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        assert_eq!((t[1].start, t[1].end), (4, 7));
        let e = v.encode("The cat").unwrap_err().to_string();
        assert!(e.contains("`cat` is not in") && e.contains("dog"), "{e}");
        assert_eq!(v.token_bytes(4), b".");
        assert_eq!(v.token_bytes(2), b" dog");
        assert_eq!(v.eos(), Some(0));
    }

    #[test]
    fn bytes_cover_any_text() {
        let v = Vocab::Bytes;
        let t = v.encode("é\n").unwrap();
        assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), [0xC3, 0xA9, 10]);
        assert_eq!(t[2].text, "\\n");
        assert_eq!(v.eos(), None);
    }
}
