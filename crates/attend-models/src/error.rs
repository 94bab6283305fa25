//! The model crate's error type.

use std::path::PathBuf;

/// What went wrong while finding, fetching, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not what it should be (corrupt, truncated, wrong format).
    #[error("{path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A tensor the architecture needs is absent from the weights.
    #[error("{path}: no tensor named `{name}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor has the wrong shape or type.
    #[error("{path}: tensor `{name}` is {got}, expected {expected}")]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What the architecture needs.
        expected: String,
        /// What the file holds.
        got: String,
    },
    /// A model name that is neither known nor a path.
    #[error(
        "unknown model `{name}`: the known models are {known}; or give a path to a model folder"
    )]
    UnknownModel {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// Downloading or unpacking a model failed.
    #[error("fetching `{name}`: {what}")]
    Fetch {
        /// The model.
        name: String,
        /// What went wrong.
        what: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A prompt plus the tokens asked for do not fit the model's context.
    #[error(
        "the prompt's {prompt} tokens plus {max_tokens} to generate exceed the model's context \
         of {context} tokens"
    )]
    ContextExceeded {
        /// Tokens in the prompt.
        prompt: usize,
        /// Tokens asked for.
        max_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// A text is empty or longer than a model reads at once.
    #[error("the text has {tokens} tokens; this model reads 1 to {max}")]
    TextLength {
        /// Tokens in the text.
        tokens: usize,
        /// The most the model reads.
        max: usize,
    },
    /// A layer's activations hold NaN or an infinity: the weights (or the input) make the model
    /// diverge, and no answer it gives could be trusted.
    #[error(
        "{at}: the activations hold a non-finite value ({value}) at index {index}; the \
         model's weights are broken or it diverges on this input"
    )]
    NonFinite {
        /// Where (`layer 3, attention input`).
        at: String,
        /// The first such value's index in the activations.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A run stopped by its [`crate::generate::CausalLm::interrupt`] flag.
    #[error("the run was stopped before it finished")]
    Interrupted,
    /// A request the model cannot serve (an empty batch, a position out of range, ...).
    #[error("{0}")]
    Invalid(String),
    /// The attention kernel refused a call (a bug in the model code if it happens).
    #[error("attention kernel: {0}")]
    Attention(#[from] attend::Error),
    /// A kernel refused a call (a bug in the model code if it happens).
    #[error("kernel: {0}")]
    Kernel(#[from] attend_kernels::Error),
}

impl Error {
    /// The kernel's refusal of a non-finite input, as the model's error naming `at` (a layer);
    /// every other error as it is.
    pub fn at(self, at: impl FnOnce() -> String) -> Error {
        match self {
            Error::Attention(attend::Error::NonFinite { what, index, value })
            | Error::Kernel(attend_kernels::Error::NonFinite { what, index, value }) => {
                Error::NonFinite {
                    at: format!("{}, attention `{what}`", at()),
                    index,
                    value,
                }
            }
            other => other,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
