//! The one error type of the kernel crate: every bad shape, layout or mask is named here.

/// What went wrong with a call into `attend`. Every variant names the offending dimension or
/// tensor, and the expected and actual values, so that a caller can fix the call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A dimension that must be positive is zero.
    #[error("dimension `{dim}` must be at least 1, got 0")]
    ZeroDim {
        /// The dimension's name (`b`, `h`, `h_kv`, `s_q`, `s_kv`, `d`, `d_v`).
        dim: &'static str,
    },
    /// The number of query heads is not a multiple of the number of key/value heads.
    #[error("query heads h = {h} must be a multiple of key/value heads h_kv = {h_kv}")]
    HeadsNotDivisible {
        /// Query heads.
        h: usize,
        /// Key/value heads.
        h_kv: usize,
    },
    /// A buffer has the wrong number of elements for the declared shape.
    #[error("`{what}` has {got} elements, expected {expected} for the declared shape")]
    ShapeMismatch {
        /// Which buffer (`q`, `k`, `v`, `out`, `lse`, `dout`, a mask, ...).
        what: &'static str,
        /// The length the shape asks for.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A per-batch key length is longer than the key sequence.
    #[error("key_lengths[{batch}] = {got} exceeds s_kv = {s_kv}")]
    KeyLengthOutOfRange {
        /// Which batch row.
        batch: usize,
        /// The length given.
        got: usize,
        /// The key sequence length.
        s_kv: usize,
    },
    /// A parameter is outside its domain (a non-positive scale, a window of width 0, ...).
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An input holds NaN or an infinity (additive masks may hold -inf, nothing else may).
    #[error("`{what}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which buffer.
        what: &'static str,
        /// The flat index of the first such value.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A shape whose buffer could not exist: more elements than memory can address (the
    /// product of its dimensions overflows, or exceeds `isize::MAX` bytes).
    #[error(
        "`{what}` would have {elements} elements (or more): more than any buffer can hold; \
         check the shape"
    )]
    TooLarge {
        /// Which buffer.
        what: &'static str,
        /// Its element count (saturated at `usize::MAX`).
        elements: usize,
    },
    /// A buffer the call needs could not be allocated.
    #[error("out of memory: cannot allocate `{what}` of {elements} elements")]
    OutOfMemory {
        /// Which buffer.
        what: &'static str,
        /// Its element count.
        elements: usize,
    },
    /// An instruction set was asked for that this processor does not have.
    #[error("instruction set {0:?} is not available on this processor")]
    IsaUnavailable(crate::Isa),
    /// A KV-cache operation was asked for past the cache's contents.
    #[error("KV cache: {0}")]
    Cache(String),
}

impl From<attend_kernels::Error> for Error {
    fn from(e: attend_kernels::Error) -> Error {
        match e {
            attend_kernels::Error::IsaUnavailable(isa) => Error::IsaUnavailable(isa),
            attend_kernels::Error::ZeroDim { dim } => Error::ZeroDim { dim },
            attend_kernels::Error::NonFinite { what, index, value } => {
                Error::NonFinite { what, index, value }
            }
            e @ attend_kernels::Error::OutOfRange { what, .. } => Error::InvalidParameter {
                name: what,
                reason: e.to_string(),
            },
            attend_kernels::Error::ShapeMismatch {
                what,
                expected,
                got,
            } => Error::ShapeMismatch {
                what,
                expected,
                got,
            },
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
