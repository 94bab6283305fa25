//! The kernel crate's error: what a caller can get wrong at a public entry point.

/// A refused call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An instruction set was asked for that this processor does not have.
    #[error("instruction set {0:?} is not available on this processor")]
    IsaUnavailable(crate::Isa),
    /// A dimension that must be positive is zero.
    #[error("dimension `{dim}` must be at least 1, got 0")]
    ZeroDim {
        /// The dimension's name.
        dim: &'static str,
    },
    /// An input holds NaN or an infinity.
    #[error("`{what}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which buffer.
        what: &'static str,
        /// The flat index of the first such value.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A value too large for the scale of the type it is quantised to.
    #[error(
        "`{what}` holds {value} at flat index {index}: too large for int8 with an f16 scale \
         (at most 127 × 65504)"
    )]
    OutOfRange {
        /// Which buffer.
        what: &'static str,
        /// The flat index of the value.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A buffer has the wrong number of elements for the declared shape.
    #[error("`{what}` has {got} elements, expected {expected} for the declared shape")]
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length the shape asks for.
        expected: usize,
        /// The length given.
        got: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
