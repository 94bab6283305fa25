//! Checks of the numbers a file declares (configs, GGUF metadata, checkpoints), before
//! anything is allocated from them: each refusal names the file and the field, the value and
//! the range it must be in.

use std::ops::RangeInclusive;
use std::path::Path;

use crate::{Error, Result};

/// The checks of one file's fields.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    path: &'a Path,
}

impl<'a> Fields<'a> {
    /// Checks for the fields of `path`.
    pub fn of(path: &'a Path) -> Fields<'a> {
        Fields { path }
    }

    /// An error about `field` of this file.
    pub fn bad(&self, field: &str, what: impl std::fmt::Display) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            what: format!("`{field}` {what}"),
        }
    }

    /// A count in `range`.
    pub fn count(&self, field: &str, v: usize, range: RangeInclusive<usize>) -> Result<usize> {
        if !range.contains(&v) {
            return Err(self.bad(
                field,
                format_args!("is {v}; it must be {} to {}", range.start(), range.end()),
            ));
        }
        Ok(v)
    }

    /// A finite real in `range`, and positive when `positive` (0 is refused).
    pub fn real(
        &self,
        field: &str,
        v: f64,
        range: RangeInclusive<f64>,
        positive: bool,
    ) -> Result<f64> {
        if !v.is_finite() || !range.contains(&v) || (positive && v <= 0.0) {
            let lo = if positive { "above " } else { "" };
            return Err(self.bad(
                field,
                format_args!(
                    "is {v}; it must be a finite number {lo}{} to {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(v)
    }

    /// `a` divisible by `b` (both already positive).
    pub fn divides(&self, field: &str, a: usize, b: usize, by: &str) -> Result<()> {
        if b == 0 || !a.is_multiple_of(b) {
            return Err(self.bad(
                field,
                format_args!("is {a}; it must be a multiple of {by} ({b})"),
            ));
        }
        Ok(())
    }
}

/// How many numbered blocks `names` hold: one more than the largest `N` of a name
/// `{prefix}N.…` (0 when there is none) — what a file really has, to check a declared layer
/// count against.
pub fn numbered_blocks<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> usize {
    names
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        // saturating: a hostile index of usize::MAX is then refused by the layer-count check
        .map_or(0, |m| m.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count of numbered blocks, and a hostile index that would overflow it.
    #[test]
    fn numbered_blocks_count_and_saturate() {
        assert_eq!(numbered_blocks(["blk.0.a", "blk.3.b", "x"], "blk."), 4);
        assert_eq!(numbered_blocks(["x", "blk.y.a"], "blk."), 0);
        let max = format!("blk.{}.a", usize::MAX);
        assert_eq!(numbered_blocks([max.as_str()], "blk."), usize::MAX);
    }
}
